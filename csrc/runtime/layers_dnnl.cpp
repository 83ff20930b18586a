// Layers run by oneDNN primitives on NHWC samples: created once per plan (weights reordered into
// the primitive's preferred layout once), executed with per-thread memory handles and scratchpad.
// NHWC, not NCHW: on plain NCHW oneDNN falls back to im2col + GEMM, 2-4x slower at batch 1.
#include <omp.h>

#include <algorithm>
#include <oneapi/dnnl/dnnl.hpp>
#include <sstream>
#include <unordered_map>

#include "kernels/simple_ops.h"
#include "layer.h"
#include "ops/registry.h"

namespace branchy {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::desc activation(const Shape& s, tag layout = tag::nhwc) {
  return memory::desc({1, s.c, s.h, s.w}, dt::f32, layout);
}

dnnl::primitive_attr attributes(const dnnl::post_ops& ops = dnnl::post_ops()) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  attr.set_post_ops(ops);
  return attr;
}

// A sum post-op (the destination's contents added), or none.
dnnl::post_ops sum_onto(bool sum) {
  dnnl::post_ops ops;
  if (sum) ops.append_sum(1.0f);
  return ops;
}

// Copies user weights (a view into the model file, layout `user`) into the layout `wanted`.
memory reordered(const float* data, const memory::desc& user, const memory::desc& wanted) {
  memory src(user, cpu_engine(), const_cast<float*>(data));
  memory dst(wanted, cpu_engine());
  dnnl::stream stream(cpu_engine());
  dnnl::reorder(src, dst).execute(stream, src, dst);
  stream.wait();
  return dst;
}

// One primitive with its argument memories; per thread, since memory handles are set per call.
// Executes through the C API with an argument array built once: the C++ execute() builds a
// vector of arguments on every call.
// `residual`: a binary-add post-op's second tensor (zero dims: none), set per call too.
struct Call {
  Call(const dnnl::primitive& p, const memory::desc& src, const memory::desc& dst,
       const memory::desc& scratchpad, const std::unordered_map<int, memory>& constants,
       const memory::desc& residual)
      : primitive(p), stream(cpu_engine()),
        src(src, cpu_engine(), DNNL_MEMORY_NONE), dst(dst, cpu_engine(), DNNL_MEMORY_NONE),
        scratchpad(scratchpad, cpu_engine()), residual(residual, cpu_engine(), DNNL_MEMORY_NONE),
        constants(constants) {
    args.push_back({DNNL_ARG_SRC, this->src.get()});
    args.push_back({DNNL_ARG_DST, this->dst.get()});
    args.push_back({DNNL_ARG_SCRATCHPAD, this->scratchpad.get()});
    if (!residual.is_zero()) {
      args.push_back({DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, this->residual.get()});
    }
    for (const auto& [key, value] : this->constants) args.push_back({key, value.get()});
  }
  void run(const float* in, float* out, const float* add = nullptr) {
    src.set_data_handle(const_cast<float*>(in));
    dst.set_data_handle(out);
    if (add) residual.set_data_handle(const_cast<float*>(add));
    dnnl::error::wrap_c_api(
        dnnl_primitive_execute(primitive.get(), stream.get(), int(args.size()), args.data()),
        "oneDNN primitive execution");
  }
  dnnl::primitive primitive;
  dnnl::stream stream;
  memory src, dst, scratchpad, residual;
  std::unordered_map<int, memory> constants;  // keeps the shared weights alive
  std::vector<dnnl_exec_arg_t> args;
};

struct CallState : LayerState {
  std::vector<std::unique_ptr<Call>> calls;
  Buffer buffer;
};

// A primitive, its descriptors and its constant arguments (weights, bias): built once, shared.
struct Primitive {
  dnnl::primitive primitive;
  memory::desc src, dst, scratchpad;
  std::unordered_map<int, memory> constants;
  memory::desc residual = {};  // the binary-add post-op's tensor, or zero dims
  std::unique_ptr<Call> call() const {
    return std::make_unique<Call>(primitive, src, dst, scratchpad, constants, residual);
  }
};

// The implementation names of primitives built last, for describe().
std::vector<std::string>& impl_names() {
  thread_local std::vector<std::string> names;
  return names;
}

std::string take_impl_names() {
  std::string joined;
  for (const auto& n : impl_names()) joined += (joined.empty() ? "" : "+") + n;
  impl_names().clear();
  return joined;
}

