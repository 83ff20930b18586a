#include "winograd.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "../ops/registry.h"
#include "activation.h"
#include "simd.h"

namespace branchy {

#define BRANCHY_TIER_FILE "winograd_tier.inl"
#include "tiers.inl"

namespace {

// The GEMM of one position: [block, in_c] by [in_c, out_c] as a 1x1 convolution of `rows` pixels.
PointwiseGeometry gemm_geometry(const WinogradGeometry& g, int64_t rows) {
  return PointwiseGeometry{g.in_c, 1, int32_t(rows), g.out_c, 1, int32_t(rows), 1, 1};
}

}  // namespace

PackedWinograd pack_winograd(Isa isa, const WinogradGeometry& g, const float* weight,
                             const float* bias) {
  PackedWinograd p;
  const size_t lanes = size_t(isa_lanes(isa));
  p.bias = Buffer((size_t(g.out_c) + lanes - 1) / lanes * lanes);
  std::copy(bias, bias + g.out_c, p.bias.data());
  // Patches and products of a block stay in L2 per position (64K floats a side at most), and the
  // GEMM's rows are a whole number of its 6-pixel tiles.
  const int64_t widest = std::max(g.in_c, g.out_c);
  p.block = std::min(g.tiles(), std::max<int64_t>(6, 16384 / widest / 6 * 6));
  // U = G g G^T in double, G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
  const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  const size_t pairs = size_t(g.out_c) * g.in_c;
  std::vector<std::vector<float>> u(16, std::vector<float>(pairs));
  for (size_t pair = 0; pair < pairs; ++pair) {
    const float* w = weight + pair * 9;
    double gw[4][3];  // G g
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 3; ++j) gw[i][j] = G[i][0] * w[j] + G[i][1] * w[3 + j] + G[i][2] * w[6 + j];
    }
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 4; ++j) {
        u[4 * i + j][pair] = float(gw[i][0] * G[j][0] + gw[i][1] * G[j][1] + gw[i][2] * G[j][2]);
      }
    }
  }
  const std::vector<float> zeros(size_t(g.out_c));
  for (int xi = 0; xi < 16; ++xi) {
    PackedPointwise one = pack_pointwise(isa, gemm_geometry(g, 1), u[xi].data(), zeros.data());
    if (xi == 0) {
      p.stride = one.weights.size();
      p.weights = Buffer(16 * p.stride);
      p.gemm.isa = isa;
      p.gemm.bias = std::move(one.bias);
    }
    std::copy(one.weights.data(), one.weights.data() + p.stride, p.weights.data() + xi * p.stride);
  }
  return p;
}

void winograd_nhwc(const WinogradGeometry& g, const PackedWinograd& p, const float* in,
                   const float* residual, Act act, float lo, float hi, float* out, float* scratch) {
#if BRANCHY_SIMD
  const Isa isa = p.gemm.isa;
  const bool in_registers = act_in_registers(act);
  const Act inside = in_registers ? act : Act::None;
  float* v = scratch;
  float* m = scratch + size_t(16 * p.block) * g.in_c;
  for (int64_t t0 = 0; t0 < g.tiles(); t0 += p.block) {
    const int64_t t1 = std::min(g.tiles(), t0 + p.block);
#if BRANCHY_X86
    if (isa == Isa::Avx512) avx512::winograd_input(g, in, t0, t1, p.block, v);
    else avx2::winograd_input(g, in, t0, t1, p.block, v);
#else
    neon::winograd_input(g, in, t0, t1, p.block, v);
#endif
    for (int xi = 0; xi < 16; ++xi) {
      pointwise_nhwc(gemm_geometry(g, t1 - t0), p.gemm, p.weights.data() + xi * p.stride,
                     v + size_t(xi * p.block) * g.in_c, nullptr, Act::None, 0.0f, 0.0f,
                     m + size_t(xi * p.block) * g.out_c);
    }
#if BRANCHY_X86
    if (isa == Isa::Avx512) {
      avx512::winograd_output(g, m, t0, t1, p.block, p.bias.data(), residual, inside, lo, hi, out);
    } else {
      avx2::winograd_output(g, m, t0, t1, p.block, p.bias.data(), residual, inside, lo, hi, out);
    }
#else
    (void)isa;
    neon::winograd_output(g, m, t0, t1, p.block, p.bias.data(), residual, inside, lo, hi, out);
#endif
  }
  if (!in_registers) apply_act(act, lo, hi, out, size_t(g.out_h) * g.out_w * g.out_c);
#else
  (void)g, (void)p, (void)in, (void)residual, (void)act, (void)lo, (void)hi, (void)out, (void)scratch;
#endif
}

}  // namespace branchy
