// Activations on a SIMD tier's vectors, for the epilogues of the tier kernels (depthwise,
// pointwise) and for whole arrays (act_array). Included by the *_tier.inl files of a tier, inside
// its namespace; Vec and the vector operations are that tier's (simd.h).

// e^x after Cephes' single-precision method: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts),
// e^r by a degree-6 polynomial in Horner form (Cephes' coefficients but the leading one), then
// scaled by 2^n: relative error under 3e-7 (SiLU against double precision, measured on 1.2M
// values in [-20, 20]); 9% faster than Cephes' degree 7. Below -87.3 it gives e^-87.3 (under
// 2^-125), above 88.3 infinity. NaN stays NaN.
BRANCHY_TIER inline Vec exp_approx(Vec in) {
  // max/min return their second operand when either is NaN: x goes second.
  const Vec top = broadcast(88.3f);
  const Vec x = min(top, max(broadcast(-87.3f), in));
  const Vec n = round_nearest(mul(x, broadcast(1.44269504088896341f)));
  Vec r = fma(n, broadcast(-0.693359375f), x);
  r = fma(n, broadcast(2.12194440e-4f), r);
  Vec p = broadcast(1.3981999507e-3f);
  p = fma(p, r, broadcast(8.3334519073e-3f));
  p = fma(p, r, broadcast(4.1665795894e-2f));
  p = fma(p, r, broadcast(1.6666665459e-1f));
  p = fma(p, r, broadcast(5.0000001201e-1f));
  p = fma(p, r, broadcast(1.0f));
  p = fma(p, r, broadcast(1.0f));
  // Above the range e^x overflows as expf's does, so that SiLU's x / (1 + e^-x) is -0 far below
  // zero (not x / FLT_MAX) and NaN at -inf, as in PyTorch.
  return select_greater(in, top, broadcast(std::numeric_limits<float>::infinity()), mul_pow2(p, n));
}

// The activation of one vector, as act_value (ops/registry.h) defines it, for the kinds
// act_in_registers (activation.h) admits; others pass v through.
BRANCHY_TIER inline Vec act_vec(Vec v, Act act, Vec lo, Vec hi) {
  const Vec one = broadcast(1.0f), three = broadcast(3.0f), six = broadcast(6.0f);
  // max/min return their second operand when either is NaN: v goes second, so NaN stays NaN as
  // in PyTorch.
  switch (act) {
    case Act::Relu: return max(zero(), v);
    case Act::Clamp: return min(hi, max(lo, v));
    case Act::Hardswish: return div(mul(v, min(six, max(zero(), add(v, three)))), six);
    case Act::Hardsigmoid: return div(min(six, max(zero(), add(v, three))), six);
    case Act::Silu: return div(v, add(one, exp_approx(sub(zero(), v))));
    case Act::Sigmoid: return div(one, add(one, exp_approx(sub(zero(), v))));
    default: return v;
  }
}

// out[i] = act(in[i]) for i < n (in == out allowed), act_in_registers(act).
// The loop is compiled once per kind (kAct), so that no vector pays act_vec's switch.
template <Act kAct>
BRANCHY_TIER inline void act_array_of(float lo_f, float hi_f, const float* in, float* out, size_t n) {
  const Vec lo = broadcast(lo_f), hi = broadcast(hi_f);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store(out + i, act_vec(load(in + i), kAct, lo, hi));
  if (i < n) {
    const int left = int(n - i);
    store_first(out + i, act_vec(load_first(in + i, left, zero()), kAct, lo, hi), left);
  }
}

BRANCHY_TIER inline void act_array(Act act, float lo, float hi, const float* in, float* out, size_t n) {
  switch (act) {
    case Act::Relu: return act_array_of<Act::Relu>(lo, hi, in, out, n);
    case Act::Clamp: return act_array_of<Act::Clamp>(lo, hi, in, out, n);
    case Act::Hardswish: return act_array_of<Act::Hardswish>(lo, hi, in, out, n);
    case Act::Hardsigmoid: return act_array_of<Act::Hardsigmoid>(lo, hi, in, out, n);
    case Act::Silu: return act_array_of<Act::Silu>(lo, hi, in, out, n);
    case Act::Sigmoid: return act_array_of<Act::Sigmoid>(lo, hi, in, out, n);
    default: if (in != out) std::copy(in, in + n, out);
  }
}

// Activations that cost more than a few instructions (SiLU, sigmoid): the convolution kernels run
// them over each finished stretch of output (still in L1 or L2) with act_rows, not in their tiles'
// registers, so that the convolution's loop keeps its registers (measured: SiLU in the depthwise
// epilogue doubled its cost, in the pointwise one it added a third).
inline bool cheap(Act act) {
  return act == Act::None || act == Act::Relu || act == Act::Clamp || act == Act::Hardswish ||
         act == Act::Hardsigmoid;
}

// act_array in place, never inlined into a kernel's loops (see cheap()).
[[gnu::noinline]] BRANCHY_TIER inline void act_rows(Act act, float lo, float hi, float* x, size_t n) {
  act_array(act, lo, hi, x, x, n);
}
