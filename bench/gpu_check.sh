#!/usr/bin/env bash
# The prepared GPU check (issue 12): proves every CUDA path of branchy-engine on a GPU machine and
# records the figures, in two phases that each end well inside 9 minutes.
#
#   bench/gpu_check.sh 1          environment, in-place build, the CUDA tests, the claim probes
#   bench/gpu_check.sh 2          compute-sanitizer (4 tools), Nsight Compute capture, bench/gpu_engine.py
#   bench/gpu_check.sh --dry-run  on any machine: checks this script's wiring (every test, probe,
#                                 workload and bench it names exists and is collected), skips the
#                                 GPU steps. CI runs it.
#   bench/gpu_check.sh --prepare  here, before phase 1: puts a ninja binary in build/gpu-tools
#                                 (the GPU machine may have none, and without it the extension
#                                 builds one file at a time, minutes too slow). The dry run does it
#                                 too. Carry it: run(command="bash bench/gpu_check.sh 1",
#                                 carry=["build/gpu-tools"]).
#
# Run from the repository root on the GPU machine (its own torch, no venv, no make, no network):
# phase 1, then phase 2 while the machine is warm (phase 2 reuses phase 1's build; it has no time
# to build again). Each step has its own time limit, and a phase ends within 520 s: the CUDA
# tests get what the build (up to 270 s) leaves of that, less the claims' 70 s.
# Each step prints one line "PASS|FAIL|SKIP  step  seconds  reason"; the last lines are a summary
# table. Full logs, the summary, the captured ncu CSV and bench/gpu_engine.py's JSON and MD go to
# $OUT (default ./gpu-check-out); at most 8 files come back from the machine.
# Environment: PYTHON (default python3; the dry run prefers .venv/bin/python), OUT.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
MODE="${1:-}"
case "$MODE" in
  1|2|--dry-run|--prepare) ;;
  -h|--help) usage; exit 0 ;;
  *) usage >&2; echo "gpu_check.sh: expected 1, 2 or --dry-run, got '${MODE}'" >&2; exit 2 ;;
esac
DRY=0; [ "$MODE" = "--dry-run" ] && DRY=1
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  [ "$DRY" = 1 ] && [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
TAG="${MODE#--}"
LOG="$OUT/phase-$TAG.log"
SUMMARY="$OUT/summary-$TAG.txt"
: > "$LOG"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
TOOLS="$PWD/build/gpu-tools"
export PATH="$TOOLS:$PATH:$CUDA_HOME/bin"

# A ninja binary for the GPU machine's build: the venv's (pip's manylinux build), else pip's wheel.
prepare_tools() {
  mkdir -p "$TOOLS"
  if [ -x .venv/bin/ninja ] && head -c 4 .venv/bin/ninja | grep -q ELF; then
    cp .venv/bin/ninja "$TOOLS/ninja"
  elif [ "$DRY" = 0 ]; then
    local wheels; wheels=$(mktemp -d)
    "$PYTHON" -m pip download -q --no-deps --only-binary :all: --platform manylinux2014_x86_64 \
      ninja -d "$wheels" || return 1
    "$PYTHON" -c '
import glob, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/ninja-*.whl")[0])
name = next(n for n in wheel.namelist() if n.endswith(("/scripts/ninja", "/bin/ninja")))
open(sys.argv[2], "wb").write(wheel.read(name))' "$wheels" "$TOOLS/ninja" || return 1
    chmod +x "$TOOLS/ninja"
  else
    echo "no ninja binary in .venv/bin: run bench/gpu_check.sh --prepare before the GPU check"
    return 0
  fi
  echo "$TOOLS/ninja: $("$TOOLS/ninja" --version) (carry build/gpu-tools to the GPU machine)"
}
if [ "$MODE" = "--prepare" ]; then
  prepare_tools; exit $?
fi

# The files each step uses: the dry run checks that they exist and are collected.
# (tests/test_sanitizer.py's GPU test is phase 2's sanitizer steps, each tool within its own limit.)
CUDA_TESTS=(tests/test_exit_decision.py tests/test_compaction.py tests/test_gpu_engine.py
            tests/test_gpu_profile.py tests/test_any_network.py)
CLAIM_TESTS=(tests/test_gpu_claims.py)
SANITIZE_WORKLOAD=tests/gpu/sanitize_kernels.py
SANITIZER_TOOLS=(memcheck racecheck synccheck initcheck)
NCU_MODEL_CHECKPOINT=branchy_engine/checkpoints/b_lenet.pt
BENCH=bench/gpu_engine.py

RESULTS=()
PHASE_S=520  # a phase's whole time (SECONDS counts from this script's start)
record() {  # record STATUS STEP SECONDS REASON
  local line
  line=$(printf '%-4s  %-22s %5ss  %s' "$1" "$2" "$3" "$4")
  echo "$line"
  echo "== $line" >> "$LOG"
  RESULTS+=("$line")
}

# step NAME TIMEOUT_S COMMAND...: runs the command with its output in the log; PASS on exit 0,
# SKIP on exit 77 (the command's last output line is the reason), else FAIL with its last line.
step() {
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS status out
  echo "== step $name: $*" >> "$LOG"
  out="$WORK/$name.out"
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" > "$out" 2>&1
  status=$?
  cat "$out" >> "$LOG"
  local reason
  reason=$(grep -v '^\s*$' "$out" | tail -n 1 | cut -c1-160)
  case $status in
    0) record PASS "$name" $((SECONDS - start)) "$reason" ;;
    77) record SKIP "$name" $((SECONDS - start)) "$reason" ;;
    124|137) record FAIL "$name" $((SECONDS - start)) "timed out after ${limit} s" ;;
    *) record FAIL "$name" $((SECONDS - start)) "exit $status: $reason" ;;
  esac
}

