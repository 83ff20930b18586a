#include "peak.h"

#include <chrono>

#include "../cpu.h"

#if BRANCHY_X86
#include <immintrin.h>
#endif
#if BRANCHY_ARM64
#include <arm_neon.h>
#endif

namespace branchy {
namespace {

constexpr int kChains = 12;  // enough independent FMAs to cover the latency on two pipes
constexpr long kIterations = 20'000'000;

double gflops(int lanes, double seconds) { return 2.0 * lanes * kChains * kIterations / seconds / 1e9; }

#if BRANCHY_X86
// Written out per instruction set: lambdas would not inherit the target attribute.
BRANCHY_AVX2 double avx2() {
  __m256 acc[kChains];
  const __m256 m = _mm256_set1_ps(0.999f);
  for (auto& a : acc) a = m;
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < kIterations; ++i) {
    for (auto& a : acc) a = _mm256_fmadd_ps(a, m, m);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  __m256 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm256_add_ps(sum, acc[c]);
  volatile float sink = _mm256_cvtss_f32(sum);  // keeps the loop
  (void)sink;
  return gflops(8, seconds);
}

__attribute__((target("avx512f"))) double avx512() {
  __m512 acc[kChains];
  const __m512 m = _mm512_set1_ps(0.999f);
  for (auto& a : acc) a = m;
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < kIterations; ++i) {
    for (auto& a : acc) a = _mm512_fmadd_ps(a, m, m);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  volatile float sink = lanes[0];  // keeps the loop
  (void)sink;
  return gflops(16, seconds);
}
#endif

#if BRANCHY_ARM64
double neon() {
  float32x4_t acc[kChains];
  const float32x4_t m = vdupq_n_f32(0.999f);
  for (auto& a : acc) a = m;
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < kIterations; ++i) {
    for (auto& a : acc) a = vfmaq_f32(m, a, m);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  float32x4_t sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = vaddq_f32(sum, acc[c]);
  volatile float sink = vgetq_lane_f32(sum, 0);  // keeps the loop
  (void)sink;
  return gflops(4, seconds);
}
#endif

}  // namespace

double fma_peak_gflops(int lanes) {
#if BRANCHY_X86
  __builtin_cpu_init();
  if (lanes == 8 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return avx2();
  if (lanes == 16 && __builtin_cpu_supports("avx512f")) return avx512();
#elif BRANCHY_ARM64
  if (lanes == 4) return neon();
#else
  (void)lanes, (void)gflops;
#endif
  return 0.0;
}

}  // namespace branchy
