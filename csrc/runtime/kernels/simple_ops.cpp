#include "simple_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "simd.h"

namespace branchy {

#define BRANCHY_TIER_FILE "simple_ops_tier.inl"
#include "tiers.inl"

Isa pool_isa(const Op& op, Isa isa) {
  const bool k2s2 = op.kernel_h == 2 && op.kernel_w == 2 && op.stride_h == 2 &&
                    op.stride_w == 2 && op.pad_h == 0 && op.pad_w == 0;
  return k2s2 ? isa : Isa::Portable;
}

void pool_nchw(const Op& op, Isa isa, const float* in, float* out) {
  const bool max = op.max_pool;
  switch (pool_isa(op, isa)) {
#if BRANCHY_X86
    case Isa::Avx512:
      return max ? avx512::pool_k2s2<true>(op, in, out) : avx512::pool_k2s2<false>(op, in, out);
    case Isa::Avx2:
      return max ? avx2::pool_k2s2<true>(op, in, out) : avx2::pool_k2s2<false>(op, in, out);
#endif
#if BRANCHY_ARM64
    case Isa::Neon:
      return max ? neon::pool_k2s2<true>(op, in, out) : neon::pool_k2s2<false>(op, in, out);
#endif
    default: break;
  }
  for (int c = 0; c < op.out.c; ++c) {
    const float* plane = in + size_t(c) * op.in.h * op.in.w;
    for (int oy = 0; oy < op.out.h; ++oy) {
      const PoolSpan ys = pool_span(oy, op.stride_h, op.pad_h, op.kernel_h, op.in.h);
      for (int ox = 0; ox < op.out.w; ++ox) {
        const PoolSpan xs = pool_span(ox, op.stride_w, op.pad_w, op.kernel_w, op.in.w);
        // PyTorch divides by the window clipped to the padded input, before clipping to the input.
        const int64_t divisor = int64_t(ys.to - ys.from) * (xs.to - xs.from);
        float acc = max ? -std::numeric_limits<float>::infinity() : 0.0f;
        for (int y = ys.lo; y < ys.hi; ++y) {
          for (int x = xs.lo; x < xs.hi; ++x) {
            const float v = plane[y * op.in.w + x];
            acc = max ? (v > acc || v != v ? v : acc) : acc + v;  // a NaN wins, as in PyTorch
          }
        }
        if (!max) acc /= float(divisor);
        out[(size_t(c) * op.out.h + oy) * op.out.w + ox] = op.relu ? std::max(acc, 0.0f) : acc;
      }
    }
  }
}

void pool_nhwc(const Op& op, Isa isa, const float* in, float* out) {
  const bool max = op.max_pool;
  switch (isa) {
#if BRANCHY_X86
    case Isa::Avx512: return max ? avx512::pool_nhwc<true>(op, in, out) : avx512::pool_nhwc<false>(op, in, out);
    case Isa::Avx2: return max ? avx2::pool_nhwc<true>(op, in, out) : avx2::pool_nhwc<false>(op, in, out);
#endif
#if BRANCHY_ARM64
    case Isa::Neon: return max ? neon::pool_nhwc<true>(op, in, out) : neon::pool_nhwc<false>(op, in, out);
#endif
    default: break;
  }
  const int c = op.in.c;
  for (int oy = 0; oy < op.out.h; ++oy) {
    const PoolSpan ys = pool_span(oy, op.stride_h, op.pad_h, op.kernel_h, op.in.h);
    for (int ox = 0; ox < op.out.w; ++ox) {
      const PoolSpan xs = pool_span(ox, op.stride_w, op.pad_w, op.kernel_w, op.in.w);
      const int64_t divisor = int64_t(ys.to - ys.from) * (xs.to - xs.from);
      float* dst = out + (size_t(oy) * op.out.w + ox) * c;
      for (int k = 0; k < c; ++k) {
        float acc = max ? -std::numeric_limits<float>::infinity() : 0.0f;
        for (int y = ys.lo; y < ys.hi; ++y) {
          for (int x = xs.lo; x < xs.hi; ++x) {
            const float v = in[(size_t(y) * op.in.w + x) * c + k];
            acc = max ? (v > acc || v != v ? v : acc) : acc + v;
          }
        }
        if (!max) acc /= float(divisor);
        dst[k] = op.relu ? std::max(acc, 0.0f) : acc;
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

PackedLinear pack_linear(Isa isa, int32_t in, int32_t out, const float* weight) {
  PackedLinear p;
  p.in = in;
  p.out = out;
  const int lanes = BRANCHY_SIMD ? isa_lanes(isa) : 1;
  if (lanes == 1) return p;
  p.isa = isa;
  const int full = out / lanes * lanes;
  p.weights = Buffer(size_t(in) * full);
  for (int o = 0; o < full; ++o) {
    float* block = p.weights.data() + size_t(o / lanes) * lanes * in;
    for (int i = 0; i < in; ++i) block[size_t(i) * lanes + o % lanes] = weight[size_t(o) * in + i];
  }
  return p;
}

void linear(const PackedLinear& p, const float* weight, const float* bias, bool relu,
            const float* x, float* y) {
#if BRANCHY_X86
  if (p.isa == Isa::Avx512) return avx512::linear(p, weight, bias, relu, x, y);
  if (p.isa == Isa::Avx2) return avx2::linear(p, weight, bias, relu, x, y);
#endif
#if BRANCHY_ARM64
  if (p.isa == Isa::Neon) return neon::linear(p, weight, bias, relu, x, y);
#endif
  for (int o = 0; o < p.out; ++o) {
    float acc = bias[o];
    const float* w = weight + size_t(o) * p.in;
    for (int i = 0; i < p.in; ++i) acc += w[i] * x[i];
    y[o] = relu ? std::max(acc, 0.0f) : acc;
  }
}

// The layout moves: the AVX2 tier serves AVX-512 too (reorder_tier.inl says why).
#if BRANCHY_X86
namespace avx2 {
namespace {
#define BRANCHY_TIER BRANCHY_AVX2
#include "reorder_tier.inl"
#undef BRANCHY_TIER
}  // namespace
}  // namespace avx2
#endif
#if BRANCHY_ARM64
namespace neon {
namespace {
#define BRANCHY_TIER BRANCHY_NEON
#include "reorder_tier.inl"
#undef BRANCHY_TIER
}  // namespace
}  // namespace neon
#endif

void nchw_to_nhwc(Isa isa, const Shape& s, const float* in, float* out) {
  const size_t plane = size_t(s.h) * s.w;
  // One channel or one pixel: both layouts are the same.
  if (s.c == 1 || plane == 1) return void(std::memcpy(out, in, s.numel() * sizeof(float)));
#if BRANCHY_X86
  // Under 8 channels a tile's stores are masked (slow on AMD); pixel by pixel is faster there
  // (3x224x224: 41 us against 198 us, AMD EPYC).
  if ((isa == Isa::Avx2 || isa == Isa::Avx512) && s.c >= 8) return avx2::reorder<true>(s, in, out);
#endif
#if BRANCHY_ARM64
  // From 4 channels a tile's stores are whole vectors (not timed: no ARM machine here).
  if (isa == Isa::Neon && s.c >= neon::kLanes) return neon::reorder<true>(s, in, out);
#endif
  (void)isa;
  if (s.c < 8) {
    for (size_t i = 0; i < plane; ++i) {
      for (int c = 0; c < s.c; ++c) out[i * s.c + c] = in[c * plane + i];
    }
    return;
  }
  for (int c = 0; c < s.c; ++c) {
    for (size_t i = 0; i < plane; ++i) out[i * s.c + c] = in[c * plane + i];
  }
}

void nhwc_to_nchw(Isa isa, const Shape& s, const float* in, float* out) {
  const size_t plane = size_t(s.h) * s.w;
  if (s.c == 1 || plane == 1) return void(std::memcpy(out, in, s.numel() * sizeof(float)));
#if BRANCHY_X86
  if (isa == Isa::Avx2 || isa == Isa::Avx512) return avx2::reorder<false>(s, in, out);
#endif
#if BRANCHY_ARM64
  if (isa == Isa::Neon) return neon::reorder<false>(s, in, out);
#endif
  (void)isa;
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
