// The runtime's own kernels on every SIMD tier this CPU has, against the portable loops, over odd
// sizes: channels 1..13 (and past one vector), widths 1..40, kernels 1, 3, 5 with every padding
// up to the kernel size, ReLU on and off, pools in ceil and floor mode. Convolutions and linear layers
// sum in another order than the loops, so they are held to a tolerance relative to the sum of the
// terms' magnitudes (which the portable kernel computes on |weights| and |inputs|); pools and
// reorders move or compare values, so they must match exactly (averages up to rounding).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "check.h"
#include "runtime/buffer.h"
#include "runtime/exit_decision.h"
#include "runtime/kernels/conv_direct.h"
#include "runtime/kernels/simple_ops.h"
#include "runtime/ops/registry.h"

using branchy::ConvGeometry;
using branchy::Isa;
using branchy::Op;
using branchy::Shape;

namespace {

// Written past every output; a kernel that stores beyond its output changes it.
constexpr float kCanary = 12345.0f;
constexpr int kCanaries = 64;

std::vector<Isa> simd_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
    if (isa <= branchy::best_isa()) out.push_back(isa);
  }
  return out;
}

std::vector<float> uniform(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> x(n);
  for (auto& v : x) {
    seed = seed * 1664525u + 1013904223u;
    v = lo + (hi - lo) * float(seed >> 8) / float(1u << 24);
  }
  return x;
}

std::vector<float> magnitudes(std::vector<float> x) {
  for (auto& v : x) v = std::fabs(v);
  return x;
}

std::vector<float> with_canaries(size_t n) { return std::vector<float>(n + kCanaries, kCanary); }

bool canaries_intact(const std::vector<float>& out, size_t n) {
  return std::all_of(out.begin() + n, out.end(), [](float v) { return v == kCanary; });
}

// Index of the first element of got off want by more than `tol` times scale, or -1.
long first_mismatch(const std::vector<float>& got, const std::vector<float>& want,
                    const std::vector<float>& scale, size_t n, float tol) {
  for (size_t i = 0; i < n; ++i) {
    if (!(std::fabs(got[i] - want[i]) <= tol * scale[i])) return long(i);
  }
  return -1;
}

ConvGeometry conv_geometry(int in_c, int out_c, int h, int w, int k, int pad, int stride,
                           bool relu) {
  const int out_h = (h + 2 * pad - k) / stride + 1, out_w = (w + 2 * pad - k) / stride + 1;
  return ConvGeometry{in_c, h, w, out_c, out_h, out_w, k, k, stride, stride, pad, pad, relu};
}

// One geometry on every tier, twice (the second call reuses the scratch).
void check_conv(const ConvGeometry& g) {
  if (g.out_h < 1 || g.out_w < 1) return;
  const size_t in_n = size_t(g.in_c) * g.in_h * g.in_w, out_n = size_t(g.out_c) * g.out_h * g.out_w;
  const auto weight = uniform(size_t(g.out_c) * g.in_c * g.kernel_h * g.kernel_w, 7, -0.5f, 0.5f);
  const auto bias = uniform(g.out_c, 8);
  ConvGeometry linear_g = g;
  linear_g.relu = false;
  std::vector<float> scale(out_n);
  for (Isa isa : simd_isas()) {
    const branchy::PackedConv p = branchy::pack_conv(g, isa, weight.data(), bias.data());
    const bool simd = g.stride_h == 1 && g.stride_w == 1;
    CHECK_MSG(p.isa == (simd ? isa : Isa::Portable), "%s: stride %d packed for %s",
              branchy::isa_name(isa), g.stride_h, branchy::isa_name(p.isa));
    if (p.isa == Isa::Portable) continue;
    branchy::Buffer scratch(p.scratch);
    for (uint32_t seed : {1u, 2u}) {
      const auto in = uniform(in_n, seed * 1000 + g.in_w);
      std::vector<float> want(out_n), got = with_canaries(out_n);
      branchy::conv_direct_portable(g, weight.data(), bias.data(), in.data(), want.data());
      branchy::conv_direct_portable(linear_g, magnitudes(weight).data(), magnitudes(bias).data(),
                                    magnitudes(in).data(), scale.data());
      branchy::conv_direct(g, p, in.data(), got.data(), scratch.data());
      const long bad = first_mismatch(got, want, scale, out_n, 1e-5f);
      CHECK_MSG(bad < 0, "%s conv %d->%d %dx%d k%d p%d relu %d block %d: [%ld] %.9g want %.9g",
                branchy::isa_name(isa), g.in_c, g.out_c, g.in_h, g.in_w, g.kernel_h, g.pad_h,
                g.relu, p.block, bad, got[std::max(bad, 0L)], want[std::max(bad, 0L)]);
      CHECK_MSG(canaries_intact(got, out_n), "%s conv %d->%d %dx%d k%d p%d: wrote past the output",
                branchy::isa_name(isa), g.in_c, g.out_c, g.in_h, g.in_w, g.kernel_h, g.pad_h);
    }
  }
}

