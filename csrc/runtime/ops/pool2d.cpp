// max_pool2d and avg_pool2d: PyTorch's MaxPool2d / AvgPool2d (count_include_pad=True) with
// ceil_mode, then the fused activation.
#include <limits>
#include <sstream>

#include "../kernels/simple_ops.h"
#include "registry.h"

namespace branchy {
namespace {

// PyTorch's pooling_output_shape: with ceil_mode the last window must start inside the input
// or its left padding.
int64_t pool_size(const OpCheck& c, int32_t in, int32_t k, int32_t s, int32_t p, bool ceil_mode,
                  const char* dim) {
  const int64_t span = int64_t(in) + 2 * int64_t(p) - k;
  if (span < 0) c.fail("kernel ", k, " is larger than the padded input ", dim, " ", int64_t(in) + 2 * int64_t(p));
  int64_t out = (ceil_mode ? span + s - 1 : span) / s + 1;
  if (ceil_mode && (out - 1) * s >= int64_t(in) + p) --out;
  return out;
}

std::vector<Expected> check(const OpCheck& c, Op& op) {
  const auto& v = op.ints;
  op.max_pool = op.def->code == 2;
  op.kernel_h = c.at_least(v[0], 1, "kernel_h");
  op.kernel_w = c.at_least(v[1], 1, "kernel_w");
  op.stride_h = c.at_least(v[2], 1, "stride_h");
  op.stride_w = c.at_least(v[3], 1, "stride_w");
  op.pad_h = c.at_least(v[4], 0, "pad_h");
  op.pad_w = c.at_least(v[5], 0, "pad_w");
  // PyTorch's limit: padding at most half the kernel.
  if (op.pad_h > op.kernel_h / 2) c.fail("pad_h ", op.pad_h, " is more than kernel / 2 = ", op.kernel_h / 2);
  if (op.pad_w > op.kernel_w / 2) c.fail("pad_w ", op.pad_w, " is more than kernel / 2 = ", op.kernel_w / 2);
  op.pad_bottom = op.pad_h;
  op.pad_right = op.pad_w;
  op.ceil_mode = c.flag(v[6], "ceil_mode");
  // Window sizes and the indices the kernels form stay within int32 (the average's divisor is a
  // window's area: at most 2^31-1 too).
  if (int64_t(op.kernel_h) * op.kernel_w > std::numeric_limits<int32_t>::max()) {
    c.fail("the window ", op.kernel_h, "x", op.kernel_w, " has more than 2^31-1 elements");
  }
  if (int64_t(op.in.h) + 2 * int64_t(op.pad_h) + op.stride_h > std::numeric_limits<int32_t>::max() ||
      int64_t(op.in.w) + 2 * int64_t(op.pad_w) + op.stride_w > std::numeric_limits<int32_t>::max()) {
    c.fail("the padded input is larger than 2^31-1");
  }
  c.activation(op, 7, 0);
  op.out = c.shape(op.in.c, pool_size(c, op.in.h, op.kernel_h, op.stride_h, op.pad_h, op.ceil_mode, "height"),
                   pool_size(c, op.in.w, op.kernel_w, op.stride_w, op.pad_w, op.ceil_mode, "width"),
                   "output");
  return {};
}

void reference(const Op& op, const float* const* ins, float* out) {
  pool_nchw(op, Isa::Portable, ins[0], out);
  if (op.act != Act::Relu) apply_act(op.act, op.act_lo, op.act_hi, out, size_t(op.out.numel()));
}

// The own pooling in either layout: NCHW with SIMD for 2x2 windows at stride 2 (pool_isa), NHWC
// with SIMD for any window.
class PoolLayer : public Layer {
 public:
  PoolLayer(const Op& op, Layout layout)
      : Layer(op.in, op.out),
        op_(op),
        layout_(layout),
        isa_(layout == Layout::NCHW ? pool_isa(op, active_isa()) : active_isa()) {}
  void forward(const float* in, float* out, LayerState*) const override {
    if (layout_ == Layout::NCHW) {
      pool_nchw(op_, isa_, in, out);
    } else {
      pool_nhwc(op_, isa_, in, out);
    }
    if (op_.act != Act::Relu) apply_act(op_.act, op_.act_lo, op_.act_hi, out, size_t(out_.numel()));
  }
  Layout input_layout() const override { return layout_; }
  Layout output_layout() const override { return layout_; }
  bool portable() const override { return isa_ == Isa::Portable; }
  std::string describe() const override {
    std::ostringstream s;
    s << op_.name() << " k" << op_.kernel_h << " s" << op_.stride_h << " p" << op_.pad_h
      << (op_.ceil_mode ? " ceil" : "");
    if (op_.act != Act::None) s << " +" << act_name(op_.act);
    s << " [own " << isa_name(isa_) << ", " << layout_name(layout_) << "]";
    return s.str();
  }

 private:
  Op op_;
  Layout layout_;
  Isa isa_;
};

Layers own(const Op& op) {
  Layers out;
  out.push_back(std::make_unique<PoolLayer>(op, Layout::NCHW));
  out.push_back(std::make_unique<PoolLayer>(op, Layout::NHWC));
  return out;
}

constexpr const char* kInts[] = {"kernel_h", "kernel_w", "stride_h", "stride_w",
                                 "pad_h",    "pad_w",    "ceil_mode", "activation"};

}  // namespace

extern const OpDef kMaxPool2d{
    "max_pool2d", 2, {std::begin(kInts), std::end(kInts)}, {"activation_lo", "activation_hi"}, {}, 1, 1,
    "PyTorch MaxPool2d (dilation 1) with ceil_mode, then the activation; [C, pooled H, pooled W]",
    check, reference, own, dnnl_pool2d,
};

extern const OpDef kAvgPool2d{
    "avg_pool2d", 3, {std::begin(kInts), std::end(kInts)}, {"activation_lo", "activation_hi"}, {}, 1, 1,
    "PyTorch AvgPool2d with count_include_pad=True and ceil_mode, then the activation; "
    "[C, pooled H, pooled W]",
    check, reference, own, dnnl_pool2d,
};

}  // namespace branchy