// groups > 1: weights [g, out / g, in / g, kh, kw]; dilation as oneDNN counts it (0: none).
Primitive convolution(const Op& op, const dnnl::post_ops& ops) {
  const Shape &in = op.in, &out = op.out;
  const memory::desc src = activation(in), dst = activation(out);
  const int g = op.groups;
  const memory::dims wdims = g == 1 ? memory::dims{out.c, in.c, op.kernel_h, op.kernel_w}
                                    : memory::dims{g, out.c / g, in.c / g, op.kernel_h, op.kernel_w};
  const memory::desc user_w(wdims, dt::f32, g == 1 ? tag::oihw : tag::goihw);
  const memory::desc any_w(wdims, dt::f32, tag::any);
  const memory::desc b({out.c}, dt::f32, tag::a);
  // Right padding so that the output size matches the model's (floor division).
  const int span_h = (op.kernel_h - 1) * op.dilation_h + 1, span_w = (op.kernel_w - 1) * op.dilation_w + 1;
  const int prh = (out.h - 1) * op.stride_h + span_h - in.h - op.pad_h;
  const int prw = (out.w - 1) * op.stride_w + span_w - in.w - op.pad_w;
  dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference,
                                       dnnl::algorithm::convolution_direct, src, any_w, b, dst,
                                       {op.stride_h, op.stride_w}, {op.dilation_h - 1, op.dilation_w - 1},
                                       {op.pad_h, op.pad_w}, {prh, prw});
  dnnl::convolution_forward::primitive_desc pd(desc, attributes(ops), cpu_engine());
  Primitive p{dnnl::convolution_forward(pd), src, dst, pd.scratchpad_desc(), {},
              op.ins.size() == 2 ? dst : memory::desc()};
  p.constants.emplace(DNNL_ARG_WEIGHTS, reordered(op.tensors[0].data, user_w, pd.weights_desc()));
  p.constants.emplace(DNNL_ARG_BIAS, memory(b, cpu_engine(), const_cast<float*>(op.tensors[1].data)));
  impl_names().push_back(pd.impl_info_str());
  return p;
}

// The res_block's 3x3 convolutions as conv2d ops.
Op block_conv(const Op& block, int index) {
  Op conv;
  conv.in = index == 0 ? block.in : block.out;
  conv.out = block.out;
  conv.kernel_h = conv.kernel_w = 3;
  conv.stride_h = conv.stride_w = index == 0 ? block.stride_h : 1;
  conv.pad_h = conv.pad_w = 1;
  conv.tensors = {block.tensors[2 * index], block.tensors[2 * index + 1]};
  return conv;
}

class DnnlLayer : public Layer {
 public:
  DnnlLayer(const Op& op, std::string what) : Layer(op.ins, op.out), what_(std::move(what)) {}
  Layout input_layout() const override { return Layout::NHWC; }
  Layout output_layout() const override { return Layout::NHWC; }
  std::string describe() const override { return what_ + " [oneDNN " + impl_ + ", NHWC]"; }

 protected:
  std::string what_, impl_;
};

// One primitive; the op's activation after it (own code) when `act_after`.
class DnnlSingle : public DnnlLayer {
 public:
  DnnlSingle(const Op& op, std::string what, Primitive p, bool act_after = false)
      : DnnlLayer(op, std::move(what)), p_(std::move(p)), act_(act_after ? op.act : Act::None),
        lo_(op.act_lo), hi_(op.act_hi) {
    impl_ = take_impl_names();
  }
  void forward(const float* in, float* out, LayerState* state) const override {
    static_cast<CallState*>(state)->calls[0]->run(in, out);
    apply_act(act_, lo_, hi_, out, size_t(out_.numel()));
  }
  // A convolution with a residual: the second input is the binary-add post-op's tensor.
  void forward_n(const float* const* ins, float* out, LayerState* state) const override {
    static_cast<CallState*>(state)->calls[0]->run(ins[0], out, ins_.size() > 1 ? ins[1] : nullptr);
    apply_act(act_, lo_, hi_, out, size_t(out_.numel()));
  }
  std::unique_ptr<LayerState> make_state() const override {
    auto state = std::make_unique<CallState>();
    state->calls.push_back(p_.call());
    return state;
  }

 private:
  Primitive p_;
  Act act_;
  float lo_, hi_;
};

