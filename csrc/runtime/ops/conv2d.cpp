// conv2d: cross-correlation with zero padding (any side), stride, dilation and groups, then bias,
// then the fused activation. BatchNorm after it is folded in by the writer.
#include <algorithm>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "../kernels/conv_direct.h"
#include "../kernels/depthwise.h"
#include "../kernels/pointwise.h"
#include "../kernels/winograd.h"
#include "registry.h"

namespace branchy {
namespace {

// Which input is the residual: 1, or 2 after an input scale; 0 when there is none.
size_t residual_input(const Op& op) {
  const size_t r = op.input_scale ? 2 : 1;
  return op.ins.size() > r ? r : 0;
}

// The start of a convolution layer's describe(): "conv2d 16->96 k1x1 s1 p0", then groups, dilation,
// input scale, residual and activation where there are any.
std::string conv_text(int in_c, int out_c, int kernel_h, int kernel_w, int stride, int pad,
                      int groups, int dilation, bool scaled, bool residual, Act act) {
  std::ostringstream s;
  s << "conv2d " << in_c << "->" << out_c << " k" << kernel_h << "x" << kernel_w << " s" << stride
    << " p" << pad;
  if (groups > 1) s << " g" << groups;
  if (dilation > 1) s << " d" << dilation;
  if (scaled) s << " +input scale";
  if (residual) s << " +residual";
  if (act != Act::None) s << " +" << act_name(act);
  return s.str();
}

std::vector<Expected> check(const OpCheck& c, Op& op) {
  const auto& v = op.ints;
  op.in_channels = c.at_least(v[0], 1, "in_channels");
  op.out_channels = c.at_least(v[1], 1, "out_channels");
  op.kernel_h = c.at_least(v[2], 1, "kernel_h");
  op.kernel_w = c.at_least(v[3], 1, "kernel_w");
  op.stride_h = c.at_least(v[4], 1, "stride_h");
  op.stride_w = c.at_least(v[5], 1, "stride_w");
  op.pad_h = c.at_least(v[6], 0, "pad_top");
  op.pad_w = c.at_least(v[7], 0, "pad_left");
  op.pad_bottom = c.at_least(v[8], 0, "pad_bottom");
  op.pad_right = c.at_least(v[9], 0, "pad_right");
  op.dilation_h = c.at_least(v[10], 1, "dilation_h");
  op.dilation_w = c.at_least(v[11], 1, "dilation_w");
  op.groups = c.at_least(v[12], 1, "groups");
  c.activation(op, 13, 0);
  op.input_scale = c.flag(v[14], "input_scale");
  if (op.in_channels % op.groups || op.out_channels % op.groups) {
    c.fail("groups ", op.groups, " does not divide in_channels ", op.in_channels,
           " and out_channels ", op.out_channels);
  }
  if (op.in.c != op.in_channels) {
    c.fail("in_channels is ", op.in_channels, " but the input ", OpCheck::str(op.in), " has ",
           op.in.c, " channels");
  }
  // The span of the kernel with dilation; every padding is smaller, so every window overlaps
  // the input.
  const int64_t span_h = int64_t(op.kernel_h - 1) * op.dilation_h + 1;
  const int64_t span_w = int64_t(op.kernel_w - 1) * op.dilation_w + 1;
  for (auto [pad, span, field] : {std::tuple{op.pad_h, span_h, "pad_top"},
                                  std::tuple{op.pad_bottom, span_h, "pad_bottom"},
                                  std::tuple{op.pad_w, span_w, "pad_left"},
                                  std::tuple{op.pad_right, span_w, "pad_right"}}) {
    if (pad >= span) c.fail(field, " ", pad, " is not smaller than the dilated kernel ", span);
  }
  // Every index the kernels form lies inside the padded input: keep it within int32.
  const int64_t padded_h = int64_t(op.in.h) + op.pad_h + op.pad_bottom;
  const int64_t padded_w = int64_t(op.in.w) + op.pad_w + op.pad_right;
  if (padded_h > std::numeric_limits<int32_t>::max() || padded_w > std::numeric_limits<int32_t>::max()) {
    c.fail("the padded input ", padded_h, "x", padded_w, " is larger than 2^31-1");
  }
  const int64_t h = padded_h - span_h;
  const int64_t w = padded_w - span_w;
  if (h < 0 || w < 0) {
    c.fail("the dilated kernel ", span_h, "x", span_w, " is larger than the padded input ",
           h + span_h, "x", w + span_w);  // the padded sizes, in 64 bits
  }
  op.out = c.shape(op.out_channels, h / op.stride_h + 1, w / op.stride_w + 1, "output");
  if (op.input_scale) {
    const Shape scale{op.in_channels, 1, 1};
    if (op.ins.size() < 2) c.fail("input_scale is 1 but there is no input 1 (the scale)");
    if (op.ins[1] != scale) {
      c.fail("the input scale (input 1) is ", OpCheck::str(op.ins[1]), ", expected ", OpCheck::str(scale));
    }
  } else if (op.ins.size() > 2) {
    c.fail(op.ins.size(), " inputs without input_scale: at most the input and a residual");
  }
  const size_t r = residual_input(op);
  if (r && op.ins[r] != op.out) {
    c.fail("the residual (input ", r, ") is ", OpCheck::str(op.ins[r]), ", expected the output's ",
           OpCheck::str(op.out));
  }
  // With a residual the kernels add it before the activation, never fuse ReLU into the sum.
  if (r) op.relu = false;
  return {OpCheck::product({{"out", op.out_channels},
                            {"in / groups", op.in_channels / op.groups},
                            {"", op.kernel_h},
                            {"", op.kernel_w}}),
          OpCheck::product({{"out", op.out_channels}})};
}

void reference(const Op& op, const float* const* ins, float* out) {
  const float* x = ins[0];
  const float* scale = op.input_scale ? ins[1] : nullptr;  // as PyTorch: x * scale, then the conv
  const float* residual = residual_input(op) ? ins[residual_input(op)] : nullptr;
  const float* weight = op.tensors[0].data;
  const float* bias = op.tensors[1].data;
  const int icg = op.in.c / op.groups, ocg = op.out.c / op.groups;
  for (int oc = 0; oc < op.out.c; ++oc) {
    const int first_ic = oc / ocg * icg;
    for (int oy = 0; oy < op.out.h; ++oy) {
      for (int ox = 0; ox < op.out.w; ++ox) {
        float acc = bias[oc];
        for (int ic = 0; ic < icg; ++ic) {
          const float* plane = x + size_t(first_ic + ic) * op.in.h * op.in.w;
          const float* w = weight + (size_t(oc) * icg + ic) * op.kernel_h * op.kernel_w;
          for (int ky = 0; ky < op.kernel_h; ++ky) {
            const int iy = oy * op.stride_h - op.pad_h + ky * op.dilation_h;
            if (iy < 0 || iy >= op.in.h) continue;
            for (int kx = 0; kx < op.kernel_w; ++kx) {
              const int ix = ox * op.stride_w - op.pad_w + kx * op.dilation_w;
              if (ix < 0 || ix >= op.in.w) continue;
              const float v = plane[size_t(iy) * op.in.w + ix];
              acc += w[ky * op.kernel_w + kx] * (scale ? v * scale[first_ic + ic] : v);
            }
          }
        }
        const size_t at = (size_t(oc) * op.out.h + oy) * op.out.w + ox;
        if (residual) acc += residual[at];
        out[at] = act_value(op.act, op.act_lo, op.act_hi, acc);
      }
    }
  }
}

ConvGeometry geometry(const Op& op) {
  return ConvGeometry{op.in.c,     op.in.h,     op.in.w,     op.out.c,    op.out.h,
                      op.out.w,    op.kernel_h, op.kernel_w, op.stride_h, op.stride_w,
                      op.pad_h,    op.pad_w,    op.relu};
}

struct ScratchState : LayerState {
  explicit ScratchState(size_t floats) : buffer(floats) {}
  Buffer buffer;
};

// Direct convolution for groups 1, dilation 1 and padding the same on both sides: the SIMD tier
// of the active instruction set (fixed when the layer is built, so that the packing, the plan's
// measurement and describe() agree with what runs) where the geometry has one, else plain loops.
// An activation other than ReLU runs after it.
class DirectConv : public Layer {
 public:
  explicit DirectConv(const Op& op)
      : Layer(op.ins, op.out), g_(geometry(op)), act_(op.act), lo_(op.act_lo), hi_(op.act_hi),
        weight_(op.tensors[0].data), bias_(op.tensors[1].data),
        packed_(pack_conv(g_, active_isa(), weight_, bias_)) {}

