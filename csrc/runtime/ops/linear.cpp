// linear: y = W x + b on the input read in NCHW flattening order, then the fused activation.
#include "../kernels/simple_ops.h"
#include "registry.h"

namespace branchy {
namespace {

std::vector<Expected> check(const OpCheck& c, Op& op) {
  op.in_channels = c.at_least(op.ints[0], 1, "in_features");
  op.out_channels = c.at_least(op.ints[1], 1, "out_features");
  c.activation(op, 2, 0);
  if (op.in.numel() != op.in_channels) {
    c.fail("in_features is ", op.in_channels, " but the input ", OpCheck::str(op.in), " has ",
           op.in.numel(), " elements");
  }
  op.out = {op.out_channels, 1, 1};
  return {OpCheck::product({{"out", op.out_channels}, {"in", op.in_channels}}),
          OpCheck::product({{"out", op.out_channels}})};
}

void reference(const Op& op, const float* const* ins, float* out) {
  const float* w = op.tensors[0].data;
  for (int o = 0; o < op.out_channels; ++o) {
    float acc = op.tensors[1].data[o];
    for (int i = 0; i < op.in_channels; ++i) acc += w[size_t(o) * op.in_channels + i] * ins[0][i];
    out[o] = act_value(op.act, op.act_lo, op.act_hi, acc);
  }
}

class LinearLayer : public Layer {
 public:
  explicit LinearLayer(const Op& op)
      : Layer(op.in, op.out), act_(op.act), lo_(op.act_lo), hi_(op.act_hi),
        weight_(op.tensors[0].data), bias_(op.tensors[1].data),
        packed_(pack_linear(active_isa(), op.in_channels, op.out_channels, weight_)) {}
  void forward(const float* in, float* out, LayerState*) const override {
    linear(packed_, weight_, bias_, act_ == Act::Relu, in, out);
    if (act_ != Act::Relu) apply_act(act_, lo_, hi_, out, size_t(packed_.out));
  }
  size_t packed_floats() const override { return packed_.weights.size(); }
  Layout input_layout() const override { return Layout::NCHW; }
  Layout output_layout() const override { return Layout::NCHW; }
  std::string describe() const override {
    return "linear " + std::to_string(packed_.in) + "->" + std::to_string(packed_.out) +
           (act_ != Act::None ? std::string(" +") + act_name(act_) : "") + " [own " +
           isa_name(packed_.isa) + ", NCHW]";
  }

 private:
  Act act_;
  float lo_, hi_;
  const float* weight_;
  const float* bias_;
  PackedLinear packed_;
};

Layers own(const Op& op) {
  Layers out;
  out.push_back(std::make_unique<LinearLayer>(op));
  return out;
}

}  // namespace

extern const OpDef kLinear{
    "linear", 6, {"in_features", "out_features", "activation"}, {"activation_lo", "activation_hi"},
    {"weight [out, in]", "bias [out]"}, 1, 1,
    "W x + b on the input flattened in [C, H, W] order (in_features = C * H * W), then the "
    "activation; [out_features, 1, 1]",
    check, reference, own, dnnl_linear,
};

}  // namespace branchy
