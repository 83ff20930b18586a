// The SIMD tier of depthwise convolution. depthwise.cpp includes this file once per tier
// namespace of simd.h, with BRANCHY_TIER set to the tier's target attribute.

#include "act_tier.inl"

// One output pixel, channels [c0, c0 + V * kLanes) (all present: plain loads), the window's rows
// [ky0, ky1) and columns [kx0, kx1) inside the input.
template <int V>
BRANCHY_TIER inline void pixel_block(const DepthwiseGeometry& g, const float* w, const float* bias,
                                     const float* in, const float* residual, Act act, Vec lo, Vec hi,
                                     float* out, size_t pitch, int c0, int iy0, int ix0, int ky0,
                                     int ky1, int kx0, int kx1, size_t at) {
  Vec acc[V];
  for (int v = 0; v < V; ++v) acc[v] = load(bias + c0 + v * kLanes);
  for (int ky = ky0; ky < ky1; ++ky) {
    const float* row = in + (size_t(iy0 + ky * g.dilation_h) * g.in_w) * g.c + c0;
    const float* krow = w + size_t(ky * g.kernel_w) * pitch + c0;
    for (int kx = kx0; kx < kx1; ++kx) {
      const float* x = row + size_t(ix0 + kx * g.dilation_w) * g.c;
      const float* k = krow + size_t(kx) * pitch;
      for (int v = 0; v < V; ++v) acc[v] = fma(load(x + v * kLanes), load(k + v * kLanes), acc[v]);
    }
  }
  for (int v = 0; v < V; ++v) {
    Vec r = acc[v];
    if (residual) r = add(r, load(residual + at + c0 + v * kLanes));
    store(out + at + c0 + v * kLanes, act_vec(r, act, lo, hi));
  }
}

// The channels left after whole vectors: masked loads and stores.
BRANCHY_TIER inline void pixel_tail(const DepthwiseGeometry& g, const float* w, const float* bias,
                                    const float* in, const float* residual, Act act, Vec lo, Vec hi,
                                    float* out, size_t pitch, int c0, int iy0, int ix0, int ky0,
                                    int ky1, int kx0, int kx1, size_t at) {
  const int left = g.c - c0;
  Vec acc = load(bias + c0);  // bias is padded with zeros past C
  for (int ky = ky0; ky < ky1; ++ky) {
    for (int kx = kx0; kx < kx1; ++kx) {
      const float* x = in + (size_t(iy0 + ky * g.dilation_h) * g.in_w + ix0 + kx * g.dilation_w) * g.c + c0;
      acc = fma(load_first(x, left, zero()), load(w + size_t(ky * g.kernel_w + kx) * pitch + c0), acc);
    }
  }
  if (residual) acc = add(acc, load_first(residual + at + c0, left, zero()));
  store_first(out + at + c0, act_vec(acc, act, lo, hi), left);
}

// First index k in [0, n) with start + k * step >= 0, and one past the last with
// start + k * step < size.
inline void window(int start, int step, int n, int size, int* k0, int* k1) {
  int a = 0, b = n;
  while (a < n && start + a * step < 0) ++a;
  while (b > a && start + (b - 1) * step >= size) --b;
  *k0 = a;
  *k1 = b;
}

