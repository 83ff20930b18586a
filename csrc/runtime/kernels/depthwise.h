// Depthwise convolution (one filter per channel) of one NHWC sample, for the SIMD tiers: channels
// in vectors, every window position an FMA, bias, residual and the activation in registers. Any
// kernel size, stride, dilation and padding (the window positions outside the input are skipped).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../buffer.h"
#include "../exit_decision.h"
#include "../model_file.h"

namespace branchy {

struct DepthwiseGeometry {
  int32_t c, in_h, in_w, out_h, out_w;
  int32_t kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w;
};

// Weights [C, 1, kh, kw] (the model file's) as [kh][kw][C], channels padded to `padded` floats.
Buffer pack_depthwise(const DepthwiseGeometry& g, const float* weight, size_t padded);

// out[y, x, c] = act(bias[c] + sum over the window of w[ky, kx, c] * in[iy, ix, c] (+ residual))
// with `isa`'s vectors (Avx2 or Avx512); `act` runs in registers (GELU after the loop).
// `residual` may be null.
void depthwise_nhwc(Isa isa, const DepthwiseGeometry& g, const float* packed, const float* bias,
                    const float* in, const float* residual, Act act, float lo, float hi, float* out);

}  // namespace branchy
