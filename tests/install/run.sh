#!/usr/bin/env bash
# The library as an embedder gets it (issue 16): BUILD (default build/, as `make test` built it)
# installed into a temporary prefix with `cmake --install`; examples/c and examples/cpp built
# against that prefix alone, via pkg-config and via find_package(branchy) (the C++ example also
# against libbranchy.a); each run on B-LeNet (the shipped checkpoint, exported with threshold 0.5)
# and on 64 random 8-bit images, and checked against the Python engine's answers (class and exit
# equal, entropy within 2e-4: the examples print 4 decimals). Also: the installed branchy-run
# answers the same, libbranchy.so carries its soname and exports its API alone (the functions of
# branchy.h and the C++ API's BRANCHY_API names), the version is the Python package's.
#
#   BUILD=build PYTHON=.venv/bin/python bash tests/install/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/branchy-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PREFIX=$WORK/prefix
START=$SECONDS
fail() { echo "FAIL: $*"; exit 1; }

echo "== cmake --install $BUILD --prefix (temporary)"
cmake --install "$BUILD" --prefix "$PREFIX" > "$WORK/install.log"
for f in include/branchy.h include/branchy/runtime/plan.h bin/branchy-run; do
  [[ -e $PREFIX/$f ]] || fail "$f not installed"
done
PC=$(find "$PREFIX" -name branchy.pc)
[[ -n $PC ]] || fail "branchy.pc not installed"
export PKG_CONFIG_PATH=$(dirname "$PC")
LIBDIR=$(pkg-config --variable=libdir branchy)
VERSION=$(pkg-config --modversion branchy)
[[ -f $LIBDIR/libbranchy.a ]] || fail "libbranchy.a not in $LIBDIR"
readelf -d "$LIBDIR/libbranchy.so" | grep -q "SONAME.*\[libbranchy\.so\.${VERSION%%.*}\]" ||
  fail "libbranchy.so has no soname libbranchy.so.${VERSION%%.*}"

echo "== libbranchy.so exports its API alone"
# Every dynamic symbol it defines is public, so that none can clash with an embedder's own copy
# of what the library uses inside (oneDNN, the standard library's templates, the runtime's
# helpers): a C name is a function that the installed branchy.h declares (and every one of those
# is there); a C++ name (demangled; typeinfo and vtables by their class) lies in namespace branchy,
# and the first name after branchy:: is a class or function that an installed C++ header marks
# BRANCHY_API (a class's members, nested ones included, go with it).
nm -D --defined-only -P "$LIBDIR/libbranchy.so" | cut -d' ' -f1 > "$WORK/symbols.txt"
c++filt < "$WORK/symbols.txt" > "$WORK/demangled.txt"
"$PYTHON" - "$WORK/symbols.txt" "$WORK/demangled.txt" "$PREFIX/include" <<'PY' ||
import glob, re, sys
symbols, demangled, include = sys.argv[1:]
pairs = list(zip(open(symbols).read().splitlines(), open(demangled).read().splitlines()))
c_api = set(re.findall(r"\b(branchy_\w+)\s*\(", open(f"{include}/branchy.h").read()))
marked = set()
for header in glob.glob(f"{include}/branchy/**/*.h", recursive=True):
    text = open(header).read()
    marked |= set(re.findall(r"\b(?:class|struct)\s+BRANCHY_API\s+(\w+)", text))
    marked |= set(re.findall(r"\bBRANCHY_API\b[^;{(]*?(\w+)\s*\(", text))
bad, c_names, cpp_names = [], set(), 0
for name, plain in pairs:
    if not name.startswith("_Z"):
        c_names.add(name)
        bad += [] if name in c_api else [name]
        continue
    cpp_names += 1
    owner = re.match(r"(?:typeinfo name for |typeinfo for |vtable for )?branchy::(\w+)", plain)
    bad += [] if owner and owner.group(1) in marked else [plain]
assert not bad, f"{len(bad)} exported symbols are not the public API:\n  " + "\n  ".join(sorted(bad))
assert c_names == c_api, f"branchy.h declares these, libbranchy.so lacks them: {sorted(c_api - c_names)}"
print(f"   {len(pairs)} symbols: the {len(c_names)} functions of branchy.h, {cpp_names} of the C++ API")
PY
  fail "libbranchy.so exports more than its API"

echo "== the model, the images and the Python engine's answers"
MODEL=$WORK/b_lenet.branchy
"$PYTHON" -m branchy_engine.commands.cli export "$ROOT/branchy_engine/checkpoints/b_lenet.pt" -o "$MODEL" \
  --thresholds 0.5 > /dev/null
"$PYTHON" - "$MODEL" "$WORK" "$VERSION" <<'PY'
import sys
import numpy as np
import torch
import branchy_engine as be

