"""Builds branchy_engine._C: the C++ sources always, the CUDA sources whenever nvcc is found.

CUDA_HOME (else /usr/local/cuda) locates nvcc; a GPU is not needed to compile. BRANCHY_NO_CUDA=1
forces a CPU-only build. TORCH_CUDA_ARCH_LIST picks the GPU architectures (default: sm_80, sm_90 and
PTX for sm_90, which newer GPUs JIT-compile).
"""
import glob
import os
import sys

from setuptools import find_packages, setup


def cuda_home():
    if os.environ.get("BRANCHY_NO_CUDA") == "1":
        return None
    for candidate in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if candidate and os.path.isfile(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    return None


CUDA = cuda_home()
if CUDA:
    # torch.utils.cpp_extension reads these when imported; its own CUDA_HOME guess follows nvcc on
    # PATH, which may be a wrapper script outside the toolkit.
    os.environ["CUDA_HOME"] = CUDA
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")

from torch.utils import cpp_extension  # noqa: E402  (must follow the environment set-up above)

ROOT = os.path.dirname(os.path.abspath(__file__))


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True))


def dnnl():
    """oneDNN (Debian's libdnnl-dev) for the runtime layers where it is faster; BRANCHY_NO_DNNL=1
    builds without it."""
    if os.environ.get("BRANCHY_NO_DNNL") == "1":
        return False
    return os.path.isfile("/usr/include/oneapi/dnnl/dnnl.hpp") and bool(glob.glob("/usr/lib/*/libdnnl.so"))


DNNL = dnnl()


def dnnl_headers():
    """A directory holding only Debian's oneDNN headers, searched first: torch's include directory
    carries oneDNN 3 headers, which do not match the oneDNN 2 library we link."""
    directory = os.path.join(ROOT, "build", "dnnl-include")
    link = os.path.join(directory, "oneapi")
    if not os.path.islink(link):
        os.makedirs(directory, exist_ok=True)
        os.symlink("/usr/include/oneapi", link)
    return directory


def extension():
    runtime = [s for s in sources("csrc/runtime/*.cpp") if "layers_dnnl" not in s]
    runtime += sources("csrc/runtime/kernels/*.cpp") + sources("csrc/runtime/ops/*.cpp")
    runtime.append("csrc/runtime/layers_dnnl.cpp" if DNNL else "csrc/runtime/layers_dnnl_none.cpp")
    cpp = sources("csrc/ops/*.cpp") + sources("csrc/ops/cpu/*.cpp") + runtime
    cu = sources("csrc/ops/cuda/*.cu") if CUDA else []
    cxx_flags = ["-O3", "-Wall"] + (["-fopenmp"] if DNNL else [])
    include_dirs = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "runtime")]
    if DNNL:
        include_dirs.insert(0, dnnl_headers())
    libraries = ["dnnl", "gomp"] if DNNL else []
    say("oneDNN layers " + ("on (libdnnl)" if DNNL else "off: own kernels only (install libdnnl-dev)"))
    if cu:
        say(f"CUDA sources ({len(cu)}) with {CUDA}/bin/nvcc for TORCH_CUDA_ARCH_LIST="
            f"{os.environ['TORCH_CUDA_ARCH_LIST']}")
        return cpp_extension.CUDAExtension(
            "branchy_engine._C", cpp + cu, include_dirs=include_dirs, libraries=libraries,
            define_macros=[("BRANCHY_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags,
                                "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]})
    reason = "BRANCHY_NO_CUDA=1" if os.environ.get("BRANCHY_NO_CUDA") == "1" else "no nvcc found"
    say(f"CPU only ({reason})")
    return cpp_extension.CppExtension("branchy_engine._C", cpp, include_dirs=include_dirs,
                                      libraries=libraries, extra_compile_args={"cxx": cxx_flags})


def say(message):
    print(f"branchy_engine build: {message}", file=sys.stderr, flush=True)


ext = extension()
say(f"C++ sources ({len([s for s in ext.sources if s.endswith('.cpp')])}) against torch "
    f"{__import__('torch').__version__}")
setup(
    name="branchy_engine",
    version="0.1.0",
    description="BranchyNet early-exit networks: PyTorch training, a compiled C++/CUDA engine.",
    packages=find_packages(include=["branchy_engine", "branchy_engine.*", "training", "training.*"]),
    package_data={"branchy_engine": ["checkpoints/*.pt", "checkpoints/*.json"]},
    ext_modules=[ext],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    entry_points={"console_scripts": ["branchy = branchy_engine.commands.cli:main"],
                  # pytest-benchmark extra_info: exit fractions and cache figures
                  "pytest11": ["branchy = branchy_engine.profiling.pytest_plugin"]},
    python_requires=">=3.10",
)
