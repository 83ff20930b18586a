// Pointwise (1x1) convolution of one NHWC sample as a packed GEMM: out[p, n] = act(bias[n] +
// sum over k of in[p', k] * W[n, k] (+ residual[p, n])), p' the input pixel under output pixel p
// (stride s: row s * oy, column s * ox). A micro-kernel holds a tile of up to 6 pixels by up to 4
// vectors of output channels in registers over the whole K loop, reading the weights as packed
// panels (K rows of the panel's width) so that each step is vector loads of weights, a broadcast
// per pixel and FMAs; bias, residual and activation in registers before the one store.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../buffer.h"
#include "../exit_decision.h"
#include "../model_file.h"

namespace branchy {

struct PointwiseGeometry {
  int32_t in_c, in_h, in_w, out_c, out_h, out_w, stride_h, stride_w;
};

// Weights [N, K] (the model file's [out, in, 1, 1]) and bias packed for `isa` (Avx2 or Avx512):
// panels of the tier's panel width of output channels, each [K][width], the last one narrower
// (channels padded with zeros to whole vectors); bias padded likewise.
struct PackedPointwise {
  Isa isa = Isa::Portable;
  Buffer weights, bias;
};
PackedPointwise pack_pointwise(Isa isa, const PointwiseGeometry& g, const float* weight,
                               const float* bias);

// One sample; `residual` (NHWC, the output's shape) may be null. `weights`: p.weights, or a copy
// scaled by scale_pointwise.
void pointwise_nhwc(const PointwiseGeometry& g, const PackedPointwise& p, const float* weights,
                    const float* in, const float* residual, Act act, float lo, float hi, float* out);

// out = p.weights with input channel k's weights times scale[k] (p.weights.size() floats): a
// convolution of x * scale per channel (squeeze-excitation) is the convolution of x with these.
void scale_pointwise(const PointwiseGeometry& g, const PackedPointwise& p, const float* scale,
                     float* out);

}  // namespace branchy
