// The SIMD tier of pooling and linear layers. simple_ops.cpp includes this file once per tier
// namespace of simd.h, with BRANCHY_TIER set to the tier's target attribute; Vec, kLanes and the
// vector operations are that tier's.

// 2x2 windows at stride 2, no padding, one output row segment of kLanes per step: the two input
// rows are combined lane by lane, then neighbouring columns pairwise. Missing values (a window
// cut by the input's edge in ceil mode) are -inf for max and 0 for the average, whose divisor
// counts only the window's part inside the input, as PyTorch's does without padding.
template <bool Max>
BRANCHY_TIER void pool_k2s2(const Op& op, const float* in, float* out) {
  const Vec fill = broadcast(Max ? -std::numeric_limits<float>::infinity() : 0.0f);
  const int in_w = op.in.w, out_w = op.out.w;
  for (int c = 0; c < op.out.c; ++c) {
    const float* plane = in + size_t(c) * op.in.h * in_w;
    float* dst = out + size_t(c) * op.out.h * out_w;
    for (int oy = 0; oy < op.out.h; ++oy, dst += out_w) {
      const float* r0 = plane + size_t(2 * oy) * in_w;
      const bool two_rows = 2 * oy + 1 < op.in.h;
      const Vec half = broadcast(two_rows ? 0.25f : 0.5f);
      const Vec whole = broadcast(two_rows ? 0.5f : 1.0f);
      for (int x = 0; x < out_w; x += kLanes) {
        const int n = in_w - 2 * x;
        Vec a = load_first(r0 + 2 * x, n, fill);
        Vec b = load_first(r0 + 2 * x + kLanes, n - kLanes, fill);
        if (two_rows) {
          const Vec a1 = load_first(r0 + in_w + 2 * x, n, fill);
          const Vec b1 = load_first(r0 + in_w + 2 * x + kLanes, n - kLanes, fill);
          a = Max ? max_nan(a, a1) : add(a, a1);
          b = Max ? max_nan(b, b1) : add(b, b1);
        }
        // Outputs below in_w / 2 have both columns; a last one past it, in ceil mode, has one.
        Vec v = Max ? pairwise_max(a, b)
                    : mul(pairwise_add(a, b), select_first(in_w / 2 - x, half, whole));
        if (op.relu) v = max(zero(), v);  // NaN stays NaN
        store_first(dst + x, v, out_w - x);
      }
    }
  }
}

// V vectors of channels from c0 of one NHWC output pixel: the window's pixels inside the input,
// [ya, yb) x [xa, xb), combined lane by lane with max_nan (a NaN wins, as in PyTorch) or summed
// and divided by `divisor`. Channels past `n` (< kLanes, last vector only) are not read or written.
template <bool Max, int V>
BRANCHY_TIER inline void pool_pixel(const Op& op, const float* in, float* dst, int c0, int n, int ya,
                                    int yb, int xa, int xb, Vec divisor) {
  const Vec fill = broadcast(Max ? -std::numeric_limits<float>::infinity() : 0.0f);
  const size_t c = size_t(op.in.c);
  Vec acc[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) acc[v] = fill;
  for (int y = ya; y < yb; ++y) {
    const float* row = in + size_t(y) * op.in.w * c + c0;
    for (int x = xa; x < xb; ++x) {
      const float* p = row + size_t(x) * c;
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) {
        const Vec a = n < kLanes ? load_first(p, n, fill) : load(p + v * kLanes);
        acc[v] = Max ? max_nan(acc[v], a) : add(acc[v], a);
      }
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    Vec r = Max ? acc[v] : div(acc[v], divisor);
    if (op.relu) r = max(zero(), r);  // NaN stays NaN
    if (n < kLanes) {
      store_first(dst + c0, r, n);
    } else {
      store(dst + c0 + v * kLanes, r);
    }
  }
}

// Any window on an NHWC sample (pool_nchw's rules), one output pixel at a time: its channels four
// vectors at a time, then one at a time, then a masked vector for the rest.
template <bool Max>
BRANCHY_TIER void pool_nhwc(const Op& op, const float* in, float* out) {
  const int c = op.in.c;
  for (int oy = 0; oy < op.out.h; ++oy) {
    const PoolSpan ys = pool_span(oy, op.stride_h, op.pad_h, op.kernel_h, op.in.h);
    const int ya = ys.lo, yb = ys.hi;
    for (int ox = 0; ox < op.out.w; ++ox) {
      const PoolSpan xs = pool_span(ox, op.stride_w, op.pad_w, op.kernel_w, op.in.w);
      const int xa = xs.lo, xb = xs.hi;
      const Vec divisor = broadcast(float(int64_t(ys.to - ys.from) * (xs.to - xs.from)));
      float* dst = out + (size_t(oy) * op.out.w + ox) * c;
      int c0 = 0;
      for (; c0 + 4 * kLanes <= c; c0 += 4 * kLanes) {
        pool_pixel<Max, 4>(op, in, dst, c0, kLanes, ya, yb, xa, xb, divisor);
      }
      for (; c0 + kLanes <= c; c0 += kLanes) pool_pixel<Max, 1>(op, in, dst, c0, kLanes, ya, yb, xa, xb, divisor);
      if (c0 < c) pool_pixel<Max, 1>(op, in, dst, c0, c - c0, ya, yb, xa, xb, divisor);
    }
  }
}

