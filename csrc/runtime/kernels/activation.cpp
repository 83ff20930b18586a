#include "activation.h"

#include <limits>

#include "simd.h"

namespace branchy {

#if BRANCHY_X86
namespace avx2 {
namespace {
#define BRANCHY_TIER BRANCHY_AVX2
#include "act_tier.inl"
#undef BRANCHY_TIER
}  // namespace
}  // namespace avx2

namespace avx512 {
namespace {
#define BRANCHY_TIER BRANCHY_AVX512
#include "act_tier.inl"
#undef BRANCHY_TIER
}  // namespace
}  // namespace avx512
#endif

bool act_array_simd(Isa isa, Act act, float lo, float hi, const float* in, float* out, size_t n) {
#if BRANCHY_X86
  if (!avx512::act_in_registers(act)) return false;
  switch (isa) {
    case Isa::Avx512: avx512::act_array(act, lo, hi, in, out, n); return true;
    case Isa::Avx2: avx2::act_array(act, lo, hi, in, out, n); return true;
    case Isa::Portable: return false;
  }
#endif
  (void)isa, (void)act, (void)lo, (void)hi, (void)in, (void)out, (void)n;
  return false;
}

}  // namespace branchy
