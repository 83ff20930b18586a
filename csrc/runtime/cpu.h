// Instruction-set helpers for the runtime's own kernels.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BRANCHY_X86 1
// Functions using AVX2/FMA or AVX-512 intrinsics carry these attributes instead of global -m
// flags, so that one binary runs on every x86-64 CPU; callers pick the tier from an Isa that
// best_isa() (exit_decision.h) has clamped to what the CPU has.
#define BRANCHY_AVX2 __attribute__((target("avx2,fma,f16c")))
#define BRANCHY_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#else
#define BRANCHY_X86 0
#define BRANCHY_AVX2
#define BRANCHY_AVX512
#endif
