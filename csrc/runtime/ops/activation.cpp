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

void run(const Op& op, Layout, const float* const* ins, float* out) {
  apply_act(op.act, op.act_lo, op.act_hi, ins[0], out, size_t(op.in.numel()));
}

std::string what(const Op& op) { return act_name(op.act); }

}  // namespace

extern const OpDef kActivation{
    "activation", 5, {"activation"}, {"activation_lo", "activation_hi"}, {}, 1, 1,
    "the function `activation` (1 relu, 2 clamp to [activation_lo, activation_hi], 3 hardswish, 4 hardsigmoid, 5 silu, 6 sigmoid, "
    "7 gelu (erf), 8 gelu (tanh)) of each element; [C, H, W]",
    check, reference, both_layouts<run, what>, no_dnnl,
};

}  // namespace branchy
