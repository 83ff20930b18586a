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
#if BRANCHY_X86
  switch (pool_isa(op, isa)) {
    case Isa::Avx512:
      return max ? avx512::pool_k2s2<true>(op, in, out) : avx512::pool_k2s2<false>(op, in, out);
    case Isa::Avx2:
      return max ? avx2::pool_k2s2<true>(op, in, out) : avx2::pool_k2s2<false>(op, in, out);
    case Isa::Portable: break;
  }
#endif
  (void)isa;
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
#if BRANCHY_X86
  switch (isa) {
    case Isa::Avx512: return max ? avx512::pool_nhwc<true>(op, in, out) : avx512::pool_nhwc<false>(op, in, out);
    case Isa::Avx2: return max ? avx2::pool_nhwc<true>(op, in, out) : avx2::pool_nhwc<false>(op, in, out);
    case Isa::Portable: break;
  }
#endif
  (void)isa;
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
  int lanes = 0;
#if BRANCHY_X86
  lanes = isa == Isa::Avx512 ? avx512::kLanes : isa == Isa::Avx2 ? avx2::kLanes : 0;
#endif
  (void)isa;
  if (lanes == 0) return p;
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
  for (int o = 0; o < p.out; ++o) {
    float acc = bias[o];
    const float* w = weight + size_t(o) * p.in;
    for (int i = 0; i < p.in; ++i) acc += w[i] * x[i];
    y[o] = relu ? std::max(acc, 0.0f) : acc;
  }
}

#if BRANCHY_X86
namespace avx2 {
namespace {

// An 8x8 transpose in registers: rows[i][j] becomes rows[j][i]. Always inlined: as a call, the
// rows go through memory.
[[gnu::always_inline]] BRANCHY_AVX2 inline void transpose8(Vec r[8]) {
  Vec t[8], u[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
    r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
  }
}

// Tiles of 8 channels x 8 pixels, transposed in registers: vector loads and stores on both
// sides whatever the channel count (a scalar loop is one load and one store per value, and its
// strided side thrashes L1 where the plane is a multiple of 1 KiB). Tiles go along the output's
// rows: pixels outer for NHWC output, channels outer for NCHW output, so that each output row is
// written front to back (64 channels of 16x16 NHWC to NCHW: 2.1 us, against 5.8 us pixels
// outer). AVX2 serves the AVX-512 tier too: 16x16 tiles of 512-bit vectors measured slower at
// 5 to 20 channels (1.7 against 0.6 us for 5x30x30) and no faster at 64.
template <bool ToNhwc>
BRANCHY_AVX2 void reorder(const Shape& s, const float* in, float* out) {
  const int c = s.c, plane = s.h * s.w;
  const int outer = ToNhwc ? plane : c, inner = ToNhwc ? c : plane;
  for (int i = 0; i < outer; i += kLanes) {
    for (int j = 0; j < inner; j += kLanes) {
      const int p0 = ToNhwc ? i : j, c0 = ToNhwc ? j : i;
      const int pixels = std::min(kLanes, plane - p0), channels = std::min(kLanes, c - c0);
      // Loaded rows are channels coming from NCHW, pixels coming from NHWC; stored rows the other.
      const int rows = ToNhwc ? channels : pixels, columns = ToNhwc ? pixels : channels;
      Vec r[kLanes];
#pragma GCC unroll 8
      for (int k = 0; k < kLanes; ++k) {
        const float* src = ToNhwc ? in + size_t(c0 + k) * plane + p0 : in + size_t(p0 + k) * c + c0;
        r[k] = k < rows ? load_first(src, columns, zero()) : zero();
      }
      transpose8(r);
#pragma GCC unroll 8
      for (int k = 0; k < columns; ++k) {
        store_first(ToNhwc ? out + size_t(p0 + k) * c + c0 : out + size_t(c0 + k) * plane + p0,
                    r[k], rows);
      }
    }
  }
}

}  // namespace
}  // namespace avx2
#endif

void nchw_to_nhwc(Isa isa, const Shape& s, const float* in, float* out) {
  const size_t plane = size_t(s.h) * s.w;
  // One channel or one pixel: both layouts are the same.
  if (s.c == 1 || plane == 1) return void(std::memcpy(out, in, s.numel() * sizeof(float)));
#if BRANCHY_X86
  // Under 8 channels a tile's stores are masked (slow on AMD); pixel by pixel is faster there
  // (3x224x224: 41 us against 198 us, AMD EPYC).
  if (isa >= Isa::Avx2 && s.c >= 8) return avx2::reorder<true>(s, in, out);
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
  if (isa >= Isa::Avx2) return avx2::reorder<false>(s, in, out);
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