  void forward(const float* in, float* out, LayerState* state) const override {
    if (packed_.isa == Isa::Portable) {
      conv_direct_portable(g_, weight_, bias_, in, out);
    } else {
      conv_direct(g_, packed_, in, out, static_cast<ScratchState*>(state)->buffer.data());
    }
    if (!g_.relu) apply_act(act_, lo_, hi_, out, size_t(out_.numel()));
  }

  // With a residual: the convolution, the residual added, then the activation.
  void forward_n(const float* const* ins, float* out, LayerState* state) const override {
    if (ins_.size() == 1) return forward(ins[0], out, state);
    if (packed_.isa == Isa::Portable) {
      conv_direct_portable(g_, weight_, bias_, ins[0], out);
    } else {
      conv_direct(g_, packed_, ins[0], out, static_cast<ScratchState*>(state)->buffer.data());
    }
    const size_t n = size_t(out_.numel());
    for (size_t i = 0; i < n; ++i) out[i] += ins[1][i];
    apply_act(act_, lo_, hi_, out, n);
  }

  // Buffer starts zeroed, which is what conv_direct needs of its scratch.
  std::unique_ptr<LayerState> make_state() const override {
    return std::make_unique<ScratchState>(packed_.scratch);
  }
  size_t scratch_floats() const override { return packed_.scratch; }
  size_t packed_floats() const override { return packed_.weights.size() + packed_.bias.size(); }
  bool portable() const override { return packed_.isa == Isa::Portable; }

