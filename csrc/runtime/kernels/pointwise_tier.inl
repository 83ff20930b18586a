// The SIMD tier of pointwise convolution. pointwise.cpp includes this file once per tier
// namespace of simd.h, with BRANCHY_TIER set to the tier's target attribute.

#include "act_tier.inl"

constexpr int kPanel = kRegisters >= 32 ? 4 : 2;  // vectors of output channels in a panel
constexpr int kRows = 6;                          // pixels in a tile

// A tile's accumulators plus residual, through the activation, into outs[m] (res[m]: the
// residual at the same place, or res null); `left`: channels of the last vector that exist.
template <int M, int V>
BRANCHY_TIER inline void store_tile(Vec (&acc)[M][V], const float* const* res, Act act, Vec lo,
                                    Vec hi, float* const* outs, int left) {
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const int n = v == V - 1 ? left : kLanes;
      Vec r = acc[m][v];
      if (res) r = add(r, load_first(res[m] + v * kLanes, n, zero()));
      store_first(outs[m] + v * kLanes, act_vec(r, act, lo, hi), n);
    }
  }
}

// A tile of M pixels by V vectors of output channels: the accumulators (M * V, plus V weights and
// a broadcast: 29 registers at 6 x 4 on AVX-512, 15 at 6 x 2 on AVX2) live over the whole loop of
// window positions (taps) and input channels. rows[t * kRows + m]: pixel m's K input channels under
// window position t; outs[m] / res[m]: its output (and residual) at the panel's first channel;
// `left`: channels of the last vector that exist (1..kLanes). Taps is a template argument for the
// 1x1 case (Taps 1): a runtime loop around its K loop measured 20% slower at K = 16.
template <int M, int V, bool Window>
BRANCHY_TIER inline void tile(int taps, int k_size, const float* const* rows, const float* panel,
                              int width, const float* bias, const float* const* res, Act act, Vec lo,
                              Vec hi, float* const* outs, int left) {
  Vec acc[M][V];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) {
    const Vec b = load(bias + v * kLanes);
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) acc[m][v] = b;
  }
  for (int t = 0; t < (Window ? taps : 1); ++t) {
    const float* const* tap_rows = rows + t * kRows;
    const float* tap_panel = panel + size_t(t) * k_size * width;
    for (int k = 0; k < k_size; ++k) {
      Vec w[V];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) w[v] = load(tap_panel + size_t(k) * width + v * kLanes);
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const Vec x = broadcast(tap_rows[m][k]);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[m][v] = fma(x, w[v], acc[m][v]);
      }
    }
  }
  store_tile<M, V>(acc, res, act, lo, hi, outs, left);
}

template <int M, bool Window>
BRANCHY_TIER void tile_m(int vectors, int taps, int k_size, const float* const* rows,
                         const float* panel, int width, const float* bias, const float* const* res,
                         Act act, Vec lo, Vec hi, float* const* outs, int left) {
  switch (vectors) {
    case 1: return tile<M, 1, Window>(taps, k_size, rows, panel, width, bias, res, act, lo, hi, outs, left);
    case 2: return tile<M, 2, Window>(taps, k_size, rows, panel, width, bias, res, act, lo, hi, outs, left);
    default: break;
  }
  if constexpr (kPanel == 4) {
    if (vectors == 3) return tile<M, 3, Window>(taps, k_size, rows, panel, width, bias, res, act, lo, hi, outs, left);
    return tile<M, 4, Window>(taps, k_size, rows, panel, width, bias, res, act, lo, hi, outs, left);
  }
}

BRANCHY_TIER void pointwise(const PointwiseGeometry& g, const float* weights, const float* bias,
                            const float* in, const float* residual, Act act, float lo_f, float hi_f,
                            float* out, const float* zeros) {
  using TileFn = void (*)(int, int, int, const float* const*, const float*, int, const float*,
                          const float* const*, Act, Vec, Vec, float* const*, int);
  static constexpr TileFn kTiles[2][kRows] = {
      {tile_m<1, false>, tile_m<2, false>, tile_m<3, false>, tile_m<4, false>, tile_m<5, false>,
       tile_m<6, false>},
      {tile_m<1, true>, tile_m<2, true>, tile_m<3, true>, tile_m<4, true>, tile_m<5, true>,
       tile_m<6, true>}};
  const Vec lo = broadcast(lo_f), hi = broadcast(hi_f);
  const int k_size = g.in_c, n_size = g.out_c, taps = g.taps();
  const bool window = taps > 1 || g.pad_top > 0 || g.pad_left > 0;  // else 1x1: rows in place
  const int padded = (n_size + kLanes - 1) / kLanes * kLanes;
  const int64_t pixels = int64_t(g.out_h) * g.out_w;
  // Pixels per block: their input rows (64K floats at most) stay in L2 while every panel of
  // weights passes over them; a panel (taps x K x 64 floats) is reused by every tile of the block.
  // Outputs of a block (N floats a pixel) stay in L2 too: costly activations (SiLU, sigmoid) run
  // over a finished block, not in the tiles' registers (measured faster, as in depthwise).
  const int64_t block = std::max<int64_t>(kRows, 65536 / std::max(k_size * taps, 1) / kRows * kRows);
  const Act inside = cheap(act) ? act : Act::None;
  const float* rows[kMaxGemmTaps * kRows];  // a tile's row pointers, on the stack
  const float* res[kRows];
  float* outs[kRows];
  for (int64_t p0 = 0; p0 < pixels; p0 += block) {
    const int64_t p1 = std::min(pixels, p0 + block);
    for (int n0 = 0; n0 < padded; n0 += kPanel * kLanes) {
      const int width = std::min(kPanel * kLanes, padded - n0);
      const int vectors = width / kLanes;
      const int left = std::min(kLanes, n_size - n0 - (vectors - 1) * kLanes);
      const float* panel = weights + size_t(n0) * taps * k_size;
      int64_t oy = p0 / g.out_w, ox = p0 % g.out_w;  // of pixel p, stepped (no division a pixel)
      for (int64_t p = p0; p < p1; p += kRows) {
        const int m_size = int(std::min<int64_t>(kRows, p1 - p));
        for (int m = 0; m < m_size; ++m) {
          const int64_t q = p + m;
          if (window) {
            for (int t = 0; t < taps; ++t) {
              const int64_t iy = oy * g.stride_h - g.pad_top + int64_t(t / g.kernel_w) * g.dilation_h;
              const int64_t ix = ox * g.stride_w - g.pad_left + int64_t(t % g.kernel_w) * g.dilation_w;
              const bool inside = iy >= 0 && iy < g.in_h && ix >= 0 && ix < g.in_w;
              rows[t * kRows + m] = inside ? in + (iy * g.in_w + ix) * k_size : zeros;
            }
          } else {
            rows[m] = in + (oy * g.stride_h * g.in_w + ox * g.stride_w) * k_size;
          }
          outs[m] = out + q * n_size + n0;
          res[m] = residual ? residual + q * n_size + n0 : nullptr;
          if (++ox == g.out_w) ox = 0, ++oy;
        }
        kTiles[window][m_size - 1](vectors, taps, k_size, rows, panel, width, bias + n0,
                           residual ? res : nullptr, inside, lo, hi, outs, left);
      }
    }
    if (inside != act && act_in_registers(act)) {
      act_rows(act, lo_f, hi_f, out + p0 * n_size, size_t(p1 - p0) * n_size);
    }
  }
}