summary() {
  {
    echo
    echo "gpu_check.sh $MODE summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname)):"
    printf '%s\n' "${RESULTS[@]}"
  } | tee -a "$LOG" > "$SUMMARY"
  cat "$SUMMARY"
  if printf '%s\n' "${RESULTS[@]}" | grep -q '^FAIL'; then exit 1; fi
  exit 0
}

# ---- the steps ----

environment() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel: $(uname -r) ($(gvisor && echo 'gVisor: ncu and compute-sanitizer cannot attach' || echo 'not gVisor'))"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "nvcc: $("$CUDA_HOME/bin/nvcc" --version 2>/dev/null | tail -n 1)"
  echo "ncu: $(command -v ncu || echo missing); compute-sanitizer: $(command -v compute-sanitizer || echo missing); ninja: $(command -v ninja || echo missing)"
  "$PYTHON" - <<'EOF'
import sys, torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA GPU")
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, "
      f"CUDAGraph.begin_capture_to_if_node: {hasattr(torch.cuda.CUDAGraph, 'begin_capture_to_if_node')}")
EOF
}

gvisor() { [ "$(uname -r)" = "4.4.0" ] || dmesg 2>/dev/null | grep -qi gvisor; }

build() {
  command -v ninja > /dev/null && echo "ninja: $(command -v ninja) (parallel build)" ||
    echo "no ninja here nor in build/gpu-tools (bench/gpu_check.sh --prepare, then carry it): one file at a time"
  TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
    "$PYTHON" setup.py build_ext --inplace || return 1
  "$PYTHON" -m branchy_engine.build_info | tee "$WORK/build_info"
  grep -q "CUDA kernels compiled" "$WORK/build_info" || { echo "built without CUDA kernels"; return 1; }
}

built() {  # phase 2 on a warm machine: phase 1's in-place build, checked
  "$PYTHON" -m branchy_engine.build_info | tee "$WORK/build_info" || return 1
  grep -q "CUDA kernels compiled" "$WORK/build_info" && echo "reusing phase 1's in-place build" && return 0
  echo "no CUDA build of branchy_engine._C here: run 'bench/gpu_check.sh 1' on this machine first"
  return 1
}

cuda_tests() {  # pytest FILES...: all must pass with a GPU required
  # --durations: where a step near its time limit spent it, for the next run's limits.
  BRANCHY_REQUIRE_CUDA=1 BRANCHY_CUDA_ONLY=1 "$PYTHON" -m pytest -q -p no:cacheprovider --durations=15 "$@"
}

sanitize() {  # sanitize TOOL
  gvisor && { echo "gVisor kernel ($(uname -r)): compute-sanitizer cannot attach"; return 77; }
  "$PYTHON" -m branchy_engine.profiling.sanitizer --tool "$1" --timeout 60 -- "$PYTHON" "$SANITIZE_WORKLOAD"
}

ncu_model() {  # ncu_model PATH: the shipped B-LeNet as a model file (thresholds 0.5: both exits taken)
  "$PYTHON" -m branchy_engine.commands.cli export "$NCU_MODEL_CHECKPOINT" --thresholds 0.5 -o "$1" > /dev/null
}

