// Pooling, local response normalisation, linear, and layout moves on one sample: the runtime's
// own kernels for everything but convolution.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../buffer.h"
#include "../model_file.h"

namespace branchy {

// Max or average pooling of an NCHW sample with PyTorch's rules (ceil mode, padding counted in
// the average as count_include_pad=True does); ReLU after when op.relu.
void pool_nchw(const Op& op, const float* in, float* out);

// PyTorch LocalResponseNorm across channels of an NCHW sample.
void lrn_nchw(const Op& op, const float* in, float* out);

// Linear weights packed for the AVX2 kernel: outputs in blocks of 8, [block][in][8].
struct PackedLinear {
  int32_t in = 0, out = 0;
  Buffer weights, bias;
};
PackedLinear pack_linear(int32_t in, int32_t out, const float* weight, const float* bias);

// y = relu?(W x + b) for x of `in` floats (the NCHW flattening of the input).
void linear(const PackedLinear& p, const float* weight, const float* bias, bool relu,
            const float* x, float* y);

// One sample between [C, H, W] planes (NCHW) and [H, W, C] pixels (NHWC).
void nchw_to_nhwc(const Shape& s, const float* in, float* out);
void nhwc_to_nchw(const Shape& s, const float* in, float* out);

// The residual block's shortcut: x[:, ::stride, ::stride] with out.c - in.c zero channels in front.
void shortcut_nchw(const Shape& in, const Shape& out, int stride, const float* x, float* y);
void shortcut_nhwc(const Shape& in, const Shape& out, int stride, const float* x, float* y);

// y = relu(y + x), n floats.
void add_relu(const float* x, float* y, size_t n);

}  // namespace branchy
