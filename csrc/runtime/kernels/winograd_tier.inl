// The SIMD tier of the Winograd transforms (winograd.h). winograd.cpp includes this file once per
// tier namespace of simd.h, with BRANCHY_TIER set to the tier's target attribute.

#include "act_tier.inl"

// Tiles [t0, t1): v[(xi * block + t - t0) * in_c + k] = (B^T d B)[xi] for channel k of the tile's
// 4x4 input patch d (zeros outside the input), xi = 4 * row + column, with
// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
BRANCHY_TIER void winograd_input(const WinogradGeometry& g, const float* in, int64_t t0, int64_t t1,
                                 int64_t block, float* v) {
  const int c = g.in_c;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t y0 = t / g.tiles_w() * 2 - g.pad_top, x0 = t % g.tiles_w() * 2 - g.pad_left;
    const float* src[4][4];
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 4; ++j) {
        const int64_t y = y0 + i, x = x0 + j;
        src[i][j] = y >= 0 && y < g.in_h && x >= 0 && x < g.in_w ? in + (y * g.in_w + x) * c : nullptr;
      }
    }
    float* dst = v + (t - t0) * c;
    for (int c0 = 0; c0 < c; c0 += kLanes) {
      const int n = std::min(kLanes, c - c0);
      Vec d[4][4], s[4][4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) d[i][j] = src[i][j] ? load_first(src[i][j] + c0, n, zero()) : zero();
      }
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {  // s = B^T d
        s[0][j] = sub(d[0][j], d[2][j]);
        s[1][j] = add(d[1][j], d[2][j]);
        s[2][j] = sub(d[2][j], d[1][j]);
        s[3][j] = sub(d[1][j], d[3][j]);
      }
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {  // (B^T d) B
        float* row = dst + size_t(4 * i) * block * c + c0;
        const size_t step = size_t(block) * c;
        store_first(row, sub(s[i][0], s[i][2]), n);
        store_first(row + step, add(s[i][1], s[i][2]), n);
        store_first(row + 2 * step, sub(s[i][2], s[i][1]), n);
        store_first(row + 3 * step, sub(s[i][1], s[i][3]), n);
      }
    }
  }
}

// Tiles [t0, t1): from the products m[(xi * block + t - t0) * out_c + n], the tile's outputs
// Y = A^T m A (A^T = [1 1 1 0; 0 1 -1 -1]) plus bias, plus the residual, then the activation
// (in registers: act_in_registers(act)), for the pixels inside the output.
BRANCHY_TIER void winograd_output(const WinogradGeometry& g, const float* m, int64_t t0, int64_t t1,
                                  int64_t block, const float* bias, const float* residual, Act act,
                                  float lo_f, float hi_f, float* out) {
  const Vec lo = broadcast(lo_f), hi = broadcast(hi_f);
  const int c = g.out_c;
  const size_t step = size_t(block) * c;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t y0 = t / g.tiles_w() * 2, x0 = t % g.tiles_w() * 2;
    const int rows = int(std::min<int64_t>(2, g.out_h - y0)), cols = int(std::min<int64_t>(2, g.out_w - x0));
    const float* src = m + (t - t0) * c;
    for (int c0 = 0; c0 < c; c0 += kLanes) {
      const int n = std::min(kLanes, c - c0);
      Vec p[4][4], s[2][4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) p[i][j] = load_first(src + size_t(4 * i + j) * step + c0, n, zero());
      }
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {  // s = A^T m
        s[0][j] = add(add(p[0][j], p[1][j]), p[2][j]);
        s[1][j] = sub(sub(p[1][j], p[2][j]), p[3][j]);
      }
      const Vec b = load(bias + c0);
      for (int i = 0; i < rows; ++i) {
        const Vec y[2] = {add(add(s[i][0], s[i][1]), s[i][2]), sub(sub(s[i][1], s[i][2]), s[i][3])};
        for (int j = 0; j < cols; ++j) {
          const int64_t at = ((y0 + i) * g.out_w + x0 + j) * c + c0;
          Vec r = add(y[j], b);
          if (residual) r = add(r, load_first(residual + at, n, zero()));
          store_first(out + at, act_vec(r, act, lo, hi), n);
        }
      }
    }
  }
}
