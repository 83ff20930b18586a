// Instruction-set helpers for the runtime's own kernels.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BRANCHY_X86 1
// Functions using AVX2/FMA intrinsics carry this attribute; callers check have_avx2() first.
#define BRANCHY_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define BRANCHY_X86 0
#define BRANCHY_AVX2
#endif

namespace branchy {

// Whether the runtime's own kernels may use AVX2+FMA: the CPU has them and the exit decision's
// active instruction set (exit_decision.h, settable for tests) is not "portable".
bool use_avx2();

}  // namespace branchy
