// activation: an elementwise function (Act) on its own, where no producer could take it as an
// epilogue. Either layout.
#include "registry.h"

namespace branchy {
namespace {

std::vector<Expected> check(const OpCheck& c, Op& op) {
  c.activation(op, 0, 0);
  if (op.act == Act::None) c.fail("activation is 0 (none): an identity is not written as an op");
  op.out = op.in;
  return {};
}

void reference(const Op& op, const float* const* ins, float* out) {
  const size_t n = size_t(op.in.numel());
  for (size_t i = 0; i < n; ++i) out[i] = act_value(op.act, op.act_lo, op.act_hi, ins[0][i]);
}

class ActLayer : public Layer {
 public:
  ActLayer(const Op& op, Layout layout)
      : Layer(op.in, op.out), act_(op.act), lo_(op.act_lo), hi_(op.act_hi), layout_(layout) {}
  void forward(const float* in, float* out, LayerState*) const override {
    apply_act(act_, lo_, hi_, in, out, size_t(in_.numel()));
  }
  Layout input_layout() const override { return layout_; }
  Layout output_layout() const override { return layout_; }
  std::string describe() const override {
    return std::string(act_name(act_)) + " [own, " + layout_name(layout_) + "]";
  }

 private:
  Act act_;
  float lo_, hi_;
  Layout layout_;
};

Layers own(const Op& op) {
  Layers out;
  out.push_back(std::make_unique<ActLayer>(op, Layout::NCHW));
  out.push_back(std::make_unique<ActLayer>(op, Layout::NHWC));
  return out;
}

}  // namespace

extern const OpDef kActivation{
    "activation", 5, {"activation"}, {"activation_lo", "activation_hi"}, {}, 1, 1,
    "the function `activation` (1 relu, 2 clamp to [activation_lo, activation_hi], 3 hardswish, 4 hardsigmoid, 5 silu, 6 sigmoid, "
    "7 gelu (erf), 8 gelu (tanh)) of each element; [C, H, W]",
    check, reference, own, no_dnnl,
};

}  // namespace branchy
