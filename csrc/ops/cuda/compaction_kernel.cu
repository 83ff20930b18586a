// CUDA implementation of the compaction ops. They run inside captured CUDA graphs, so they neither
// synchronise nor allocate: count is read on the device, and the survivors' positions are
// computed into next_rows itself.
//
// compact_survivors is two launches:
//  1. survivor_scan_kernel, one block of 1024 threads: walks the bucket in chunks of 1024 rows; a
//     ballot and a scan of the 32 per-warp totals give each survivor its place among the chunk's,
//     a running total carries the chunks before it. The survivor at place j writes its own index
//     i into next_rows[j] (scratch), and the block writes next_count.
//  2. gather_kernel: a group of threads per place j < next_count reads i from next_rows[j], copies
//     activations row i to next_activations row j (float4 when it can), then the group's first
//     thread replaces next_rows[j] with rows[i]. One block holds whole groups, so a barrier
//     orders every read of the scratch index before its overwrite; places at or past next_count
//     are never touched. (Splitting a long row across blocks would race on that index.)
//
// A count outside [0, b] is clamped, and scatter_exits skips rows outside [0, B): the device
// cannot report them without a synchronisation. The CPU kernels raise for both.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "ops/compaction.h"

namespace {

constexpr int kWarp = 32;
constexpr int kScanThreads = 1024;
constexpr int kScanWarps = kScanThreads / kWarp;
static_assert(kScanWarps == kWarp, "one warp scans the per-warp totals");
constexpr int kThreads = 256;
constexpr unsigned kAllLanes = 0xffffffffu;

__device__ __forceinline__ int64_t real_rows(const int32_t* count, int64_t b) {
  const int64_t n = *count;
  return n < 0 ? 0 : (n > b ? b : n);
}

struct ScanParams {
  const bool* leave;
  const int32_t* count;
  int64_t b;
  int64_t* next_rows;  // receives each survivor's index in the bucket
  int32_t* next_count;
};

__global__ void __launch_bounds__(kScanThreads) survivor_scan_kernel(ScanParams p) {
  __shared__ int warp_total[kScanWarps];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t n = real_rows(p.count, p.b);
  // Survivors in the chunks already done: the same in every thread, so the loop is uniform and
  // every thread reaches every barrier and full-warp shuffle.
  int64_t kept = 0;
  for (int64_t chunk = 0; chunk < n; chunk += kScanThreads) {
    const int64_t i = chunk + threadIdx.x;
    const bool survives = i < n && !p.leave[i];
    const unsigned ballot = __ballot_sync(kAllLanes, survives);
    if (lane == 0) warp_total[warp] = __popc(ballot);
    __syncthreads();
    // Each warp scans the 32 totals itself, which spares a second barrier to share one scan.
    const int total = warp_total[lane];
    int inclusive = total;
    for (int d = 1; d < kWarp; d *= 2) {
      const int up = __shfl_up_sync(kAllLanes, inclusive, d);
      if (lane >= d) inclusive += up;
    }
    const int before_warp = __shfl_sync(kAllLanes, inclusive - total, warp);
    const int in_chunk = __shfl_sync(kAllLanes, inclusive, kWarp - 1);
    if (survives) {
      const int before_lane = __popc(ballot & ((1u << lane) - 1u));
      p.next_rows[kept + before_warp + before_lane] = i;
    }
    kept += in_chunk;
    __syncthreads();  // the next chunk rewrites warp_total
  }
  if (threadIdx.x == 0) *p.next_count = static_cast<int32_t>(kept);
}

struct GatherParams {
  const float* activations;
  const int64_t* rows;
  const int32_t* next_count;
  int64_t vectors;      // per row: features / the vector width
  int group;            // threads per row: a power of two from kWarp to kThreads
  float* next_activations;
  int64_t* next_rows;   // in: each survivor's index in the bucket; out: its row in the batch
};

template <class Vector>
__global__ void __launch_bounds__(kThreads) gather_kernel(GatherParams p) {
  const int64_t j = int64_t(blockIdx.x) * (kThreads / p.group) + threadIdx.x / p.group;
  const int lane = threadIdx.x % p.group;
  const bool kept = j < *p.next_count;
  const int64_t i = kept ? p.next_rows[j] : 0;
  __syncthreads();  // every thread of the group holds i before the group's first overwrites it
  if (!kept) return;
  if (lane == 0) p.next_rows[j] = p.rows[i];
  const Vector* from = reinterpret_cast<const Vector*>(p.activations) + i * p.vectors;
  Vector* to = reinterpret_cast<Vector*>(p.next_activations) + j * p.vectors;
  for (int64_t v = lane; v < p.vectors; v += p.group) to[v] = from[v];
}

template <bool everyone>
__global__ void __launch_bounds__(kThreads) scatter_kernel(
    const bool* leave, const int32_t* count, const int64_t* rows, const int64_t* prediction,
    const float* score, int64_t b, int64_t batch, int64_t exit, int64_t* out_prediction,
    int64_t* out_exit, float* out_score) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= real_rows(count, b) || !(everyone || leave[i])) return;
  const int64_t row = rows[i];
  if (row < 0 || row >= batch) return;
  out_prediction[row] = prediction[i];
  out_exit[row] = exit;
  out_score[row] = score[i];
}

