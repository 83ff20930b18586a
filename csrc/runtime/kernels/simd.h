// One vocabulary of vector operations per SIMD tier (namespaces avx2 and avx512), so that a kernel
// is written once, in a *_tier.inl file, and compiled for each tier by including that file in the
// tier's namespace with BRANCHY_TIER set to the tier's target attribute (as Highway does with its
// per-target re-inclusion). Function attributes, not global -m flags: the binary still runs on a
// CPU without AVX-512, and the tier is chosen at run time from an Isa (exit_decision.h).
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