// One block of kLanes outputs, w is [in][kLanes]. Four accumulators over consecutive inputs hide
// the FMA latency.
BRANCHY_TIER Vec linear_block(int in, const float* w, const float* x) {
  Vec acc[4] = {zero(), zero(), zero(), zero()};
  int i = 0;
  for (; i + 4 <= in; i += 4) {
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      acc[u] = fma(broadcast(x[i + u]), load(w + size_t(i + u) * kLanes), acc[u]);
    }
  }
  for (; i < in; ++i) acc[0] = fma(broadcast(x[i]), load(w + size_t(i) * kLanes), acc[0]);
  return add(add(acc[0], acc[1]), add(acc[2], acc[3]));
}

// Two blocks at once, so that each broadcast of x feeds two FMAs: large layers stream their
// weights from L2 or beyond, and fewer loads per FMA keep that stream going.
BRANCHY_TIER void linear_pair(int in, const float* w0, const float* w1, const float* x, Vec* y) {
  Vec acc[4] = {zero(), zero(), zero(), zero()};
  int i = 0;
  for (; i + 2 <= in; i += 2) {
#pragma GCC unroll 2
    for (int u = 0; u < 2; ++u) {
      const Vec xv = broadcast(x[i + u]);
      acc[2 * u] = fma(xv, load(w0 + size_t(i + u) * kLanes), acc[2 * u]);
      acc[2 * u + 1] = fma(xv, load(w1 + size_t(i + u) * kLanes), acc[2 * u + 1]);
    }
  }
  if (i < in) {
    const Vec xv = broadcast(x[i]);
    acc[0] = fma(xv, load(w0 + size_t(i) * kLanes), acc[0]);
    acc[1] = fma(xv, load(w1 + size_t(i) * kLanes), acc[1]);
  }
  y[0] = add(acc[0], acc[2]);
  y[1] = add(acc[1], acc[3]);
}

BRANCHY_TIER void linear_store(Vec v, const float* bias, bool relu, float* y) {
  v = add(v, load(bias));
  store(y, relu ? max(zero(), v) : v);  // NaN stays NaN
}

// R rows of W ([out, in] as in the model file) as dot products with x, each x vector loaded
// once for the R rows: y[r] = W[r] . x.
template <int R>
BRANCHY_TIER void dot_rows(int in, const float* w, const float* x, float* y) {
  Vec acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = zero();
  int i = 0;
  for (; i + kLanes <= in; i += kLanes) {
    const Vec xv = load(x + i);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = fma(load(w + size_t(r) * in + i), xv, acc[r]);
  }
  if (i < in) {
    const Vec xv = load_first(x + i, in - i, zero());
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      acc[r] = fma(load_first(w + size_t(r) * in + i, in - i, zero()), xv, acc[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) y[r] = sum(acc[r]);
}

// Whole blocks of kLanes outputs from the packed weights, two at a time; the outputs left (fewer
// than kLanes) as dot products over the model's rows, in groups of 8 (eight FMA chains), 4, 2, 1.
BRANCHY_TIER void linear(const PackedLinear& p, const float* weight, const float* bias, bool relu,
                         const float* x, float* y) {
  const float* packed = p.weights.data();
  const size_t block = size_t(p.in) * kLanes;
  const int full = p.out / kLanes;
  int b = 0;
  for (; b + 2 <= full; b += 2) {
    Vec v[2];
    linear_pair(p.in, packed + b * block, packed + (b + 1) * block, x, v);
    linear_store(v[0], bias + b * kLanes, relu, y + b * kLanes);
    linear_store(v[1], bias + (b + 1) * kLanes, relu, y + (b + 1) * kLanes);
  }
  if (b < full) {
    linear_store(linear_block(p.in, packed + b * block, x), bias + b * kLanes, relu,
                 y + b * kLanes);
  }
  int o = full * kLanes;
  const int rest = o;
  for (; o + 8 <= p.out; o += 8) dot_rows<8>(p.in, weight + size_t(o) * p.in, x, y + o);
  if (o + 4 <= p.out) dot_rows<4>(p.in, weight + size_t(o) * p.in, x, y + o), o += 4;
  if (o + 2 <= p.out) dot_rows<2>(p.in, weight + size_t(o) * p.in, x, y + o), o += 2;
  if (o < p.out) dot_rows<1>(p.in, weight + size_t(o) * p.in, x, y + o);
  for (o = rest; o < p.out; ++o) y[o] = relu ? std::max(y[o] + bias[o], 0.0f) : y[o] + bias[o];
}