int64_t blocks_for(int64_t items, int64_t per_block, const char* op) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), op, ": ", items,
              " rows is more than one launch covers");
  return blocks;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void compact_survivors(const at::Tensor& leave, const at::Tensor& count, const at::Tensor& rows,
                       const at::Tensor& activations, const at::Tensor& next_activations,
                       const at::Tensor& next_rows, const at::Tensor& next_count) {
  branchy_ops::check_compact_survivors(leave, count, rows, activations, next_activations,
                                       next_rows, next_count);
  const c10::cuda::CUDAGuard guard(leave.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t b = leave.size(0), features = activations.size(1);

  ScanParams scan{leave.const_data_ptr<bool>(), count.const_data_ptr<int32_t>(), b,
                  next_rows.mutable_data_ptr<int64_t>(), next_count.mutable_data_ptr<int32_t>()};
  survivor_scan_kernel<<<1, kScanThreads, 0, stream>>>(scan);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (b == 0) return;

  GatherParams gather;
  gather.activations = activations.const_data_ptr<float>();
  gather.rows = rows.const_data_ptr<int64_t>();
  gather.next_count = next_count.const_data_ptr<int32_t>();
  gather.next_activations = next_activations.mutable_data_ptr<float>();
  gather.next_rows = next_rows.mutable_data_ptr<int64_t>();
  const bool vector4 = features % 4 == 0 && aligned16(gather.activations) &&
                       aligned16(gather.next_activations);
  gather.vectors = vector4 ? features / 4 : features;
  gather.group = kWarp;
  while (gather.group < kThreads && gather.group < gather.vectors) gather.group *= 2;
  const int64_t blocks = blocks_for(b, kThreads / gather.group, "compact_survivors");
  if (vector4) {
    gather_kernel<float4><<<blocks, kThreads, 0, stream>>>(gather);
  } else {
    gather_kernel<float><<<blocks, kThreads, 0, stream>>>(gather);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void scatter_exits(const at::Tensor& leave, const at::Tensor& count, const at::Tensor& rows,
                   const at::Tensor& prediction, const at::Tensor& score, int64_t exit,
                   bool everyone, const at::Tensor& out_prediction, const at::Tensor& out_exit,
                   const at::Tensor& out_score) {
  branchy_ops::check_scatter_exits(leave, count, rows, prediction, score, out_prediction,
                                   out_exit, out_score);
  const int64_t b = leave.size(0);
  if (b == 0) return;
  const c10::cuda::CUDAGuard guard(leave.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t blocks = blocks_for(b, kThreads, "scatter_exits");
  auto* kernel = everyone ? scatter_kernel<true> : scatter_kernel<false>;
  kernel<<<blocks, kThreads, 0, stream>>>(
      leave.const_data_ptr<bool>(), count.const_data_ptr<int32_t>(),
      rows.const_data_ptr<int64_t>(), prediction.const_data_ptr<int64_t>(),
      score.const_data_ptr<float>(), b, out_prediction.size(0), exit,
      out_prediction.mutable_data_ptr<int64_t>(), out_exit.mutable_data_ptr<int64_t>(),
      out_score.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(branchy_engine, CUDA, m) {
  m.impl("compact_survivors", &compact_survivors);
  m.impl("scatter_exits", &scatter_exits);
}
