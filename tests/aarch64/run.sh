#!/usr/bin/env bash
# make test-aarch64 (issue 16, section 3): the runtime and its C++ tests cross-built for aarch64
# with Debian's g++-aarch64-linux-gnu (no oneDNN, no OpenMP: the own kernels, NEON tier and plain
# loops, serve every op) and run by ctest under qemu-aarch64 (Debian's qemu-user): the kernel
# tests over odd sizes on NEON against the portable loops, the plan, model file and C API tests,
# and check_models, the model-level equality test (networks exported here with PyTorch's logits by
# make_models.py, compared on aarch64 with every instruction set and kernel choice).
# Skipped, saying so, where the cross compiler or qemu is missing (make system-aarch64 installs
# them). Exits non-zero on a failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${BUILD:-$ROOT/build-aarch64}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
START=$SECONDS

for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
  if ! command -v "$tool" > /dev/null; then
    echo "test-aarch64: SKIPPED, no $tool on PATH (Debian: apt-get install g++-aarch64-linux-gnu qemu-user)"
    exit 0
  fi
done

# The networks and PyTorch's logits, written again when the writer, the package or the shipped
# checkpoints change.
mkdir -p "$OUT/models"
MODELS=$(cd "$OUT/models" && pwd)
key=$(cd "$ROOT" && find tests/aarch64/make_models.py branchy_engine -name '*.py' -o -name '*.pt' |
      sort | xargs cat | sha1sum | cut -d' ' -f1)
if [ "$(cat "$MODELS/.key" 2>/dev/null)" != "$key" ]; then
  echo "== exporting the networks and PyTorch's logits ($MODELS)"
  rm -f "$MODELS/.key"
  (cd "$ROOT" && PYTHONPATH="$ROOT" "$PYTHON" tests/aarch64/make_models.py "$MODELS")
  echo "$key" > "$MODELS/.key"
fi

echo "== cross build ($OUT)"
cmake -S "$ROOT" -B "$OUT" -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/aarch64-linux-gnu.cmake" \
  -DCMAKE_BUILD_TYPE=Release -DBRANCHY_WITH_DNNL=OFF -DBRANCHY_MODEL_CHECK_DIR="$MODELS" > /dev/null
cmake --build "$OUT" -j 2

echo "== ctest under qemu-aarch64"
ctest --test-dir "$OUT" --output-on-failure -j 2
echo "== test-aarch64 passed ($((SECONDS - START)) s)"
