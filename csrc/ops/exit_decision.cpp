// Schemas of the exit decision ops and the argument checks both backends share. The kernels
// register themselves from cpu/exit_decision_kernel.cpp and cuda/exit_decision_kernel.cu.
#include "ops/exit_decision.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/EmptyTensor.h>
#include <torch/library.h>

#include <cmath>

namespace branchy_ops {

at::Tensor checked_logits(const at::Tensor& logits, const char* op) {
  TORCH_CHECK(logits.dim() == 2, op, ": logits must be 2-D [batch, classes], got shape ",
              logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": logits must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(logits.size(1) >= 1, op, ": logits need at least one class, got shape ",
              logits.sizes());
  return logits.stride(1) == 1 ? logits : logits.contiguous();
}

void check_threshold(double threshold, const char* op) {
  TORCH_CHECK(!std::isnan(threshold), op, ": threshold is NaN");
}

at::Tensor checked_threshold(const at::Tensor& threshold, const at::Tensor& logits,
                             const char* op) {
  TORCH_CHECK(threshold.numel() == 1, op, ": threshold must have one element, got shape ",
              threshold.sizes());
  TORCH_CHECK(at::isFloatingType(threshold.scalar_type()), op,
              ": threshold must be a floating-point tensor, got ", threshold.scalar_type());
  TORCH_CHECK(threshold.device() == logits.device(), op, ": threshold is on ", threshold.device(),
              " but logits are on ", logits.device());
  return threshold.reshape({1}).to(at::kFloat);
}

Outputs empty_outputs(const at::Tensor& logits) {
  const int64_t rows = logits.size(0);
  if (logits.is_cpu()) {
    // Straight to the CPU allocator: through the dispatcher, three at::empty calls cost more than
    // deciding a small batch.
    return {at::detail::empty_cpu({rows}, at::kFloat), at::detail::empty_cpu({rows}, at::kBool),
            at::detail::empty_cpu({rows}, at::kLong)};
  }
  const auto opts = logits.options();
  return {at::empty({rows}, opts.dtype(at::kFloat)), at::empty({rows}, opts.dtype(at::kBool)),
          at::empty({rows}, opts.dtype(at::kLong))};
}

}  // namespace branchy_ops

TORCH_LIBRARY(branchy_engine, m) {
  // The tensor-threshold overloads come first: torch.ops tries overloads in order, and the float
  // one would otherwise accept a one-element tensor by reading it back to the host.
  m.def(
      "exit_decision.tensor(Tensor logits, Tensor threshold) -> "
      "(Tensor entropy, Tensor leave, Tensor prediction)");
  m.def(
      "exit_decision(Tensor logits, float threshold) -> "
      "(Tensor entropy, Tensor leave, Tensor prediction)");
  m.def(
      "exit_decision_maxprob.tensor(Tensor logits, Tensor threshold) -> "
      "(Tensor max_prob, Tensor leave, Tensor prediction)");
  m.def(
      "exit_decision_maxprob(Tensor logits, float threshold) -> "
      "(Tensor max_prob, Tensor leave, Tensor prediction)");
}

namespace {

// The ops decide; they have no gradient (like argmax), so their outputs never require grad.
// Registering this for Autograd also spares every call the boxed autograd fallback.
template <class Threshold>
branchy_ops::Outputs below_autograd(const c10::OperatorHandle& handle, const at::Tensor& logits,
                                    Threshold threshold) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return handle.typed<branchy_ops::Outputs(const at::Tensor&, Threshold)>().call(logits, threshold);
}

template <const char* name, const char* overload, class Threshold>
branchy_ops::Outputs autograd_kernel(const at::Tensor& logits, Threshold threshold) {
  static const c10::OperatorHandle handle =
      c10::Dispatcher::singleton().findSchemaOrThrow(name, overload);
  return below_autograd<Threshold>(handle, logits, threshold);
}

constexpr char kEntropy[] = "branchy_engine::exit_decision";
constexpr char kMaxProb[] = "branchy_engine::exit_decision_maxprob";
constexpr char kFloat[] = "";
constexpr char kTensor[] = "tensor";

}  // namespace

TORCH_LIBRARY_IMPL(branchy_engine, Autograd, m) {
  m.impl("exit_decision", &autograd_kernel<kEntropy, kFloat, double>);
  m.impl("exit_decision.tensor", &autograd_kernel<kEntropy, kTensor, const at::Tensor&>);
  m.impl("exit_decision_maxprob", &autograd_kernel<kMaxProb, kFloat, double>);
  m.impl("exit_decision_maxprob.tensor", &autograd_kernel<kMaxProb, kTensor, const at::Tensor&>);
}
