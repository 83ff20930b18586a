#include "depthwise.h"

#include <algorithm>
#include <limits>

#include "../ops/registry.h"
#include "activation.h"
#include "simd.h"

namespace branchy {

#define BRANCHY_TIER_FILE "depthwise_tier.inl"
#include "tiers.inl"

Buffer pack_depthwise(const DepthwiseGeometry& g, const float* weight, size_t padded) {
  Buffer packed(size_t(g.kernel_h) * g.kernel_w * padded);  // zeroed
  for (int c = 0; c < g.c; ++c) {
    for (int k = 0; k < g.kernel_h * g.kernel_w; ++k) {
      packed.data()[size_t(k) * padded + c] = weight[size_t(c) * g.kernel_h * g.kernel_w + k];
    }
  }
  return packed;
}

void depthwise_nhwc(Isa isa, const DepthwiseGeometry& g, const float* packed, const float* bias,
                    const float* in, const float* residual, Act act, float lo, float hi, float* out) {
  const size_t pitch = (size_t(g.c) + 63) / 64 * 64;  // as the layer packs: whole 4-vector blocks
#if BRANCHY_SIMD
  const bool in_registers = act_in_registers(act);
  const Act inside = in_registers ? act : Act::None;
#if BRANCHY_X86
  if (isa == Isa::Avx512) {
    avx512::depthwise(g, packed, bias, in, residual, inside, lo, hi, out, pitch);
  } else {
    avx2::depthwise(g, packed, bias, in, residual, inside, lo, hi, out, pitch);
  }
#else
  (void)isa;
  neon::depthwise(g, packed, bias, in, residual, inside, lo, hi, out, pitch);
#endif
  if (!in_registers) apply_act(act, lo, hi, out, size_t(g.out_h) * g.out_w * g.c);
#else
  (void)isa, (void)g, (void)packed, (void)bias, (void)in, (void)residual, (void)act, (void)lo,
      (void)hi, (void)out, (void)pitch;
#endif
}

}  // namespace branchy
