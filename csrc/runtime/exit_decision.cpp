#include "exit_decision.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "cpu.h"

#if BRANCHY_X86
#include <cpuid.h>
#include <immintrin.h>
#endif
#if BRANCHY_ARM64
#include "kernels/simd.h"
#endif

namespace branchy {
namespace {

// Storage tags for the 16-bit types, so the row kernels can be templates over the input type.
struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

inline float to_float(float x) { return x; }

inline float to_float(BFloat16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float to_float(Half x) {
  const uint32_t sign = static_cast<uint32_t>(x.bits & 0x8000u) << 16;
  const uint32_t exponent = (x.bits >> 10) & 0x1fu;
  const uint32_t mantissa = x.bits & 0x3ffu;
  uint32_t u;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in fp32.
    float f = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -f : f;
  } else if (exponent == 31) {
    u = sign | 0x7f800000u | (mantissa << 13);
  } else {
    u = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

template <class T>
Decision decide_row_portable(const T* row, int64_t classes, Criterion criterion, float threshold) {
  // Summing in chunks and merging the chunks' states keeps fp32 rounding error from growing
  // with the row length (a single running sum loses about 1e-4 relative at 32000 classes).
  constexpr int64_t kChunk = 256;
  RowState st;
  for (int64_t begin = 0; begin < classes; begin += kChunk) {
    RowState chunk;
    const int64_t end = std::min(classes, begin + kChunk);
    for (int64_t i = begin; i < end; ++i) update(chunk, to_float(row[i]), i);
    merge(st, chunk);
  }
  return finalize(st, classes, criterion, threshold);
}

#if BRANCHY_X86
// exp for 8 floats (Cephes' expf: range reduction by ln 2, degree-5 polynomial), about 1 ulp.
// Inputs below about -87.3 give 0, which is all the exit decision needs of them.
BRANCHY_AVX2 inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
  __m256 n = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  n = _mm256_floor_ps(n);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}

BRANCHY_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }

BRANCHY_AVX2 inline __m256 load8(const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

BRANCHY_AVX2 inline __m256 load8(const BFloat16* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

// Eight online-softmax states, lane k holding columns k, k + 8, k + 16, ...
struct Lanes {
  __m256 m, s, t, special;  // special: a NaN or +inf was seen in the lane
  __m256i argmax, column;
};

BRANCHY_AVX2 inline void step(Lanes& l, __m256 z) {
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 lo = _mm256_set1_ps(kMinExponent);
  l.special = _mm256_or_ps(l.special, _mm256_or_ps(_mm256_cmp_ps(z, z, _CMP_UNORD_Q),
                                                   _mm256_cmp_ps(z, inf, _CMP_EQ_OQ)));
  const __m256 greater = _mm256_cmp_ps(z, l.m, _CMP_GT_OQ);
  if (_mm256_movemask_ps(greater)) {
    // A new maximum in some lane: rescale that lane's sums to it. Rare after the first vectors.
    const __m256 m = _mm256_max_ps(z, l.m);
    const __m256 dm = _mm256_max_ps(_mm256_sub_ps(l.m, m), lo);
    const __m256 r = exp8(dm);
    l.t = _mm256_mul_ps(r, _mm256_fmadd_ps(dm, l.s, l.t));
    l.s = _mm256_mul_ps(r, l.s);
    l.m = m;
    l.argmax = _mm256_castps_si256(_mm256_blendv_ps(
        _mm256_castsi256_ps(l.argmax), _mm256_castsi256_ps(l.column), greater));
  }
  // max_ps returns its second operand for NaN (-inf - -inf), so d is never NaN.
  const __m256 d = _mm256_max_ps(_mm256_sub_ps(z, l.m), lo);
  const __m256 e = exp8(d);
  l.s = _mm256_add_ps(l.s, e);
  l.t = _mm256_fmadd_ps(e, d, l.t);
  l.column = _mm256_add_epi32(l.column, _mm256_set1_epi32(8));
}

BRANCHY_AVX2 inline float horizontal_max(__m256 v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_max_ss(x, _mm_movehdup_ps(x)));
}

BRANCHY_AVX2 inline float horizontal_sum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}

BRANCHY_AVX2 inline int32_t horizontal_min(__m256i v) {
  __m128i x = _mm_min_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  x = _mm_min_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtsi128_si32(_mm_min_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(2, 3, 0, 1))));
}

// The eight lane states merged into one, as merge() would, with one vector exp.
BRANCHY_AVX2 inline RowState merge_lanes(const Lanes& l) {
  RowState st;
  const float m = horizontal_max(l.m);
  if (m == -std::numeric_limits<float>::infinity()) return st;  // every logit was -inf
  const __m256 mv = _mm256_set1_ps(m);
  const __m256 dm = _mm256_max_ps(_mm256_sub_ps(l.m, mv), _mm256_set1_ps(kMinExponent));
  const __m256 r = exp8(dm);
  st.m = m;
  st.s = horizontal_sum(_mm256_mul_ps(r, l.s));
  st.t = horizontal_sum(_mm256_mul_ps(r, _mm256_fmadd_ps(dm, l.s, l.t)));
  // The first column holding the maximum: the smallest index among lanes whose max equals m.
  const __m256 at_max = _mm256_cmp_ps(l.m, mv, _CMP_EQ_OQ);
  const __m256i candidates = _mm256_castps_si256(_mm256_blendv_ps(
      _mm256_castsi256_ps(_mm256_set1_epi32(std::numeric_limits<int32_t>::max())),
      _mm256_castsi256_ps(l.argmax), at_max));
  st.argmax = horizontal_min(candidates);
  return st;
}

