// CPU implementation of the exit decision ops: the runtime's row kernel, rows split across
// threads only when a chunk holds enough logits to pay for the hand-off.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "ops/exit_decision.h"
#include "runtime/exit_decision.h"

namespace {

using branchy::Criterion;
using branchy_ops::Outputs;

branchy::ScalarType runtime_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return branchy::ScalarType::Float16;
    case at::kBFloat16: return branchy::ScalarType::BFloat16;
    default: return branchy::ScalarType::Float32;
  }
}

Outputs decide(const at::Tensor& logits, float threshold, Criterion criterion) {
  auto out = branchy_ops::empty_outputs(logits);
  branchy::DecisionArgs args;
  args.logits = logits.data_ptr();
  args.dtype = runtime_dtype(logits.scalar_type());
  args.rows = logits.size(0);
  args.classes = logits.size(1);
  args.row_stride = logits.stride(0);
  args.criterion = criterion;
  args.threshold = threshold;
  args.score = std::get<0>(out).data_ptr<float>();
  args.exit = std::get<1>(out).data_ptr<bool>();
  args.prediction = std::get<2>(out).data_ptr<int64_t>();
  at::parallel_for(0, args.rows, branchy::rows_per_task(args.classes),
                   [&](int64_t begin, int64_t end) { branchy::decide_rows(args, begin, end); });
  return out;
}

template <Criterion criterion>
Outputs decide_scalar_threshold(const at::Tensor& logits, double threshold) {
  constexpr const char* op =
      criterion == Criterion::Entropy ? "exit_decision" : "exit_decision_maxprob";
  branchy_ops::check_threshold(threshold, op);
  return decide(branchy_ops::checked_logits(logits, op), static_cast<float>(threshold), criterion);
}

template <Criterion criterion>
Outputs decide_tensor_threshold(const at::Tensor& logits, const at::Tensor& threshold) {
  constexpr const char* op =
      criterion == Criterion::Entropy ? "exit_decision" : "exit_decision_maxprob";
  const at::Tensor checked = branchy_ops::checked_logits(logits, op);
  const float value = branchy_ops::checked_threshold(threshold, logits, op).item<float>();
  TORCH_CHECK(!std::isnan(value), op, ": threshold is NaN");
  return decide(checked, value, criterion);
}

}  // namespace

TORCH_LIBRARY_IMPL(branchy_engine, CPU, m) {
  m.impl("exit_decision", &decide_scalar_threshold<Criterion::Entropy>);
  m.impl("exit_decision.tensor", &decide_tensor_threshold<Criterion::Entropy>);
  m.impl("exit_decision_maxprob", &decide_scalar_threshold<Criterion::MaxProb>);
  m.impl("exit_decision_maxprob.tensor", &decide_tensor_threshold<Criterion::MaxProb>);
}