// relu(conv2(relu(conv1(x))) + shortcut(x)): the shortcut is written into the output first and
// conv2 accumulates onto it (a sum post-op); each ReLU is the own code's (see epilogue).
class DnnlResBlock : public DnnlLayer {
 public:
  explicit DnnlResBlock(const Op& op)
      : DnnlLayer(op, "res_block " + std::to_string(op.in.c) + "->" + std::to_string(op.out.c) +
                          " s" + std::to_string(op.stride_h)),
        stride_(op.stride_h),
        conv1_(convolution(block_conv(op, 0), sum_onto(false))),
        conv2_(convolution(block_conv(op, 1), sum_onto(true))) {
    impl_ = take_impl_names();
  }
  void forward(const float* in, float* out, LayerState* state) const override {
    auto* s = static_cast<CallState*>(state);
    s->calls[0]->run(in, s->buffer.data());
    apply_act(Act::Relu, 0.0f, 0.0f, s->buffer.data(), s->buffer.data(), s->buffer.size());
    shortcut_nhwc(in_, out_, stride_, in, out);
    s->calls[1]->run(s->buffer.data(), out);
    apply_act(Act::Relu, 0.0f, 0.0f, out, size_t(out_.numel()));  // NaN stays (see epilogue)
  }
  std::unique_ptr<LayerState> make_state() const override {
    auto state = std::make_unique<CallState>();
    state->calls.push_back(conv1_.call());
    state->calls.push_back(conv2_.call());
    state->buffer = Buffer(out_.numel());
    return state;
  }

 private:
  int stride_;
  Primitive conv1_, conv2_;
};

// oneDNN's post-ops for an op: its residual (conv2d's second input, added before the
// activation). The activation itself runs after the primitive, in the own code (epilogue_after):
// oneDNN's eltwise ReLU, clip and hardswish are max/min instructions that turn NaN into a number
// (max(NaN, 0) = 0), where PyTorch's activations keep it; a pass over the output costs under 1%
// of a convolution.
dnnl::post_ops epilogue(const Op& op) {
  dnnl::post_ops ops;
  if (op.ins.size() == 2) ops.append_binary(dnnl::algorithm::binary_add, activation(op.out));
  return ops;
}

bool epilogue_after(const Op& op) { return op.act != Act::None; }

std::unique_ptr<Layer> conv_layer(const Op& op) {
  std::ostringstream what;
  what << "conv2d " << op.in.c << "->" << op.out.c << " k" << op.kernel_h << "x" << op.kernel_w
       << " s" << op.stride_h << " p" << op.pad_h;
  if (op.groups > 1) what << " g" << op.groups;
  if (op.dilation_h > 1 || op.dilation_w > 1) what << " d" << op.dilation_h;
  if (op.ins.size() == 2) what << " +residual";
  if (op.act != Act::None) what << " +" << act_name(op.act);
  return std::make_unique<DnnlSingle>(op, what.str(), convolution(op, epilogue(op)), epilogue_after(op));
}

std::unique_ptr<Layer> pool_layer(const Op& op) {
  const int prh = (op.out.h - 1) * op.stride_h + op.kernel_h - op.in.h - op.pad_h;
  const int prw = (op.out.w - 1) * op.stride_w + op.kernel_w - op.in.w - op.pad_w;
  const bool max = op.max_pool;
  // oneDNN's max pooling drops NaN (a NaN among numbers vanishes; a window of NaN only gives
  // -3.4e38), where PyTorch's is NaN: the own kernels run max pools, in either layout.
  if (max) return nullptr;
  // oneDNN's average counts the extra ceil-mode padding; PyTorch's does not. Only where none.
  if (!max && (prh != op.pad_h || prw != op.pad_w)) return nullptr;
  const memory::desc src = activation(op.in), dst = activation(op.out);
  dnnl::pooling_forward::desc desc(
      dnnl::prop_kind::forward_inference,
      max ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_include_padding, src, dst,
      {op.stride_h, op.stride_w}, {op.kernel_h, op.kernel_w}, {op.pad_h, op.pad_w}, {prh, prw});
  dnnl::pooling_forward::primitive_desc pd(desc, attributes(), cpu_engine());
  impl_names().push_back(pd.impl_info_str());
  std::ostringstream what;
  what << op.name() << " k" << op.kernel_h << " s" << op.stride_h << " p" << op.pad_h
       << (op.ceil_mode ? " ceil" : "");
  if (op.act != Act::None) what << " +" << act_name(op.act);
  return std::make_unique<DnnlSingle>(
      op, what.str(), Primitive{dnnl::pooling_forward(pd), src, dst, pd.scratchpad_desc(), {}},
      true);
}

