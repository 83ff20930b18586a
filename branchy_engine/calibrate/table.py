"""One pass over a split: every exit's entropy, max probability, prediction and correctness.

Any threshold vector's outcome is then computed from this table without running the network again.
"""
from dataclasses import dataclass

import torch
from torch import Tensor

from branchy_engine.runtime.ops import exit_decision, exit_decision_maxprob


@dataclass
class ExitTable:
    """Per sample n and exit e, from the fused exit ops on the network's own logits."""
    entropy: Tensor      # [N, E] float32, nats
    max_prob: Tensor     # [N, E] float32
    prediction: Tensor   # [N, E] int64
    labels: Tensor       # [N] int64

    @property
    def correct(self) -> Tensor:
        """[N, E] bool: exit e's prediction is right."""
        return self.prediction == self.labels[:, None]

    @property
    def num_samples(self) -> int:
        return self.labels.shape[0]

    @property
    def num_exits(self) -> int:
        return self.entropy.shape[1]

    def exit_accuracy(self) -> Tensor:
        """[E] accuracy (%) of each exit taking every sample."""
        return 100.0 * self.correct.double().mean(0)


@torch.inference_mode()
def collect(net, data, split, batch_size: int = 1000, device: str = "cpu") -> ExitTable:
    """Runs `net` (a BranchyNet) once over `split` of `data` (a data.Dataset), all exits, batched."""
    if len(split) == 0:
        raise ValueError("the split is empty: nothing to calibrate on (was the model trained with "
                         "--val-fraction 0?)")
    net = net.eval().to(device)
    entropy, max_prob, prediction = [], [], []
    for index in torch.arange(len(split)).split(batch_size):
        images, _ = split.batch(index)
        logits = net(data.prepare(images.to(device)))
        h, p, pred = [], [], []
        for z in logits:
            e, _, argmax = exit_decision(z.float(), 0.0)
            h.append(e)
            p.append(exit_decision_maxprob(z.float(), 0.0)[0])
            pred.append(argmax)
        entropy.append(torch.stack(h, 1).cpu())
        max_prob.append(torch.stack(p, 1).cpu())
        prediction.append(torch.stack(pred, 1).cpu())
    return ExitTable(torch.cat(entropy), torch.cat(max_prob), torch.cat(prediction),
                     split.labels.clone())
