"""The runtime: the CPU engine (engine.py, over the compiled _C), the GPU engine (gpu/), the torch ops
(ops.py, compaction.py) and their plain-PyTorch references (reference.py)."""