Op pool_op(bool max, int c, int h, int w, int k, int stride, int pad, bool ceil, bool relu) {
  // PyTorch's output size: in ceil mode, a last window starting in the right padding is dropped.
  auto size = [&](int in) {
    int out = (in + 2 * pad - k + (ceil ? stride - 1 : 0)) / stride + 1;
    if (ceil && (out - 1) * stride >= in + pad) --out;
    return out;
  };
  Op op;
  op.def = branchy::find_op(max ? "max_pool2d" : "avg_pool2d");
  op.max_pool = max;
  op.kernel_h = op.kernel_w = k;
  op.stride_h = op.stride_w = stride;
  op.pad_h = op.pad_w = pad;
  op.ceil_mode = ceil;
  op.relu = relu;
  op.act = relu ? branchy::Act::Relu : branchy::Act::None;
  op.in = Shape{c, h, w};
  op.ins = {op.in};
  op.out = Shape{c, size(h), size(w)};
  return op;
}

void check_pool(const Op& op) {
  if (op.out.h < 1 || op.out.w < 1) return;
  const size_t out_n = size_t(op.out.numel());
  const auto in = uniform(size_t(op.in.numel()), 3 + op.in.w);
  std::vector<float> want(out_n);
  branchy::pool_nchw(op, Isa::Portable, in.data(), want.data());
  // Averages: the same four values summed in another order.
  std::vector<float> scale = magnitudes(want);
  const bool k2s2 = op.kernel_h == 2 && op.stride_h == 2 && op.pad_h == 0;
  for (Isa isa : simd_isas()) {
    CHECK(branchy::pool_isa(op, isa) == (k2s2 ? isa : Isa::Portable));
    std::vector<float> got = with_canaries(out_n);
    branchy::pool_nchw(op, isa, in.data(), got.data());
    const float tol = op.max_pool ? 0.0f : 1e-6f;
    const long bad = first_mismatch(got, want, scale, out_n, tol);
    CHECK_MSG(bad < 0, "%s %s %dx%dx%d k%d s%d p%d ceil %d relu %d: [%ld] %.9g want %.9g",
              branchy::isa_name(isa), op.name(), op.in.c, op.in.h, op.in.w,
              op.kernel_h, op.stride_h, op.pad_h, op.ceil_mode, op.relu, bad,
              got[std::max(bad, 0L)], want[std::max(bad, 0L)]);
    CHECK_MSG(canaries_intact(got, out_n), "%s pool %dx%dx%d: wrote past the output",
              branchy::isa_name(isa), op.in.c, op.in.h, op.in.w);
  }
}

void check_linear(int in_n, int out_n, bool relu) {
  const auto weight = uniform(size_t(in_n) * out_n, 11 + in_n, -0.5f, 0.5f);
  const auto bias = uniform(out_n, 12);
  const auto x = uniform(in_n, 13 + out_n);
  std::vector<float> want(out_n), scale(out_n);
  const branchy::PackedLinear portable = branchy::pack_linear(Isa::Portable, in_n, out_n, nullptr);
  branchy::linear(portable, weight.data(), bias.data(), relu, x.data(), want.data());
  branchy::linear(portable, magnitudes(weight).data(), magnitudes(bias).data(), false,
                  magnitudes(x).data(), scale.data());
  for (Isa isa : simd_isas()) {
    const branchy::PackedLinear p = branchy::pack_linear(isa, in_n, out_n, weight.data());
    CHECK(p.isa == isa);
    std::vector<float> got = with_canaries(out_n);
    branchy::linear(p, weight.data(), bias.data(), relu, x.data(), got.data());
    const long bad = first_mismatch(got, want, scale, out_n, 1e-5f);
    CHECK_MSG(bad < 0, "%s linear %d->%d relu %d: [%ld] %.9g want %.9g", branchy::isa_name(isa),
              in_n, out_n, relu, bad, got[std::max(bad, 0L)], want[std::max(bad, 0L)]);
    CHECK_MSG(canaries_intact(got, out_n), "%s linear %d->%d: wrote past the output",
              branchy::isa_name(isa), in_n, out_n);
  }
}