// planar_gemm's tile: M pixels of one output row (pixel m's window corner at corner + m * step)
// by V vectors of output channels; term t of K (channel, window position) reads offsets[t] from
// the corner, and panel row t.
template <int M, int V>
BRANCHY_TIER void planar_tile(int terms, const int* offsets, const float* corner, int step,
                              const float* panel, int width, const float* bias,
                              const float* const* res, Act act, Vec lo, Vec hi,
                              float* const* outs, int left) {
  Vec acc[M][V];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) {
    const Vec b = load(bias + v * kLanes);
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) acc[m][v] = b;
  }
  for (int t = 0; t < terms; ++t) {
    const float* x = corner + offsets[t];
    Vec w[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) w[v] = load(panel + size_t(t) * width + v * kLanes);
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      const Vec xm = broadcast(x[m * step]);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[m][v] = fma(xm, w[v], acc[m][v]);
    }
  }
  store_tile<M, V>(acc, res, act, lo, hi, outs, left);
}

using PlanarFn = void (*)(int, const int*, const float*, int, const float*, int, const float*,
                          const float* const*, Act, Vec, Vec, float* const*, int);

template <int M>
BRANCHY_TIER PlanarFn planar_for(int vectors) {
  if constexpr (kPanel == 4) {
    if (vectors == 3) return planar_tile<M, 3>;
    if (vectors == 4) return planar_tile<M, 4>;
  }
  return vectors == 1 ? planar_tile<M, 1> : planar_tile<M, 2>;
}

// `padded`: the input's planes [in_c][ph][pw] with the padding around (planar_gemm).
BRANCHY_TIER void planar(const PointwiseGeometry& g, const float* weights, const float* bias,
                         const float* padded, int ph, int pw, const float* residual, Act act,
                         float lo_f, float hi_f, float* out) {
  const Vec lo = broadcast(lo_f), hi = broadcast(hi_f);
  const Act inside = cheap(act) ? act : Act::None;
  const int taps = g.taps(), terms = g.in_c * taps, n_size = g.out_c;
  const int padded_n = (n_size + kLanes - 1) / kLanes * kLanes;
  int offsets[kMaxGemmTaps];
  for (int c = 0; c < g.in_c; ++c) {
    for (int t = 0; t < taps; ++t) {
      offsets[c * taps + t] = (c * ph + t / g.kernel_w * g.dilation_h) * pw + t % g.kernel_w * g.dilation_w;
    }
  }
  const float* res[kRows];
  float* outs[kRows];
  for (int oy = 0; oy < g.out_h; ++oy) {
    const float* row = padded + size_t(oy) * g.stride_h * pw;
    const size_t first = size_t(oy) * g.out_w;  // the row's first pixel
    for (int n0 = 0; n0 < padded_n; n0 += kPanel * kLanes) {
      const int width = std::min(kPanel * kLanes, padded_n - n0);
      const int vectors = width / kLanes;
      const int left = std::min(kLanes, n_size - n0 - (vectors - 1) * kLanes);
      const float* panel = weights + size_t(n0) * terms;
      for (int ox = 0; ox < g.out_w; ox += kRows) {
        const int m_size = std::min(kRows, g.out_w - ox);
        for (int m = 0; m < m_size; ++m) {
          outs[m] = out + (first + ox + m) * n_size + n0;
          res[m] = residual ? residual + (first + ox + m) * n_size + n0 : nullptr;
        }
        static constexpr PlanarFn (*kFor[kRows])(int) = {planar_for<1>, planar_for<2>, planar_for<3>,
                                                         planar_for<4>, planar_for<5>, planar_for<6>};
        kFor[m_size - 1](vectors)(terms, offsets, row + size_t(ox) * g.stride_w, g.stride_w, panel,
                                  width, bias + n0, residual ? res : nullptr, inside, lo, hi, outs, left);
      }
    }
    if (inside != act && act_in_registers(act)) {
      act_rows(act, lo_f, hi_f, out + first * n_size, size_t(g.out_w) * n_size);
    }
  }
}
