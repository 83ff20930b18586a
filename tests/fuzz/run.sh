#!/usr/bin/env bash
# Fuzzes the model file reader (csrc/runtime/model_file.cpp) under ASan and UBSan with clang:
#   1. the C++ mutation test (tests/cpp/test_model_file.cpp) built with the sanitizers;
#   2. libFuzzer, RUNS executions (default 100000) from a seed corpus of exported models.
# Exits non-zero on any failure, crash or sanitizer report (crash inputs land in $OUT).
# Needs clang++ (Debian: apt-get install -y clang) and the built extension (the corpus is exported).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${FUZZ_OUT:-$ROOT/build/fuzz}
RUNS=${RUNS:-100000}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
command -v clang++ > /dev/null || { echo "run.sh: clang++ not found (apt-get install -y clang)" >&2; exit 2; }

# The reader checks each op through the op registry (csrc/runtime/ops/), whose declarations name
# their kernels: the whole runtime but oneDNN (layers_dnnl_none.cpp stands in for it).
SOURCES=()
for f in "$ROOT"/csrc/runtime/*.cpp "$ROOT"/csrc/runtime/kernels/*.cpp "$ROOT"/csrc/runtime/ops/*.cpp; do
  [[ $(basename "$f") == layers_dnnl.cpp ]] || SOURCES+=("$f")
done
FLAGS=(-std=c++17 -g -O1 -fno-sanitize-recover=all -I"$ROOT/csrc")
mkdir -p "$OUT/corpus"

echo "== C++ mutation test under ASan + UBSan"
clang++ "${FLAGS[@]}" -fsanitize=address,undefined -I"$ROOT/tests/cpp" \
  "$ROOT/tests/cpp/test_model_file.cpp" "${SOURCES[@]}" -o "$OUT/test_model_file"
"$OUT/test_model_file"

echo "== libFuzzer, $RUNS runs"
clang++ "${FLAGS[@]}" -fsanitize=fuzzer,address,undefined \
  "$ROOT/tests/fuzz/fuzz_model_file.cpp" "${SOURCES[@]}" -o "$OUT/fuzz_model_file"
"$PYTHON" "$ROOT/tests/fuzz/make_corpus.py" "$OUT/seeds"
# New inputs go to corpus/ (kept between runs); seeds/ is only read.
"$OUT/fuzz_model_file" -runs="$RUNS" -print_final_stats=1 -artifact_prefix="$OUT/" \
  "$OUT/corpus" "$OUT/seeds"
