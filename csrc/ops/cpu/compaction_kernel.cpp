// CPU implementation of the compaction ops: plain loops over the bucket's rows. The CPU can read
// count and rows for free, so unlike the CUDA kernels these check them and raise.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "ops/compaction.h"

namespace {

// count[0]: the leading rows of the bucket that are real; the rest are padding.
int64_t real_rows(const at::Tensor& count, int64_t b, const char* op) {
  const int64_t n = count.const_data_ptr<int32_t>()[0];
  TORCH_CHECK(0 <= n && n <= b, op, ": count[0] must be in [0, ", b, "] (the rows of leave), got ",
              n);
  return n;
}

void compact_survivors(const at::Tensor& leave, const at::Tensor& count, const at::Tensor& rows,
                       const at::Tensor& activations, const at::Tensor& next_activations,
                       const at::Tensor& next_rows, const at::Tensor& next_count) {
  branchy_ops::check_compact_survivors(leave, count, rows, activations, next_activations,
                                       next_rows, next_count);
  const int64_t n = real_rows(count, leave.size(0), "compact_survivors");
  const int64_t features = activations.size(1);
  const bool* left = leave.const_data_ptr<bool>();
  const int64_t* row = rows.const_data_ptr<int64_t>();
  const float* from = activations.const_data_ptr<float>();
  float* to = next_activations.mutable_data_ptr<float>();
  int64_t* next_row = next_rows.mutable_data_ptr<int64_t>();
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (left[i]) continue;
    std::copy_n(from + i * features, features, to + kept * features);
    next_row[kept++] = row[i];
  }
  next_count.mutable_data_ptr<int32_t>()[0] = static_cast<int32_t>(kept);
}

void scatter_exits(const at::Tensor& leave, const at::Tensor& count, const at::Tensor& rows,
                   const at::Tensor& prediction, const at::Tensor& score, int64_t exit,
                   bool everyone, const at::Tensor& out_prediction, const at::Tensor& out_exit,
                   const at::Tensor& out_score) {
  branchy_ops::check_scatter_exits(leave, count, rows, prediction, score, out_prediction,
                                   out_exit, out_score);
  const int64_t n = real_rows(count, leave.size(0), "scatter_exits");
  const int64_t batch = out_prediction.size(0);
  const bool* left = leave.const_data_ptr<bool>();
  const int64_t* row = rows.const_data_ptr<int64_t>();
  // Every row is checked before any is written, so a bad row leaves the outputs as they were.
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(!(everyone || left[i]) || (0 <= row[i] && row[i] < batch),
                "scatter_exits: rows[", i, "] = ", row[i],
                " is outside the batch of out_prediction, [0, ", batch, ")");
  }
  const int64_t* pred = prediction.const_data_ptr<int64_t>();
  const float* s = score.const_data_ptr<float>();
  int64_t* out_pred = out_prediction.mutable_data_ptr<int64_t>();
  int64_t* out_e = out_exit.mutable_data_ptr<int64_t>();
  float* out_s = out_score.mutable_data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    if (!(everyone || left[i])) continue;
    out_pred[row[i]] = pred[i];
    out_e[row[i]] = exit;
    out_s[row[i]] = s[i];
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(branchy_engine, CPU, m) {
  m.impl("compact_survivors", &compact_survivors);
  m.impl("scatter_exits", &scatter_exits);
}
