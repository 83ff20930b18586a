// Pooling, local response normalisation, linear, and layout moves on one sample: the runtime's
// own kernels for everything but convolution.
#pragma once

#include <cstddef>
#include <algorithm>
#include <cstdint>

#include "../buffer.h"
#include "../exit_decision.h"
#include "../model_file.h"

namespace branchy {

// Max or average pooling of an NCHW sample with PyTorch's rules (ceil mode, padding counted in
// the average as count_include_pad=True does); ReLU after when op.relu. With the SIMD tier
// pool_isa(op, isa) (isa at most best_isa()).
void pool_nchw(const Op& op, Isa isa, const float* in, float* out);

// The tier pool_nchw runs for `op` when given `isa`: isa for the common 2x2 window at stride 2
// without padding, Portable (plain loops) for any other window.
Isa pool_isa(const Op& op, Isa isa);

// Output o's window along one axis, with PyTorch's rules: it starts at `from` (padding counts),
// is clipped to the padded input at `to`, and reads the input's [lo, hi). The average divides by
// the product of the two axes' (to - from).
struct PoolSpan {
  int from, to, lo, hi;
};
inline PoolSpan pool_span(int o, int stride, int pad, int kernel, int in) {
  const int from = o * stride - pad;
  const int to = int(std::min<int64_t>(int64_t(from) + kernel, int64_t(in) + pad));
  return {from, to, std::max(from, 0), std::min(to, in)};
}

// pool_nchw's pooling of an NHWC sample, any window, with the SIMD tier `isa` (at most
// best_isa(); Portable: plain loops).
void pool_nhwc(const Op& op, Isa isa, const float* in, float* out);

// PyTorch LocalResponseNorm across channels of an NCHW sample.
void lrn_nchw(const Op& op, const float* in, float* out);

// Linear weights packed for a SIMD tier: whole blocks of the tier's vector width of outputs, each
// block [in][width], so that its weights are one contiguous stream for vector FMAs. The outputs
// left over (fewer than one block) are dot products over the model's [out, in] rows, as are all
// outputs when isa == Portable (nothing packed).
struct PackedLinear {
  Isa isa = Isa::Portable;
  int32_t in = 0, out = 0;
  Buffer weights;
};
PackedLinear pack_linear(Isa isa, int32_t in, int32_t out, const float* weight);

// y[out] = relu?(W x + b) for W = weight [out, in] (the model file's; p packs part of it) and x
// of `in` floats (the NCHW flattening of the input).
void linear(const PackedLinear& p, const float* weight, const float* bias, bool relu,
            const float* x, float* y);

// One sample between [C, H, W] planes (NCHW) and [H, W, C] pixels (NHWC); `isa` (at most
// best_isa()) picks the SIMD tier.
void nchw_to_nhwc(Isa isa, const Shape& s, const float* in, float* out);
void nhwc_to_nchw(Isa isa, const Shape& s, const float* in, float* out);

// The residual block's shortcut: x[:, ::stride, ::stride] with out.c - in.c zero channels in front.
void shortcut_nchw(const Shape& in, const Shape& out, int stride, const float* x, float* y);
void shortcut_nhwc(const Shape& in, const Shape& out, int stride, const float* x, float* y);

// y = relu(y + x), n floats.
void add_relu(const float* x, float* y, size_t n);

}  // namespace branchy