model, work, version = sys.argv[1:]
assert version == be.__version__, f"the library says version {version}, the Python package {be.__version__}"
engine = be.Engine(model, threads=1)
x = torch.full((1, 28, 28), 0.5)  # the examples' prepared sample
p, e, s = engine(x)
lines = [f"class {p}, exit {e + 1}, entropy {s:.4f}"]
x.numpy().astype(np.float32).tofile(f"{work}/half.f32")
images = torch.randint(0, 256, (64, 28, 28, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(16))
images.numpy().tofile(f"{work}/images.u8")
p, e, s = be.Engine(model, threads=1, input="uint8_hwc")(images)
lines += [f"image {i}: class {p[i]}, exit {e[i] + 1}, entropy {s[i]:.4f}" for i in range(len(p))]
open(f"{work}/expected.txt", "w").write("\n".join(lines) + "\n")
PY

# Lines "[image I: ]class K, exit E, entropy S" of $1 against expected.txt.
same_answers() {
  "$PYTHON" - "$WORK/expected.txt" "$1" <<'PY' || fail "$2 answers differ from the Python engine's"
import re, sys
pattern = re.compile(r"^(image \d+: )?class (\d+), exit (\d+), entropy (\S+)$")
def read(path):
    return [pattern.match(line).groups() for line in open(path).read().splitlines()]
want, got = read(sys.argv[1]), read(sys.argv[2])
assert len(want) == len(got), (len(want), len(got))
for w, g in zip(want, got):
    assert w[:3] == g[:3] and abs(float(w[3]) - float(g[3])) <= 2e-4, (w, g)
PY
}

# Runs $1 (a built example) on the model and images; checks it loads the installed library.
check() {
  local binary=$1 what=$2
  local linked
  linked=$(LD_LIBRARY_PATH=$LIBDIR ldd "$binary" | grep "libbranchy\.so" || true)
  [[ -z $linked || $linked == *"$LIBDIR"* ]] || fail "$what loads libbranchy.so from elsewhere: $linked"
  LD_LIBRARY_PATH=$LIBDIR "$binary" "$MODEL" "$WORK/images.u8" > "$WORK/out.txt" || fail "$what exited $?"
  same_answers "$WORK/out.txt" "$what"
  echo "   $what: $(head -1 "$WORK/out.txt"), and 64 images as the Python engine"
}

echo "== examples/c and examples/cpp via pkg-config"
cc -std=c99 -Wall -Wextra -Werror -pedantic "$ROOT/examples/c/classify.c" -o "$WORK/c-pkg-config" \
  $(pkg-config --cflags --libs branchy)
check "$WORK/c-pkg-config" "examples/c (pkg-config)"
c++ -std=c++17 -O2 -Wall -Wextra -Werror "$ROOT/examples/cpp/classify.cpp" -o "$WORK/cpp-pkg-config" \
  $(pkg-config --cflags --libs branchy)
check "$WORK/cpp-pkg-config" "examples/cpp (pkg-config)"

echo "== examples/c and examples/cpp via find_package(branchy)"
build() {
  local source=$1 out=$2
  shift 2
  cmake -S "$source" -B "$out" -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Release "$@" > "$out.log" 2>&1 &&
    cmake --build "$out" >> "$out.log" 2>&1 || { cat "$out.log"; fail "building $source against the prefix"; }
}
build "$ROOT/examples/c" "$WORK/c-cmake"
check "$WORK/c-cmake/classify" "examples/c (find_package)"
build "$ROOT/examples/cpp" "$WORK/cpp-cmake"
check "$WORK/cpp-cmake/classify" "examples/cpp (find_package)"
build "$ROOT/examples/cpp" "$WORK/cpp-static" -DBRANCHY_STATIC=ON
ldd "$WORK/cpp-static/classify" | grep -q libbranchy && fail "the static build loads libbranchy.so"
check "$WORK/cpp-static/classify" "examples/cpp (find_package, libbranchy.a)"

echo "== the installed branchy-run"
"$PREFIX/bin/branchy-run" "$MODEL" --raw "$WORK/half.f32" --predictions > "$WORK/run.txt"
# Its line: "0 CLASS [NAME] exit E score S".
answer=$(sed -nE 's/^0 ([0-9]+) .*exit ([0-9]+) score .*/class \1, exit \2/p' "$WORK/run.txt")
[[ $answer == "$(head -1 "$WORK/expected.txt" | cut -d, -f1,2)" ]] ||
  fail "branchy-run says '$answer'; expected $(head -1 "$WORK/expected.txt")"
echo "== installed tree: headers, libbranchy.a and .so ($VERSION), branchy-run, CMake package and" \
     "pkg-config file all serve ($((SECONDS - START)) s)"