// kStrip output pixels of one row, all windows whole along x (columns inside the input), one
// vector of channels at c0: the window is unrolled (KW and the stride S fixed), so that an input
// vector two neighbouring windows share is loaded once, and each weight vector serves the strip.
constexpr int kStrip = 8;
template <int KW, int S>
BRANCHY_TIER void strip(const DepthwiseGeometry& g, const float* w, const float* bias, const float* in,
                        const float* residual, Act act, Vec lo, Vec hi, float* out, size_t pitch,
                        int c0, int iy0, int ix0, int ky0, int ky1, size_t at) {
  Vec acc[kStrip];
  const Vec b = load(bias + c0);
#pragma GCC unroll 8
  for (int j = 0; j < kStrip; ++j) acc[j] = b;
  const size_t c = size_t(g.c);
  for (int ky = ky0; ky < ky1; ++ky) {
    const float* row = in + (size_t(iy0 + ky * g.dilation_h) * g.in_w + ix0) * c + c0;
    const float* krow = w + size_t(ky * KW) * pitch + c0;
    Vec x[(kStrip - 1) * S + KW];
#pragma GCC unroll 32
    for (int i = 0; i < (kStrip - 1) * S + KW; ++i) x[i] = load(row + i * c);
#pragma GCC unroll 8
    for (int kx = 0; kx < KW; ++kx) {
      const Vec k = load(krow + size_t(kx) * pitch);
#pragma GCC unroll 8
      for (int j = 0; j < kStrip; ++j) acc[j] = fma(x[j * S + kx], k, acc[j]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < kStrip; ++j) {
    Vec r = acc[j];
    if (residual) r = add(r, load(residual + at + j * c + c0));
    store(out + at + j * c + c0, act_vec(r, act, lo, hi));
  }
}

using StripFn = void (*)(const DepthwiseGeometry&, const float*, const float*, const float*,
                         const float*, Act, Vec, Vec, float*, size_t, int, int, int, int, int, size_t);

// The strip kernel for a window width and stride, or null.
inline StripFn strip_for(int kernel_w, int stride_w, int dilation_w) {
  if (dilation_w != 1 || stride_w < 1 || stride_w > 2) return nullptr;
  switch (kernel_w) {
    case 3: return stride_w == 1 ? strip<3, 1> : strip<3, 2>;
    case 5: return stride_w == 1 ? strip<5, 1> : strip<5, 2>;
    case 7: return stride_w == 1 ? strip<7, 1> : strip<7, 2>;
    default: return nullptr;
  }
}

BRANCHY_TIER void depthwise(const DepthwiseGeometry& g, const float* w, const float* bias,
                            const float* in, const float* residual, Act act, float lo_f, float hi_f,
                            float* out, size_t pitch) {
  constexpr int kBlock = 4;
  const Vec lo = broadcast(lo_f), hi = broadcast(hi_f);
  const Act inside = cheap(act) ? act : Act::None;
  const int whole = g.c / kLanes * kLanes;  // channels in whole vectors
  const StripFn strip_fn = strip_for(g.kernel_w, g.stride_w, g.dilation_w);
  // Output columns [x_lo, x_hi) have their window's columns inside the input.
  int x_lo = 0, x_hi = 0;
  if (strip_fn) {
    x_lo = std::min(g.out_w, (g.pad_left + g.stride_w - 1) / g.stride_w);
    x_hi = x_lo;
    while (x_hi < g.out_w && x_hi * g.stride_w - g.pad_left + g.kernel_w <= g.in_w) ++x_hi;
  }
  const int strips = (x_hi - x_lo) / kStrip;  // strips of kStrip columns from x_lo
  for (int oy = 0; oy < g.out_h; ++oy) {
    const int iy0 = oy * g.stride_h - g.pad_top;
    int ky0, ky1;
    window(iy0, g.dilation_h, g.kernel_h, g.in_h, &ky0, &ky1);
    for (int s = 0; s < strips; ++s) {
      const int ox = x_lo + s * kStrip;
      const size_t at = (size_t(oy) * g.out_w + ox) * g.c;
      for (int c0 = 0; c0 < whole; c0 += kLanes) {
        strip_fn(g, w, bias, in, residual, inside, lo, hi, out, pitch, c0, iy0,
                 ox * g.stride_w - g.pad_left, ky0, ky1, at);
      }
    }
    for (int ox = 0; ox < g.out_w; ++ox) {
      const bool stripped = ox >= x_lo && ox < x_lo + strips * kStrip;
      const int ix0 = ox * g.stride_w - g.pad_left;
      int kx0, kx1;
      window(ix0, g.dilation_w, g.kernel_w, g.in_w, &kx0, &kx1);
      const size_t at = (size_t(oy) * g.out_w + ox) * g.c;
      int c0 = stripped ? whole : 0;
      for (; c0 + kBlock * kLanes <= whole; c0 += kBlock * kLanes) {
        pixel_block<kBlock>(g, w, bias, in, residual, inside, lo, hi, out, pitch, c0, iy0, ix0, ky0, ky1, kx0, kx1, at);
      }
      for (; c0 + kLanes <= whole; c0 += kLanes) {
        pixel_block<1>(g, w, bias, in, residual, inside, lo, hi, out, pitch, c0, iy0, ix0, ky0, ky1, kx0, kx1, at);
      }
      if (c0 < g.c) pixel_tail(g, w, bias, in, residual, inside, lo, hi, out, pitch, c0, iy0, ix0, ky0, ky1, kx0, kx1, at);
    }
    if (inside != act && act_in_registers(act)) {
      float* row = out + size_t(oy) * g.out_w * g.c;
      act_rows(act, lo_f, hi_f, row, size_t(g.out_w) * g.c);
    }
  }
}
