// The SIMD tier of the layout moves (NCHW <-> NHWC), for the tiers of simd.h that have a square
// transpose(): simple_ops.cpp includes this file in the avx2 namespace (which serves AVX-512 too:
// 16x16 tiles of 512-bit vectors measured slower at 5 to 20 channels, 1.7 against 0.6 us for
// 5x30x30, and no faster at 64) and in the neon one, with BRANCHY_TIER set to the tier's target
// attribute.

// Tiles of kLanes channels x kLanes pixels, transposed in registers: vector loads and stores on
// both sides whatever the channel count (a scalar loop is one load and one store per value, and
// its strided side thrashes L1 where the plane is a multiple of 1 KiB). Tiles go along the
// output's rows: pixels outer for NHWC output, channels outer for NCHW output, so that each
// output row is written front to back (AVX2, 64 channels of 16x16 NHWC to NCHW: 2.1 us, against
// 5.8 us pixels outer).
template <bool ToNhwc>
BRANCHY_TIER void reorder(const Shape& s, const float* in, float* out) {
  const int c = s.c, plane = s.h * s.w;
  const int outer = ToNhwc ? plane : c, inner = ToNhwc ? c : plane;
  for (int i = 0; i < outer; i += kLanes) {
    for (int j = 0; j < inner; j += kLanes) {
      const int p0 = ToNhwc ? i : j, c0 = ToNhwc ? j : i;
      const int pixels = std::min(kLanes, plane - p0), channels = std::min(kLanes, c - c0);
      // Loaded rows are channels coming from NCHW, pixels coming from NHWC; stored rows the other.
      const int rows = ToNhwc ? channels : pixels, columns = ToNhwc ? pixels : channels;
      Vec r[kLanes];
#pragma GCC unroll 8
      for (int k = 0; k < kLanes; ++k) {
        const float* src = ToNhwc ? in + size_t(c0 + k) * plane + p0 : in + size_t(p0 + k) * c + c0;
        r[k] = k < rows ? load_first(src, columns, zero()) : zero();
      }
      transpose(r);
#pragma GCC unroll 8
      for (int k = 0; k < columns; ++k) {
        store_first(ToNhwc ? out + size_t(p0 + k) * c + c0 : out + size_t(c0 + k) * plane + p0,
                    r[k], rows);
      }
    }
  }
}
