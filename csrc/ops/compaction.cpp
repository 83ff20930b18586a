// Schemas of the compaction ops, the argument checks both backends share, and their Autograd
// kernel. The kernels register themselves from cpu/compaction_kernel.cpp and
// cuda/compaction_kernel.cu.
#include "ops/compaction.h"

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/library.h>

#include <initializer_list>
#include <sstream>
#include <string>

namespace {

struct Arg {
  const char* name;
  const at::Tensor& tensor;
};

// As Python spells them, which is how users meet them.
const char* dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBool: return "bool";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kByte: return "uint8";
    case at::kChar: return "int8";
    case at::kShort: return "int16";
    default: return c10::toString(dtype);
  }
}

// One check for dtype and shape, so the message shows what was expected beside what came, e.g.
// "next_activations must be float32 [c >= 64, 784], got [32, 784]".
void check_arg(const char* op, const Arg& arg, at::ScalarType dtype, bool shape_ok,
               const std::string& shape) {
  const at::Tensor& t = arg.tensor;
  if (t.scalar_type() == dtype && shape_ok) return;
  std::ostringstream got;
  if (t.scalar_type() != dtype) got << dtype_name(t.scalar_type()) << " ";
  got << t.sizes();
  TORCH_CHECK(false, op, ": ", arg.name, " must be ", dtype_name(dtype), " ", shape, ", got ",
              got.str());
}

bool is_vector(const at::Tensor& t, int64_t size) { return t.dim() == 1 && t.size(0) == size; }

std::string dims(std::initializer_list<std::string> sizes) {
  std::string text = "[";
  for (const auto& s : sizes) text += (text.size() > 1 ? ", " : "") + s;
  return text + "]";
}

// One device, contiguous data, and no written tensor sharing memory with another argument: the
// kernels read and write through raw pointers, a row at a time.
void check_layout(const char* op, std::initializer_list<Arg> read,
                  std::initializer_list<Arg> written) {
  const Arg& first = *read.begin();
  for (const auto* group : {&read, &written}) {
    for (const Arg& a : *group) {
      TORCH_CHECK(a.tensor.device() == first.tensor.device(), op, ": ", a.name, " is on ",
                  a.tensor.device(), " but ", first.name, " is on ", first.tensor.device());
      TORCH_CHECK(a.tensor.is_contiguous(), op, ": ", a.name,
                  " must be contiguous (call .contiguous() on it), got strides ",
                  a.tensor.strides(), " for shape ", a.tensor.sizes());
    }
  }
  for (auto w = written.begin(); w != written.end(); ++w) {
    const auto refuse_overlap = [&](const Arg& other) {
      TORCH_CHECK(at::get_overlap_status(w->tensor, other.tensor) == at::MemOverlapStatus::No, op,
                  ": ", w->name, " and ", other.name,
                  " share memory; a written tensor needs memory of its own (pass a separate "
                  "buffer)");
    };
    for (const Arg& r : read) refuse_overlap(r);
    for (auto other = w + 1; other != written.end(); ++other) refuse_overlap(*other);
  }
}

}  // namespace

namespace branchy_ops {

void check_compact_survivors(const at::Tensor& leave, const at::Tensor& count,
                             const at::Tensor& rows, const at::Tensor& activations,
                             const at::Tensor& next_activations, const at::Tensor& next_rows,
                             const at::Tensor& next_count) {
  constexpr const char* op = "compact_survivors";
  check_arg(op, {"leave", leave}, at::kBool, leave.dim() == 1, "[b]");
  const int64_t b = leave.size(0);
  const std::string bs = std::to_string(b);
  check_arg(op, {"count", count}, at::kInt, is_vector(count, 1), "[1]");
  check_arg(op, {"rows", rows}, at::kLong, is_vector(rows, b), dims({bs}));
  check_arg(op, {"activations", activations}, at::kFloat,
            activations.dim() == 2 && activations.size(0) == b, dims({bs, "F"}));
  const int64_t features = activations.size(1);
  const std::string fs = std::to_string(features);
  check_arg(op, {"next_activations", next_activations}, at::kFloat,
            next_activations.dim() == 2 && next_activations.size(0) >= b &&
                next_activations.size(1) == features,
            dims({"c >= " + bs, fs}));
  const int64_t capacity = next_activations.size(0);
  check_arg(op, {"next_rows", next_rows}, at::kLong, is_vector(next_rows, capacity),
            dims({std::to_string(capacity)}) + " (c, the rows of next_activations)");
  check_arg(op, {"next_count", next_count}, at::kInt, is_vector(next_count, 1), "[1]");
  check_layout(op, {{"leave", leave}, {"count", count}, {"rows", rows},
                    {"activations", activations}},
               {{"next_activations", next_activations}, {"next_rows", next_rows},
                {"next_count", next_count}});
}

void check_scatter_exits(const at::Tensor& leave, const at::Tensor& count, const at::Tensor& rows,
                         const at::Tensor& prediction, const at::Tensor& score,
                         const at::Tensor& out_prediction, const at::Tensor& out_exit,
                         const at::Tensor& out_score) {
  constexpr const char* op = "scatter_exits";
  check_arg(op, {"leave", leave}, at::kBool, leave.dim() == 1, "[b]");
  const int64_t b = leave.size(0);
  const std::string bs = dims({std::to_string(b)});
  check_arg(op, {"count", count}, at::kInt, is_vector(count, 1), "[1]");
  check_arg(op, {"rows", rows}, at::kLong, is_vector(rows, b), bs);
  check_arg(op, {"prediction", prediction}, at::kLong, is_vector(prediction, b), bs);
  check_arg(op, {"score", score}, at::kFloat, is_vector(score, b), bs);
  check_arg(op, {"out_prediction", out_prediction}, at::kLong, out_prediction.dim() == 1, "[B]");
  const int64_t batch = out_prediction.size(0);
  const std::string batch_s = dims({std::to_string(batch)}) + " (B, the rows of out_prediction)";
  check_arg(op, {"out_exit", out_exit}, at::kLong, is_vector(out_exit, batch), batch_s);
  check_arg(op, {"out_score", out_score}, at::kFloat, is_vector(out_score, batch), batch_s);
  check_layout(op, {{"leave", leave}, {"count", count}, {"rows", rows},
                    {"prediction", prediction}, {"score", score}},
               {{"out_prediction", out_prediction}, {"out_exit", out_exit},
                {"out_score", out_score}});
}

}  // namespace branchy_ops

