// Direct convolution of one NCHW sample, for the small layers where a library's per-call cost
// would dominate. Micro-kernels only: the conv2d layer (layers_own.cpp) owns packing and scratch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../buffer.h"
#include "../exit_decision.h"

namespace branchy {

struct ConvGeometry {
  int32_t in_c, in_h, in_w;
  int32_t out_c, out_h, out_w;
  int32_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
  bool relu;
};

// A convolution prepared for one SIMD tier (conv_direct.cpp explains the layout).
// isa == Portable: the geometry has no SIMD tier (stride > 1) or none was asked for; then
// conv_direct_portable runs on the model's weights and nothing here is used.
struct PackedConv {
  Isa isa = Isa::Portable;
  int32_t block = 0;              // output channels per tile
  int32_t pitch = 0;              // row pitch of the padded input in scratch, floats
  size_t plane = 0;               // channel stride of the padded input in scratch, floats
  int32_t vectors = 0;            // vectors of output positions in one output channel
  size_t scratch = 0;             // floats of scratch conv_direct needs
  Buffer weights, bias;           // [blocks][in_c][kh][kw][block], [blocks][block], zero-padded
  std::vector<int32_t> start;     // per vector: output offset (in a channel) of its first pixel
  std::vector<int32_t> count;     // per vector: lanes to store from there
  std::vector<int32_t> compact;   // per vector: a lane permutation putting its pixels first
};

// Packs [out_c, in_c, kh, kw] weights and [out_c] bias for `isa` (at most best_isa()), with the
// output-channel block that wastes fewest channels.
PackedConv pack_conv(const ConvGeometry& g, Isa isa, const float* weight, const float* bias);

// out[out_c, out_h, out_w] = relu?(conv(in[in_c, in_h, in_w]) + bias) with p's SIMD tier
// (p.isa != Portable). `scratch` holds p.scratch floats, zero before the first call; the calls
// keep its padding zero.
void conv_direct(const ConvGeometry& g, const PackedConv& p, const float* in, float* out,
                 float* scratch);

// Any geometry, plain loops; weights [out_c, in_c, kh, kw] as in the model file. The reference
// the SIMD tiers are tested against.
void conv_direct_portable(const ConvGeometry& g, const float* weight, const float* bias,
                          const float* in, float* out);

}  // namespace branchy
