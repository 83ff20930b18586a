// The SIMD tier of depthwise convolution. depthwise.cpp includes this file once per tier
// namespace of simd.h, with BRANCHY_TIER set to the tier's target attribute.

BRANCHY_TIER inline Vec epilogue(Vec v, Act act, Vec lo, Vec hi) {
  const Vec three = broadcast(3.0f), six = broadcast(6.0f);
  switch (act) {
    case Act::Relu: return max(v, zero());
    case Act::Clamp: return min(max(v, lo), hi);
    case Act::Hardswish: return div(mul(v, min(max(add(v, three), zero()), six)), six);
    case Act::Hardsigmoid: return div(min(max(add(v, three), zero()), six), six);
    default: return v;
  }
}

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
    store(out + at + c0 + v * kLanes, epilogue(r, act, lo, hi));
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
  store_first(out + at + c0, epilogue(acc, act, lo, hi), left);
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

BRANCHY_TIER void depthwise(const DepthwiseGeometry& g, const float* w, const float* bias,
                            const float* in, const float* residual, Act act, float lo_f, float hi_f,
                            float* out, size_t pitch) {
  constexpr int kBlock = 4;
  const Vec lo = broadcast(lo_f), hi = broadcast(hi_f);
  const int whole = g.c / kLanes * kLanes;  // channels in whole vectors
  for (int oy = 0; oy < g.out_h; ++oy) {
    const int iy0 = oy * g.stride_h - g.pad_top;
    int ky0, ky1;
    window(iy0, g.dilation_h, g.kernel_h, g.in_h, &ky0, &ky1);
    for (int ox = 0; ox < g.out_w; ++ox) {
      const int ix0 = ox * g.stride_w - g.pad_left;
      int kx0, kx1;
      window(ix0, g.dilation_w, g.kernel_w, g.in_w, &kx0, &kx1);
      const size_t at = (size_t(oy) * g.out_w + ox) * g.c;
      int c0 = 0;
      for (; c0 + kBlock * kLanes <= whole; c0 += kBlock * kLanes) {
        pixel_block<kBlock>(g, w, bias, in, residual, act, lo, hi, out, pitch, c0, iy0, ix0, ky0, ky1, kx0, kx1, at);
      }
      for (; c0 + kLanes <= whole; c0 += kLanes) {
        pixel_block<1>(g, w, bias, in, residual, act, lo, hi, out, pitch, c0, iy0, ix0, ky0, ky1, kx0, kx1, at);
      }
      if (c0 < g.c) pixel_tail(g, w, bias, in, residual, act, lo, hi, out, pitch, c0, iy0, ix0, ky0, ky1, kx0, kx1, at);
    }
  }
}
