#include "conv_direct.h"

#include <algorithm>
#include <cstring>

#include "../cpu.h"

#if BRANCHY_X86
#include <immintrin.h>
#endif

namespace branchy {
namespace {

constexpr int kLanes = 8;
constexpr int kMaxBlock = 6;  // 6 channels x 2 vectors = 12 accumulators of 16 ymm registers

int round_up(int x, int m) { return (x + m - 1) / m * m; }

// Row pitch of the padded input: wide enough for whole vectors past the last output column.
int padded_width(const ConvGeometry& g) {
  return std::max(g.in_w + 2 * g.pad_w, round_up(g.out_w, kLanes) + g.kernel_w - 1);
}

int padded_height(const ConvGeometry& g) { return g.in_h + 2 * g.pad_h; }

}  // namespace

bool conv_avx2_applies(const ConvGeometry& g) {
  return BRANCHY_X86 && use_avx2() && g.stride_h == 1 && g.stride_w == 1;
}

PackedConv pack_conv(const ConvGeometry& g, const float* weight, const float* bias) {
  // The block size leaving the fewest zero (wasted) channels; the larger block on ties.
  int best = 1;
  for (int b = 1; b <= kMaxBlock; ++b) {
    if (round_up(g.out_c, b) <= round_up(g.out_c, best)) best = b;
  }
  PackedConv p;
  p.block = best;
  const int blocks = round_up(g.out_c, best) / best;
  const int taps = g.in_c * g.kernel_h * g.kernel_w;
  p.weights = Buffer(size_t(blocks) * taps * best);
  p.bias = Buffer(size_t(blocks) * best);
  for (int o = 0; o < g.out_c; ++o) {
    const int b = o / best, lane = o % best;
    p.bias.data()[o] = bias[o];
    for (int t = 0; t < taps; ++t) {
      p.weights.data()[(size_t(b) * taps + t) * best + lane] = weight[size_t(o) * taps + t];
    }
  }
  return p;
}

size_t conv_avx2_scratch(const ConvGeometry& g) {
  return size_t(g.in_c) * padded_height(g) * padded_width(g) + kLanes;
}

void conv_avx2_init_scratch(const ConvGeometry& g, float* scratch) {
  std::memset(scratch, 0, conv_avx2_scratch(g) * sizeof(float));
}

#if BRANCHY_X86
namespace {

// One output row segment of OCB channels x OWV vectors: the whole reduction over input channels
// and kernel taps stays in registers; bias first, ReLU and a masked tail at the store.
template <int OCB, int OWV>
BRANCHY_AVX2 void tile(const float* in, size_t channel_stride, size_t row_stride, int in_c,
                       int kernel_h, int kernel_w, const float* w, const float* bias, bool relu,
                       float* out, size_t out_channel_stride, int valid_oc, int valid_w) {
  __m256 acc[OCB][OWV];
  for (int o = 0; o < OCB; ++o) {
    const __m256 b = _mm256_set1_ps(bias[o]);
    for (int v = 0; v < OWV; ++v) acc[o][v] = b;
  }
  for (int c = 0; c < in_c; ++c) {
    const float* channel = in + c * channel_stride;
    for (int y = 0; y < kernel_h; ++y) {
      const float* row = channel + y * row_stride;
      for (int x = 0; x < kernel_w; ++x) {
        __m256 src[OWV];
        for (int v = 0; v < OWV; ++v) src[v] = _mm256_loadu_ps(row + x + kLanes * v);
        for (int o = 0; o < OCB; ++o) {
          const __m256 wv = _mm256_broadcast_ss(w + o);
          for (int v = 0; v < OWV; ++v) acc[o][v] = _mm256_fmadd_ps(wv, src[v], acc[o][v]);
        }
        w += OCB;
      }
    }
  }
  const __m256 zero = _mm256_setzero_ps();
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int o = 0; o < valid_oc; ++o) {
    float* dst = out + o * out_channel_stride;
    for (int v = 0; v < OWV; ++v) {
      const __m256 value = relu ? _mm256_max_ps(acc[o][v], zero) : acc[o][v];
      const int n = valid_w - kLanes * v;
      if (n >= kLanes) {
        _mm256_storeu_ps(dst + kLanes * v, value);
      } else if (n > 0) {
        _mm256_maskstore_ps(dst + kLanes * v, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane), value);
      }
    }
  }
}

template <int OCB>
BRANCHY_AVX2 void conv_blocks(const ConvGeometry& g, const PackedConv& p, const float* padded,
                              float* out) {
  const size_t row_stride = padded_width(g);
  const size_t channel_stride = row_stride * padded_height(g);
  const size_t out_plane = size_t(g.out_h) * g.out_w;
  const size_t block_weights = size_t(g.in_c) * g.kernel_h * g.kernel_w * OCB;
  for (int b = 0; b * OCB < g.out_c; ++b) {
    const int valid_oc = std::min(OCB, g.out_c - b * OCB);
    const float* w = p.weights.data() + b * block_weights;
    const float* bias = p.bias.data() + b * OCB;
    float* out_block = out + size_t(b) * OCB * out_plane;
    for (int oy = 0; oy < g.out_h; ++oy) {
      const float* src = padded + oy * row_stride;
      float* dst = out_block + size_t(oy) * g.out_w;
      int x0 = 0;
      for (; x0 + 2 * kLanes <= g.out_w; x0 += 2 * kLanes) {
        tile<OCB, 2>(src + x0, channel_stride, row_stride, g.in_c, g.kernel_h, g.kernel_w, w, bias,
                     g.relu, dst + x0, out_plane, valid_oc, 2 * kLanes);
      }
      const int rest = g.out_w - x0;
      if (rest > kLanes) {
        tile<OCB, 2>(src + x0, channel_stride, row_stride, g.in_c, g.kernel_h, g.kernel_w, w, bias,
                     g.relu, dst + x0, out_plane, valid_oc, rest);
      } else if (rest > 0) {
        tile<OCB, 1>(src + x0, channel_stride, row_stride, g.in_c, g.kernel_h, g.kernel_w, w, bias,
                     g.relu, dst + x0, out_plane, valid_oc, rest);
      }
    }
  }
}

}  // namespace

void conv_direct_avx2(const ConvGeometry& g, const PackedConv& p, const float* in, float* out,
                      float* scratch) {
  const size_t row_stride = padded_width(g);
  const size_t channel_stride = row_stride * padded_height(g);
  for (int c = 0; c < g.in_c; ++c) {
    for (int y = 0; y < g.in_h; ++y) {
      std::memcpy(scratch + c * channel_stride + (y + g.pad_h) * row_stride + g.pad_w,
                  in + (size_t(c) * g.in_h + y) * g.in_w, g.in_w * sizeof(float));
    }
  }
  switch (p.block) {
    case 1: return conv_blocks<1>(g, p, scratch, out);
    case 2: return conv_blocks<2>(g, p, scratch, out);
    case 3: return conv_blocks<3>(g, p, scratch, out);
    case 4: return conv_blocks<4>(g, p, scratch, out);
    case 5: return conv_blocks<5>(g, p, scratch, out);
    default: return conv_blocks<6>(g, p, scratch, out);
  }
}
#else
void conv_direct_avx2(const ConvGeometry&, const PackedConv&, const float*, float*, float*) {}
#endif

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
