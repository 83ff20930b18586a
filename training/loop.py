"""One training phase: epochs of Adam steps on sum_n w_n * cross_entropy(exit n), with evaluation
per exit after each epoch and resumable checkpoints."""
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from training import distributed


@dataclass
class PhaseState:
    """Where a phase stands: what a checkpoint's train_state holds (plus the history)."""
    epoch: int = 0                 # epochs finished
    step: int = 0                  # batches finished in the current epoch
    done: bool = False
    optimizer: Optional[dict] = None
    rng: Optional[List[torch.Tensor]] = None   # per rank, for dropout to continue identically
    history: list = field(default_factory=list)
    wall_time_s: float = 0.0


@torch.inference_mode()
def evaluate(net, data, split, device, batch_size=1000) -> List[float]:
    """Accuracy (%) of every exit of `net` on `split` (a data.Split); [] for an empty split."""
    if len(split) == 0:
        return []
    was_training = net.training
    net.eval()
    correct = torch.zeros(net.num_exits, dtype=torch.long)
    for index in torch.arange(len(split)).split(batch_size):
        images, labels = split.batch(index)
        logits = net(data.prepare(images.to(device)))
        for n, z in enumerate(logits):
            correct[n] += (z.argmax(1).cpu() == labels).sum()
    net.train(was_training)
    return [round(100.0 * int(c) / len(split), 3) for c in correct]


def _fmt(values):
    return "/".join(f"{v:.2f}" for v in values)


def run_phase(ctx, net, data, cfg, epochs: int, weights: List[float], state: PhaseState,
              save: Callable[[PhaseState], None], label: str) -> PhaseState:
    """Trains `net` from `state` until `epochs` epochs are done; calls save() at every checkpoint.

    Args:
        ctx: distributed.Context. net: a BranchyNet on ctx.device. data: a data.Dataset.
        cfg: TrainConfig. weights: one loss weight per exit. state: where to start (resume).
        save: writes a checkpoint of the current state (called on rank 0 only).
        label: the network's name, for progress output.
    """
    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"--batch-size {cfg.batch_size} does not split evenly over "
                         f"{ctx.world_size} processes")
    model = DistributedDataParallel(net) if ctx.distributed else net
    # Only what trains: a frozen backbone's parameters (BranchyNet.freeze_backbone) stay out.
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr,
                                 betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    if state.rng is not None:
        torch.set_rng_state(state.rng[ctx.rank])
    else:
        # A fresh phase seeds its own random stream (dropout), so it does not depend on whether
        # the phase before it ran in this process or was loaded from its checkpoint.
        torch.manual_seed(cfg.seed + 7919 * ctx.rank)
    sampler = DistributedSampler(range(len(data.train)), num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=cfg.seed)
    local_batch = cfg.batch_size // ctx.world_size
    weight = torch.tensor(weights, device=ctx.device)

    started, earlier = time.perf_counter(), state.wall_time_s

    def wall_time():
        return earlier + time.perf_counter() - started

    def snapshot(epoch, step, done):
        rng = distributed.gather(ctx, torch.get_rng_state())
        return PhaseState(epoch=epoch, step=step, done=done, optimizer=optimizer.state_dict(),
                          rng=rng, history=state.history, wall_time_s=wall_time())

    net.train()
    for epoch in range(state.epoch, epochs):
        sampler.set_epoch(epoch)
        batches = torch.tensor(list(sampler), dtype=torch.long).split(local_batch)
        first = state.step if epoch == state.epoch else 0
        loss_sum = torch.zeros(net.num_exits)
        correct = torch.zeros(net.num_exits)
        seen = 0
        bar = tqdm(total=len(batches), initial=first, desc=f"{label} epoch {epoch + 1}/{epochs}",
                   disable=(not ctx.is_main) or None, leave=False, dynamic_ncols=True)
        for step in range(first, len(batches)):
            images, labels = data.train.batch(batches[step])
            x = data.prepare(images.to(ctx.device, non_blocking=True))
            y = labels.to(ctx.device, non_blocking=True)
            logits = model(x)
            losses = torch.stack([F.cross_entropy(z, y) for z in logits])
            loss = (weight * losses).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            with torch.no_grad():
                loss_sum += losses.detach().cpu() * len(y)
                correct += torch.stack([(z.argmax(1) == y).sum() for z in logits]).cpu()
                seen += len(y)
            bar.update(1)
            bar.set_postfix_str(f"loss {_fmt((loss_sum / seen).tolist())} "
                                f"acc {_fmt((100 * correct / seen).tolist())}")
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < len(batches):
                snap = snapshot(epoch, step + 1, False)
                if ctx.is_main:
                    save(snap)
                distributed.barrier(ctx)
        bar.close()

        if ctx.is_main:
            val = evaluate(net, data, data.val, ctx.device, cfg.eval_batch_size)
            test = evaluate(net, data, data.test, ctx.device, cfg.eval_batch_size)
            state.history.append({
                "epoch": epoch + 1,
                "train_loss": [round(v, 5) for v in (loss_sum / max(seen, 1)).tolist()],
                "train_accuracy": [round(v, 3) for v in (100 * correct / max(seen, 1)).tolist()],
                "val_accuracy": val, "test_accuracy": test,
                "wall_time_s": round(wall_time(), 2)})
            print(f"{label} epoch {epoch + 1}/{epochs}: loss {_fmt((loss_sum / max(seen, 1)).tolist())}"
                  f" | accuracy % per exit: train {_fmt((100 * correct / max(seen, 1)).tolist())}"
                  f" val {_fmt(val) or '-'} test {_fmt(test)} | {wall_time():.1f} s", flush=True)
        snap = snapshot(epoch + 1, 0, epoch + 1 == epochs)
        if ctx.is_main:
            save(snap)
        distributed.barrier(ctx)
        state = snap
    state.done = state.epoch >= epochs
    return state
