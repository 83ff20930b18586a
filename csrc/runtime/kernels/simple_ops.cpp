#include "simple_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "../cpu.h"

#if BRANCHY_X86
#include <immintrin.h>
#endif

namespace branchy {

void pool_nchw(const Op& op, const float* in, float* out) {
  const bool max = op.kind == OpKind::MaxPool2d;
  for (int c = 0; c < op.out.c; ++c) {
    const float* plane = in + size_t(c) * op.in.h * op.in.w;
    for (int oy = 0; oy < op.out.h; ++oy) {
      const int y0 = oy * op.stride_h - op.pad_h;
      const int y1 = std::min(y0 + op.kernel_h, op.in.h + op.pad_h);
      for (int ox = 0; ox < op.out.w; ++ox) {
        const int x0 = ox * op.stride_w - op.pad_w;
        const int x1 = std::min(x0 + op.kernel_w, op.in.w + op.pad_w);
        // PyTorch divides by the window clipped to the padded input, before clipping to the input.
        const int divisor = (y1 - y0) * (x1 - x0);
        float acc = max ? -std::numeric_limits<float>::infinity() : 0.0f;
        for (int y = std::max(y0, 0); y < std::min(y1, op.in.h); ++y) {
          for (int x = std::max(x0, 0); x < std::min(x1, op.in.w); ++x) {
            const float v = plane[y * op.in.w + x];
            acc = max ? std::max(acc, v) : acc + v;
          }
        }
        if (!max) acc /= float(divisor);
        out[(size_t(c) * op.out.h + oy) * op.out.w + ox] = op.relu ? std::max(acc, 0.0f) : acc;
      }
    }
  }
}

void lrn_nchw(const Op& op, const float* in, float* out) {
  const size_t plane = size_t(op.in.h) * op.in.w;
  const int before = op.size / 2, after = (op.size - 1) / 2;
  const float scale = op.alpha / float(op.size);
  const bool three_quarters = op.beta == 0.75f;
  for (int c = 0; c < op.in.c; ++c) {
    const int c0 = std::max(0, c - before), c1 = std::min(op.in.c - 1, c + after);
    for (size_t i = 0; i < plane; ++i) {
      float sum = 0.0f;
      for (int j = c0; j <= c1; ++j) {
        const float v = in[j * plane + i];
        sum += v * v;
      }
      const float d = op.k + scale * sum;
      // d^-0.75 = 1 / (sqrt(d) * sqrt(sqrt(d))): two square roots instead of a pow.
      const float inv = three_quarters ? 1.0f / (std::sqrt(d) * std::sqrt(std::sqrt(d)))
                                       : std::pow(d, -op.beta);
      out[c * plane + i] = in[c * plane + i] * inv;
    }
  }
}

PackedLinear pack_linear(int32_t in, int32_t out, const float* weight, const float* bias) {
  PackedLinear p;
  p.in = in;
  p.out = out;
  const int blocks = (out + 7) / 8;
  p.weights = Buffer(size_t(blocks) * in * 8);
  p.bias = Buffer(size_t(blocks) * 8);
  for (int o = 0; o < out; ++o) {
    p.bias.data()[o] = bias[o];
    for (int i = 0; i < in; ++i) {
      p.weights.data()[(size_t(o / 8) * in + i) * 8 + o % 8] = weight[size_t(o) * in + i];
    }
  }
  return p;
}

#if BRANCHY_X86
namespace {
// Eight outputs at a time; four accumulators hide the FMA latency.
BRANCHY_AVX2 void linear_avx2(const PackedLinear& p, bool relu, const float* x, float* y) {
  for (int b = 0; b * 8 < p.out; ++b) {
    const float* w = p.weights.data() + size_t(b) * p.in * 8;
    __m256 acc[4] = {_mm256_loadu_ps(p.bias.data() + b * 8), _mm256_setzero_ps(),
                     _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 4 <= p.in; i += 4) {
      for (int u = 0; u < 4; ++u) {
        acc[u] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + i + u), _mm256_load_ps(w + (i + u) * 8), acc[u]);
      }
    }
    for (; i < p.in; ++i) {
      acc[0] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + i), _mm256_load_ps(w + i * 8), acc[0]);
    }
    __m256 sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    if (relu) sum = _mm256_max_ps(sum, _mm256_setzero_ps());
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, sum);
    std::memcpy(y + b * 8, lanes, std::min(8, p.out - b * 8) * sizeof(float));
  }
}
}  // namespace
#endif

void linear(const PackedLinear& p, const float* weight, const float* bias, bool relu,
            const float* x, float* y) {
#if BRANCHY_X86
  if (use_avx2()) return linear_avx2(p, relu, x, y);
#endif
  for (int o = 0; o < p.out; ++o) {
    float acc = bias[o];
    const float* w = weight + size_t(o) * p.in;
    for (int i = 0; i < p.in; ++i) acc += w[i] * x[i];
    y[o] = relu ? std::max(acc, 0.0f) : acc;
  }
}

void nchw_to_nhwc(const Shape& s, const float* in, float* out) {
  const size_t plane = size_t(s.h) * s.w;
  for (int c = 0; c < s.c; ++c) {
    for (size_t i = 0; i < plane; ++i) out[i * s.c + c] = in[c * plane + i];
  }
}

void nhwc_to_nchw(const Shape& s, const float* in, float* out) {
  const size_t plane = size_t(s.h) * s.w;
  for (size_t i = 0; i < plane; ++i) {
    for (int c = 0; c < s.c; ++c) out[c * plane + i] = in[i * s.c + c];
  }
}

void shortcut_nchw(const Shape& in, const Shape& out, int stride, const float* x, float* y) {
  const int extra = out.c - in.c;
  const size_t plane = size_t(out.h) * out.w;
  std::memset(y, 0, extra * plane * sizeof(float));
  for (int c = 0; c < in.c; ++c) {
    for (int oy = 0; oy < out.h; ++oy) {
      for (int ox = 0; ox < out.w; ++ox) {
        y[(extra + c) * plane + oy * out.w + ox] =
            x[(size_t(c) * in.h + oy * stride) * in.w + ox * stride];
      }
    }
  }
}

void shortcut_nhwc(const Shape& in, const Shape& out, int stride, const float* x, float* y) {
  const int extra = out.c - in.c;
  for (int oy = 0; oy < out.h; ++oy) {
    for (int ox = 0; ox < out.w; ++ox) {
      float* pixel = y + (size_t(oy) * out.w + ox) * out.c;
      std::memset(pixel, 0, extra * sizeof(float));
      std::memcpy(pixel + extra, x + (size_t(oy) * stride * in.w + size_t(ox) * stride) * in.c,
                  in.c * sizeof(float));
    }
  }
}

void add_relu(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = std::max(y[i] + x[i], 0.0f);
}

}  // namespace branchy