  Layout input_layout() const override { return Layout::NCHW; }
  Layout output_layout() const override { return Layout::NCHW; }

  std::string describe() const override {
    return conv_text(g_.in_c, g_.out_c, g_.kernel_h, g_.kernel_w, g_.stride_h, g_.pad_h, 1, 1, false,
                     ins_.size() == 2, act_) +
           " [own " + isa_name(packed_.isa) + " direct, NCHW]";
  }

 private:
  ConvGeometry g_;
  Act act_;
  float lo_, hi_;
  const float* weight_;
  const float* bias_;
  PackedConv packed_;
};

// Depthwise (one filter per channel) on NHWC with the SIMD tier's vectors over channels; any
// window, stride, dilation and padding; bias, residual and activation in its epilogue.
class DepthwiseLayer : public Layer {
 public:
  explicit DepthwiseLayer(const Op& op)
      : Layer(op.ins, op.out), isa_(active_isa()),
        g_{op.in.c,       op.in.h,     op.in.w,     op.out.h,     op.out.w,     op.kernel_h, op.kernel_w,
           op.stride_h,   op.stride_w, op.pad_h,    op.pad_w,     op.dilation_h, op.dilation_w},
        act_(op.act), lo_(op.act_lo), hi_(op.act_hi), bias_(op.tensors[1].data),
        packed_(pack_depthwise(g_, op.tensors[0].data, (size_t(op.in.c) + 63) / 64 * 64)),
        padded_bias_((size_t(op.in.c) + 63) / 64 * 64) {
    std::copy(bias_, bias_ + op.in.c, padded_bias_.data());
  }
  void forward(const float* in, float* out, LayerState*) const override {
    depthwise_nhwc(isa_, g_, packed_.data(), padded_bias_.data(), in, nullptr, act_, lo_, hi_, out);
  }
  void forward_n(const float* const* ins, float* out, LayerState*) const override {
    depthwise_nhwc(isa_, g_, packed_.data(), padded_bias_.data(), ins[0], ins_.size() > 1 ? ins[1] : nullptr,
                   act_, lo_, hi_, out);
  }
  size_t packed_floats() const override { return packed_.size() + padded_bias_.size(); }
  Layout input_layout() const override { return Layout::NHWC; }
  Layout output_layout() const override { return Layout::NHWC; }
  std::string describe() const override {
    return conv_text(g_.c, g_.c, g_.kernel_h, g_.kernel_w, g_.stride_h, g_.pad_top, g_.c,
                     g_.dilation_h, false, ins_.size() == 2, act_) +
           " [own " + isa_name(isa_) + " depthwise, NHWC]";
  }

