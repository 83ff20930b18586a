// CUDA implementation of the exit decision ops. The arithmetic is the runtime's (exit_math.h);
// a warp owns a row when the row is short, a block when it is long. The threshold may live in
// device memory, so a captured CUDA graph can change it between replays.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "ops/exit_decision.h"
#include "runtime/exit_math.h"

namespace {

using branchy::Criterion;
using branchy::RowState;
using branchy_ops::Outputs;

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;
// Rows longer than this get a whole block; shorter ones a warp each.
constexpr int64_t kWarpRowMaxClasses = 1024;

template <class T>
struct Params {
  const T* logits;
  int64_t rows, classes, row_stride;
  const float* threshold_ptr;  // null: use threshold_value
  float threshold_value;
  float* score;
  bool* leave;  // the row leaves at this exit
  int64_t* prediction;
};

__device__ __forceinline__ RowState shuffle_xor(const RowState& s, int lane_mask) {
  RowState o;
  o.m = __shfl_xor_sync(0xffffffffu, s.m, lane_mask);
  o.s = __shfl_xor_sync(0xffffffffu, s.s, lane_mask);
  o.t = __shfl_xor_sync(0xffffffffu, s.t, lane_mask);
  o.argmax = __shfl_xor_sync(0xffffffffu, s.argmax, lane_mask);
  return o;
}

// After this every lane of the `width` lowest lanes holds their merged state (width: a power of 2).
__device__ __forceinline__ void warp_merge(RowState& st, int width = kWarp) {
  // NaN and +inf are rare: shuffle their counters only when some lane has seen one.
  const bool special = __any_sync(0xffffffffu, (st.nan_count | st.inf_count) != 0);
  for (int mask = width / 2; mask > 0; mask /= 2) {
    RowState other = shuffle_xor(st, mask);
    if (special) {
      other.nan_count = __shfl_xor_sync(0xffffffffu, st.nan_count, mask);
      other.first_nan = __shfl_xor_sync(0xffffffffu, st.first_nan, mask);
      other.inf_count = __shfl_xor_sync(0xffffffffu, st.inf_count, mask);
      other.first_inf = __shfl_xor_sync(0xffffffffu, st.first_inf, mask);
    }
    branchy::merge(st, other);
  }
}

// Columns start, start + step, ... of one row, in increasing order.
template <class T>
__device__ __forceinline__ RowState scan_row(const T* row, int64_t classes, int start, int step) {
  RowState st;
  for (int64_t i = start; i < classes; i += step) branchy::update(st, static_cast<float>(row[i]), i);
  return st;
}

template <class T, Criterion criterion>
__device__ __forceinline__ void write(const Params<T>& p, int64_t r, const RowState& st) {
  const float threshold = p.threshold_ptr ? *p.threshold_ptr : p.threshold_value;
  const branchy::Decision d = branchy::finalize(st, p.classes, criterion, threshold);
  p.score[r] = d.score;
  p.leave[r] = d.exit;
  p.prediction[r] = d.prediction;
}

template <class T, Criterion criterion>
__global__ void __launch_bounds__(kThreads) warp_per_row_kernel(Params<T> p) {
  const int lane = threadIdx.x % kWarp;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (r >= p.rows) return;  // whole warps leave together
  RowState st = scan_row(p.logits + r * p.row_stride, p.classes, lane, kWarp);
  warp_merge(st);
  if (lane == 0) write<T, criterion>(p, r, st);
}

template <class T, Criterion criterion>
__global__ void __launch_bounds__(kThreads) block_per_row_kernel(Params<T> p) {
  // Raw storage: RowState's default member initialisers would make a RowState array a
  // dynamically initialised __shared__ variable, which CUDA does not support (nvcc warning
  // #20054-D). Every slot is written below before any is read.
  __shared__ alignas(RowState) unsigned char partial_storage[kWarpsPerBlock * sizeof(RowState)];
  RowState* partial = reinterpret_cast<RowState*>(partial_storage);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t r = blockIdx.x;
  RowState st = scan_row(p.logits + r * p.row_stride, p.classes, threadIdx.x, kThreads);
  warp_merge(st);
  if (lane == 0) partial[warp] = st;
  __syncthreads();
  if (warp == 0) {
    st = lane < kWarpsPerBlock ? partial[lane] : RowState{};
    warp_merge(st, kWarpsPerBlock);
    if (lane == 0) write<T, criterion>(p, r, st);
  }
}

template <class T, Criterion criterion>
void launch(const at::Tensor& logits, const float* threshold_ptr, float threshold_value,
            Outputs& out) {
  Params<T> p;
  p.logits = reinterpret_cast<const T*>(logits.data_ptr());
  p.rows = logits.size(0);
  p.classes = logits.size(1);
  p.row_stride = logits.stride(0);
  p.threshold_ptr = threshold_ptr;
  p.threshold_value = threshold_value;
  p.score = std::get<0>(out).data_ptr<float>();
  p.leave = std::get<1>(out).data_ptr<bool>();
  p.prediction = std::get<2>(out).data_ptr<int64_t>();
  if (p.rows == 0) return;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool warp_rows = p.classes <= kWarpRowMaxClasses;
  const int64_t blocks = warp_rows ? (p.rows + kWarpsPerBlock - 1) / kWarpsPerBlock : p.rows;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "exit_decision: ", p.rows,
              " rows is more than one launch covers");
  if (warp_rows) {
    warp_per_row_kernel<T, criterion><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    block_per_row_kernel<T, criterion><<<blocks, kThreads, 0, stream>>>(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Call under a CUDAGuard for the logits' device.
template <Criterion criterion>
Outputs decide(const at::Tensor& logits, const float* threshold_ptr, float threshold_value) {
  Outputs out = branchy_ops::empty_outputs(logits);
  switch (logits.scalar_type()) {
    case at::kHalf:
      launch<at::Half, criterion>(logits, threshold_ptr, threshold_value, out);
      break;
    case at::kBFloat16:
      launch<at::BFloat16, criterion>(logits, threshold_ptr, threshold_value, out);
      break;
    default:
      launch<float, criterion>(logits, threshold_ptr, threshold_value, out);
  }
  return out;
}

template <Criterion criterion>
constexpr const char* op_name() {
  return criterion == Criterion::Entropy ? "exit_decision" : "exit_decision_maxprob";
}

template <Criterion criterion>
Outputs decide_scalar_threshold(const at::Tensor& logits, double threshold) {
  branchy_ops::check_threshold(threshold, op_name<criterion>());
  const c10::cuda::CUDAGuard guard(logits.device());
  return decide<criterion>(branchy_ops::checked_logits(logits, op_name<criterion>()), nullptr,
                           static_cast<float>(threshold));
}

template <Criterion criterion>
Outputs decide_tensor_threshold(const at::Tensor& logits, const at::Tensor& threshold) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor checked = branchy_ops::checked_logits(logits, op_name<criterion>());
  const at::Tensor t = branchy_ops::checked_threshold(threshold, logits, op_name<criterion>());
  // Checking for NaN reads the value back: a synchronisation per eager call with a tensor
  // threshold (documented), and one a stream being captured into a graph forbids; under capture a
  // NaN threshold simply lets no row exit.
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None) {
    TORCH_CHECK(!std::isnan(t.item<float>()), op_name<criterion>(), ": threshold is NaN");
  }
  return decide<criterion>(checked, t.data_ptr<float>(), 0.0f);
}

}  // namespace

TORCH_LIBRARY_IMPL(branchy_engine, CUDA, m) {
  m.impl("exit_decision", &decide_scalar_threshold<Criterion::Entropy>);
  m.impl("exit_decision.tensor", &decide_tensor_threshold<Criterion::Entropy>);
  m.impl("exit_decision_maxprob", &decide_scalar_threshold<Criterion::MaxProb>);
  m.impl("exit_decision_maxprob.tensor", &decide_tensor_threshold<Criterion::MaxProb>);
}
