"""Per-sample early exit in a batch: thin wrappers over the compaction ops in torch.ops.branchy_engine.

A stage runs on a fixed-size bucket of b rows, of which the first count[0] are real. After its exit
decision, scatter_exits writes the rows that leave into the whole batch's outputs, and
compact_survivors moves the rows that stay to the front of the next stage's bucket. Both work in
place on preallocated tensors, keep their counts in device memory, never synchronise with the host
and never allocate, so they can be captured into a CUDA graph. They have no gradient.
"""
import torch
from torch import Tensor

from branchy_engine._extension import load

load()


def compact_survivors(leave: Tensor, count: Tensor, rows: Tensor, activations: Tensor,
                      next_activations: Tensor, next_rows: Tensor, next_count: Tensor) -> None:
    """Copies the bucket's surviving rows, in order, to the front of the next bucket.

    Args:
        leave: [b] bool, the stage's exit decision per row of the bucket.
        count: [1] int32, the real rows of the bucket: rows i >= count[0] are padding and never
            survive. CPU: an error outside [0, b]; CUDA: clamped to [0, b] (read on the device).
        rows: [b] int64, each row's index in the whole batch.
        activations: [b, F] float32, the stage's output per row.
        next_activations: [c, F] float32 with c >= b; must not share memory with activations.
        next_rows: [c] int64.
        next_count: [1] int32.

    The k rows i < count[0] with leave[i] false go, by increasing i, to next_activations[:k] and
    their rows[i] to next_rows[:k]; next_count[0] = k. next_activations[k:] and next_rows[k:] are
    left as they were. All tensors contiguous and on one device; no written tensor may share
    memory with another argument.
    """
    torch.ops.branchy_engine.compact_survivors.default(leave, count, rows, activations,
                                                      next_activations, next_rows, next_count)


def scatter_exits(leave: Tensor, count: Tensor, rows: Tensor, prediction: Tensor, score: Tensor,
                  exit: int, everyone: bool, out_prediction: Tensor, out_exit: Tensor,
                  out_score: Tensor) -> None:
    """Writes the bucket's exiting rows to their places in the whole batch's outputs.

    Args:
        leave, count, rows: as for compact_survivors ([b] bool, [1] int32, [b] int64).
        prediction: [b] int64 and score: [b] float32, as exit_decision returns them.
        exit: the exit's index, written to out_exit.
        everyone: True at the last exit, where every real row leaves whatever leave says.
        out_prediction: [B] int64, out_exit: [B] int64, out_score: [B] float32, B the batch size.

    For each row i < count[0] with leave[i] (every such i when everyone):
    out_prediction[rows[i]] = prediction[i], out_exit[rows[i]] = exit, out_score[rows[i]] = score[i].
    The rows written are assumed distinct. A row outside [0, B) is an error on the CPU (raised before
    anything is written); on CUDA it is skipped, since the device cannot report it without a
    synchronisation. Same layout rules as compact_survivors.
    """
    torch.ops.branchy_engine.scatter_exits.default(leave, count, rows, prediction, score, exit,
                                                  everyone, out_prediction, out_exit, out_score)


# The ops only write into their arguments (the schemas mark which), so under FakeTensor tracing
# (torch.compile) there is nothing to produce.
@torch.library.register_fake("branchy_engine::compact_survivors")
def _compact_survivors_fake(leave, count, rows, activations, next_activations, next_rows, next_count):
    return None


@torch.library.register_fake("branchy_engine::scatter_exits")
def _scatter_exits_fake(leave, count, rows, prediction, score, exit, everyone, out_prediction,
                        out_exit, out_score):
    return None
