// res_block: the paper's ResNet block, relu(conv2(relu(conv1(x))) + shortcut(x)), BatchNorm folded
// into both 3x3 convolutions; the shortcut is x[:, ::stride, ::stride] with zero channels in front.
#include <stdexcept>

#include "../buffer.h"
#include "../kernels/simple_ops.h"
#include "registry.h"

namespace branchy {

extern const OpDef kConv2d;

namespace {

std::vector<Expected> check(const OpCheck& c, Op& op) {
  op.in_channels = c.at_least(op.ints[0], 1, "in_channels");
  op.out_channels = c.at_least(op.ints[1], op.in_channels, "out_channels (the shortcut only adds channels)");
  op.stride_h = op.stride_w = c.at_least(op.ints[2], 1, "stride");
  op.kernel_h = op.kernel_w = 3;
  op.pad_h = op.pad_w = op.pad_bottom = op.pad_right = 1;
  if (op.in.c != op.in_channels) {
    c.fail("in_channels is ", op.in_channels, " but the input ", OpCheck::str(op.in), " has ",
           op.in.c, " channels");
  }
  // ceil(H / stride): the 3x3, pad-1 conv1's output size.
  op.out = c.shape(op.out_channels, (int64_t(op.in.h) + op.stride_h - 1) / op.stride_h,
                   (int64_t(op.in.w) + op.stride_w - 1) / op.stride_w, "output");
  const Expected bias = OpCheck::product({{"out", op.out_channels}});
  return {OpCheck::product({{"out", op.out_channels}, {"in", op.in_channels}, {"", 3}, {"", 3}}), bias,
          OpCheck::product({{"out", op.out_channels}, {"out", op.out_channels}, {"", 3}, {"", 3}}), bias};
}

// conv1 (index 0) or conv2 (1) of a block, as a conv2d op.
Op block_conv(const Op& block, int index) {
  Op conv;
  conv.def = &kConv2d;
  conv.in_channels = index == 0 ? block.in_channels : block.out_channels;
  conv.out_channels = block.out_channels;
  conv.kernel_h = conv.kernel_w = 3;
  conv.stride_h = conv.stride_w = index == 0 ? block.stride_h : 1;
  conv.pad_h = conv.pad_w = conv.pad_bottom = conv.pad_right = 1;
  conv.act = index == 0 ? Act::Relu : Act::None;
  conv.relu = index == 0;
  conv.tensors = {block.tensors[2 * index], block.tensors[2 * index + 1]};
  conv.in = index == 0 ? block.in : block.out;
  conv.ins = {conv.in};
  conv.out = block.out;
  return conv;
}

void reference(const Op& op, const float* const* ins, float* out) {
  Buffer hidden(size_t(op.out.numel())), shortcut(size_t(op.out.numel()));
  const Op c1 = block_conv(op, 0), c2 = block_conv(op, 1);
  kConv2d.reference(c1, ins, hidden.data());
  const float* h[1] = {hidden.data()};
  kConv2d.reference(c2, h, out);
  shortcut_nchw(op.in, op.out, op.stride_h, ins[0], shortcut.data());
  add_relu(shortcut.data(), out, size_t(op.out.numel()));
}

struct BlockState : LayerState {
  BlockState(size_t hidden, std::unique_ptr<LayerState> c1, std::unique_ptr<LayerState> c2)
      : hidden(hidden), conv1(std::move(c1)), conv2(std::move(c2)) {}
  Buffer hidden;
  std::unique_ptr<LayerState> conv1, conv2;
};

// The own convolution of a block's conv that runs on NCHW (the block's layout; conv2d's other own
// kernels are NHWC).
std::unique_ptr<Layer> nchw_conv(const Op& conv) {
  for (auto& layer : kConv2d.own(conv)) {
    if (layer->input_layout() == Layout::NCHW && layer->output_layout() == Layout::NCHW) {
      return std::move(layer);
    }
  }
  throw std::logic_error("conv2d has no own NCHW kernel for a res_block's convolution");
}

// With the own convolution.
class BlockLayer : public Layer {
 public:
  explicit BlockLayer(const Op& op)
      : Layer(op.in, op.out), stride_(op.stride_h), conv1_(nchw_conv(block_conv(op, 0))),
        conv2_(nchw_conv(block_conv(op, 1))) {}
  void forward(const float* in, float* out, LayerState* state) const override {
    auto* s = static_cast<BlockState*>(state);
    conv1_->forward(in, s->hidden.data(), s->conv1.get());
    conv2_->forward(s->hidden.data(), out, s->conv2.get());
    // out holds conv2's result; add the shortcut through the hidden buffer.
    shortcut_nchw(in_, out_, stride_, in, s->hidden.data());
    add_relu(s->hidden.data(), out, size_t(out_.numel()));
  }
  std::unique_ptr<LayerState> make_state() const override {
    return std::make_unique<BlockState>(size_t(out_.numel()), conv1_->make_state(), conv2_->make_state());
  }
  size_t scratch_floats() const override {
    return size_t(out_.numel()) + conv1_->scratch_floats() + conv2_->scratch_floats();
  }
  size_t packed_floats() const override { return conv1_->packed_floats() + conv2_->packed_floats(); }
  Layout input_layout() const override { return Layout::NCHW; }
  Layout output_layout() const override { return Layout::NCHW; }
  std::string describe() const override {
    return "res_block " + std::to_string(in_.c) + "->" + std::to_string(out_.c) + " s" +
           std::to_string(stride_) + " [own direct convs, NCHW]";
  }

 private:
  int stride_;
  std::unique_ptr<Layer> conv1_, conv2_;
};

Layers own(const Op& op) {
  Layers out;
  out.push_back(std::make_unique<BlockLayer>(op));
  return out;
}

}  // namespace

extern const OpDef kResBlock{
    "res_block", 8, {"in_channels", "out_channels", "stride"}, {},
    {"conv1 weight [out, in, 3, 3]", "conv1 bias [out]", "conv2 weight [out, out, 3, 3]", "conv2 bias [out]"},
    1, 1,
    "relu(conv2(relu(conv1(x))) + x[:, ::stride, ::stride] with out - in zero channels in front), "
    "conv1 3x3 stride `stride` pad 1, conv2 3x3 pad 1; [out, ceil(H / stride), ceil(W / stride)]",
    check, reference, own, dnnl_res_block,
};

}  // namespace branchy