std::unique_ptr<Layer> lrn_layer(const Op& op) {
  const memory::desc src = activation(op.in);
  // oneDNN, like PyTorch, divides alpha by the window size.
  dnnl::lrn_forward::desc desc(dnnl::prop_kind::forward_inference,
                               dnnl::algorithm::lrn_across_channels, src, op.size, op.alpha,
                               op.beta, op.k);
  dnnl::lrn_forward::primitive_desc pd(desc, attributes(), cpu_engine());
  impl_names().push_back(pd.impl_info_str());
  return std::make_unique<DnnlSingle>(
      op, "lrn size " + std::to_string(op.size),
      Primitive{dnnl::lrn_forward(pd), src, src, pd.scratchpad_desc(), {}});
}

// Linear on the NHWC activation directly: oneDNN knows the logical [C, H, W] of the input, so the
// weights (PyTorch's NCHW flattening) need no permutation and the input no reorder.
std::unique_ptr<Layer> linear_layer(const Op& op) {
  const memory::desc src = activation(op.in);
  const memory::desc user_w({op.out.c, op.in.c, op.in.h, op.in.w}, dt::f32, tag::oihw);
  const memory::desc any_w({op.out.c, op.in.c, op.in.h, op.in.w}, dt::f32, tag::any);
  const memory::desc b({op.out.c}, dt::f32, tag::a);
  const memory::desc dst({1, op.out.c}, dt::f32, tag::nc);
  dnnl::inner_product_forward::desc desc(dnnl::prop_kind::forward_inference, src, any_w, b, dst);
  dnnl::inner_product_forward::primitive_desc pd(desc, attributes(epilogue(op)), cpu_engine());
  impl_names().push_back(pd.impl_info_str());
  Primitive p{dnnl::inner_product_forward(pd), src, dst, pd.scratchpad_desc(), {}};
  p.constants.emplace(DNNL_ARG_WEIGHTS, reordered(op.tensors[0].data, user_w, pd.weights_desc()));
  p.constants.emplace(DNNL_ARG_BIAS, memory(b, cpu_engine(), const_cast<float*>(op.tensors[1].data)));
  return std::make_unique<DnnlSingle>(
      op, "linear " + std::to_string(op.in_channels) + "->" + std::to_string(op.out_channels) +
              (op.act != Act::None ? std::string(" +") + act_name(op.act) : ""),
      std::move(p), epilogue_after(op));
}

}  // namespace

bool have_dnnl() { return true; }

std::string dnnl_version() {
  const dnnl_version_t* v = dnnl::version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch);
}

int set_dnnl_threads(int threads) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(std::max(1, threads));
  return before;
}

namespace {

// A layer from `make`, or none where oneDNN has no implementation for this shape (the own
// kernels serve it then).
template <class F>
std::vector<std::unique_ptr<Layer>> candidates(F make) {
  std::vector<std::unique_ptr<Layer>> out;
  try {
    std::unique_ptr<Layer> layer = make();
    if (layer) out.push_back(std::move(layer));
  } catch (const dnnl::error&) {
    impl_names().clear();
  }
  return out;
}

}  // namespace

std::vector<std::unique_ptr<Layer>> dnnl_conv2d(const Op& op) { return candidates([&] { return conv_layer(op); }); }
std::vector<std::unique_ptr<Layer>> dnnl_pool2d(const Op& op) { return candidates([&] { return pool_layer(op); }); }
// Odd sizes only: for an even size oneDNN centres its window one channel off PyTorch's (which
// reaches size / 2 channels back and (size - 1) / 2 ahead): 0.61628 where PyTorch gives 0.60264 at
// size 4. The own kernel runs those.
std::vector<std::unique_ptr<Layer>> dnnl_lrn(const Op& op) {
  if (op.size % 2 == 0) return {};
  return candidates([&] { return lrn_layer(op); });
}
// A linear layer reads its input's [C, H, W] (the flatten before it is folded in).
std::vector<std::unique_ptr<Layer>> dnnl_linear(const Op& op) { return candidates([&] { return linear_layer(op); }); }
std::vector<std::unique_ptr<Layer>> dnnl_res_block(const Op& op) {
  return candidates([&]() -> std::unique_ptr<Layer> { return std::make_unique<DnnlResBlock>(op); });
}

}  // namespace branchy
