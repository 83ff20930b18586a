// The core's fp32 FMA peak, measured: the roofline the benchmarks compare against.
#pragma once

namespace branchy {

// GFLOP/s of one thread running independent fused multiply-adds with `lanes`-wide vectors
// (8: AVX2, 16: AVX-512, 4: NEON; 0 if this CPU lacks them), 2 FLOPs each.
double fma_peak_gflops(int lanes);

}  // namespace branchy
