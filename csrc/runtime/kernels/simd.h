// One vocabulary of vector operations per SIMD tier (namespaces avx2 and avx512 on x86-64, neon on
// aarch64), so that a kernel is written once, in a *_tier.inl file, and compiled for each tier by
// including that file in the tier's namespace with BRANCHY_TIER set to the tier's target attribute
// (as Highway does with its per-target re-inclusion). Function attributes, not global -m flags:
// the binary still runs on a CPU without AVX-512, and the tier is chosen at run time from an Isa
// (exit_decision.h).
#pragma once

#include "../cpu.h"

#if BRANCHY_X86
#include <cstdint>

// GCC 12's AVX-512 intrinsics fill unused operands from a self-initialised variable
// (_mm512_undefined_ps), which its own -Wmaybe-uninitialized then reports wherever they inline
// (GCC bug 105593, fixed in GCC 13). Diagnostics follow source locations, so this covers them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif

namespace branchy {

namespace avx2 {

using Vec = __m256;
constexpr int kLanes = 8;
constexpr int kRegisters = 16;

BRANCHY_AVX2 inline Vec zero() { return _mm256_setzero_ps(); }
BRANCHY_AVX2 inline Vec broadcast(float x) { return _mm256_set1_ps(x); }
BRANCHY_AVX2 inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
BRANCHY_AVX2 inline void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
BRANCHY_AVX2 inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
BRANCHY_AVX2 inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
BRANCHY_AVX2 inline Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
BRANCHY_AVX2 inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
BRANCHY_AVX2 inline Vec max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
BRANCHY_AVX2 inline Vec min(Vec a, Vec b) { return _mm256_min_ps(a, b); }
BRANCHY_AVX2 inline Vec div(Vec a, Vec b) { return _mm256_div_ps(a, b); }
// max and min return their second operand when either is NaN (so max(zero(), v) keeps v's NaN,
// as PyTorch's ReLU does); max_nan is NaN when either is (PyTorch's max pooling).
BRANCHY_AVX2 inline Vec max_nan(Vec a, Vec b) {
  return _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}
// Lanes where a > b (false for NaN) from x, the others from y.
BRANCHY_AVX2 inline Vec select_greater(Vec a, Vec b, Vec x, Vec y) {
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_GT_OQ));
}
// The nearest integer (ties to even), as a float.
BRANCHY_AVX2 inline Vec round_nearest(Vec a) {
  return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// a * 2^n for n integer-valued in [-126, 127].
BRANCHY_AVX2 inline Vec mul_pow2(Vec a, Vec n) {
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(a, _mm256_castsi256_ps(bits));
}

// All lanes set below n (any n; <= 0 none, >= kLanes all).
BRANCHY_AVX2 inline __m256i first(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Lanes [0, n) from p, the others from `fill`; memory at p + n and beyond is not touched.
// Whole vectors take the plain load: AMD's vmaskmov is several times slower.
BRANCHY_AVX2 inline Vec load_first(const float* p, int n, Vec fill) {
  if (n >= kLanes) return load(p);
  const __m256i m = first(n);
  return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}

// Lanes [0, n) of v to p; memory at p + n and beyond is not touched.
BRANCHY_AVX2 inline void store_first(float* p, Vec v, int n) {
  if (n >= kLanes) return store(p, v);
  _mm256_maskstore_ps(p, first(n), v);
}

// Lanes [0, n) from a, the others from b.
BRANCHY_AVX2 inline Vec select_first(int n, Vec a, Vec b) {
  return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(first(n)));
}

// Lane indices for permute(), loaded from kLanes int32 in [0, kLanes).
using Index = __m256i;
BRANCHY_AVX2 inline Index load_index(const int32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Lane i = v[index[i]].
BRANCHY_AVX2 inline Vec permute(Vec v, Index index) { return _mm256_permutevar8x32_ps(v, index); }

// Lane i = max (or sum) of x[2i] and x[2i + 1] where x = a then b (2 * kLanes values).
// Shuffling within 128-bit halves and fixing the order once costs three shuffles, not four.
BRANCHY_AVX2 inline Vec pairwise_max(Vec a, Vec b) {
  const Vec m = max_nan(_mm256_shuffle_ps(a, b, 0x88), _mm256_shuffle_ps(a, b, 0xdd));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), 0xd8));
}
BRANCHY_AVX2 inline Vec pairwise_add(Vec a, Vec b) {
  const Vec s = _mm256_add_ps(_mm256_shuffle_ps(a, b, 0x88), _mm256_shuffle_ps(a, b, 0xdd));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xd8));
}

// The sum of the lanes.
BRANCHY_AVX2 inline float sum(Vec v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}

// An 8x8 transpose in registers: rows[i][j] becomes rows[j][i]. Always inlined: as a call, the
// rows go through memory.
[[gnu::always_inline]] BRANCHY_AVX2 inline void transpose(Vec r[8]) {
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

}  // namespace avx2

