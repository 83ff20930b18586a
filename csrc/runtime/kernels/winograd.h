// 3x3 convolution at stride 1 (groups 1, dilation 1, any padding up to 2) of one NHWC sample by
// Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2015): each 2x2 block of output pixels
// (a tile) reads a 4x4 patch d of the input, and Y = A^T [(G g G^T) . (B^T d B)] A. The 16
// elementwise products over the input channels are 16 GEMMs of the tiles' transformed patches
// [tiles, in_c] by the transformed weights [in_c, out_c], run by the pointwise kernel's packed
// GEMM: 16 multiplies per tile and channel pair where the direct form takes 36 (2.25x fewer).
// The transforms add and subtract only (G's halves are exact), so the result differs from the
// direct sum by rounding alone; bias, residual and activation come with the output transform.
// Not for infinities: the input transform subtracts neighbouring pixels, so two +inf pixels give
// NaN where the direct sum gives inf. Inputs and weights are finite (the engine refuses others);
// an activation past 3.4e38 inside a network is already an overflow either way.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../buffer.h"
#include "../exit_decision.h"
#include "../model_file.h"
#include "pointwise.h"

namespace branchy {

struct WinogradGeometry {
  int32_t in_c, in_h, in_w, out_c, out_h, out_w, pad_top, pad_left;
  int64_t tiles_w() const { return (out_w + 1) / 2; }
  int64_t tiles() const { return int64_t((out_h + 1) / 2) * tiles_w(); }
};

// The transformed weights, packed for `isa` as 16 pointwise GEMMs (position xi's at
// weights + xi * stride), the bias padded to whole vectors, and the tiles a block transforms at
// once (its patches and products, 16 x block x (in_c + out_c) floats, are the scratch).
struct PackedWinograd {
  PackedPointwise gemm;  // isa and a zero bias for the GEMMs; its weights stay empty
  Buffer weights, bias;
  size_t stride = 0;
  int64_t block = 0;
  size_t scratch_floats(const WinogradGeometry& g) const {
    return size_t(16 * block) * (size_t(g.in_c) + size_t(g.out_c));
  }
};
PackedWinograd pack_winograd(Isa isa, const WinogradGeometry& g, const float* weight,
                             const float* bias);

// out = act(conv(in) + bias (+ residual)); `residual` (NHWC, the output's shape) may be null;
// `scratch`: p.scratch_floats(g) floats.
void winograd_nhwc(const WinogradGeometry& g, const PackedWinograd& p, const float* in,
                   const float* residual, Act act, float lo, float hi, float* out, float* scratch);

}  // namespace branchy
