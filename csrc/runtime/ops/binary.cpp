// add and mul: two inputs elementwise, then the fused activation. add: a residual (equal
// shapes). mul: equal shapes, or a [C, 1, 1] second input scaling each channel (squeeze-and-
// excitation). Either layout.
#include "registry.h"

namespace branchy {
namespace {

bool is_mul(const Op& op) { return op.def->code == 10; }

std::vector<Expected> check(const OpCheck& c, Op& op) {
  c.activation(op, 0, 0);
  const Shape& b = op.ins[1];
  const bool per_channel = is_mul(op) && b == Shape{op.in.c, 1, 1};
  if (!per_channel) c.same_shapes(op);
  op.out = op.in;
  return {};
}

// out = a (op) b, then the activation; b per channel when it is [C, 1, 1] and a is not, in
// `layout`. Plain loops without branches, which the compiler vectorises.
void combine(const Op& op, Layout layout, const float* a, const float* b, float* out) {
  const Shape& s = op.in;
  const size_t n = size_t(s.numel());
  const bool mul = is_mul(op);
  if (op.ins[1] == s) {
    if (mul) {
      for (size_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
    } else {
      for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
    }
  } else if (layout == Layout::NCHW) {
    const size_t plane = size_t(s.h) * s.w;
    for (int ch = 0; ch < s.c; ++ch) {
      const float scale = b[ch];
      const float* x = a + ch * plane;
      float* y = out + ch * plane;
      for (size_t i = 0; i < plane; ++i) y[i] = x[i] * scale;
    }
  } else {
    const size_t plane = size_t(s.h) * s.w, channels = size_t(s.c);
    for (size_t p = 0; p < plane; ++p) {
      const float* x = a + p * channels;
      float* y = out + p * channels;
      for (size_t ch = 0; ch < channels; ++ch) y[ch] = x[ch] * b[ch];
    }
  }
  apply_act(op.act, op.act_lo, op.act_hi, out, n);
}

void reference(const Op& op, const float* const* ins, float* out) {
  combine(op, Layout::NCHW, ins[0], ins[1], out);
}

void run(const Op& op, Layout layout, const float* const* ins, float* out) {
  combine(op, layout, ins[0], ins[1], out);
}

std::string what(const Op& op) {
  std::string s = std::string(op.name()) + (op.ins[1] == op.in ? "" : " per channel");
  if (op.act != Act::None) s += std::string(" +") + act_name(op.act);
  return s;
}

}  // namespace

extern const OpDef kAdd{
    "add", 9, {"activation"}, {"activation_lo", "activation_hi"}, {}, 2, 2,
    "a + b for inputs of equal shape (a residual), then the activation; [C, H, W]",
    check, reference, both_layouts<run, what>, no_dnnl,
};

extern const OpDef kMul{
    "mul", 10, {"activation"}, {"activation_lo", "activation_hi"}, {}, 2, 2,
    "a * b for inputs of equal shape, or a [C, H, W] times b [C, 1, 1] per channel "
    "(squeeze-and-excitation), then the activation; [C, H, W]",
    check, reference, both_layouts<run, what>, no_dnnl,
};

}  // namespace branchy
