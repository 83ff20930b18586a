#!/usr/bin/env bash
# Fuzzes the model file reader (csrc/runtime/model_file.cpp) and the plan builder under ASan and
# UBSan with clang:
#   1. the C++ mutation test (tests/cpp/test_model_file.cpp) built with the sanitizers;
#   2. libFuzzer, RUNS executions (default 100000) from a seed corpus of exported models.
# Exits non-zero on any failure, crash or sanitizer report (crash inputs land in $OUT).
# Needs clang++ (Debian: apt-get install -y clang) and the built extension (the corpus is exported).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${FUZZ_OUT:-$ROOT/build/fuzz}
RUNS=${RUNS:-100000}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
source "$ROOT/tests/sanitized_runtime.sh"

FLAGS=("${RUNTIME_FLAGS[@]}" -fno-sanitize-recover=all)
SANITIZE=(-fsanitize=address,undefined)
mkdir -p "$OUT/corpus"

# The reader checks each op through the op registry (csrc/runtime/ops/), whose declarations name
# their kernels: the whole runtime but oneDNN, compiled once with the sanitizers and libFuzzer's
# coverage hooks (which the mutation test's binary carries unused); both programs link it.
build_runtime "$OUT/obj" "ASan + UBSan" -fno-sanitize-recover=all "${SANITIZE[@]}" -fsanitize=fuzzer-no-link
OBJECTS=("${RUNTIME_OBJECTS[@]}")

echo "== C++ mutation test under ASan + UBSan"
clang++ "${FLAGS[@]}" "${SANITIZE[@]}" -I"$ROOT/tests/cpp" \
  "$ROOT/tests/cpp/test_model_file.cpp" "${OBJECTS[@]}" -o "$OUT/test_model_file"
"$OUT/test_model_file"

echo "== libFuzzer, $RUNS runs"
clang++ "${FLAGS[@]}" -fsanitize=fuzzer,address,undefined \
  "$ROOT/tests/fuzz/fuzz_model_file.cpp" "${OBJECTS[@]}" -o "$OUT/fuzz_model_file"
"$PYTHON" "$ROOT/tests/fuzz/make_corpus.py" "$OUT/seeds"
# New inputs go to corpus/ (kept between runs); seeds/ is only read.
# No input may take over a second or allocate past the limit (the plan's limits are far below).
"$OUT/fuzz_model_file" -runs="$RUNS" -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=512 \
  -print_final_stats=1 -artifact_prefix="$OUT/" \
  "$OUT/corpus" "$OUT/seeds"
