"""The training configuration: one dataclass, filled by `branchy train` or by code."""
from dataclasses import asdict, dataclass, field
from typing import List, Optional


@dataclass
class TrainConfig:
    model: str = "b_lenet"                # zoo name, or "torchvision:NAME"; a B- network (and a
                                          # torchvision one) trains its baseline first
    exits: Optional[List[str]] = None     # torchvision:NAME and modules: where the exits go (names
                                          # as attach_exits takes); None: models.default_exits
    dataset: str = "fashion-mnist"
    data_dir: Optional[str] = None
    download: bool = False
    val_fraction: float = 0.1             # held out from the training set, for calibration later
    limit: Optional[int] = None           # keep only the first N samples of each split (quick runs)
    input_size: Optional[int] = None      # resize every image to N x N
    out: str = "runs/b_lenet"             # directory for checkpoints and their JSON summaries
    baseline_epochs: int = 50             # phase 1: the baseline alone
    epochs: int = 50                      # phase 2: all exits jointly, from the phase-1 weights
    batch_size: int = 512                 # global; split evenly over torchrun processes
    lr: float = 1e-3
    beta1: float = 0.9                    # what the authors' code ran (the paper says 0.99)
    beta2: float = 0.999
    adam_eps: float = 1e-8
    exit_weights: Optional[List[float]] = None   # per-exit loss weights; default all 1.0
    init_from: Optional[str] = None       # skips phase 1: a zoo network's phase-1 checkpoint
                                          # to start phase 2 from; else a plain state_dict file
    freeze_backbone: bool = False         # train the early-exit heads only (no phase 1)
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = None
    save_every: int = 0                   # also checkpoint every N steps, not only at epoch ends
    resume: bool = False
    eval_batch_size: int = 1000
    command: str = ""                     # the command line, recorded in checkpoints
    extra: dict = field(default_factory=dict)

    # Options that may differ between a run and its --resume; every other one must match.
    RESUMABLE_CHANGES = ("out", "resume", "threads", "device", "command", "data_dir", "download",
                         "eval_batch_size", "extra")

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self):
        """Raises ValueError naming the first option that makes no sense."""
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.baseline_epochs < 0 or self.epochs < 0:
            raise ValueError("--epochs and --baseline-epochs must be >= 0")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"Adam betas must lie in [0, 1), got {self.beta1}, {self.beta2}")
        if self.exit_weights is not None and any(not w >= 0 for w in self.exit_weights):
            raise ValueError(f"--exit-weights must be >= 0, got {self.exit_weights}")
        if self.save_every < 0:
            raise ValueError(f"--save-every must be >= 0, got {self.save_every}")
        if self.input_size is not None and self.input_size < 1:
            raise ValueError(f"--input-size must be >= 1, got {self.input_size}")
        if self.exits is not None and (not self.exits or not all(self.exits)):
            raise ValueError(f"--exits needs one or more names, comma-separated, got {self.exits}")
