#include "pointwise.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "../ops/registry.h"
#include "activation.h"
#include "simd.h"

namespace branchy {

#define BRANCHY_TIER_FILE "pointwise_tier.inl"
#include "tiers.inl"

namespace {

// Vectors of a panel on `isa` (its lanes: isa_lanes).
int panel_vectors(Isa isa) {
#if BRANCHY_X86
  return isa == Isa::Avx512 ? avx512::kPanel : avx2::kPanel;
#elif BRANCHY_ARM64
  return isa == Isa::Neon ? neon::kPanel : 1;
#else
  return (void)isa, 1;
#endif
}

}  // namespace

PackedPointwise pack_pointwise(Isa isa, const PointwiseGeometry& g, const float* weight,
                               const float* bias) {
  PackedPointwise p;
  p.isa = isa;
  const int64_t padded = (int64_t(g.out_c) + isa_lanes(isa) - 1) / isa_lanes(isa) * isa_lanes(isa);
  const int64_t panel = int64_t(panel_vectors(isa)) * isa_lanes(isa);
  const int64_t taps = g.taps(), rows = taps * g.in_c;  // rows of a panel: (tap, channel)
  p.weights = Buffer(size_t(padded) * rows);  // zeroed: the padding channels stay 0
  p.bias = Buffer(size_t(padded));
  std::copy(bias, bias + g.out_c, p.bias.data());
  for (int64_t n0 = 0; n0 < padded; n0 += panel) {
    const int64_t width = std::min(panel, padded - n0);
    float* dst = p.weights.data() + size_t(n0) * rows;
    for (int64_t n = n0; n < std::min<int64_t>(n0 + width, g.out_c); ++n) {
      for (int64_t k = 0; k < g.in_c; ++k) {
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t row = g.planar ? k * taps + t : t * g.in_c + k;
          dst[row * width + (n - n0)] = weight[(n * g.in_c + k) * taps + t];
        }
      }
    }
  }
  return p;
}

void scale_pointwise(const PointwiseGeometry& g, const PackedPointwise& p, const float* scale,
                     float* out) {
  const int64_t padded = int64_t(p.bias.size());
  const int64_t panel = int64_t(panel_vectors(p.isa)) * isa_lanes(p.isa);
  const int64_t rows = int64_t(g.taps()) * g.in_c;
  for (int64_t n0 = 0; n0 < padded; n0 += panel) {
    const int64_t width = std::min(panel, padded - n0);
    const float* src = p.weights.data() + size_t(n0) * rows;
    float* dst = out + size_t(n0) * rows;
    for (int64_t r = 0; r < rows; ++r) {
      const float s = scale[g.planar ? r / g.taps() : r % g.in_c];
      for (int64_t j = 0; j < width; ++j) dst[r * width + j] = src[r * width + j] * s;
    }
  }
}

void pointwise_nhwc(const PointwiseGeometry& g, const PackedPointwise& p, const float* weights,
                    const float* in, const float* residual, Act act, float lo, float hi, float* out,
                    const float* zeros) {
  if (g.taps() > kMaxGemmTaps || (g.taps() > 1 && !zeros)) {
    throw std::logic_error("pointwise_nhwc: over 64 window positions, or no zeros for the padding");
  }
#if BRANCHY_SIMD
  const bool in_registers = act_in_registers(act);
  const Act inside = in_registers ? act : Act::None;
#if BRANCHY_X86
  if (p.isa == Isa::Avx512) {
    avx512::pointwise(g, weights, p.bias.data(), in, residual, inside, lo, hi, out, zeros);
  } else {
    avx2::pointwise(g, weights, p.bias.data(), in, residual, inside, lo, hi, out, zeros);
  }
#else
  neon::pointwise(g, weights, p.bias.data(), in, residual, inside, lo, hi, out, zeros);
#endif
  if (!in_registers) apply_act(act, lo, hi, out, size_t(g.out_h) * g.out_w * g.out_c);
#else
  (void)g, (void)p, (void)weights, (void)in, (void)residual, (void)act, (void)lo, (void)hi, (void)out,
      (void)zeros;
#endif
}

namespace {

// The padded planes' height and width: room for every window of the output.
int64_t padded_h(const PointwiseGeometry& g) {
  return std::max<int64_t>(g.in_h + g.pad_top,
                           int64_t(g.out_h - 1) * g.stride_h + int64_t(g.kernel_h - 1) * g.dilation_h + 1);
}
int64_t padded_w(const PointwiseGeometry& g) {
  return std::max<int64_t>(g.in_w + g.pad_left,
                           int64_t(g.out_w - 1) * g.stride_w + int64_t(g.kernel_w - 1) * g.dilation_w + 1);
}

}  // namespace

size_t planar_scratch_floats(const PointwiseGeometry& g) {
  return size_t(g.in_c) * size_t(padded_h(g)) * size_t(padded_w(g));
}

void planar_gemm(const PointwiseGeometry& g, const PackedPointwise& p, const float* in,
                 const float* residual, Act act, float lo, float hi, float* out, float* scratch) {
  if (!g.planar || int64_t(g.in_c) * g.taps() > kMaxGemmTaps) {
    throw std::logic_error("planar_gemm: the geometry is not planar, or over 64 terms of K");
  }
  const int64_t ph = padded_h(g), pw = padded_w(g);
  for (int64_t c = 0; c < g.in_c; ++c) {
    for (int64_t y = 0; y < g.in_h; ++y) {
      std::copy(in + (c * g.in_h + y) * g.in_w, in + (c * g.in_h + y + 1) * g.in_w,
                scratch + (c * ph + y + g.pad_top) * pw + g.pad_left);
    }
  }
#if BRANCHY_SIMD
  const bool in_registers = act_in_registers(act);
  const Act inside = in_registers ? act : Act::None;
#if BRANCHY_X86
  if (p.isa == Isa::Avx512) {
    avx512::planar(g, p.weights.data(), p.bias.data(), scratch, int(ph), int(pw), residual, inside, lo, hi, out);
  } else {
    avx2::planar(g, p.weights.data(), p.bias.data(), scratch, int(ph), int(pw), residual, inside, lo, hi, out);
  }
#else
  neon::planar(g, p.weights.data(), p.bias.data(), scratch, int(ph), int(pw), residual, inside, lo, hi, out);
#endif
  if (!in_registers) apply_act(act, lo, hi, out, size_t(g.out_h) * g.out_w * g.out_c);
#else
  (void)p, (void)residual, (void)act, (void)lo, (void)hi, (void)out;
#endif
}

}  // namespace branchy