template <class T>
BRANCHY_AVX2 Decision decide_row_avx2(const T* row, int64_t classes, Criterion criterion,
                                      float threshold) {
  Lanes l;
  l.m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  l.s = _mm256_setzero_ps();
  l.t = _mm256_setzero_ps();
  l.special = _mm256_setzero_ps();
  l.argmax = _mm256_set1_epi32(-1);
  l.column = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int64_t i = 0;
  for (; i + 8 <= classes; i += 8) step(l, load8(row + i));
  if (i < classes) {
    // -inf padding adds nothing to any sum and never becomes the maximum.
    alignas(32) float tail[8];
    for (int k = 0; k < 8; ++k) {
      tail[k] = i + k < classes ? to_float(row[i + k]) : -std::numeric_limits<float>::infinity();
    }
    step(l, _mm256_load_ps(tail));
  }
  if (_mm256_movemask_ps(l.special)) {
    // NaN or +inf in the row: the scalar path settles those exactly.
    return decide_row_portable(row, classes, criterion, threshold);
  }
  return finalize(merge_lanes(l), classes, criterion, threshold);
}

// F16C from CPUID directly: clang before 15 does not know "f16c" in __builtin_cpu_supports.
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
}

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
#else
bool cpu_has_avx2() { return false; }
bool cpu_has_avx512() { return false; }

template <class T>
Decision decide_row_avx2(const T* row, int64_t classes, Criterion criterion, float threshold) {
  return decide_row_portable(row, classes, criterion, threshold);
}
#endif

#if BRANCHY_ARM64
// The AVX2 row kernel above on four lanes: the same steps, the same exp, x86's max and min
// (simd.h: the second operand for NaN) from the neon tier, so that the special cases fall out as
// they do there.
using neon::max;
using neon::min;

inline float32x4_t exp4(float32x4_t x) {
  x = min(x, vdupq_n_f32(88.3762626647949f));
  x = max(x, vdupq_n_f32(-88.3762626647949f));
  const float32x4_t n = vrndmq_f32(vfmaq_f32(vdupq_n_f32(0.5f), x, vdupq_n_f32(1.44269504088896341f)));
  x = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  x = vfmsq_f32(x, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t y = vdupq_n_f32(1.9875691500e-4f);
  y = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), y, x);
  y = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), y, x);
  y = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), y, x);
  y = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), y, x);
  y = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), y, x);
  y = vfmaq_f32(vaddq_f32(x, vdupq_n_f32(1.0f)), y, vmulq_f32(x, x));
  const int32x4_t e = vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127));
  return vmulq_f32(y, vreinterpretq_f32_s32(vshlq_n_s32(e, 23)));
}

inline float32x4_t load4(const float* p) { return vld1q_f32(p); }

inline float32x4_t load4(const Half* p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p))));
}

inline float32x4_t load4(const BFloat16* p) {
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p)), 16));
}

// Four online-softmax states, lane k holding columns k, k + 4, k + 8, ...
struct Lanes4 {
  float32x4_t m, s, t;
  uint32x4_t special;  // a NaN or +inf was seen in the lane
  int32x4_t argmax, column;
};

inline void step(Lanes4& l, float32x4_t z) {
  const float32x4_t lo = vdupq_n_f32(kMinExponent);
  const uint32x4_t nan = vmvnq_u32(vceqq_f32(z, z));
  const uint32x4_t inf = vceqq_f32(z, vdupq_n_f32(std::numeric_limits<float>::infinity()));
  l.special = vorrq_u32(l.special, vorrq_u32(nan, inf));
  const uint32x4_t greater = vcgtq_f32(z, l.m);
  if (vmaxvq_u32(greater)) {
    const float32x4_t m = max(z, l.m);
    const float32x4_t dm = max(vsubq_f32(l.m, m), lo);
    const float32x4_t r = exp4(dm);
    l.t = vmulq_f32(r, vfmaq_f32(l.t, dm, l.s));
    l.s = vmulq_f32(r, l.s);
    l.m = m;
    l.argmax = vbslq_s32(greater, l.column, l.argmax);
  }
  const float32x4_t d = max(vsubq_f32(z, l.m), lo);  // never NaN, as in the AVX2 step
  const float32x4_t e = exp4(d);
  l.s = vaddq_f32(l.s, e);
  l.t = vfmaq_f32(l.t, e, d);
  l.column = vaddq_s32(l.column, vdupq_n_s32(4));
}

