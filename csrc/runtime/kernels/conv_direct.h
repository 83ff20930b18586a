// Direct convolution of one NCHW sample, for the small layers where a library's per-call cost
// would dominate. Micro-kernels only: the conv2d layer (layers_own.cpp) owns packing and scratch.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../buffer.h"

namespace branchy {

struct ConvGeometry {
  int32_t in_c, in_h, in_w;
  int32_t out_c, out_h, out_w;
  int32_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
  bool relu;
};

// Weights packed for the AVX2 kernel: output channels in blocks of `block` (zero-padded), each
// block [in_c][kernel_h][kernel_w][block]; bias padded likewise.
struct PackedConv {
  int32_t block = 0;
  Buffer weights, bias;
};

// Whether conv_direct_avx2 handles this geometry (stride 1; AVX2 present and enabled).
bool conv_avx2_applies(const ConvGeometry& g);

// Picks the output-channel block that wastes fewest lanes and packs [out_c, in_c, kh, kw] weights.
PackedConv pack_conv(const ConvGeometry& g, const float* weight, const float* bias);

// Floats of scratch the AVX2 kernel needs: the zero-padded input, with room for whole vectors.
size_t conv_avx2_scratch(const ConvGeometry& g);

// Prepares scratch once (its zero border stays zero across calls).
void conv_avx2_init_scratch(const ConvGeometry& g, float* scratch);

// out[out_c, out_h, out_w] = relu?(conv(in[in_c, in_h, in_w]) + bias).
void conv_direct_avx2(const ConvGeometry& g, const PackedConv& packed, const float* in, float* out,
                      float* scratch);

// Any geometry, plain loops; weights [out_c, in_c, kh, kw] as in the model file.
void conv_direct_portable(const ConvGeometry& g, const float* weight, const float* bias,
                          const float* in, float* out);

}  // namespace branchy
