// The fused exit decision on the CPU: softmax, entropy (or max probability), threshold and argmax
// in one pass per row, no temporary softmax. No libtorch: the op and the runtime both call it.
#pragma once

#include <cstdint>

#include "exit_math.h"

namespace branchy {

enum class ScalarType : int { Float32 = 0, Float16 = 1, BFloat16 = 2 };

// Instruction sets: Portable (plain loops) everywhere; on x86-64 two levels, each including the
// one before: Avx2 means AVX2 + FMA + F16C, Avx512 adds AVX-512 F + BW + VL; on aarch64 Neon
// (Advanced SIMD, which every ARMv8-A CPU has). The exit decision's row kernel runs its AVX2 code
// at Avx2 and Avx512, its NEON code at Neon; the runtime's own layers (layers_own.cpp) have a
// kernel tier per SIMD set.
enum class Isa : int { Portable = 0, Avx2 = 1, Avx512 = 2, Neon = 3 };

// fp32 lanes of one of `isa`'s vectors (1: plain loops).
constexpr int isa_lanes(Isa isa) {
  return isa == Isa::Avx512 ? 16 : isa == Isa::Avx2 ? 8 : isa == Isa::Neon ? 4 : 1;
}

// Kernel parameters as one plain struct. Rows are `row_stride` elements apart; columns are
// contiguous. Outputs have one element per row.
struct DecisionArgs {
  const void* logits = nullptr;
  ScalarType dtype = ScalarType::Float32;
  int64_t rows = 0;
  int64_t classes = 0;
  int64_t row_stride = 0;
  Criterion criterion = Criterion::Entropy;
  float threshold = 0.0f;
  float* score = nullptr;        // entropy (nats) or max probability
  bool* exit = nullptr;
  int64_t* prediction = nullptr;
};

// Decides rows [begin, end) of args with the given instruction set.
void decide_rows(const DecisionArgs& args, int64_t begin, int64_t end, Isa isa);

// Decides rows [begin, end) with the active instruction set.
void decide_rows(const DecisionArgs& args, int64_t begin, int64_t end);

// The best instruction set this CPU supports.
Isa best_isa();

// Whether this build runs `isa`'s kernels on this CPU (Portable always; the x86 levels where the
// CPU has them; Neon on aarch64).
bool isa_supported(Isa isa);

// The instruction set decide_rows uses by default, and the one the own layers are built for:
// best_isa() unless set_active_isa() chose another (tests use it to cover the lower tiers on a
// better machine). Asking for a set the CPU lacks (or another architecture's) gives the best it
// has. Returns the one now active.
Isa active_isa();
Isa set_active_isa(Isa isa);

const char* isa_name(Isa isa);

// Rows per thread chunk below which splitting across threads costs more than it saves:
// about 64K logits a chunk.
int64_t rows_per_task(int64_t classes);

}  // namespace branchy
