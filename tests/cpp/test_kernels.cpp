// The runtime's own kernels on every SIMD tier this CPU has (AVX2 and AVX-512 on x86-64, NEON on
// aarch64), against the portable loops, over odd sizes: channels 1..13 (and past one vector),
// widths 1..40, kernels 1, 3, 5 with every padding up to the kernel size, ReLU on and off, pools
// in ceil and floor mode. Convolutions and linear layers sum in another order than the loops, so
// they are held to a tolerance relative to the sum of the terms' magnitudes (which the portable
// kernel computes on |weights| and |inputs|); pools and reorders move or compare values, so they
// must match exactly (averages up to rounding). The NHWC kernels (pointwise, depthwise) and the
// whole-array activations are held to loops in double precision instead, under every fused
// activation, with and without a residual.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "check.h"
#include "runtime/buffer.h"
#include "runtime/exit_decision.h"
#include "runtime/kernels/activation.h"
#include "runtime/kernels/conv_direct.h"
#include "runtime/kernels/depthwise.h"
#include "runtime/kernels/pointwise.h"
#include "runtime/kernels/simple_ops.h"
#include "runtime/kernels/winograd.h"
#include "runtime/ops/registry.h"

using branchy::Act;
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
  for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Neon}) {
    if (branchy::isa_supported(isa)) out.push_back(isa);
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

// One [C, H, W] sample as [H, W, C].
std::vector<float> to_nhwc(const Shape& s, const std::vector<float>& x) {
  std::vector<float> y(size_t(s.numel()));
  for (int c = 0; c < s.c; ++c) {
    for (int i = 0; i < s.h * s.w; ++i) y[size_t(i) * s.c + c] = x[size_t(c) * s.h * s.w + i];
  }
  return y;
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
  // The NHWC kernel, any window, on every tier (plain loops included).
  const std::vector<float> in_nhwc = to_nhwc(op.in, in), want_nhwc = to_nhwc(op.out, want);
  const std::vector<float> scale_nhwc = to_nhwc(op.out, scale);
  std::vector<Isa> isas = simd_isas();
  isas.insert(isas.begin(), Isa::Portable);
  for (Isa isa : isas) {
    std::vector<float> got = with_canaries(out_n);
    branchy::pool_nhwc(op, isa, in_nhwc.data(), got.data());
    const long bad = first_mismatch(got, want_nhwc, scale_nhwc, out_n, op.max_pool ? 0.0f : 1e-6f);
    CHECK_MSG(bad < 0, "%s NHWC %s %dx%dx%d k%d s%d p%d ceil %d relu %d: [%ld] %.9g want %.9g",
              branchy::isa_name(isa), op.name(), op.in.c, op.in.h, op.in.w, op.kernel_h,
              op.stride_h, op.pad_h, op.ceil_mode, op.relu, bad, got[std::max(bad, 0L)],
              want_nhwc[std::max(bad, 0L)]);
    CHECK_MSG(canaries_intact(got, out_n), "%s NHWC pool %dx%dx%d: wrote past the output",
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

// ---- pointwise, depthwise and whole-array activations (NHWC kernels), against double loops ----

// act_value (ops/registry.h) in double precision.
double act_ref(Act act, double lo, double hi, double x) {
  switch (act) {
    case Act::None: return x;
    case Act::Relu: return std::max(x, 0.0);
    case Act::Clamp: return std::min(std::max(x, lo), hi);
    case Act::Hardswish: return x * std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
    case Act::Hardsigmoid: return std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
    case Act::Silu: return x / (1.0 + std::exp(-x));
    case Act::Sigmoid: return 1.0 / (1.0 + std::exp(-x));
    case Act::GeluErf: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Act::GeluTanh: {
      const double sqrt_2_over_pi = 0.79788456080286536;
      return 0.5 * x * (1.0 + std::tanh(sqrt_2_over_pi * (x + 0.044715 * x * x * x)));
    }
  }
  return x;
}

constexpr float kClampLo = -1.0f, kClampHi = 2.0f;

// The outputs `act` gives on the double pre-activations `pre` (sums with residual), and the
// scale first_mismatch holds them to at tolerance 1e-5: 1.5 times the sum of the terms'
// magnitudes (the activations' slopes are at most 1.13, hardswish's 1.5 at x = 3, so a
// pre-activation error of 1e-5 of the magnitudes stays under 1.5e-5 of them after the
// activation) plus 0.1 |want| (1e-6 relative: the activation's own error, SiLU's polynomial e^x
// measured under 3e-7, and the rounding of want to float).
void act_expectation(Act act, const std::vector<double>& pre, const std::vector<double>& mag,
                     std::vector<float>* want, std::vector<float>* scale) {
  want->resize(pre.size());
  scale->resize(pre.size());
  for (size_t i = 0; i < pre.size(); ++i) {
    const double w = act_ref(act, kClampLo, kClampHi, pre[i]);
    (*want)[i] = float(w);
    (*scale)[i] = float(1.5 * mag[i] + 0.1 * std::fabs(w));
  }
}

// One pointwise geometry (input h x w, strides sh, sw), packed once per tier, run with and
// without a residual under every activation.
void check_pointwise(int in_c, int out_c, int in_h, int in_w, int sh, int sw) {
  const int out_h = (in_h - 1) / sh + 1, out_w = (in_w - 1) / sw + 1;
  const branchy::PointwiseGeometry g{in_c, in_h, in_w, out_c, out_h, out_w, sh, sw};
  const size_t pixels = size_t(out_h) * out_w, out_n = pixels * out_c;
  const uint32_t seed = uint32_t(in_c * 1009 + out_c * 101 + in_h * 13 + in_w + sh * 3 + sw);
  const auto weight = uniform(size_t(out_c) * in_c, seed, -1.0f, 1.0f);  // [out_c][in_c]
  const auto bias = uniform(out_c, seed + 1, -2.0f, 2.0f);
  const auto in = uniform(size_t(in_h) * in_w * in_c, seed + 2);
  const auto residual = uniform(out_n, seed + 3);
  // The sums in double, and the sums of the terms' magnitudes.
  std::vector<double> sum(out_n), mag(out_n);
  for (int oy = 0; oy < out_h; ++oy) {
    for (int ox = 0; ox < out_w; ++ox) {
      const float* x = in.data() + (size_t(oy) * sh * in_w + size_t(ox) * sw) * in_c;
      for (int n = 0; n < out_c; ++n) {
        double s = bias[n], m = std::fabs(bias[n]);
        for (int k = 0; k < in_c; ++k) {
          s += double(x[k]) * weight[size_t(n) * in_c + k];
          m += std::fabs(double(x[k]) * weight[size_t(n) * in_c + k]);
        }
        const size_t at = (size_t(oy) * out_w + ox) * out_c + n;
        sum[at] = s;
        mag[at] = m;
      }
    }
  }
  std::vector<branchy::PackedPointwise> packs;
  for (Isa isa : simd_isas()) {
    packs.push_back(branchy::pack_pointwise(isa, g, weight.data(), bias.data()));
  }
  std::vector<double> pre(out_n), pre_mag(out_n);
  std::vector<float> want, scale;
  for (bool with_res : {false, true}) {
    for (size_t i = 0; i < out_n; ++i) {
      pre[i] = sum[i] + (with_res ? residual[i] : 0.0f);
      pre_mag[i] = mag[i] + (with_res ? std::fabs(residual[i]) : 0.0f);
    }
    for (Act act : {Act::None, Act::Relu, Act::Clamp, Act::Hardswish, Act::Silu, Act::Sigmoid,
                    Act::GeluTanh}) {
      act_expectation(act, pre, pre_mag, &want, &scale);
      for (const branchy::PackedPointwise& p : packs) {
        std::vector<float> got = with_canaries(out_n);
        branchy::pointwise_nhwc(g, p, p.weights.data(), in.data(),
                                with_res ? residual.data() : nullptr, act, kClampLo, kClampHi,
                                got.data());
        const long bad = first_mismatch(got, want, scale, out_n, 1e-5f);
        CHECK_MSG(bad < 0,
                  "%s pointwise %d->%d in %dx%d s%d,%d res %d %s: [%ld] (pixel %ld, channel "
                  "%ld) %.9g want %.9g",
                  branchy::isa_name(p.isa), in_c, out_c, in_h, in_w, sh, sw, with_res,
                  branchy::act_name(act), bad, std::max(bad, 0L) / out_c,
                  std::max(bad, 0L) % out_c, got[std::max(bad, 0L)], want[std::max(bad, 0L)]);
        CHECK_MSG(canaries_intact(got, out_n),
                  "%s pointwise %d->%d in %dx%d s%d,%d res %d %s: wrote past the output",
                  branchy::isa_name(p.isa), in_c, out_c, in_h, in_w, sh, sw, with_res,
                  branchy::act_name(act));
      }
    }
  }
}

// One depthwise geometry (strides sh, sw, dilations dh, dw, padding pad_top = kh / 2 and
// pad_left = kw / 2 where `pad`, else 0; output sizes as PyTorch's conv2d with that symmetric
// padding), on every tier, with and without a residual under every activation the layers fuse.
void check_depthwise(int c, int h, int w, int kh, int kw, int sh, int sw, int dh, int dw,
                     bool pad) {
  const int pad_top = pad ? kh / 2 : 0, pad_left = pad ? kw / 2 : 0;
  if (h + 2 * pad_top < dh * (kh - 1) + 1 || w + 2 * pad_left < dw * (kw - 1) + 1) return;
  const int out_h = (h + 2 * pad_top - dh * (kh - 1) - 1) / sh + 1;
  const int out_w = (w + 2 * pad_left - dw * (kw - 1) - 1) / sw + 1;
  const branchy::DepthwiseGeometry g{c,  h,  w,       out_h,    out_w, kh, kw,
                                     sh, sw, pad_top, pad_left, dh,    dw};
  const size_t padded = (size_t(c) + 63) / 64 * 64, out_n = size_t(out_h) * out_w * c;
  const uint32_t seed =
      uint32_t(c * 7919 + h * 131 + w * 17 + kh * 5 + kw + sh * 3 + sw + dh * 2 + dw);
  const auto weight = uniform(size_t(c) * kh * kw, seed, -1.0f, 1.0f);  // [c][kh][kw]
  std::vector<float> bias(padded, 0.0f);  // zeros past c, as the kernel requires
  const auto b = uniform(c, seed + 1, -1.0f, 1.0f);
  std::copy(b.begin(), b.end(), bias.begin());
  const auto in = uniform(size_t(h) * w * c, seed + 2);
  const auto residual = uniform(out_n, seed + 3);
  const branchy::Buffer packed = branchy::pack_depthwise(g, weight.data(), padded);
  std::vector<double> sum(out_n), mag(out_n);
  for (int oy = 0; oy < out_h; ++oy) {
    for (int ox = 0; ox < out_w; ++ox) {
      for (int ch = 0; ch < c; ++ch) {
        double s = bias[ch], m = std::fabs(bias[ch]);
        for (int ky = 0; ky < kh; ++ky) {
          const int iy = oy * sh - pad_top + ky * dh;
          if (iy < 0 || iy >= h) continue;
          for (int kx = 0; kx < kw; ++kx) {
            const int ix = ox * sw - pad_left + kx * dw;
            if (ix < 0 || ix >= w) continue;
            const double t = double(in[(size_t(iy) * w + ix) * c + ch]) *
                             weight[(size_t(ch) * kh + ky) * kw + kx];
            s += t;
            m += std::fabs(t);
          }
        }
        const size_t at = (size_t(oy) * out_w + ox) * c + ch;
        sum[at] = s;
        mag[at] = m;
      }
    }
  }
  std::vector<double> pre(out_n), pre_mag(out_n);
  std::vector<float> want, scale;
  for (bool with_res : {false, true}) {
    for (size_t i = 0; i < out_n; ++i) {
      pre[i] = sum[i] + (with_res ? residual[i] : 0.0f);
      pre_mag[i] = mag[i] + (with_res ? std::fabs(residual[i]) : 0.0f);
    }
    for (Act act : {Act::None, Act::Relu, Act::Clamp, Act::Hardswish, Act::Silu, Act::Sigmoid}) {
      act_expectation(act, pre, pre_mag, &want, &scale);
      for (Isa isa : simd_isas()) {
        std::vector<float> got = with_canaries(out_n);
        branchy::depthwise_nhwc(isa, g, packed.data(), bias.data(), in.data(),
                                with_res ? residual.data() : nullptr, act, kClampLo, kClampHi,
                                got.data());
        const long bad = first_mismatch(got, want, scale, out_n, 1e-5f);
        const long at = std::max(bad, 0L);
        CHECK_MSG(bad < 0,
                  "%s depthwise c%d %dx%d k%dx%d s%d,%d d%d,%d pad %d,%d res %d %s: [%ld] (y %ld, "
                  "x %ld, c %ld) %.9g want %.9g",
                  branchy::isa_name(isa), c, h, w, kh, kw, sh, sw, dh, dw, pad_top, pad_left,
                  with_res, branchy::act_name(act), bad, at / c / out_w, at / c % out_w, at % c,
                  got[at], want[at]);
        CHECK_MSG(canaries_intact(got, out_n),
                  "%s depthwise c%d %dx%d k%dx%d s%d,%d d%d,%d pad %d res %d %s: wrote past the "
                  "output", branchy::isa_name(isa), c, h, w, kh, kw, sh, sw, dh, dw, pad, with_res,
                  branchy::act_name(act));
      }
    }
  }
}

// Whether act_array_simd's float `got` for input x is SiLU's or sigmoid's value in double
// precision: within 1e-6 relative or 1e-30 absolute (the kernel clamps e^x's argument to
// [-87.3, 88.3], so results under 2^-126 are not exact).
bool act_close(Act act, float x, float got) {
  const double want = act_ref(act, 0.0, 0.0, double(x));
  const double err = std::fabs(double(got) - want);
  return err <= 1e-6 * std::fabs(want) || err <= 1e-30;
}

// Inputs for act_array_simd: [-100, 100] with the specials spread through (the tests slide
// windows of each length over them, so that each special meets every lane and the tails).
std::vector<float> act_inputs() {
  std::vector<float> x = uniform(1000, 99, -100.0f, 100.0f);
  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {0.0f,     -0.0f,   1e-30f,  -1e-30f, 1e-40f,  -1e-40f, 1e-7f,
                            -1e-7f,   20.0f,   -20.0f,  87.0f,   -87.0f,  88.5f,   -88.5f,
                            89.0f,    -89.0f,  100.0f,  -100.0f, 1e4f,    -1e4f,   1e30f,
                            -1e30f,   3.0e38f, -3.0e38f, inf,    -inf,    std::nanf("")};
  size_t at = 0;
  for (float s : specials) {
    x[at] = s;
    at += 37;
  }
  return x;
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
          // Past four vectors of channels on AVX-512 (the NHWC kernel's blocks), any window.
          check_pool(pool_op(max, 64 + w, 1 + h % 5, 1 + w % 7, 1 + w % 4, 1 + w % 3, (w % 4) / 2, ceil, relu));
        }
      }
    }
  }
}