 private:
  Isa isa_;
  DepthwiseGeometry g_;
  Act act_;
  float lo_, hi_;
  const float* bias_;
  Buffer packed_, padded_bias_;
};

PointwiseGeometry gemm_geometry(const Op& op) {
  PointwiseGeometry g{op.in.c, op.in.h, op.in.w, op.out.c, op.out.h, op.out.w, op.stride_h, op.stride_w};
  g.kernel_h = op.kernel_h, g.kernel_w = op.kernel_w, g.pad_top = op.pad_h, g.pad_left = op.pad_w;
  g.dilation_h = op.dilation_h, g.dilation_w = op.dilation_w;
  return g;
}

// Groups 1, any window, stride, padding and dilation, on NHWC: a packed GEMM of the SIMD tier
// (1x1 without padding: pointwise; else an implicit GEMM over the window positions); bias,
// residual and activation in its epilogue. With an input scale (squeeze-excitation) each call
// scales a copy of the packed weights instead of the input: K x N products, not K x H x W.
class PointwiseLayer : public Layer {
 public:
  explicit PointwiseLayer(const Op& op)
      : Layer(op.ins, op.out), g_(gemm_geometry(op)), act_(op.act), lo_(op.act_lo),
        hi_(op.act_hi), scaled_(op.input_scale), residual_(residual_input(op)),
        packed_(pack_pointwise(active_isa(), g_, op.tensors[0].data, op.tensors[1].data)),
        zeros_(size_t(op.in.c)) {}
  void forward(const float* in, float* out, LayerState*) const override {
    if (scaled_) throw std::logic_error("an input-scaled convolution runs through forward_n");
    pointwise_nhwc(g_, packed_, packed_.weights.data(), in, nullptr, act_, lo_, hi_, out, zeros_.data());
  }
  void forward_n(const float* const* ins, float* out, LayerState* state) const override {
    const float* weights = packed_.weights.data();
    if (scaled_) {
      float* copy = static_cast<ScratchState*>(state)->buffer.data();
      scale_pointwise(g_, packed_, ins[1], copy);
      weights = copy;
    }
    pointwise_nhwc(g_, packed_, weights, ins[0], residual_ ? ins[residual_] : nullptr, act_, lo_,
                   hi_, out, zeros_.data());
  }
  std::unique_ptr<LayerState> make_state() const override {
    return scaled_ ? std::make_unique<ScratchState>(packed_.weights.size()) : nullptr;
  }
  size_t scratch_floats() const override { return scaled_ ? packed_.weights.size() : 0; }
  size_t packed_floats() const override {
    return packed_.weights.size() + packed_.bias.size() + zeros_.size();
  }
  Layout input_layout() const override { return Layout::NHWC; }
  Layout output_layout() const override { return Layout::NHWC; }
  std::string describe() const override {
    const bool pointwise = g_.taps() == 1 && g_.pad_top == 0;
    return conv_text(g_.in_c, g_.out_c, g_.kernel_h, g_.kernel_w, g_.stride_h, g_.pad_top, 1,
                     g_.dilation_h, scaled_, residual_ != 0, act_) +
           " [own " + isa_name(packed_.isa) + (pointwise ? " pointwise" : " implicit GEMM") + ", NHWC]";
  }

 private:
  PointwiseGeometry g_;
  Act act_;
  float lo_, hi_;
  bool scaled_;
  size_t residual_;
  PackedPointwise packed_;
  Buffer zeros_;  // what window positions in the padding read
};

// A network's first convolution (groups 1, a few input channels: RGB) straight from the planar
// (NCHW) input to NHWC: no reorder of the input, and one row pointer per tile of pixels where
// the NHWC implicit GEMM takes one per pixel and window position (measured on MobileNetV2's
// 3->32 3x3 s2 stem: see planar_gemm).
class PlanarGemmLayer : public Layer {
 public:
  explicit PlanarGemmLayer(const Op& op)
      : Layer(op.ins, op.out), g_(planar_geometry(op)), act_(op.act), lo_(op.act_lo), hi_(op.act_hi),
        packed_(pack_pointwise(active_isa(), g_, op.tensors[0].data, op.tensors[1].data)) {}
  // Few channels: the kernel's K (channels x window positions) must fit its 64 terms, and with
  // many channels the NHWC kernels read the input once per channel vector, not once per term.
  static bool fits(const Op& op) {
    return op.groups == 1 && !op.input_scale && op.ins.size() == 1 && op.in.c <= 4 &&
           int64_t(op.in.c) * op.kernel_h * op.kernel_w <= kMaxGemmTaps &&
           active_isa() != Isa::Portable;
  }
  void forward(const float* in, float* out, LayerState* state) const override {
    planar_gemm(g_, packed_, in, nullptr, act_, lo_, hi_, out,
                static_cast<ScratchState*>(state)->buffer.data());
  }
  // Buffer starts zeroed: the padding planar_gemm's scratch needs.
  std::unique_ptr<LayerState> make_state() const override {
    return std::make_unique<ScratchState>(scratch_floats());
  }
  size_t scratch_floats() const override { return planar_scratch_floats(g_); }
  size_t packed_floats() const override { return packed_.weights.size() + packed_.bias.size(); }
  Layout input_layout() const override { return Layout::NCHW; }
  Layout output_layout() const override { return Layout::NHWC; }
  std::string describe() const override {
    return conv_text(g_.in_c, g_.out_c, g_.kernel_h, g_.kernel_w, g_.stride_h, g_.pad_top, 1,
                     g_.dilation_h, false, false, act_) +
           " [own " + isa_name(packed_.isa) + " planar GEMM, NCHW->NHWC]";
  }

