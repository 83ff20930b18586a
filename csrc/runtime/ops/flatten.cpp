// flatten: [C, H, W] to [C * H * W, 1, 1]; a copy on NCHW (the plan folds it into a linear op
// that reads it).
#include <algorithm>

#include "registry.h"

namespace branchy {
namespace {

std::vector<Expected> check(const OpCheck& c, Op& op) {
  op.out = c.shape(op.in.numel(), 1, 1, "output");
  return {};
}

void reference(const Op& op, const float* const* ins, float* out) {
  std::copy(ins[0], ins[0] + op.in.numel(), out);
}

Layers own(const Op& op) {
  Layers out;
  out.push_back(reference_layer(op, "copy"));
  return out;
}

}  // namespace

extern const OpDef kFlatten{
    "flatten", 7, {}, {}, {}, 1, 1, "[C, H, W] to [C * H * W, 1, 1] in that order",
    check, reference, own, no_dnnl,
};

}  // namespace branchy
