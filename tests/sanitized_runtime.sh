# Sourced by the sanitizer runs (tests/fuzz/run.sh, tests/stress/run.sh): the C++ runtime compiled
# once with clang++ and a sanitizer, for their programs to link.
#
#   build_runtime OBJ_DIR LABEL FLAG...
#
# compiles csrc/runtime (its kernels and op registry too) with RUNTIME_FLAGS and FLAG..., one
# compiler per CPU, into OBJ_DIR (emptied first: no object of a source since renamed or removed),
# and sets RUNTIME_OBJECTS to the objects. oneDNN is left out (layers_dnnl_none.cpp stands in for
# layers_dnnl.cpp), and with it OpenMP: the own kernels serve every op. LABEL names the sanitizers
# in the progress line.
RUNTIME_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNTIME_FLAGS=(-std=c++17 -g -O1 -I"$RUNTIME_ROOT/csrc")

build_runtime() {
  local obj_dir=$1 label=$2
  shift 2
  local sources=() f
  for f in "$RUNTIME_ROOT"/csrc/runtime/*.cpp "$RUNTIME_ROOT"/csrc/runtime/kernels/*.cpp \
           "$RUNTIME_ROOT"/csrc/runtime/ops/*.cpp; do
    [[ $(basename "$f") == layers_dnnl.cpp ]] || sources+=("$f")
  done
  command -v clang++ > /dev/null || { echo "build_runtime: clang++ not found (apt-get install -y clang)" >&2; return 2; }
  rm -rf "$obj_dir"
  mkdir -p "$obj_dir"
  echo "== the runtime under $label (${#sources[@]} sources)"
  # The flags go in a response file; each source reaches the shell as its one argument, and its
  # object is named by the hash of its path.
  printf '"%s"\n' "${RUNTIME_FLAGS[@]}" "$@" > "$obj_dir/flags"
  printf '%s\0' "${sources[@]}" | OBJ_DIR=$obj_dir xargs -0 -P "$(nproc)" -n 1 sh -c \
    'clang++ @"$OBJ_DIR/flags" -c "$1" -o "$OBJ_DIR/$(printf %s "$1" | md5sum | cut -c1-12).o"' sh
  RUNTIME_OBJECTS=("$obj_dir"/*.o)
}
