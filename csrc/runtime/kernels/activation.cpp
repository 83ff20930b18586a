#include "activation.h"

#include <limits>

#include "simd.h"

namespace branchy {

#define BRANCHY_TIER_FILE "act_tier.inl"
#include "tiers.inl"

bool act_array_simd(Isa isa, Act act, float lo, float hi, const float* in, float* out, size_t n) {
  if (!act_in_registers(act)) return false;
  switch (isa) {
#if BRANCHY_X86
    case Isa::Avx512: avx512::act_array(act, lo, hi, in, out, n); return true;
    case Isa::Avx2: avx2::act_array(act, lo, hi, in, out, n); return true;
#endif
#if BRANCHY_ARM64
    case Isa::Neon: neon::act_array(act, lo, hi, in, out, n); return true;
#endif
    default: break;
  }
  (void)lo, (void)hi, (void)in, (void)out, (void)n;
  return false;
}

}  // namespace branchy