ncu_capture() {
  gvisor && { echo "gVisor kernel ($(uname -r)): ncu cannot attach"; return 77; }
  ncu_model "$WORK/b_lenet.branchy" || return 1
  # Without --raw it profiles seeded noise of the model's input shape.
  "$PYTHON" -m branchy_engine.profiling.ncu "$WORK/b_lenet.branchy" --samples 2 --timeout 65 \
    --csv-out "$OUT/ncu_captured.csv"
}

bench() {
  "$PYTHON" "$BENCH" --out "$OUT"
}

# ---- the dry run: the wiring, no GPU ----

collected() {  # collected FILES...: every file yields at least one GPU test (the selection of cuda_tests)
  local listing f missing=0
  listing=$(BRANCHY_CUDA_ONLY=1 "$PYTHON" -m pytest --collect-only -q -p no:cacheprovider "$@" 2>&1) || { echo "$listing" | tail -n 20; return 1; }
  for f in "$@"; do
    [ -f "$f" ] || { echo "missing: $f"; missing=1; continue; }
    echo "$listing" | grep -q "^$f::" || { echo "no test collected from $f"; missing=1; }
  done
  [ $missing = 0 ] && echo "$(echo "$listing" | grep -c '::') tests collected from $*"
  return $missing
}

wiring() {
  local ok=0
  for f in setup.py "$SANITIZE_WORKLOAD" "$NCU_MODEL_CHECKPOINT" "$BENCH"; do
    [ -f "$f" ] || { echo "missing: $f"; ok=1; }
  done
  "$PYTHON" -m py_compile "$SANITIZE_WORKLOAD" "$BENCH" || ok=1
  # Each runner's --help must name the options this script passes (a module without a main would
  # exit 0 and print nothing).
  helps() {  # helps WHAT OPTION... < help text
    local text option; text=$(cat)
    for option in "${@:2}"; do
      grep -q -- "$option" <<< "$text" || { echo "$1: --help does not mention $option"; return 1; }
    done
  }
  "$PYTHON" -m branchy_engine.profiling.sanitizer --help | helps sanitizer --tool --timeout memcheck initcheck || ok=1
  "$PYTHON" -m branchy_engine.profiling.ncu --help | helps ncu --samples --csv-out --timeout || ok=1
  ncu_model "$WORK/wiring.branchy" || { echo "exporting $NCU_MODEL_CHECKPOINT fails"; ok=1; }
  "$PYTHON" "$BENCH" --help | helps bench --out --networks || ok=1
  [ $ok = 0 ] && echo "workload, runners, export and bench are in place"
  return $ok
}

# The steps run in a child bash under `timeout`: it sees these.
export PYTHON OUT WORK SANITIZE_WORKLOAD NCU_MODEL_CHECKPOINT BENCH
export -f environment gvisor build built cuda_tests sanitize ncu_model ncu_capture bench collected wiring

if [ "$DRY" = 1 ]; then
  prepare_tools | tail -n 1
  step cuda-tests-collected 300 collected "${CUDA_TESTS[@]}"
  step claims-collected 120 collected "${CLAIM_TESTS[@]}"
  step wiring 300 wiring
  for s in environment build cuda-tests claims "${SANITIZER_TOOLS[@]/#/sanitizer-}" ncu bench; do
    record SKIP "$s" 0 "dry run: a GPU step"
  done
  summary
fi

if [ "$MODE" = 1 ]; then
  step environment 30 environment
  step build 270 build
  if printf '%s\n' "${RESULTS[@]}" | grep -q '^FAIL'; then
    record SKIP cuda-tests 0 "no GPU or no CUDA build (see above)"; record SKIP claims 0 "no GPU or no CUDA build (see above)"
  else
    # Unmeasured on a GPU so far (cold torch.compile, first captures): whatever the build left.
    step cuda-tests $((PHASE_S - 70 - SECONDS)) cuda_tests "${CUDA_TESTS[@]}"
    step claims 70 cuda_tests "${CLAIM_TESTS[@]}"
  fi
  summary
fi

step environment 30 environment
step build 30 built
if printf '%s\n' "${RESULTS[@]}" | grep -q '^FAIL'; then
  for s in "${SANITIZER_TOOLS[@]/#/sanitizer-}" ncu bench; do record SKIP "$s" 0 "no GPU or no CUDA build (see above)"; done
  summary
fi
for tool in "${SANITIZER_TOOLS[@]}"; do
  step "sanitizer-$tool" 65 sanitize "$tool"
done
step ncu 75 ncu_capture
step bench 125 bench
summary
