// The exit decision's arithmetic, shared by the CPU runtime, the CPU op and the CUDA kernel.
//
// One pass over a row of logits keeps an "online softmax" state: the running maximum m,
// s = sum exp(z - m) and t = sum exp(z - m) * (z - m). Then
//   H = logsumexp(z) - sum p z = log(s) - t / s     (both terms >= 0: t <= 0, s >= 1)
//   max softmax = 1 / s.
// States of disjoint parts of a row merge, so SIMD lanes, warps and blocks each keep one.
// NaN and +inf logits are counted apart from the arithmetic and settled in finalize().
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__CUDACC__)
#define BRANCHY_HD __host__ __device__ __forceinline__
#else
#define BRANCHY_HD inline
#endif

namespace branchy {

enum class Criterion : int { Entropy = 0, MaxProb = 1 };

// exp() of anything below this is 0 in fp32 (the smallest denormal is e^-103.3). Clamping the
// exponent keeps 0 * (-inf) out of the sums when a logit or the running max is -inf.
constexpr float kMinExponent = -200.0f;

struct RowState {
  float m = -std::numeric_limits<float>::infinity();  // max over finite and -inf logits
  float s = 0.0f;                                      // sum exp(z - m)
  float t = 0.0f;                                      // sum exp(z - m) * (z - m)
  int64_t argmax = -1;                                 // first index of m (-1: none yet)
  int64_t nan_count = 0, first_nan = -1;
  int64_t inf_count = 0, first_inf = -1;               // +inf logits
};

BRANCHY_HD float clamp_exponent(float x) {
  // fmaxf returns the other operand for NaN (-inf - -inf), which is what we want here.
  return fmaxf(x, kMinExponent);
}

BRANCHY_HD int64_t first_of(int64_t a, int64_t b) {
  if (a < 0) return b;
  if (b < 0) return a;
  return a < b ? a : b;
}

// Adds logit z at column i. Columns must reach one state in increasing order.
BRANCHY_HD void update(RowState& st, float z, int64_t i) {
  if (z != z) {
    st.first_nan = st.nan_count++ ? st.first_nan : i;
    return;
  }
  if (z == std::numeric_limits<float>::infinity()) {
    st.first_inf = st.inf_count++ ? st.first_inf : i;
    return;
  }
  if (z > st.m) {
    const float dm = clamp_exponent(st.m - z);
    const float r = expf(dm);
    st.t = r * (st.t + dm * st.s);
    st.s = r * st.s + 1.0f;
    st.m = z;
    st.argmax = i;
  } else {
    const float d = clamp_exponent(z - st.m);
    const float e = expf(d);
    st.s += e;
    st.t += e * d;
  }
}

// Merges the state of another part of the same row into a.
BRANCHY_HD void merge(RowState& a, const RowState& b) {
  const float m = fmaxf(a.m, b.m);
  const float da = clamp_exponent(a.m - m), db = clamp_exponent(b.m - m);
  const float ra = expf(da), rb = expf(db);
  a.t = ra * (a.t + da * a.s) + rb * (b.t + db * b.s);
  a.s = ra * a.s + rb * b.s;
  if (b.m > a.m) {
    a.argmax = b.argmax;
  } else if (!(a.m > b.m)) {
    a.argmax = first_of(a.argmax, b.argmax);
  }
  a.m = m;
  a.nan_count += b.nan_count;
  a.first_nan = first_of(a.first_nan, b.first_nan);
  a.inf_count += b.inf_count;
  a.first_inf = first_of(a.first_inf, b.first_inf);
}

struct Decision {
  float score;         // entropy (nats) or max softmax probability, by criterion
  bool exit;
  int64_t prediction;  // argmax, first index on ties
};

// Settles a whole row of `classes` logits. Entropy: exit iff H < threshold.
// MaxProb: exit iff max softmax >= threshold. A row with NaN never exits.
BRANCHY_HD Decision finalize(const RowState& st, int64_t classes, Criterion criterion,
                             float threshold) {
  float entropy, max_prob;
  int64_t prediction;
  if (st.nan_count > 0) {
    // torch.argmax treats NaN as the largest value; report the same index.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    return Decision{nan, false, st.first_nan};
  } else if (st.inf_count > 0) {
    // Several equal +inf logits: the softmax is uniform over them.
    entropy = logf(static_cast<float>(st.inf_count));
    max_prob = 1.0f / static_cast<float>(st.inf_count);
    prediction = st.first_inf;
  } else if (st.argmax < 0) {
    // Every logit is -inf: all equal, so the softmax is uniform over the row.
    entropy = logf(static_cast<float>(classes));
    max_prob = 1.0f / static_cast<float>(classes);
    prediction = 0;
  } else {
    entropy = fmaxf(logf(st.s) - st.t / st.s, 0.0f);
    max_prob = 1.0f / st.s;
    prediction = st.argmax;
  }
  if (criterion == Criterion::Entropy) return Decision{entropy, entropy < threshold, prediction};
  return Decision{max_prob, max_prob >= threshold, prediction};
}

}  // namespace branchy
