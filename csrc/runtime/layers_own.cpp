// Layers run by the runtime's own kernels, on NCHW samples (ReLU and reorders on either layout).
#include <algorithm>
#include <sstream>

#include "exit_decision.h"
#include "kernels/conv_direct.h"
#include "kernels/simple_ops.h"
#include "layer.h"

namespace branchy {

const char* layout_name(Layout layout) { return layout == Layout::NCHW ? "NCHW" : "NHWC"; }

namespace {

ConvGeometry geometry(const Op& op) {
  return ConvGeometry{op.in.c,     op.in.h,     op.in.w,     op.out.c,    op.out.h,
                      op.out.w,    op.kernel_h, op.kernel_w, op.stride_h, op.stride_w,
                      op.pad_h,    op.pad_w,    op.relu};
}

struct ScratchState : LayerState {
  explicit ScratchState(size_t floats) : buffer(floats) {}
  Buffer buffer;
};

// Conv2d by direct convolution: the SIMD tier of the active instruction set (fixed when the layer
// is built, so that the packing, the plan's measurement and describe() agree with what runs)
// where the geometry has one, else plain loops.
class ConvLayer : public Layer {
 public:
  explicit ConvLayer(const Op& op)
      : Layer(op.in, op.out), g_(geometry(op)), weight_(op.tensors[0].data),
        bias_(op.tensors[1].data), packed_(pack_conv(g_, active_isa(), weight_, bias_)) {}

  void forward(const float* in, float* out, LayerState* state) const override {
    if (packed_.isa == Isa::Portable) {
      conv_direct_portable(g_, weight_, bias_, in, out);
    } else {
      conv_direct(g_, packed_, in, out, static_cast<ScratchState*>(state)->buffer.data());
    }
  }

  // Buffer starts zeroed, which is what conv_direct needs of its scratch.
  std::unique_ptr<LayerState> make_state() const override {
    return std::make_unique<ScratchState>(packed_.scratch);
  }

  Layout input_layout() const override { return Layout::NCHW; }
  Layout output_layout() const override { return Layout::NCHW; }

  std::string describe() const override {
    std::ostringstream s;
    s << "conv2d " << g_.in_c << "->" << g_.out_c << " k" << g_.kernel_h << "x" << g_.kernel_w
      << " s" << g_.stride_h << " p" << g_.pad_h << (g_.relu ? " +relu" : "") << " [own "
      << isa_name(packed_.isa) << " direct, NCHW]";
    return s.str();
  }

 private:
  ConvGeometry g_;
  const float* weight_;
  const float* bias_;
  PackedConv packed_;
};

class PoolLayer : public Layer {
 public:
  explicit PoolLayer(const Op& op)
      : Layer(op.in, op.out), op_(op), isa_(pool_isa(op, active_isa())) {}
  void forward(const float* in, float* out, LayerState*) const override {
    pool_nchw(op_, isa_, in, out);
  }
  Layout input_layout() const override { return Layout::NCHW; }
  Layout output_layout() const override { return Layout::NCHW; }
  std::string describe() const override {
    std::ostringstream s;
    s << op_name(op_.kind) << " k" << op_.kernel_h << " s" << op_.stride_h << " p" << op_.pad_h
      << (op_.ceil_mode ? " ceil" : "") << (op_.relu ? " +relu" : "") << " [own " << isa_name(isa_)
      << ", NCHW]";
    return s.str();
  }

 private:
  Op op_;
  Isa isa_;
};

class LrnLayer : public Layer {
 public:
  explicit LrnLayer(const Op& op) : Layer(op.in, op.out), op_(op) {}
  void forward(const float* in, float* out, LayerState*) const override { lrn_nchw(op_, in, out); }
  Layout input_layout() const override { return Layout::NCHW; }
  Layout output_layout() const override { return Layout::NCHW; }
  std::string describe() const override {
    return "lrn size " + std::to_string(op_.size) + " [own, NCHW]";
  }

 private:
  Op op_;
};

// Elementwise, so either layout.
class ReluLayer : public Layer {
 public:
  ReluLayer(const Op& op, Layout layout) : Layer(op.in, op.out), layout_(layout) {}
  void forward(const float* in, float* out, LayerState*) const override {
    const int64_t n = in_.numel();
    for (int64_t i = 0; i < n; ++i) out[i] = std::max(in[i], 0.0f);
  }
  Layout input_layout() const override { return layout_; }
  Layout output_layout() const override { return layout_; }
  std::string describe() const override {
    return std::string("relu [own, ") + layout_name(layout_) + "]";
  }

 private:
  Layout layout_;
};

// Flatten keeps NCHW order, so on NCHW it is a copy into the next buffer.
class FlattenLayer : public Layer {
 public:
  explicit FlattenLayer(const Op& op) : Layer(op.in, op.out) {}
  void forward(const float* in, float* out, LayerState*) const override {
    std::copy(in, in + in_.numel(), out);
  }
  Layout input_layout() const override { return Layout::NCHW; }
  Layout output_layout() const override { return Layout::NCHW; }
  std::string describe() const override { return "flatten [own, NCHW]"; }
};

// Reads its input in NCHW flattening order (a [C,H,W] input is flattened implicitly).
class LinearLayer : public Layer {
 public:
  explicit LinearLayer(const Op& op)
      : Layer(op.in, op.out), relu_(op.relu), weight_(op.tensors[0].data),
        bias_(op.tensors[1].data),
        packed_(pack_linear(active_isa(), op.in_channels, op.out_channels, weight_)) {}
  void forward(const float* in, float* out, LayerState*) const override {
    linear(packed_, weight_, bias_, relu_, in, out);
  }
  Layout input_layout() const override { return Layout::NCHW; }
  Layout output_layout() const override { return Layout::NCHW; }
  std::string describe() const override {
    return "linear " + std::to_string(packed_.in) + "->" + std::to_string(packed_.out) +
           (relu_ ? " +relu" : "") + " [own " + isa_name(packed_.isa) + ", NCHW]";
  }