// A NaN in a window makes its max NaN on every tier, as in PyTorch (SIMD max returned the other
// operand, so a NaN pixel vanished on AVX2/AVX-512 and the answer depended on the tier); the
// fused ReLU keeps it too.
TEST(max_pools_carry_nan_on_every_tier) {
  for (auto [k, stride, pad] : {std::tuple{2, 2, 0}, std::tuple{3, 2, 1}}) {
    for (bool relu : {false, true}) {
      for (int w = 1; w <= 37; w += 3) {
        const Op op = pool_op(true, w % 2 ? 3 : 67, 7, w, k, stride, pad, false, relu);
        if (op.out.h < 1 || op.out.w < 1) continue;
        std::vector<float> in = uniform(size_t(op.in.numel()), 5 + w);
        for (size_t i = w % 5; i < in.size(); i += 11) in[i] = std::nanf("");
        // Where a window holds a NaN (padding holds none).
        std::vector<bool> nan_at(size_t(op.out.numel()), false);
        for (int c = 0; c < op.out.c; ++c) {
          for (int oy = 0; oy < op.out.h; ++oy) {
            for (int ox = 0; ox < op.out.w; ++ox) {
              for (int y = oy * stride - pad; y < oy * stride - pad + k; ++y) {
                for (int x = ox * stride - pad; x < ox * stride - pad + k; ++x) {
                  if (y < 0 || y >= op.in.h || x < 0 || x >= op.in.w) continue;
                  if (std::isnan(in[(size_t(c) * op.in.h + y) * op.in.w + x])) {
                    nan_at[(size_t(c) * op.out.h + oy) * op.out.w + ox] = true;
                  }
                }
              }
            }
          }
        }
        std::vector<Isa> isas = simd_isas();
        isas.insert(isas.begin(), Isa::Portable);
        for (Isa isa : isas) {
          std::vector<float> got(nan_at.size());
          branchy::pool_nchw(op, isa, in.data(), got.data());
          size_t off = 0;
          for (size_t i = 0; i < got.size(); ++i) off += std::isnan(got[i]) != nan_at[i];
          CHECK_MSG(off == 0, "%s max pool k%d s%d p%d relu %d width %d: %zu outputs with NaN "
                    "where PyTorch has none or the reverse", branchy::isa_name(isa), k, stride, pad,
                    relu, w, off);
          // The NHWC kernel.
          branchy::pool_nhwc(op, isa, to_nhwc(op.in, in).data(), got.data());
          std::vector<float> nan_nhwc(nan_at.size());
          for (size_t i = 0; i < nan_at.size(); ++i) nan_nhwc[i] = nan_at[i];
          nan_nhwc = to_nhwc(op.out, nan_nhwc);
          off = 0;
          for (size_t i = 0; i < got.size(); ++i) off += std::isnan(got[i]) != (nan_nhwc[i] != 0.0f);
          CHECK_MSG(off == 0, "%s NHWC max pool k%d s%d p%d relu %d width %d: %zu outputs with NaN "
                    "where PyTorch has none or the reverse", branchy::isa_name(isa), k, stride, pad,
                    relu, w, off);
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

// Any window, stride, padding and dilation through the same kernel (an implicit GEMM over the
// window positions, padding read as zeros), against a double loop.
void check_windowed(int in_c, int out_c, int h, int w, int kh, int kw, int stride, int pt, int pl,
                    int dil) {
  branchy::PointwiseGeometry g{in_c, h, w, out_c, 0, 0, stride, stride};
  g.kernel_h = kh, g.kernel_w = kw, g.pad_top = pt, g.pad_left = pl, g.dilation_h = g.dilation_w = dil;
  g.out_h = (h + 2 * pt - (kh - 1) * dil - 1) / stride + 1;
  g.out_w = (w + 2 * pl - (kw - 1) * dil - 1) / stride + 1;
  if (g.out_h < 1 || g.out_w < 1) return;
  const size_t out_n = size_t(g.out_h) * g.out_w * out_c;
  const auto weight = uniform(size_t(out_c) * in_c * kh * kw, 21, -0.5f, 0.5f);  // [n][k][ky][kx]
  const auto bias = uniform(out_c, 22);
  const auto in = uniform(size_t(h) * w * in_c, 23);  // NHWC
  const auto residual = uniform(out_n, 24);
  std::vector<double> pre(out_n), mag(out_n);
  for (int oy = 0; oy < g.out_h; ++oy) {
    for (int ox = 0; ox < g.out_w; ++ox) {
      for (int n = 0; n < out_c; ++n) {
        double sum = bias[n] + residual[(size_t(oy) * g.out_w + ox) * out_c + n];
        double m = std::fabs(sum);
        for (int ky = 0; ky < kh; ++ky) {
          for (int kx = 0; kx < kw; ++kx) {
            const int iy = oy * stride - pt + ky * dil, ix = ox * stride - pl + kx * dil;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
            for (int k = 0; k < in_c; ++k) {
              const double t = double(in[(size_t(iy) * w + ix) * in_c + k]) *
                               weight[((size_t(n) * in_c + k) * kh + ky) * kw + kx];
              sum += t;
              m += std::fabs(t);
            }
          }
        }
        pre[(size_t(oy) * g.out_w + ox) * out_c + n] = sum;
        mag[(size_t(oy) * g.out_w + ox) * out_c + n] = m;
      }
    }
  }
  const std::vector<float> zeros(in_c, 0.0f);
  for (Act act : {Act::None, Act::Silu}) {
    std::vector<float> want, scale;
    act_expectation(act, pre, mag, &want, &scale);
    for (Isa isa : simd_isas()) {
      const auto p = branchy::pack_pointwise(isa, g, weight.data(), bias.data());
      std::vector<float> got = with_canaries(out_n);
      branchy::pointwise_nhwc(g, p, p.weights.data(), in.data(), residual.data(), act, 0, 0,
                              got.data(), zeros.data());
      const long bad = first_mismatch(got, want, scale, out_n, 1e-5f);
      CHECK_MSG(bad < 0 && canaries_intact(got, out_n),
                "%s implicit GEMM %d->%d %dx%d k%dx%d s%d p%d,%d d%d %s: [%ld] %.9g want %.9g",
                branchy::isa_name(isa), in_c, out_c, h, w, kh, kw, stride, pt, pl, dil,
                branchy::act_name(act), bad, got[std::max(bad, 0L)], want[std::max(bad, 0L)]);
    }
  }
  // The planar kernel on the same input as planes (NCHW), where its K fits: every activation
  // class (in registers, clamp, after the rows), twice on one scratch (the padding stays zero).
  if (in_c * kh * kw > branchy::kMaxGemmTaps) return;
  std::vector<float> planes(in.size());
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      for (int k = 0; k < in_c; ++k) {
        planes[(size_t(k) * h + y) * w + x] = in[(size_t(y) * w + x) * in_c + k];
      }
    }
  }
  branchy::PointwiseGeometry pg = g;
  pg.planar = true;
  for (Act act : {Act::None, Act::Clamp, Act::Silu}) {
    std::vector<float> want, scale;
    act_expectation(act, pre, mag, &want, &scale);
    for (Isa isa : simd_isas()) {
      const auto p = branchy::pack_pointwise(isa, pg, weight.data(), bias.data());
      std::vector<float> scratch(branchy::planar_scratch_floats(pg), 0.0f);
      for (int call = 0; call < 2; ++call) {
        std::vector<float> got = with_canaries(out_n);
        branchy::planar_gemm(pg, p, planes.data(), residual.data(), act, kClampLo, kClampHi,
                             got.data(), scratch.data());
        const long bad = first_mismatch(got, want, scale, out_n, 1e-5f);
        CHECK_MSG(bad < 0 && canaries_intact(got, out_n),
                  "%s planar GEMM %d->%d %dx%d k%dx%d s%d p%d,%d d%d %s call %d: [%ld] %.9g want %.9g",
                  branchy::isa_name(isa), in_c, out_c, h, w, kh, kw, stride, pt, pl, dil,
                  branchy::act_name(act), call, bad, got[std::max(bad, 0L)], want[std::max(bad, 0L)]);
      }
    }
  }
}

TEST(implicit_gemm_tiers_match_double_precision) {
  // in_c 1 and 3 also run the planar kernel (K = in_c x window positions up to 64 terms); out_c
  // 5, 32 and 70: a partial vector, whole vectors, panels and a tail.
  for (int in_c : {1, 3, 16}) {
    for (int out_c : {5, 32, 70}) {
      check_windowed(in_c, out_c, 13, 11, 3, 3, 1, 1, 1, 1);
      check_windowed(in_c, out_c, 13, 11, 3, 3, 2, 1, 1, 1);
      check_windowed(in_c, out_c, 17, 15, 7, 7, 2, 3, 3, 1);
      check_windowed(in_c, out_c, 9, 7, 5, 3, 1, 2, 1, 1);
      check_windowed(in_c, out_c, 9, 10, 3, 3, 1, 2, 2, 2);
      check_windowed(in_c, out_c, 8, 8, 2, 2, 2, 0, 0, 1);
    }
  }
}

// Winograd's F(2x2, 3x3) at stride 1: every padding up to 2 on each side (asymmetric too), odd
// sizes (a last tile half outside the output), channels past one vector and more tiles than a
// block holds, with and without a residual, under every activation, against a double loop. Its
// transforms add and subtract before and after the products, so it is held to the same 1e-5 of
// the terms' magnitudes as the direct kernels.
void check_winograd(int in_c, int out_c, int h, int w, int pt, int pl, int pb, int pr) {
  const branchy::WinogradGeometry g{in_c, h, w, out_c, h + pt + pb - 2, w + pl + pr - 2, pt, pl};
  if (g.out_h < 1 || g.out_w < 1) return;
  const size_t out_n = size_t(g.out_h) * g.out_w * out_c;
  const uint32_t seed = uint32_t(in_c * 7 + out_c * 131 + h * 17 + w * 3 + pt + 5 * pl + 11 * pb + pr);
  const auto weight = uniform(size_t(out_c) * in_c * 9, seed, -0.5f, 0.5f);  // [n][k][3][3]
  const auto bias = uniform(out_c, seed + 1);
  const auto in = uniform(size_t(h) * w * in_c, seed + 2);  // NHWC
  const auto residual = uniform(out_n, seed + 3);
  std::vector<double> sum(out_n), mag(out_n);
  for (int oy = 0; oy < g.out_h; ++oy) {
    for (int ox = 0; ox < g.out_w; ++ox) {
      for (int n = 0; n < out_c; ++n) {
        double s = bias[n], m = std::fabs(bias[n]);
        for (int ky = 0; ky < 3; ++ky) {
          for (int kx = 0; kx < 3; ++kx) {
            const int iy = oy - pt + ky, ix = ox - pl + kx;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
            for (int k = 0; k < in_c; ++k) {
              const double t = double(in[(size_t(iy) * w + ix) * in_c + k]) *
                               weight[((size_t(n) * in_c + k) * 3 + ky) * 3 + kx];
              s += t;
              m += std::fabs(t);
            }
          }
        }
        sum[(size_t(oy) * g.out_w + ox) * out_c + n] = s;
        mag[(size_t(oy) * g.out_w + ox) * out_c + n] = m;
      }
    }
  }
  std::vector<double> pre(out_n), pre_mag(out_n);
  for (Isa isa : simd_isas()) {
    const auto p = branchy::pack_winograd(isa, g, weight.data(), bias.data());
    std::vector<float> scratch(p.scratch_floats(g), std::nanf(""));  // the kernel must not read it first
    for (bool with_res : {false, true}) {
      for (size_t i = 0; i < out_n; ++i) {
        pre[i] = sum[i] + (with_res ? residual[i] : 0.0f);
        pre_mag[i] = mag[i] + (with_res ? std::fabs(residual[i]) : 0.0f);
      }
      for (Act act : {Act::None, Act::Relu, Act::Clamp, Act::Silu, Act::GeluErf}) {
        std::vector<float> want, scale;
        act_expectation(act, pre, pre_mag, &want, &scale);
        std::vector<float> got = with_canaries(out_n);
        branchy::winograd_nhwc(g, p, in.data(), with_res ? residual.data() : nullptr, act, kClampLo,
                               kClampHi, got.data(), scratch.data());
        const long bad = first_mismatch(got, want, scale, out_n, 1e-5f);
        CHECK_MSG(bad < 0 && canaries_intact(got, out_n),
                  "%s winograd %d->%d %dx%d pad %d,%d,%d,%d res %d %s: [%ld] %.9g want %.9g",
                  branchy::isa_name(isa), in_c, out_c, h, w, pt, pl, pb, pr, with_res,
                  branchy::act_name(act), bad, got[std::max(bad, 0L)], want[std::max(bad, 0L)]);
      }
    }
  }
}

TEST(winograd_tiers_match_double_precision) {
  for (int pad = 0; pad < 81; ++pad) {  // every (top, left, bottom, right) in 0..2
    check_winograd(3, 5, 7, 6, pad % 3, pad / 3 % 3, pad / 9 % 3, pad / 27);
  }
  for (auto [in_c, out_c] : {std::pair{1, 1}, {16, 17}, {37, 70}, {64, 64}}) {
    for (auto [h, w] : {std::pair{1, 1}, {2, 9}, {5, 5}, {14, 13}}) check_winograd(in_c, out_c, h, w, 1, 1, 1, 1);
  }
  check_winograd(8, 600, 33, 31, 1, 1, 1, 1);  // 272 tiles, in blocks of 24 (600 channels)
}

// Scaling the packed weights by input channel (squeeze-excitation) is packing the scaled weights:
// the same float products, so the same output bit for bit, panel tails and padding included.
TEST(pointwise_scaled_weights_are_the_scaled_packing) {
  for (auto [in_c, out_c] : {std::pair{1, 1}, {3, 70}, {16, 24}, {37, 96}, {96, 5}}) {
    const branchy::PointwiseGeometry g{in_c, 5, 7, out_c, 5, 7, 1, 1};
    const auto weight = uniform(size_t(out_c) * in_c, 11, -1.0f, 1.0f);
    const auto bias = uniform(out_c, 12);
    const auto scale = uniform(in_c, 13, 0.0f, 1.0f);
    const auto in = uniform(size_t(5 * 7) * in_c, 14);
    std::vector<float> scaled_weight(weight);
    for (int n = 0; n < out_c; ++n) {
      for (int k = 0; k < in_c; ++k) scaled_weight[size_t(n) * in_c + k] *= scale[k];
    }
    for (Isa isa : simd_isas()) {
      const auto p = branchy::pack_pointwise(isa, g, weight.data(), bias.data());
      const auto want_p = branchy::pack_pointwise(isa, g, scaled_weight.data(), bias.data());
      std::vector<float> copy(p.weights.size(), -1.0f);
      branchy::scale_pointwise(g, p, scale.data(), copy.data());
      CHECK_MSG(std::memcmp(copy.data(), want_p.weights.data(), copy.size() * sizeof(float)) == 0,
                "%s scale_pointwise %d->%d differs from packing the scaled weights",
                branchy::isa_name(isa), in_c, out_c);
      std::vector<float> got(size_t(35) * out_c), want(got.size());
      branchy::pointwise_nhwc(g, p, copy.data(), in.data(), nullptr, Act::Silu, 0, 0, got.data());
      branchy::pointwise_nhwc(g, want_p, want_p.weights.data(), in.data(), nullptr, Act::Silu, 0, 0,
                              want.data());
      CHECK_MSG(got == want, "%s pointwise %d->%d on scaled weights differs", branchy::isa_name(isa),
                in_c, out_c);
    }
  }
}

TEST(pointwise_tiers_match_double_precision) {
  // Output channels: one partial vector, one vector, 24 (AVX-512: a partial 2-vector panel;
  // AVX2: a whole panel and a half), 70 and 96 (several panels, a tail of 6). Pixels: tiles of 6
  // with 1..5 left over, at stride 1 and 2.
  for (int in_c : {1, 3, 16, 37}) {
    for (int out_c : {1, 5, 16, 24, 70, 96}) {
      for (auto [h, w] : {std::pair{1, 1}, {3, 5}, {7, 7}, {13, 11}}) {
        for (int stride : {1, 2}) check_pointwise(in_c, out_c, h, w, stride, stride);
      }
    }
  }
  // More pixels than one block (65536 / K rounded down to tiles: 1770 at K = 37).
  check_pointwise(37, 70, 47, 43, 1, 1);
  check_pointwise(37, 24, 90, 85, 2, 2);
  // Strides apart along y and x.
  check_pointwise(16, 24, 13, 11, 1, 2);
  check_pointwise(3, 70, 13, 11, 2, 1);
  check_pointwise(37, 5, 9, 20, 3, 2);
}

TEST(depthwise_tiers_match_double_precision) {
  // Channels: one masked tail, one AVX2 vector, vectors and a tail, a 4-vector AVX-512 block,
  // blocks and single vectors. Widths 23 and 37 give strips of 8 columns with leftovers for the
  // 3, 5, 7 kernels at stride 1 and 2; 2x2, 1x1, 3x5 and dilation 2 take the per-pixel path.
  for (int c : {1, 8, 21, 64, 144}) {
    for (auto [kh, kw] : {std::pair{3, 3}, {5, 5}, {7, 7}, {2, 2}, {1, 1}, {3, 5}}) {
      for (int stride : {1, 2}) {
        for (int dilation : {1, 2}) {
          for (bool pad : {false, true}) {
            for (auto [h, w] : {std::pair{4, 5}, {20, 23}, {6, 37}}) {
              check_depthwise(c, h, w, kh, kw, stride, stride, dilation, dilation, pad);
            }
          }
        }
      }
    }
  }
  // Strides and dilations apart along y and x: the strips follow stride_w and dilation_w only.
  for (int c : {8, 21}) {
    check_depthwise(c, 20, 23, 3, 3, 2, 1, 1, 1, true);
    check_depthwise(c, 20, 23, 3, 3, 1, 2, 1, 1, true);
    check_depthwise(c, 20, 23, 5, 5, 1, 1, 2, 1, true);
    check_depthwise(c, 20, 23, 5, 5, 1, 1, 1, 2, true);
    check_depthwise(c, 20, 37, 7, 7, 3, 2, 1, 1, false);
    check_depthwise(c, 20, 37, 3, 3, 1, 3, 1, 1, true);
  }
}

TEST(act_array_simd_silu_sigmoid_match_double_precision) {
  const std::vector<float> x = act_inputs();
  for (Isa isa : simd_isas()) {
    for (Act act : {Act::Silu, Act::Sigmoid}) {
      for (size_t n : {size_t(0), size_t(1), size_t(15), size_t(16), size_t(17), size_t(1000)}) {
        // Off inputs and the first of them, apart for finite |x| > 1e4 (huge) and the rest
        // ([-100, 100], tiny, NaN), so that the huge ones' failure (below) hides no other.
        int bad[2] = {0, 0};
        struct {
          float x, got;
          size_t lane;
        } first_bad[2] = {};
        // Windows of n values from every n-th start: each input in every lane position.
        for (size_t start = 0; start + n <= x.size(); start += std::max<size_t>(n, 1)) {
          std::vector<float> got = with_canaries(n);
          CHECK(branchy::act_array_simd(isa, act, 0.0f, 0.0f, x.data() + start, got.data(), n));
          CHECK_MSG(canaries_intact(got, n), "%s %s n %zu at %zu: wrote past the output",
                    branchy::isa_name(isa), branchy::act_name(act), n, start);
          for (size_t i = 0; i < n; ++i) {
            const float v = x[start + i];
            if (std::isinf(v)) continue;  // below
            const bool ok = std::isnan(v) ? std::isnan(got[i]) : act_close(act, v, got[i]);
            const int huge = std::fabs(v) > 1e4f;
            if (!ok && bad[huge]++ == 0) first_bad[huge] = {v, got[i], i};
          }
          if (n == 0) break;
        }
        for (int huge : {0, 1}) {
          const auto& f = first_bad[huge];
          CHECK_MSG(bad[huge] == 0,
                    "%s %s, length %zu: %d %s input(s) off, the first %s(%.9g) = %.9g want %.9g "
                    "(lane %zu)", branchy::isa_name(isa), branchy::act_name(act), n, bad[huge],
                    huge ? "huge" : "moderate", branchy::act_name(act), f.x, f.got,
                    act_ref(act, 0.0, 0.0, f.x), f.lane);
        }
      }
      // Infinities: the limits (silu(+inf) = +inf, silu(-inf) = 0, sigmoid(+inf) = 1,
      // sigmoid(-inf) = 0, within 1e-30), or NaN as the portable act_value's x / (1 + e^-x)
      // gives for silu(-inf) (-inf / inf). e^x overflows to infinity above 88.3 as expf does, so
      // far below zero silu is -0, not x / e^88.3 (which gave silu(-3e38) = -1.35 before).
      const float inf = std::numeric_limits<float>::infinity();
      const float ins[2] = {inf, -inf};
      float outs[2];
      CHECK(branchy::act_array_simd(isa, act, 0.0f, 0.0f, ins, outs, 2));
      const double limits[2] = {act == Act::Silu ? double(inf) : 1.0, 0.0};
      for (int i = 0; i < 2; ++i) {
        const bool limit = outs[i] == limits[i] || std::fabs(outs[i] - limits[i]) <= 1e-30;
        CHECK_MSG(limit || std::isnan(outs[i]), "%s %s(%g) = %.9g, want %g or NaN",
                  branchy::isa_name(isa), branchy::act_name(act), ins[i], outs[i], limits[i]);
      }
    }
  }
}

TEST(act_array_simd_in_place_and_other_kinds) {
  const std::vector<float> x = act_inputs();
  for (Isa isa : simd_isas()) {
    // In place (in == out): the same floats as from one array to another, nothing past n.
    for (Act act : {Act::Silu, Act::Sigmoid}) {
      std::vector<float> y(x), apart(999);
      CHECK(branchy::act_array_simd(isa, act, 0.0f, 0.0f, x.data(), apart.data(), 999));
      CHECK(branchy::act_array_simd(isa, act, 0.0f, 0.0f, y.data(), y.data(), 999));
      CHECK_MSG(std::memcmp(y.data(), apart.data(), 999 * sizeof(float)) == 0 && y[999] == x[999],
                "%s %s in place differs", branchy::isa_name(isa), branchy::act_name(act));
    }
    // The piecewise-linear kinds give act_value's floats exactly, NaN in giving NaN out (as
    // PyTorch: the vector max and min take the value as the operand they pass on).
    for (Act act : {Act::None, Act::Relu, Act::Clamp, Act::Hardswish, Act::Hardsigmoid}) {
      std::vector<float> got = with_canaries(x.size() - 3);
      CHECK(branchy::act_array_simd(isa, act, kClampLo, kClampHi, x.data(), got.data(),
                                    x.size() - 3));
      CHECK(canaries_intact(got, x.size() - 3));
      for (size_t i = 0; i + 3 < x.size(); ++i) {
        const float want = branchy::act_value(act, kClampLo, kClampHi, x[i]);
        CHECK_MSG(got[i] == want || (std::isnan(got[i]) && std::isnan(want)),
                  "%s %s(%.9g) = %.9g want %.9g", branchy::isa_name(isa), branchy::act_name(act),
                  x[i], got[i], want);
      }
    }
    // GELU has no vector form: false, nothing written.
    for (Act act : {Act::GeluErf, Act::GeluTanh}) {
      std::vector<float> got = with_canaries(0);
      CHECK(!branchy::act_array_simd(isa, act, 0.0f, 0.0f, x.data(), got.data(), 20));
      CHECK(canaries_intact(got, 0));
    }
  }
  std::vector<float> got = with_canaries(0);
  CHECK(!branchy::act_array_simd(Isa::Portable, Act::Silu, 0.0f, 0.0f, x.data(), got.data(), 20));
  CHECK(canaries_intact(got, 0));
}

int main() { return check::run_all(); }
