// concat: inputs of equal height and width, stacked along channels. Either layout.
#include <algorithm>
#include <cstring>
#include <limits>

#include "registry.h"

namespace branchy {
namespace {

std::vector<Expected> check(const OpCheck& c, Op& op) {
  int64_t channels = 0;
  for (size_t i = 0; i < op.ins.size(); ++i) {
    if (op.ins[i].h != op.in.h || op.ins[i].w != op.in.w) {
      c.fail("input ", i, " is ", OpCheck::str(op.ins[i]), ", expected height and width ",
             op.in.h, "x", op.in.w, " as input 0's");
    }
    channels += op.ins[i].c;
  }
  op.out = c.shape(channels, op.in.h, op.in.w, "output");
  return {};
}

void concat(const Op& op, Layout layout, const float* const* ins, float* out) {
  const size_t plane = size_t(op.in.h) * op.in.w;
  if (layout == Layout::NCHW) {
    for (size_t i = 0; i < op.ins.size(); ++i) {
      const size_t n = size_t(op.ins[i].c) * plane;
      std::memcpy(out, ins[i], n * sizeof(float));
      out += n;
    }
    return;
  }
  const size_t pixel = size_t(op.out.c);
  size_t at = 0;
  for (size_t i = 0; i < op.ins.size(); ++i) {
    const size_t c = size_t(op.ins[i].c);
    for (size_t p = 0; p < plane; ++p) std::memcpy(out + p * pixel + at, ins[i] + p * c, c * sizeof(float));
    at += c;
  }
}

void reference(const Op& op, const float* const* ins, float* out) { concat(op, Layout::NCHW, ins, out); }

std::string what(const Op& op) {
  return "concat " + std::to_string(op.ins.size()) + " -> " + std::to_string(op.out.c) + " channels";
}

}  // namespace

extern const OpDef kConcat{
    "concat", 11, {}, {}, {}, 1, -1,
    "the inputs (equal H and W) stacked along channels in order; [sum of C, H, W]",
    check, reference, both_layouts<concat, what>, no_dnnl,
};

}  // namespace branchy