TORCH_LIBRARY_FRAGMENT(branchy_engine, m) {
  m.def(
      "compact_survivors(Tensor leave, Tensor count, Tensor rows, Tensor activations, "
      "Tensor(a!) next_activations, Tensor(b!) next_rows, Tensor(c!) next_count) -> ()");
  m.def(
      "scatter_exits(Tensor leave, Tensor count, Tensor rows, Tensor prediction, Tensor score, "
      "int exit, bool everyone, Tensor(a!) out_prediction, Tensor(b!) out_exit, "
      "Tensor(c!) out_score) -> ()");
}

namespace {

// The ops move rows between buffers and have no gradient. Writing into a tensor that requires
// grad would cut it out of its graph unnoticed, so that is refused while grad mode is on; what is
// written never requires grad. Below this kernel the ADInplaceOrView key is skipped, so the
// version counters of the written tensors are bumped here (autograd's check for tensors saved for
// backward and changed since relies on them).
void refuse_grad(const char* op, std::initializer_list<Arg> written) {
  if (!at::GradMode::is_enabled()) return;
  for (const Arg& w : written) {
    TORCH_CHECK(!w.tensor.requires_grad(), op, " has no gradient, but ", w.name,
                " requires grad: it would be cut out of its autograd graph (write into a tensor "
                "that does not require grad, or call under torch.no_grad())");
  }
}

void bump_versions(std::initializer_list<Arg> written) {
  for (const Arg& w : written) w.tensor.unsafeGetTensorImpl()->bump_version();
}

void compact_survivors_autograd(const at::Tensor& leave, const at::Tensor& count,
                                const at::Tensor& rows, const at::Tensor& activations,
                                const at::Tensor& next_activations, const at::Tensor& next_rows,
                                const at::Tensor& next_count) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("branchy_engine::compact_survivors", "")
                             .typed<branchy_ops::CompactSurvivorsFn>();
  const std::initializer_list<Arg> written = {
      {"next_activations", next_activations}, {"next_rows", next_rows}, {"next_count", next_count}};
  refuse_grad("compact_survivors", written);
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.call(leave, count, rows, activations, next_activations, next_rows, next_count);
  }
  bump_versions(written);
}

void scatter_exits_autograd(const at::Tensor& leave, const at::Tensor& count,
                            const at::Tensor& rows, const at::Tensor& prediction,
                            const at::Tensor& score, int64_t exit, bool everyone,
                            const at::Tensor& out_prediction, const at::Tensor& out_exit,
                            const at::Tensor& out_score) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("branchy_engine::scatter_exits", "")
                             .typed<branchy_ops::ScatterExitsFn>();
  const std::initializer_list<Arg> written = {
      {"out_prediction", out_prediction}, {"out_exit", out_exit}, {"out_score", out_score}};
  refuse_grad("scatter_exits", written);
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.call(leave, count, rows, prediction, score, exit, everyone, out_prediction, out_exit,
            out_score);
  }
  bump_versions(written);
}

}  // namespace

TORCH_LIBRARY_IMPL(branchy_engine, Autograd, m) {
  m.impl("compact_survivors", &compact_survivors_autograd);
  m.impl("scatter_exits", &scatter_exits_autograd);
}
