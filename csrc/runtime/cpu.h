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

// AArch64 (ARMv8-A) always has NEON (Advanced SIMD with fp32 FMA and division): no target
// attribute is needed, and the tier is there whenever the build is for aarch64.
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define BRANCHY_ARM64 1
#else
#define BRANCHY_ARM64 0
#endif
#define BRANCHY_NEON

// A build with SIMD tiers for the own kernels (kernels/simd.h); without, only plain loops.
#define BRANCHY_SIMD (BRANCHY_X86 || BRANCHY_ARM64)