void check_reorder(const Shape& s) {
  const size_t n = size_t(s.numel());
  const auto nchw = uniform(n, 17 + s.c);
  std::vector<float> nhwc(n), back(n);
  branchy::nchw_to_nhwc(Isa::Portable, s, nchw.data(), nhwc.data());
  branchy::nhwc_to_nchw(Isa::Portable, s, nhwc.data(), back.data());
  CHECK_MSG(back == nchw, "portable reorder %dx%dx%d does not round-trip", s.c, s.h, s.w);
  for (Isa isa : simd_isas()) {
    std::vector<float> got = with_canaries(n), got_back = with_canaries(n);
    branchy::nchw_to_nhwc(isa, s, nchw.data(), got.data());
    branchy::nhwc_to_nchw(isa, s, nhwc.data(), got_back.data());
    CHECK_MSG(std::equal(nhwc.begin(), nhwc.end(), got.begin()) && canaries_intact(got, n),
              "%s reorder NCHW->NHWC %dx%dx%d", branchy::isa_name(isa), s.c, s.h, s.w);
    CHECK_MSG(std::equal(nchw.begin(), nchw.end(), got_back.begin()) &&
                  canaries_intact(got_back, n),
              "%s reorder NHWC->NCHW %dx%dx%d", branchy::isa_name(isa), s.c, s.h, s.w);
  }
}

}  // namespace

TEST(conv_tiers_match_portable_over_odd_sizes) {
  for (int k : {1, 3, 5}) {
    // Padding up to the kernel size: past k - 1, output rows are wider than the padded input's.
    for (int pad = 0; pad <= k; ++pad) {
      for (bool relu : {false, true}) {
        for (int w = 1; w <= 40; ++w) {
          const int out_c = 1 + (w + 3 * k + pad) % 13, in_c = 1 + (5 * w + pad + relu) % 13;
          const int h = 1 + (7 * w + k + relu) % 9;
          check_conv(conv_geometry(in_c, out_c, h, w, k, pad, 1, relu));
        }
      }
    }
  }
}

TEST(conv_tiers_on_the_networks_shapes) {
  // B-LeNet's convolutions, wider blocks than one tile, and stride 2 (portable on every tier).
  check_conv(conv_geometry(1, 5, 28, 28, 5, 3, 1, false));
  check_conv(conv_geometry(5, 10, 15, 15, 3, 1, 1, false));
  check_conv(conv_geometry(5, 10, 15, 15, 5, 3, 1, false));
  check_conv(conv_geometry(10, 20, 9, 9, 5, 3, 1, true));
  check_conv(conv_geometry(16, 16, 32, 32, 3, 1, 1, true));
  check_conv(conv_geometry(3, 29, 12, 17, 3, 1, 1, false));
  check_conv(conv_geometry(16, 32, 32, 32, 3, 1, 2, true));
}

TEST(pool_tiers_match_portable_over_odd_sizes) {
  for (bool max : {true, false}) {
    for (bool ceil : {false, true}) {
      for (bool relu : {false, true}) {
        for (int w = 1; w <= 40; ++w) {
          const int c = 1 + (w + ceil) % 13, h = 1 + (3 * w + relu) % 11;
          check_pool(pool_op(max, c, h, w, 2, 2, 0, ceil, relu));
          // Other windows take the plain loops on every tier.
          check_pool(pool_op(max, c, h + 2, w + 2, 3, 2, 1, ceil, relu));
        }
      }
    }
  }
}

TEST(linear_tiers_match_portable) {
  for (int in_n = 1; in_n <= 40; ++in_n) check_linear(in_n, 1 + (7 * in_n) % 40, in_n % 2 == 0);
  check_linear(640, 10, false);
  check_linear(720, 84, true);
  check_linear(84, 10, false);
  check_linear(33, 97, true);
}

TEST(reorder_tiers_match_portable) {
  for (int c = 1; c <= 20; ++c) {
    check_reorder(Shape{c, 1, 1});
    check_reorder(Shape{c, 1 + c % 5, 1 + (3 * c) % 40});
    check_reorder(Shape{c, 17, 17});
  }
  check_reorder(Shape{5, 30, 30});
  check_reorder(Shape{64, 16, 16});
}

int main() { return check::run_all(); }
