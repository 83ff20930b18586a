#!/usr/bin/env bash
# Instructions per sample of the runtime's NEON path against its portable path (plain loops) on
# aarch64, counted under qemu-aarch64 by a TCG plugin (insn_count.c): LeNet, B-LeNet,
# MobileNetV3-small and B-MobileNetV3-small from the shipped checkpoints, the first SAMPLES
# (default 1000) test images at batch 1, own kernels. A run of 0 samples (loading and building
# the plan) is subtracted from a run of SAMPLES, so that only the samples are counted. The
# B-networks run twice: at the thresholds make demo calibrated, and with thresholds 0 (every
# sample to the final exit). Instructions, not time: wall-clock figures need real ARM hardware,
# and qemu's speed says nothing about a core's. Prints a Markdown table (bench/results/aarch64.md).
# Needs make test-aarch64's cross build (BUILD, default build-aarch64: libbranchy.a), gcc, and the
# Python environment (PYTHON).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build-aarch64}
OUT=$BUILD/count
SAMPLES=${SAMPLES:-1000}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
mkdir -p "$OUT"

gcc -O2 -shared -fPIC -fvisibility=hidden -o "$OUT/libinsn_count.so" "$ROOT/bench/aarch64/insn_count.c"
aarch64-linux-gnu-g++ -O2 -std=c++17 -I "$ROOT/csrc" "$ROOT/bench/aarch64/run_samples.cpp" \
  "$BUILD/libbranchy.a" -o "$OUT/run_samples"
(cd "$ROOT" && PYTHONPATH="$ROOT" "$PYTHON" bench/aarch64/make_inputs.py "$OUT" "$SAMPLES")

# run NAME N ISA [last]: "INSTRUCTIONS EXIT-COUNTS..." of one run.
run() {
  local name=$1 n=$2 isa=$3 output
  output=$(qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin "$OUT/libinsn_count.so" \
             "$OUT/run_samples" "$OUT/$name.branchy" "$OUT/$name.inputs" "$n" "$isa" "${@:4}" 2>&1)
  echo "$(sed -n 's/^instructions //p' <<< "$output") $(sed -n 's/.*: \(.*\) (samples per exit)/\1/p' <<< "$output")"
}

# 1234567 -> 1,234,567
grouped() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<< "$1"; }

# per_sample NAME ISA [last]: "INSTRUCTIONS-PER-SAMPLE EXIT-COUNTS..."
per_sample() {
  local base full
  read -r base _ <<< "$(run "$1" 0 "${@:2}")"
  full=$(run "$1" "$SAMPLES" "${@:2}")
  echo "$(( (${full%% *} - base) / SAMPLES )) ${full#* }"
}

echo "qemu-aarch64 $(qemu-aarch64 --version | head -1 | awk '{print $3}'), $(aarch64-linux-gnu-g++ --version | head -1);" \
     "host $(uname -m), $(nproc) CPUs; $(date -u +%Y-%m-%dT%H:%M:%SZ); $SAMPLES Fashion-MNIST test samples"
echo
echo "| network | thresholds | samples per exit | portable, instructions per sample | NEON, instructions per sample | portable / NEON |"
echo "|---|---|---|---|---|---|"
for name in lenet b_lenet mobilenet_v3_small b_mobilenet_v3_small; do
  modes=("")
  [[ $name == b_* ]] && modes+=(last)
  for mode in "${modes[@]}"; do
    read -r portable _ <<< "$(per_sample "$name" portable $mode)"
    read -r neon exits <<< "$(per_sample "$name" neon $mode)"
    label=$([[ -z $mode ]] && echo "the file's" || echo "0 (none leaves early)")
    [[ $name == b_* ]] || label="(one exit)"
    ratio=$(awk -v a="$portable" -v b="$neon" 'BEGIN { printf "%.1f", a / b }')
    echo "| $name | $label | ${exits// / \/ } | $(grouped "$portable") | $(grouped "$neon") | ${ratio}x |"
  done
done
