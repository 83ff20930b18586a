"""More than one process: torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; we join the process group.

Under `torchrun --nproc_per_node=N branchy train ...` every process trains a shard of each batch
(DistributedSampler), DDP averages the gradients, and rank 0 alone evaluates and writes checkpoints.
A single process runs the same code with world size 1.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> Context:
    """Joins the process group when launched by torchrun; picks this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(device=torch.device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        dev = torch.device(device)
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Context(rank=rank, world_size=world_size, device=dev)


def teardown(ctx: Context):
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context):
    if ctx.distributed:
        dist.barrier()


def gather(ctx: Context, obj):
    """Every rank's `obj`, in rank order (a one-element list for a single process)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
