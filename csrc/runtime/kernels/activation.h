// Activations over whole arrays with the SIMD tier's vectors (act_tier.inl), for apply_act.
#pragma once

#include <cstddef>

#include "../exit_decision.h"
#include "../model_file.h"

namespace branchy {

// Whether the SIMD tiers compute `act` in registers (act_tier.inl's act_vec; GELU is left to
// apply_act's loops).
inline bool act_in_registers(Act act) { return act != Act::GeluErf && act != Act::GeluTanh; }

// out[i] = act(in[i]) for i < n (in == out allowed) on `isa`'s vectors; false (nothing written)
// where the tier has no vector form of `act` (GELU) or isa is Portable.
bool act_array_simd(Isa isa, Act act, float lo, float hi, const float* in, float* out, size_t n);

}  // namespace branchy
