"""The GPU engine (per-stage CUDA graphs, device-side exits, per-sample exits in batches)."""
from branchy_engine.runtime.gpu.engine import GpuEngine, conditional_support

__all__ = ["GpuEngine", "conditional_support"]