namespace avx512 {

using Vec = __m512;
constexpr int kLanes = 16;
constexpr int kRegisters = 32;

BRANCHY_AVX512 inline Vec zero() { return _mm512_setzero_ps(); }
BRANCHY_AVX512 inline Vec broadcast(float x) { return _mm512_set1_ps(x); }
BRANCHY_AVX512 inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
BRANCHY_AVX512 inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
BRANCHY_AVX512 inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
BRANCHY_AVX512 inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
BRANCHY_AVX512 inline Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
BRANCHY_AVX512 inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
BRANCHY_AVX512 inline Vec max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
BRANCHY_AVX512 inline Vec min(Vec a, Vec b) { return _mm512_min_ps(a, b); }
BRANCHY_AVX512 inline Vec div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
// As avx2::max_nan.
BRANCHY_AVX512 inline Vec max_nan(Vec a, Vec b) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), _mm512_max_ps(a, b), a);
}
// Lanes where a > b (false for NaN) from x, the others from y.
BRANCHY_AVX512 inline Vec select_greater(Vec a, Vec b, Vec x, Vec y) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y, x);
}
// The nearest integer (ties to even), as a float.
BRANCHY_AVX512 inline Vec round_nearest(Vec a) {
  return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// a * 2^n for n integer-valued in [-126, 127].
BRANCHY_AVX512 inline Vec mul_pow2(Vec a, Vec n) { return _mm512_scalef_ps(a, n); }

// All lanes set below n (any n; <= 0 none, >= kLanes all).
BRANCHY_AVX512 inline __mmask16 first(int n) {
  return __mmask16((1u << (n < 0 ? 0 : n > kLanes ? kLanes : n)) - 1u);
}

// Lanes [0, n) from p, the others from `fill`; memory at p + n and beyond is not touched.
BRANCHY_AVX512 inline Vec load_first(const float* p, int n, Vec fill) {
  return _mm512_mask_loadu_ps(fill, first(n), p);
}

// Lanes [0, n) of v to p; memory at p + n and beyond is not touched.
BRANCHY_AVX512 inline void store_first(float* p, Vec v, int n) {
  _mm512_mask_storeu_ps(p, first(n), v);
}

// Lanes [0, n) from a, the others from b.
BRANCHY_AVX512 inline Vec select_first(int n, Vec a, Vec b) {
  return _mm512_mask_blend_ps(first(n), b, a);
}

// Lane indices for permute(), loaded from kLanes int32 in [0, kLanes).
using Index = __m512i;
BRANCHY_AVX512 inline Index load_index(const int32_t* p) { return _mm512_loadu_si512(p); }

// Lane i = v[index[i]].
BRANCHY_AVX512 inline Vec permute(Vec v, Index index) { return _mm512_permutexvar_ps(index, v); }

// Lane i = max (or sum) of x[2i] and x[2i + 1] where x = a then b (2 * kLanes values).
BRANCHY_AVX512 inline __m512i even_lanes() {
  return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
BRANCHY_AVX512 inline __m512i odd_lanes() {
  return _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
BRANCHY_AVX512 inline Vec pairwise_max(Vec a, Vec b) {
  return max_nan(_mm512_permutex2var_ps(a, even_lanes(), b), _mm512_permutex2var_ps(a, odd_lanes(), b));
}
BRANCHY_AVX512 inline Vec pairwise_add(Vec a, Vec b) {
  return _mm512_add_ps(_mm512_permutex2var_ps(a, even_lanes(), b),
                       _mm512_permutex2var_ps(a, odd_lanes(), b));
}

// The sum of the lanes.
BRANCHY_AVX512 inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }

}  // namespace avx512

}  // namespace branchy

#endif  // BRANCHY_X86

#if BRANCHY_ARM64
#include <arm_neon.h>

#include <cstdint>

