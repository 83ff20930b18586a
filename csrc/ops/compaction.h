// Argument checks shared by the CPU and CUDA implementations of the compaction ops (schemas in
// compaction.cpp): compact_survivors keeps a stage's surviving rows for the next stage, and
// scatter_exits writes the rows that exit to their places in the whole batch.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace branchy_ops {

// The C++ signatures every kernel of the two ops has (CPU, CUDA, Autograd). The written arguments
// are const references too: the ops write through their data, never rebind them.
using CompactSurvivorsFn = void(const at::Tensor& leave, const at::Tensor& count,
                                const at::Tensor& rows, const at::Tensor& activations,
                                const at::Tensor& next_activations, const at::Tensor& next_rows,
                                const at::Tensor& next_count);
using ScatterExitsFn = void(const at::Tensor& leave, const at::Tensor& count,
                            const at::Tensor& rows, const at::Tensor& prediction,
                            const at::Tensor& score, int64_t exit, bool everyone,
                            const at::Tensor& out_prediction, const at::Tensor& out_exit,
                            const at::Tensor& out_score);

// Checks dtypes and shapes (leave bool [b], count int32 [1], rows int64 [b], activations float32
// [b, F], next_activations float32 [c >= b, F], next_rows int64 [c], next_count int32 [1]), that
// all are on one device and contiguous, and that no written tensor overlaps another argument.
// Reads no tensor data, so it costs no synchronisation.
void check_compact_survivors(const at::Tensor& leave, const at::Tensor& count,
                             const at::Tensor& rows, const at::Tensor& activations,
                             const at::Tensor& next_activations, const at::Tensor& next_rows,
                             const at::Tensor& next_count);

// The same for scatter_exits: leave bool [b], count int32 [1], rows int64 [b], prediction int64
// [b], score float32 [b], out_prediction int64 [B], out_exit int64 [B], out_score float32 [B].
void check_scatter_exits(const at::Tensor& leave, const at::Tensor& count, const at::Tensor& rows,
                         const at::Tensor& prediction, const at::Tensor& score,
                         const at::Tensor& out_prediction, const at::Tensor& out_exit,
                         const at::Tensor& out_score);

}  // namespace branchy_ops
