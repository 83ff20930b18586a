"""Joint training of BranchyNets (layer 2): baseline pre-training, joint phase, checkpoints, DDP."""
from training.config import TrainConfig
from training.pipeline import train

__all__ = ["TrainConfig", "train"]
