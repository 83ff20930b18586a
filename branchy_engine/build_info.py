"""Prints what the compiled extension holds: `python -m branchy_engine.build_info`."""
import torch

from branchy_engine import _extension


def describe() -> str:
    _C = _extension.load()
    cuda = "CUDA kernels compiled" if _C.with_cuda else "CPU only (no CUDA kernels)"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU visible"
    return (f"branchy_engine._C: built against torch {_C.torch_version}; {cuda}; "
            f"CPU kernels: {_C.cpu_isa()} (best this CPU supports: {_C.best_cpu_isa}); {gpu}")


if __name__ == "__main__":
    print(describe())
