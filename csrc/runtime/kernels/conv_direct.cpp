#include "conv_direct.h"

#include <algorithm>
#include <array>
#include <utility>

#include "simd.h"

// The SIMD tiers (stride 1). The input is copied into scratch with its zero padding at row pitch
// in_w + pad_w: a row's right padding and the next row's left padding are the same zeros, so a
// window running off the right edge reads the next row's left padding (after the last channel,
// a zero tail). Every output pixel (y, x) then reads tap (ky, kx) of channel c at
// c * plane + (y + ky) * pitch + x + kx, so the positions y * pitch + x of all output rows form
// one run, which tiles cover with whole vectors; the pitch - out_w positions between two rows
// are computed and dropped. On short rows that wastes fewer lanes than vectors per row: an
// 11-pixel row fills 11 of 16 lanes, but 11 of every 12 positions at pitch 12 (B-LeNet's
// 10->20 conv on 9x9: 6.7 us against 8.1 us for tiles of two rows of one vector each; its
// 5->10 conv with 17-pixel rows: 3.8 against 6.2 us).
// Each vector's pixels are moved to its first lanes (a permutation made at pack time) and stored
// at their offset in the dense output. A channel's vectors are stored in order, so a full-width
// store may run past its pixels wherever a later vector's store covers the overflow.

namespace branchy {

#define BRANCHY_TIER_FILE "conv_direct_tier.inl"
#include "tiers.inl"

namespace {

int round_up(int x, int m) { return (x + m - 1) / m * m; }

// The vector width and the largest output-channel block of a tier; false where it has none.
bool tier_shape(Isa isa, int* lanes, int* max_block) {
#if BRANCHY_X86
  if (isa == Isa::Avx512) {
    *lanes = avx512::kLanes;
    *max_block = avx512::kMaxBlock;
    return true;
  }
  if (isa == Isa::Avx2) {
    *lanes = avx2::kLanes;
    *max_block = avx2::kMaxBlock;
    return true;
  }
#endif
#if BRANCHY_ARM64
  if (isa == Isa::Neon) {
    *lanes = neon::kLanes;
    *max_block = neon::kMaxBlock;
    return true;
  }
#endif
  (void)isa, (void)lanes, (void)max_block;
  return false;
}

}  // namespace

PackedConv pack_conv(const ConvGeometry& g, Isa isa, const float* weight, const float* bias) {
  PackedConv p;
  int lanes = 0, max_block = 0;
  if (g.stride_h != 1 || g.stride_w != 1 || !tier_shape(isa, &lanes, &max_block)) return p;
  p.isa = isa;
  // The block size leaving the fewest zero (wasted) channels; the larger block on ties.
  p.block = 1;
  for (int b = 1; b <= max_block; ++b) {
    if (round_up(g.out_c, b) <= round_up(g.out_c, p.block)) p.block = b;
  }
  const int blocks = round_up(g.out_c, p.block) / p.block;
  const int taps = g.in_c * g.kernel_h * g.kernel_w;
  p.weights = Buffer(size_t(blocks) * taps * p.block);
  p.bias = Buffer(size_t(blocks) * p.block);
  for (int o = 0; o < g.out_c; ++o) {
    const int b = o / p.block, lane = o % p.block;
    p.bias.data()[o] = bias[o];
    for (int t = 0; t < taps; ++t) {
      p.weights.data()[(size_t(b) * taps + t) * p.block + lane] = weight[size_t(o) * taps + t];
    }
  }

  // At least out_w too, so that output rows do not overlap when the padding exceeds the kernel.
  p.pitch = std::max(g.in_w + g.pad_w, g.out_w);
  p.plane = size_t(g.in_h + 2 * g.pad_h) * p.pitch;
  const int positions = (g.out_h - 1) * p.pitch + g.out_w;
  const int out_plane = g.out_h * g.out_w;
  p.vectors = (positions + lanes - 1) / lanes;
  // The last vector's last tap reads furthest.
  const size_t reach = (g.in_c - 1) * p.plane + size_t(p.vectors) * lanes +
                       (g.kernel_h - 1) * p.pitch + g.kernel_w - 1;
  p.scratch = std::max(g.in_c * p.plane, reach);
  p.start.resize(p.vectors);
  p.count.resize(p.vectors);
  p.compact.resize(size_t(p.vectors) * lanes);
  for (int j = 0; j < p.vectors; ++j) {
    const int first = j * lanes;
    p.start[j] = first / p.pitch * g.out_w + std::min(first % p.pitch, g.out_w);
    int32_t* order = &p.compact[size_t(j) * lanes];
    int pixels = 0;
    for (int l = 0; l < lanes; ++l) {
      const int pos = first + l;
      if (pos < positions && pos % p.pitch < g.out_w) order[pixels++] = l;
    }
    for (int l = 0, rest = pixels; l < lanes; ++l) {
      const int pos = first + l;
      if (!(pos < positions && pos % p.pitch < g.out_w)) order[rest++] = l;
    }
    // A full-width store where it stays inside the channel's output, else just the pixels.
    p.count[j] = p.start[j] + lanes <= out_plane ? lanes : pixels;
  }
  return p;
}

void conv_direct(const ConvGeometry& g, const PackedConv& p, const float* in, float* out,
                 float* scratch) {
#if BRANCHY_X86
  if (p.isa == Isa::Avx512) return avx512::conv_direct(g, p, in, out, scratch);
  if (p.isa == Isa::Avx2) return avx2::conv_direct(g, p, in, out, scratch);
#endif
#if BRANCHY_ARM64
  if (p.isa == Isa::Neon) return neon::conv_direct(g, p, in, out, scratch);
#endif
  (void)g, (void)p, (void)in, (void)out, (void)scratch;
}

void conv_direct_portable(const ConvGeometry& g, const float* weight, const float* bias,
                          const float* in, float* out) {
  for (int o = 0; o < g.out_c; ++o) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      for (int ox = 0; ox < g.out_w; ++ox) {
        float acc = bias[o];
        for (int c = 0; c < g.in_c; ++c) {
          for (int ky = 0; ky < g.kernel_h; ++ky) {
            const int iy = oy * g.stride_h - g.pad_h + ky;
            if (iy < 0 || iy >= g.in_h) continue;
            for (int kx = 0; kx < g.kernel_w; ++kx) {
              const int ix = ox * g.stride_w - g.pad_w + kx;
              if (ix < 0 || ix >= g.in_w) continue;
              acc += weight[((size_t(o) * g.in_c + c) * g.kernel_h + ky) * g.kernel_w + kx] *
                     in[(size_t(c) * g.in_h + iy) * g.in_w + ix];
            }
          }
        }
        out[(size_t(o) * g.out_h + oy) * g.out_w + ox] = g.relu ? std::max(acc, 0.0f) : acc;
      }
    }
  }
}

}  // namespace branchy