 private:
  static PointwiseGeometry planar_geometry(const Op& op) {
    PointwiseGeometry g = gemm_geometry(op);
    g.planar = true;
    return g;
  }
  PointwiseGeometry g_;
  Act act_;
  float lo_, hi_;
  PackedPointwise packed_;
};

// 3x3 at stride 1 (groups 1, dilation 1) on NHWC by Winograd's F(2x2, 3x3): 2.25x fewer
// multiplies than the direct sum; the plan measures it against the others per layer.
class WinogradLayer : public Layer {
 public:
  explicit WinogradLayer(const Op& op)
      : Layer(op.ins, op.out),
        g_{op.in.c, op.in.h, op.in.w, op.out.c, op.out.h, op.out.w, op.pad_h, op.pad_w},
        act_(op.act), lo_(op.act_lo), hi_(op.act_hi),
        packed_(pack_winograd(active_isa(), g_, op.tensors[0].data, op.tensors[1].data)) {}
  static bool fits(const Op& op) {
    return op.groups == 1 && op.kernel_h == 3 && op.kernel_w == 3 && op.stride_h == 1 &&
           op.stride_w == 1 && op.dilation_h == 1 && op.dilation_w == 1 && active_isa() != Isa::Portable;
  }
  void forward(const float* in, float* out, LayerState* state) const override {
    winograd_nhwc(g_, packed_, in, nullptr, act_, lo_, hi_, out, scratch(state));
  }
  void forward_n(const float* const* ins, float* out, LayerState* state) const override {
    winograd_nhwc(g_, packed_, ins[0], ins_.size() > 1 ? ins[1] : nullptr, act_, lo_, hi_, out,
                  scratch(state));
  }
  std::unique_ptr<LayerState> make_state() const override {
    return std::make_unique<ScratchState>(scratch_floats());
  }
  size_t scratch_floats() const override { return packed_.scratch_floats(g_); }
  size_t packed_floats() const override { return packed_.weights.size() + packed_.bias.size(); }
  Layout input_layout() const override { return Layout::NHWC; }
  Layout output_layout() const override { return Layout::NHWC; }
  std::string describe() const override {
    return conv_text(g_.in_c, g_.out_c, 3, 3, 1, g_.pad_top, 1, 1, false, ins_.size() == 2, act_) +
           " [own " + isa_name(packed_.gemm.isa) + " winograd F(2x2,3x3), NHWC]";
  }