namespace branchy {

// Four fp32 lanes in 128-bit registers, 32 of them. Every operation keeps the x86 tiers' results
// bit for bit where the order of arithmetic is the same (FMA is fused on both), NaN and signed
// zeros included, so that the tier files' NaN rules (PyTorch's) hold unchanged.
namespace neon {

using Vec = float32x4_t;
constexpr int kLanes = 4;
constexpr int kRegisters = 32;

inline Vec zero() { return vdupq_n_f32(0.0f); }
inline Vec broadcast(float x) { return vdupq_n_f32(x); }
inline Vec load(const float* p) { return vld1q_f32(p); }
inline void store(float* p, Vec v) { vst1q_f32(p, v); }
inline Vec fma(Vec a, Vec b, Vec c) { return vfmaq_f32(c, a, b); }
inline Vec add(Vec a, Vec b) { return vaddq_f32(a, b); }
inline Vec sub(Vec a, Vec b) { return vsubq_f32(a, b); }
inline Vec mul(Vec a, Vec b) { return vmulq_f32(a, b); }
inline Vec div(Vec a, Vec b) { return vdivq_f32(a, b); }
// x86's max and min: the second operand unless the first is strictly greater (smaller), so the
// second when either is NaN (max(zero(), v) keeps v's NaN, as PyTorch's ReLU does) and of two
// zeros. NEON's vmaxq_f32 gives NaN for a NaN in either and vmaxnmq_f32 the number; a compare and
// a select give x86's answer.
inline Vec max(Vec a, Vec b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
inline Vec min(Vec a, Vec b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
// As avx2::max_nan: NaN when either is (PyTorch's max pooling).
inline Vec max_nan(Vec a, Vec b) { return vbslq_f32(vceqq_f32(a, a), max(a, b), a); }
// Lanes where a > b (false for NaN) from x, the others from y.
inline Vec select_greater(Vec a, Vec b, Vec x, Vec y) { return vbslq_f32(vcgtq_f32(a, b), x, y); }
// The nearest integer (ties to even), as a float.
inline Vec round_nearest(Vec a) { return vrndnq_f32(a); }
// a * 2^n for n integer-valued in [-126, 127].
inline Vec mul_pow2(Vec a, Vec n) {
  const int32x4_t bits = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(a, vreinterpretq_f32_s32(bits));
}

// All lanes set below n (any n; <= 0 none, >= kLanes all).
inline uint32x4_t first(int n) {
  const int32x4_t lanes = {0, 1, 2, 3};
  return vcltq_s32(lanes, vdupq_n_s32(n));
}

// Lanes [0, n) from p, the others from `fill`; memory at p + n and beyond is not touched. NEON
// has no masked load: the lanes are loaded one pair or one float at a time.
inline Vec load_first(const float* p, int n, Vec fill) {
  if (n >= kLanes) return load(p);
  switch (n) {
    case 1: return vld1q_lane_f32(p, fill, 0);
    case 2: return vcombine_f32(vld1_f32(p), vget_high_f32(fill));
    case 3: return vld1q_lane_f32(p + 2, vcombine_f32(vld1_f32(p), vget_high_f32(fill)), 2);
    default: return fill;
  }
}

// Lanes [0, n) of v to p; memory at p + n and beyond is not touched.
inline void store_first(float* p, Vec v, int n) {
  if (n >= kLanes) return store(p, v);
  if (n >= 2) vst1_f32(p, vget_low_f32(v));
  if (n == 3) vst1q_lane_f32(p + 2, v, 2);
  if (n == 1) vst1q_lane_f32(p, v, 0);
}

// Lanes [0, n) from a, the others from b.
inline Vec select_first(int n, Vec a, Vec b) { return vbslq_f32(first(n), a, b); }

// Lane indices for permute(), loaded from kLanes int32 in [0, kLanes): kept as the byte indices
// of a table lookup, lane i's four bytes at 4 index[i] + {0, 1, 2, 3}.
using Index = uint8x16_t;
inline Index load_index(const int32_t* p) {
  const uint32x4_t lanes = vreinterpretq_u32_s32(vld1q_s32(p));
  return vreinterpretq_u8_u32(vmlaq_u32(vdupq_n_u32(0x03020100u), lanes, vdupq_n_u32(0x04040404u)));
}

// Lane i = v[index[i]].
inline Vec permute(Vec v, Index index) {
  return vreinterpretq_f32_u8(vqtbl1q_u8(vreinterpretq_u8_f32(v), index));
}

// Lane i = max (or sum) of x[2i] and x[2i + 1] where x = a then b (2 * kLanes values).
inline Vec pairwise_max(Vec a, Vec b) { return max_nan(vuzp1q_f32(a, b), vuzp2q_f32(a, b)); }
inline Vec pairwise_add(Vec a, Vec b) { return vpaddq_f32(a, b); }

// The sum of the lanes.
inline float sum(Vec v) { return vaddvq_f32(v); }

// A 4x4 transpose in registers: rows[i][j] becomes rows[j][i].
inline void transpose(Vec r[4]) {
  const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r[0], r[1]));
  const float64x2_t t1 = vreinterpretq_f64_f32(vtrn2q_f32(r[0], r[1]));
  const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r[2], r[3]));
  const float64x2_t t3 = vreinterpretq_f64_f32(vtrn2q_f32(r[2], r[3]));
  r[0] = vreinterpretq_f32_f64(vtrn1q_f64(t0, t2));
  r[1] = vreinterpretq_f32_f64(vtrn1q_f64(t1, t3));
  r[2] = vreinterpretq_f32_f64(vtrn2q_f64(t0, t2));
  r[3] = vreinterpretq_f32_f64(vtrn2q_f64(t1, t3));
}

}  // namespace neon

}  // namespace branchy

#endif  // BRANCHY_ARM64
