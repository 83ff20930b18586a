// The SIMD tier of the direct convolution (conv_direct.cpp explains the layout). conv_direct.cpp
// includes this file once per tier namespace of simd.h, with BRANCHY_TIER set to the tier's
// target attribute; Vec, kLanes and the vector operations are that tier's.

// Output channels per tile: two vectors of accumulators per channel, two input vectors and a
// weight fill the register file (6 on AVX2, 14 on AVX-512 and NEON).
constexpr int kMaxBlock = (kRegisters - 3) / 2;

// Vectors of output positions per tile: as many as the registers hold (an accumulator per
// channel and an input per vector, plus a weight), at most 4; more saves little per tap.
constexpr int tile_vectors(int block) { return std::min(4, (kRegisters - 1) / (block + 1)); }

// What every tile of one call reads.
struct Tile {
  const float* in;                      // padded input in scratch
  int in_c, kernel_h, kernel_w, pitch;
  size_t plane, out_plane;
  const int32_t* start;                 // PackedConv::start, count, compact
  const int32_t* count;
  const int32_t* compact;
  bool relu;
};

// OCB output channels x NV vectors of positions from vector v0: the whole reduction over input
// channels and taps stays in registers; bias first, ReLU and the compacting store at the end.
template <int OCB, int NV>
BRANCHY_TIER void conv_tile(const Tile& t, int v0, const float* w, const float* bias, float* out,
                            int valid_oc) {
  // Unrolled in full, so that the accumulators live in registers.
  Vec acc[OCB][NV];
#pragma GCC unroll 16
  for (int o = 0; o < OCB; ++o) {
    const Vec b = broadcast(bias[o]);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[o][v] = b;
  }
  const float* channel = t.in + size_t(v0) * kLanes;
  for (int c = 0; c < t.in_c; ++c, channel += t.plane) {
    for (int ky = 0; ky < t.kernel_h; ++ky) {
      const float* row = channel + ky * t.pitch;
      for (int kx = 0; kx < t.kernel_w; ++kx, w += OCB) {
        Vec x[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) x[v] = load(row + kx + v * kLanes);
#pragma GCC unroll 16
        for (int o = 0; o < OCB; ++o) {
          const Vec wo = broadcast(w[o]);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[o][v] = fma(wo, x[v], acc[o][v]);
        }
      }
    }
  }
  // Vectors in order within each channel: a full-width store's overflow is overwritten later.
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int j = v0 + v;
    const Index lanes = load_index(t.compact + size_t(j) * kLanes);
#pragma GCC unroll 16
    for (int o = 0; o < valid_oc; ++o) {
      const Vec value = permute(t.relu ? max(zero(), acc[o][v]) : acc[o][v], lanes);  // NaN stays
      store_first(out + o * t.out_plane + t.start[j], value, t.count[j]);
    }
  }
}

// Vectors [v0, v0 + n) of one output-channel block: tiles of NV vectors, the rest in smaller ones.
template <int OCB, int NV>
BRANCHY_TIER void conv_vectors(const Tile& t, int v0, int n, const float* w, const float* bias,
                               float* out, int valid_oc) {
  for (; n >= NV; v0 += NV, n -= NV) conv_tile<OCB, NV>(t, v0, w, bias, out, valid_oc);
  if constexpr (NV > 1) {
    if (n > 0) conv_vectors<OCB, NV - 1>(t, v0, n, w, bias, out, valid_oc);
  }
}

template <int OCB>
BRANCHY_TIER void conv_blocks(const ConvGeometry& g, const PackedConv& p, const Tile& t,
                              float* out) {
  const size_t block_weights = size_t(g.in_c) * g.kernel_h * g.kernel_w * OCB;
  for (int b = 0; b * OCB < g.out_c; ++b) {
    conv_vectors<OCB, tile_vectors(OCB)>(t, 0, p.vectors, p.weights.data() + b * block_weights,
                                         p.bias.data() + b * OCB,
                                         out + size_t(b) * OCB * t.out_plane,
                                         std::min(OCB, g.out_c - b * OCB));
  }
}

using BlocksFn = void (*)(const ConvGeometry&, const PackedConv&, const Tile&, float*);

template <int... B>
constexpr std::array<BlocksFn, sizeof...(B)> blocks_table(std::integer_sequence<int, B...>) {
  return {&conv_blocks<B + 1>...};
}

BRANCHY_TIER void conv_direct(const ConvGeometry& g, const PackedConv& p, const float* in,
                              float* out, float* scratch) {
  // Rows into the padded input; the padding around them stays zero from the first call.
  for (int c = 0; c < g.in_c; ++c) {
    for (int y = 0; y < g.in_h; ++y) {
      const float* src = in + (size_t(c) * g.in_h + y) * g.in_w;
      float* dst = scratch + c * p.plane + size_t(y + g.pad_h) * p.pitch + g.pad_w;
      for (int x = 0; x < g.in_w; x += kLanes) {
        store_first(dst + x, load_first(src + x, g.in_w - x, zero()), g.in_w - x);
      }
    }
  }
  const Tile t{scratch,   g.in_c,    g.kernel_h,      g.kernel_w,      p.pitch,
               p.plane,   size_t(g.out_h) * g.out_w, p.start.data(), p.count.data(),
               p.compact.data(), g.relu};
  static constexpr std::array<BlocksFn, kMaxBlock> table =
      blocks_table(std::make_integer_sequence<int, kMaxBlock>());
  table[p.block - 1](g, p, t, out);
}