 private:
  bool relu_;
  const float* weight_;
  const float* bias_;
  PackedLinear packed_;
};

struct ResBlockState : LayerState {
  ResBlockState(size_t hidden, std::unique_ptr<LayerState> c1, std::unique_ptr<LayerState> c2)
      : hidden(hidden), conv1(std::move(c1)), conv2(std::move(c2)) {}
  Buffer hidden;
  std::unique_ptr<LayerState> conv1, conv2;
};

Op block_conv(const Op& block, int index) {
  Op conv;
  conv.kind = OpKind::Conv2d;
  conv.in_channels = index == 0 ? block.in_channels : block.out_channels;
  conv.out_channels = block.out_channels;
  conv.kernel_h = conv.kernel_w = 3;
  conv.stride_h = conv.stride_w = index == 0 ? block.stride_h : 1;
  conv.pad_h = conv.pad_w = 1;
  conv.relu = index == 0;
  conv.tensors = {block.tensors[2 * index], block.tensors[2 * index + 1]};
  conv.in = index == 0 ? block.in : block.out;
  conv.out = block.out;
  return conv;
}

// relu(conv2(relu(conv1(x))) + shortcut(x)) with the own convolution.
class ResBlockLayer : public Layer {
 public:
  explicit ResBlockLayer(const Op& op)
      : Layer(op.in, op.out), stride_(op.stride_h), conv1_(block_conv(op, 0)),
        conv2_(block_conv(op, 1)) {}
  void forward(const float* in, float* out, LayerState* state) const override {
    auto* s = static_cast<ResBlockState*>(state);
    conv1_.forward(in, s->hidden.data(), s->conv1.get());
    conv2_.forward(s->hidden.data(), out, s->conv2.get());
    // out holds conv2's result; add the shortcut through a row of the hidden buffer.
    shortcut_nchw(in_, out_, stride_, in, s->hidden.data());
    add_relu(s->hidden.data(), out, out_.numel());
  }
  std::unique_ptr<LayerState> make_state() const override {
    return std::make_unique<ResBlockState>(out_.numel(), conv1_.make_state(), conv2_.make_state());
  }
  Layout input_layout() const override { return Layout::NCHW; }
  Layout output_layout() const override { return Layout::NCHW; }
  std::string describe() const override {
    return "res_block " + std::to_string(in_.c) + "->" + std::to_string(out_.c) + " s" +
           std::to_string(stride_) + " [own direct convs, NCHW]";
  }

 private:
  int stride_;
  ConvLayer conv1_, conv2_;
};

class ReorderLayer : public Layer {
 public:
  ReorderLayer(Shape shape, Layout from, Layout to)
      : Layer(shape, shape), from_(from), to_(to), isa_(active_isa()) {}
  void forward(const float* in, float* out, LayerState*) const override {
    if (from_ == Layout::NCHW) {
      nchw_to_nhwc(isa_, in_, in, out);
    } else {
      nhwc_to_nchw(isa_, in_, in, out);
    }
  }
  Layout input_layout() const override { return from_; }
  Layout output_layout() const override { return to_; }
  std::string describe() const override {
    return std::string("reorder ") + layout_name(from_) + "->" + layout_name(to_) + " [own " +
           isa_name(isa_) + "]";
  }

 private:
  Layout from_, to_;
  Isa isa_;
};

}  // namespace

std::unique_ptr<Layer> make_reorder(Shape shape, Layout from, Layout to) {
  return std::make_unique<ReorderLayer>(shape, from, to);
}

std::vector<std::unique_ptr<Layer>> own_candidates(const Op& op) {
  std::vector<std::unique_ptr<Layer>> out;
  switch (op.kind) {
    case OpKind::Conv2d: out.push_back(std::make_unique<ConvLayer>(op)); break;
    case OpKind::MaxPool2d:
    case OpKind::AvgPool2d: out.push_back(std::make_unique<PoolLayer>(op)); break;
    case OpKind::Lrn: out.push_back(std::make_unique<LrnLayer>(op)); break;
    case OpKind::Relu:
      out.push_back(std::make_unique<ReluLayer>(op, Layout::NCHW));
      out.push_back(std::make_unique<ReluLayer>(op, Layout::NHWC));
      break;
    case OpKind::Linear: out.push_back(std::make_unique<LinearLayer>(op)); break;
    case OpKind::Flatten: out.push_back(std::make_unique<FlattenLayer>(op)); break;
    case OpKind::ResBlock: out.push_back(std::make_unique<ResBlockLayer>(op)); break;
  }
  return out;
}

}  // namespace branchy
