#!/usr/bin/env bash
# The thread stress test under ThreadSanitizer (issue 14, section 6): THREADS threads x CALLS calls
# (default 4 x 10,000) of mixed batch sizes on one plan, each answer equal to the same call made
# serially, bit for bit (tests/stress/stress_threads.cpp), on the two models make_models.py exports.
# Exits non-zero on any difference, error or ThreadSanitizer report.
#
# What ThreadSanitizer sees: the runtime is built without oneDNN and so without OpenMP
# (layers_dnnl_none.cpp; the own kernels serve every op). Debian's oneDNN and libgomp are not
# instrumented: ThreadSanitizer cannot see their synchronisation (libgomp's barriers are futexes
# and atomics it does not know), so it would report races that are not there, and could only be
# quieted by suppressions that would hide real ones too. The oneDNN layers shared by threads are
# covered by tests/test_thread_stress.py (answers bit for bit), not by this run.
# Needs clang++ (Debian: apt-get install -y clang) and the built extension (the models are exported).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${STRESS_OUT:-$ROOT/build/tsan}
THREADS=${THREADS:-4}
CALLS=${CALLS:-10000}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
source "$ROOT/tests/sanitized_runtime.sh"
SANITIZE=(-fsanitize=thread)
START=$SECONDS

build_runtime "$OUT/obj" "ThreadSanitizer, without oneDNN or OpenMP" "${SANITIZE[@]}"
echo "== stress_threads under ThreadSanitizer"
clang++ "${RUNTIME_FLAGS[@]}" "${SANITIZE[@]}" "$ROOT/tests/stress/stress_threads.cpp" \
  "${RUNTIME_OBJECTS[@]}" -o "$OUT/stress_threads"
mapfile -t MODELS < <("$PYTHON" "$ROOT/tests/stress/make_models.py" "$OUT/models")

echo "== $THREADS threads x $CALLS calls per model"
RUN_START=$SECONDS
# The first report ends the run with exit code 66; the log keeps it.
TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
  "$OUT/stress_threads" "${MODELS[@]}" --threads "$THREADS" --calls "$CALLS" 2>&1 | tee "$OUT/stress.log"
if grep -q "ThreadSanitizer" "$OUT/stress.log"; then
  echo "FAIL: a ThreadSanitizer report (above; $OUT/stress.log)"
  exit 1
fi
echo "== no ThreadSanitizer report; every answer equal to the serial one" \
     "(run $((SECONDS - RUN_START)) s, build and run $((SECONDS - START)) s)"