 private:
  static float* scratch(LayerState* state) { return static_cast<ScratchState*>(state)->buffer.data(); }
  WinogradGeometry g_;
  Act act_;
  float lo_, hi_;
  PackedWinograd packed_;
};

// The op without its input scale: what a kernel that knows no scale runs after InputScaled has
// scaled the input.
Op unscaled(const Op& op) {
  Op plain = op;
  plain.input_scale = false;
  plain.ins = {op.ins[0]};
  if (residual_input(op)) plain.ins.push_back(op.ins[residual_input(op)]);
  return plain;
}

// Any convolution layer of the unscaled op, run on x * scale (per channel, into per-thread
// scratch, in the inner layer's input layout).
class InputScaled : public Layer {
 public:
  InputScaled(const Op& op, std::unique_ptr<Layer> inner)
      : Layer(op.ins, op.out), inner_(std::move(inner)), residual_(residual_input(op)) {}
  void forward(const float*, float*, LayerState*) const override {
    throw std::logic_error("an input-scaled convolution runs through forward_n");
  }
  void forward_n(const float* const* ins, float* out, LayerState* state) const override {
    auto* st = static_cast<State*>(state);
    float* x = st->scaled.data();
    const float* scale = ins[1];
    const int64_t c = in_.c, plane = int64_t(in_.h) * in_.w;
    if (inner_->input_layout() == Layout::NHWC) {
      for (int64_t p = 0; p < plane; ++p) {
        for (int64_t k = 0; k < c; ++k) x[p * c + k] = ins[0][p * c + k] * scale[k];
      }
    } else {
      for (int64_t k = 0; k < c; ++k) {
        for (int64_t p = 0; p < plane; ++p) x[k * plane + p] = ins[0][k * plane + p] * scale[k];
      }
    }
    const float* inner_ins[2] = {x, residual_ ? ins[residual_] : nullptr};
    inner_->forward_n(inner_ins, out, st->inner.get());
  }
  std::unique_ptr<LayerState> make_state() const override {
    auto st = std::make_unique<State>(size_t(in_.numel()));
    st->inner = inner_->make_state();
    return st;
  }
  size_t scratch_floats() const override { return size_t(in_.numel()) + inner_->scratch_floats(); }
  size_t packed_floats() const override { return inner_->packed_floats(); }
  bool portable() const override { return inner_->portable(); }
  Layout input_layout() const override { return inner_->input_layout(); }
  Layout output_layout() const override { return inner_->output_layout(); }
  std::string describe() const override {
    std::string d = inner_->describe();
    const size_t at = d.find(" [");
    return d.insert(at == std::string::npos ? d.size() : at, " +input scale");
  }

 private:
  struct State : LayerState {
    explicit State(size_t floats) : scaled(floats) {}
    Buffer scaled;
    std::unique_ptr<LayerState> inner;
  };
  std::unique_ptr<Layer> inner_;
  size_t residual_;
};

Layers scaled(const Op& op, Layers inner) {
  Layers out;
  for (auto& layer : inner) out.push_back(std::make_unique<InputScaled>(op, std::move(layer)));
  return out;
}

Layers own(const Op& op) {
  Layers out;
  const bool gemm = op.groups == 1 && int64_t(op.kernel_h) * op.kernel_w <= kMaxGemmTaps;
  if (gemm && active_isa() != Isa::Portable) out.push_back(std::make_unique<PointwiseLayer>(op));
  const bool depthwise = op.groups == op.in.c && op.out.c == op.in.c;
  const Op plain = op.input_scale ? unscaled(op) : op;
  Layers others;
  if (depthwise && active_isa() != Isa::Portable) others.push_back(std::make_unique<DepthwiseLayer>(plain));
  const bool direct = op.groups == 1 && op.dilation_h == 1 && op.dilation_w == 1 &&
                      op.pad_bottom == op.pad_h && op.pad_right == op.pad_w;
  if (direct) others.push_back(std::make_unique<DirectConv>(plain));
  if (WinogradLayer::fits(op)) others.push_back(std::make_unique<WinogradLayer>(plain));
  if (op.input_scale) others = scaled(op, std::move(others));
  for (auto& layer : others) out.push_back(std::move(layer));
  // The reference takes the scale itself.
  if (!direct) out.push_back(reference_layer(op, depthwise ? "portable depthwise" : "portable"));
  // Last, so that the other kernels keep their indices in pinned choices.
  if (PlanarGemmLayer::fits(op)) out.push_back(std::make_unique<PlanarGemmLayer>(op));
  return out;
}

Layers dnnl(const Op& op) {
  return op.input_scale ? scaled(op, dnnl_conv2d(unscaled(op))) : dnnl_conv2d(op);
}

}  // namespace

extern const OpDef kConv2d{
    "conv2d",
    1,
    {"in_channels", "out_channels", "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_top",
     "pad_left", "pad_bottom", "pad_right", "dilation_h", "dilation_w", "groups", "activation",
     "input_scale"},
    {"activation_lo", "activation_hi"},
    {"weight [out, in / groups, kernel_h, kernel_w]", "bias [out]"},
    1,
    3,
    "cross-correlation with zero padding, stride, dilation and groups of input 0 (times input 1, "
    "one factor per input channel [in, 1, 1], when input_scale is 1: squeeze-excitation), plus "
    "bias, plus the next input when given (a residual of the output's shape), then the activation; "
    "[out, floor((H + pad_top + pad_bottom - (kernel_h - 1) * dilation_h - 1) / stride_h) + 1, "
    "same for W]",
    check,
    reference,
    own,
    dnnl,
    14,  // input_scale came after the first files
};

}  // namespace branchy