inline RowState merge_lanes(const Lanes4& l) {
  RowState st;
  const float m = vmaxvq_f32(l.m);  // no lane's maximum is NaN
  if (m == -std::numeric_limits<float>::infinity()) return st;
  const float32x4_t mv = vdupq_n_f32(m);
  const float32x4_t dm = max(vsubq_f32(l.m, mv), vdupq_n_f32(kMinExponent));
  const float32x4_t r = exp4(dm);
  st.m = m;
  st.s = vaddvq_f32(vmulq_f32(r, l.s));
  st.t = vaddvq_f32(vmulq_f32(r, vfmaq_f32(l.t, dm, l.s)));
  const int32x4_t none = vdupq_n_s32(std::numeric_limits<int32_t>::max());
  st.argmax = vminvq_s32(vbslq_s32(vceqq_f32(l.m, mv), l.argmax, none));
  return st;
}

template <class T>
Decision decide_row_neon(const T* row, int64_t classes, Criterion criterion, float threshold) {
  Lanes4 l;
  l.m = vdupq_n_f32(-std::numeric_limits<float>::infinity());
  l.s = vdupq_n_f32(0.0f);
  l.t = vdupq_n_f32(0.0f);
  l.special = vdupq_n_u32(0);
  l.argmax = vdupq_n_s32(-1);
  l.column = int32x4_t{0, 1, 2, 3};
  int64_t i = 0;
  for (; i + 4 <= classes; i += 4) step(l, load4(row + i));
  if (i < classes) {
    alignas(16) float tail[4];
    for (int k = 0; k < 4; ++k) {
      tail[k] = i + k < classes ? to_float(row[i + k]) : -std::numeric_limits<float>::infinity();
    }
    step(l, vld1q_f32(tail));
  }
  if (vmaxvq_u32(l.special)) return decide_row_portable(row, classes, criterion, threshold);
  return finalize(merge_lanes(l), classes, criterion, threshold);
}
#else
template <class T>
Decision decide_row_neon(const T* row, int64_t classes, Criterion criterion, float threshold) {
  return decide_row_portable(row, classes, criterion, threshold);
}
#endif

template <class T>
void decide_rows_typed(const DecisionArgs& a, int64_t begin, int64_t end, Isa isa) {
  const T* base = static_cast<const T*>(a.logits);
  // Column indices are int32 in the SIMD lanes.
  const bool fits = a.classes < (int64_t{1} << 31);
  const bool avx2 = fits && (isa == Isa::Avx2 || isa == Isa::Avx512), neon = fits && isa == Isa::Neon;
  for (int64_t r = begin; r < end; ++r) {
    const T* row = base + r * a.row_stride;
    const Decision d = avx2 ? decide_row_avx2(row, a.classes, a.criterion, a.threshold)
                       : neon ? decide_row_neon(row, a.classes, a.criterion, a.threshold)
                              : decide_row_portable(row, a.classes, a.criterion, a.threshold);
    a.score[r] = d.score;
    a.exit[r] = d.exit;
    a.prediction[r] = d.prediction;
  }
}

std::atomic<int>& active_isa_slot() {
  static std::atomic<int> slot{static_cast<int>(best_isa())};
  return slot;
}

}  // namespace

Isa best_isa() {
  static const Isa best = BRANCHY_ARM64 ? Isa::Neon
                          : cpu_has_avx512() ? Isa::Avx512
                          : cpu_has_avx2()   ? Isa::Avx2
                                             : Isa::Portable;
  return best;
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::Portable: return true;
    case Isa::Avx2: return best_isa() == Isa::Avx2 || best_isa() == Isa::Avx512;
    case Isa::Avx512: return best_isa() == Isa::Avx512;
    case Isa::Neon: return BRANCHY_ARM64;
  }
  return false;
}

Isa active_isa() { return static_cast<Isa>(active_isa_slot().load(std::memory_order_relaxed)); }

Isa set_active_isa(Isa isa) {
  const Isa chosen = isa_supported(isa) ? isa : best_isa();
  active_isa_slot().store(static_cast<int>(chosen), std::memory_order_relaxed);
  return chosen;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    case Isa::Neon: return "neon";
    case Isa::Portable: break;
  }
  return "portable";
}

int64_t rows_per_task(int64_t classes) {
  constexpr int64_t kLogitsPerTask = 64 * 1024;
  return std::max<int64_t>(1, kLogitsPerTask / std::max<int64_t>(1, classes));
}

void decide_rows(const DecisionArgs& args, int64_t begin, int64_t end, Isa isa) {
  if (!isa_supported(isa)) isa = best_isa();
  switch (args.dtype) {
    case ScalarType::Float32: return decide_rows_typed<float>(args, begin, end, isa);
    case ScalarType::Float16: return decide_rows_typed<Half>(args, begin, end, isa);
    case ScalarType::BFloat16: return decide_rows_typed<BFloat16>(args, begin, end, isa);
  }
}

void decide_rows(const DecisionArgs& args, int64_t begin, int64_t end) {
  decide_rows(args, begin, end, active_isa());
}

}  // namespace branchy
