// lrn: PyTorch LocalResponseNorm across channels.
#include <cmath>

#include "../kernels/simple_ops.h"
#include "registry.h"

namespace branchy {
namespace {

std::vector<Expected> check(const OpCheck& c, Op& op) {
  op.size = c.at_least(op.ints[0], 1, "size");
  op.alpha = op.floats[0], op.beta = op.floats[1], op.k = op.floats[2];
  if (!std::isfinite(op.alpha) || !std::isfinite(op.beta) || !std::isfinite(op.k)) {
    c.fail("alpha ", op.alpha, ", beta ", op.beta, ", k ", op.k, " must be finite");
  }
  // k > 0 and alpha >= 0 keep the base of the power positive.
  if (op.alpha < 0) c.fail("alpha is ", op.alpha, ", expected >= 0");
  if (!(op.k > 0)) c.fail("k is ", op.k, ", expected > 0");
  op.out = op.in;
  return {};
}

void reference(const Op& op, const float* const* ins, float* out) { lrn_nchw(op, ins[0], out); }

Layers own(const Op& op) {
  Layers out;
  out.push_back(reference_layer(op, "lrn"));
  return out;
}

}  // namespace

extern const OpDef kLrn{
    "lrn", 4, {"size"}, {"alpha", "beta", "k"}, {}, 1, 1,
    "x / (k + alpha / size * sum of x^2 over channels c - floor(size / 2) .. c + floor((size - 1) / 2))^beta; "
    "[C, H, W]",
    check, reference, own, dnnl_lrn,
};

}  // namespace branchy
