// Pointwise (1x1) convolution of one NHWC sample as a packed GEMM: out[p, n] = act(bias[n] +
// sum over k of in[p', k] * W[n, k] (+ residual[p, n])), p' the input pixel under output pixel p
// (stride s: row s * oy, column s * ox). A micro-kernel holds a tile of up to 6 pixels by up to 4
// vectors of output channels in registers over the whole K loop, reading the weights as packed
// panels (K rows of the panel's width) so that each step is vector loads of weights, a broadcast
// per pixel and FMAs; bias, residual and activation in registers before the one store. With a
// larger window the same kernel runs every window position in turn (implicit GEMM: no im2col).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../buffer.h"
#include "../exit_decision.h"
#include "../model_file.h"

namespace branchy {

// A 1x1 convolution by default; any window, padding and dilation make it an implicit GEMM over
// K = kernel_h * kernel_w * in_c (window positions outside the input read zeros).
// The most window positions (kernel_h * kernel_w) the kernel takes.
constexpr int64_t kMaxGemmTaps = 64;

struct PointwiseGeometry {
  int32_t in_c, in_h, in_w, out_c, out_h, out_w, stride_h, stride_w;
  int32_t kernel_h = 1, kernel_w = 1, pad_top = 0, pad_left = 0, dilation_h = 1, dilation_w = 1;
  // The input planar (NCHW, planar_gemm): panel rows in the weight's own order (channel, then
  // window position) instead of (window position, channel).
  bool planar = false;
  int32_t taps() const { return kernel_h * kernel_w; }
};

// Weights [N, in_c, kernel_h, kernel_w] (the model file's) and bias packed for `isa` (Avx2 or
// Avx512): panels of the tier's panel width of output channels, each [kernel_h][kernel_w][in_c]
// [width], the last one narrower (channels padded with zeros to whole vectors); bias likewise.
struct PackedPointwise {
  Isa isa = Isa::Portable;
  Buffer weights, bias;
};
PackedPointwise pack_pointwise(Isa isa, const PointwiseGeometry& g, const float* weight,
                               const float* bias);

// One sample; `residual` (NHWC, the output's shape) may be null. `weights`: p.weights, or a copy
// scaled by scale_pointwise. `zeros`: g.in_c zero floats (what padding reads), or null for a
// window of 1x1 without padding.
void pointwise_nhwc(const PointwiseGeometry& g, const PackedPointwise& p, const float* weights,
                    const float* in, const float* residual, Act act, float lo, float hi, float* out,
                    const float* zeros = nullptr);

// A convolution of a planar (NCHW) input with few channels (a network's first, on RGB), output
// NHWC: each (channel, window position) is one term of K, read at a fixed offset from the
// window's corner in `scratch`, the input copied with its padding (planar_scratch_floats; zeros
// when allocated, only the interior is written). A 1-channel term per step would cost the NHWC
// kernel a row pointer per term and pixel; here a tile of pixels of one output row needs one.
// `g.planar` set, in_c * taps() <= kMaxGemmTaps; `residual` (NHWC) may be null.
size_t planar_scratch_floats(const PointwiseGeometry& g);
void planar_gemm(const PointwiseGeometry& g, const PackedPointwise& p, const float* in,
                 const float* residual, Act act, float lo, float hi, float* out, float* scratch);

// out = p.weights with input channel k's weights times scale[k] (p.weights.size() floats): a
// convolution of x * scale per channel (squeeze-excitation) is the convolution of x with these.
void scale_pointwise(const PointwiseGeometry& g, const PackedPointwise& p, const float* scale,
                     float* out);

}  // namespace branchy
