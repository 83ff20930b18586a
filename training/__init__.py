"""Joint training of BranchyNets (layer 2): baseline pre-training, joint phase, checkpoints, DDP.

It uses branchy_engine (networks, data, branchy_engine.checkpoint) and no module of
branchy_engine but the command layer uses it."""
from training.config import TrainConfig
from training.pipeline import train

__all__ = ["TrainConfig", "train"]
