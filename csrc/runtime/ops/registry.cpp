// The one list of op kinds, and what every kind's declaration shares: range checks, the fused
// activation, and the reference run as a layer.
#include "registry.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "../json.h"
#include "../kernels/activation.h"

namespace branchy {

// Each declared in its own file (ops/<kind>.cpp).
extern const OpDef kConv2d, kMaxPool2d, kAvgPool2d, kLrn, kActivation, kLinear, kFlatten,
    kResBlock, kAdd, kMul, kConcat, kMean, kChannelAffine, kChannelShuffle, kLayerNorm,
    kChannelSlice;

const std::vector<const OpDef*>& op_registry() {
  static const std::vector<const OpDef*> all = [] {
    std::vector<const OpDef*> v{&kConv2d, &kMaxPool2d, &kAvgPool2d, &kLrn, &kActivation,
                                &kLinear, &kFlatten, &kResBlock, &kAdd, &kMul, &kConcat,
                                &kMean, &kChannelAffine, &kChannelShuffle, &kLayerNorm,
                                &kChannelSlice};
    std::sort(v.begin(), v.end(), [](const OpDef* a, const OpDef* b) { return a->code < b->code; });
    return v;
  }();
  return all;
}

const OpDef* find_op(uint32_t code) {
  for (const OpDef* d : op_registry()) {
    if (d->code == code) return d;
  }
  return nullptr;
}

const OpDef* find_op(const std::string& name) {
  for (const OpDef* d : op_registry()) {
    if (name == d->name) return d;
  }
  return nullptr;
}

const char* Op::name() const { return def ? def->name : "unknown"; }

const char* act_name(Act act) {
  static const char* names[] = {"none",        "relu", "clamp",    "hardswish", "hardsigmoid",
                                "silu",        "sigmoid", "gelu_erf", "gelu_tanh"};
  const int i = int(act);
  return i >= 0 && i <= kLastAct ? names[i] : "unknown";
}

// ---- checks ----

int32_t OpCheck::at_least(int32_t value, int32_t low, const char* field) const {
  if (value < low) fail(field, " is ", value, ", expected >= ", low);
  return value;
}

bool OpCheck::flag(int32_t value, const char* field) const {
  if (value != 0 && value != 1) fail(field, " is ", value, ", expected 0 or 1");
  return value == 1;
}

Shape OpCheck::shape(int64_t c, int64_t h, int64_t w, const char* what) const {
  int64_t ch, n;
  if (c < 1 || h < 1 || w < 1) fail(what, " [", c, ", ", h, ", ", w, "] is empty");
  if (__builtin_mul_overflow(c, h, &ch) || __builtin_mul_overflow(ch, w, &n) ||
      n > std::numeric_limits<int32_t>::max()) {
    fail(what, " [", c, ", ", h, ", ", w,
         "] has more than the 2^31-1 elements an activation may hold");
  }
  return {int32_t(c), int32_t(h), int32_t(w)};
}

void OpCheck::activation(Op& op, size_t at, size_t lo_at) const {
  const int32_t code = op.ints[at];
  if (code < 0 || code > kLastAct) {
    fail("activation is ", code, ", expected 0 to ", kLastAct, " (docs/model-format.md)");
  }
  op.act = Act(code);
  op.act_lo = op.floats[lo_at];
  op.act_hi = op.floats[lo_at + 1];
  if (op.act == Act::Clamp) {
    if (std::isnan(op.act_lo) || std::isnan(op.act_hi) || op.act_lo > op.act_hi) {
      fail("clamp bounds [", op.act_lo, ", ", op.act_hi, "] are NaN or reversed");
    }
  } else if (op.act_lo != 0.0f || op.act_hi != 0.0f) {
    fail("activation bounds are ", op.act_lo, ", ", op.act_hi, "; only clamp has bounds (0, 0 otherwise)");
  }
  op.relu = op.act == Act::Relu;
}

void OpCheck::same_shapes(const Op& op) const {
  for (size_t i = 1; i < op.ins.size(); ++i) {
    if (op.ins[i] != op.ins[0]) {
      fail("input ", i, " is ", str(op.ins[i]), ", expected input 0's ", str(op.ins[0]));
    }
  }
}

std::string OpCheck::str(const Shape& x) {
  return "[" + std::to_string(x.c) + ", " + std::to_string(x.h) + ", " + std::to_string(x.w) + "]";
}

Expected OpCheck::product(std::initializer_list<std::pair<const char*, int64_t>> factors) {
  Expected e{1, ""};
  bool overflow = false;
  for (const auto& [name, value] : factors) {
    overflow |= __builtin_mul_overflow(e.count, value, &e.count);
    e.formula += e.formula.empty() ? "" : " * ";
    e.formula += *name ? std::string(name) + " " + std::to_string(value) : std::to_string(value);
  }
  if (overflow) e.count = -1;  // no u64 count equals it
  return e;
}

// ---- activations ----

float act_value(Act act, float lo, float hi, float x) {
  switch (act) {
    case Act::None: return x;
    case Act::Relu: return std::max(x, 0.0f);
    case Act::Clamp: return std::min(std::max(x, lo), hi);
    case Act::Hardswish: return x * std::min(std::max(x + 3.0f, 0.0f), 6.0f) / 6.0f;
    case Act::Hardsigmoid: return std::min(std::max(x + 3.0f, 0.0f), 6.0f) / 6.0f;
    case Act::Silu: return x / (1.0f + std::exp(-x));
    case Act::Sigmoid: return 1.0f / (1.0f + std::exp(-x));
    case Act::GeluErf: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case Act::GeluTanh: {
      const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + std::tanh(inner));
    }
  }
  return x;
}

namespace {

// out[i] = f(in[i]) with `in` and `out` equal or apart: one loop per function and no branch in
// it, so that the compiler vectorises the arithmetic ones (and inlines the calls of the others).
template <class F>
void each(const float* in, float* out, size_t n, F f) {
  for (size_t i = 0; i < n; ++i) out[i] = f(in[i]);
}

}  // namespace

void apply_act(Act act, float lo, float hi, const float* in, float* out, size_t n) {
  if (act == Act::None) {
    if (in != out) std::copy(in, in + n, out);
    return;
  }
  // The active SIMD tier's vectors give these loops' very values (NaN and -0 included); the loops
  // below are built for the baseline ISA (4 lanes) and serve the portable tier and GELU. A clamp
  // pass after oneDNN's layers took 2.3% of MobileNetV2's time in the 4-lane loop.
  if (act_array_simd(active_isa(), act, lo, hi, in, out, n)) return;
  switch (act) {
    case Act::Relu: return each(in, out, n, [](float x) { return x < 0.0f ? 0.0f : x; });  // NaN stays
    case Act::Clamp: return each(in, out, n, [lo, hi](float x) { return std::min(std::max(x, lo), hi); });
    case Act::Hardswish:
      return each(in, out, n, [](float x) { return x * std::min(std::max(x + 3.0f, 0.0f), 6.0f) / 6.0f; });
    case Act::Hardsigmoid:
      return each(in, out, n, [](float x) { return std::min(std::max(x + 3.0f, 0.0f), 6.0f) / 6.0f; });
    default: return each(in, out, n, [act, lo, hi](float x) { return act_value(act, lo, hi, x); });
  }
}

void apply_act(Act act, float lo, float hi, float* x, size_t n) { apply_act(act, lo, hi, x, x, n); }

// ---- the reference as a layer ----

namespace {

class ReferenceLayer : public Layer {
 public:
  ReferenceLayer(const Op& op, const char* what) : Layer(op.ins, op.out), op_(op), what_(what) {}
  void forward(const float* in, float* out, LayerState*) const override {
    const float* ins[1] = {in};
    op_.def->reference(op_, ins, out);
  }
  void forward_n(const float* const* ins, float* out, LayerState*) const override {
    op_.def->reference(op_, ins, out);
  }
  Layout input_layout() const override { return Layout::NCHW; }
  Layout output_layout() const override { return Layout::NCHW; }
  bool portable() const override { return true; }
  std::string describe() const override {
    std::ostringstream s;
    s << op_.name();
    for (const Shape& x : op_.ins) s << " " << OpCheck::str(x);
    s << " -> " << OpCheck::str(op_.out);
    if (op_.act != Act::None) s << " +" << act_name(op_.act);
    s << " [own " << what_ << ", NCHW]";
    return s.str();
  }

 private:
  Op op_;
  const char* what_;
};

}  // namespace

std::unique_ptr<Layer> reference_layer(const Op& op, const char* what) {
  return std::make_unique<ReferenceLayer>(op, what);
}

// ---- kinds that run in either layout ----

namespace {

class LayoutLayer : public Layer {
 public:
  LayoutLayer(const Op& op, LayoutRun run, LayoutName what, Layout layout)
      : Layer(op.ins, op.out), op_(op), run_(run), what_(what), layout_(layout) {}
  void forward(const float* in, float* out, LayerState*) const override {
    if (ins_.size() != 1) throw std::logic_error(std::string(op_.name()) + " runs through forward_n");
    const float* ins[1] = {in};
    run_(op_, layout_, ins, out);
  }
  void forward_n(const float* const* ins, float* out, LayerState*) const override {
    run_(op_, layout_, ins, out);
  }
  Layout input_layout() const override { return layout_; }
  Layout output_layout() const override { return layout_; }
  std::string describe() const override {
    return what_(op_) + " [own, " + layout_name(layout_) + "]";
  }

 private:
  Op op_;
  LayoutRun run_;
  LayoutName what_;
  Layout layout_;
};

}  // namespace

std::unique_ptr<Layer> layout_layer(const Op& op, LayoutRun run, LayoutName what, Layout layout) {
  return std::make_unique<LayoutLayer>(op, run, what, layout);
}

// ---- the registry as JSON ----

std::string registry_json() {
  std::string out = "[";
  auto names = [&out](const char* key, const std::vector<const char*>& list) {
    out += std::string(", \"") + key + "\": [";
    for (size_t i = 0; i < list.size(); ++i) {
      if (i) out += ", ";
      json::append_string(out, list[i]);
    }
    out += "]";
  };
  for (size_t k = 0; k < op_registry().size(); ++k) {
    const OpDef& d = *op_registry()[k];
    out += k ? ", {" : "{";
    out += "\"name\": ";
    json::append_string(out, d.name);
    out += ", \"code\": " + std::to_string(d.code);
    names("ints", d.ints);
    names("floats", d.floats);
    names("tensors", d.tensors);
    out += ", \"min_inputs\": " + std::to_string(d.min_inputs) +
           ", \"max_inputs\": " + std::to_string(d.max_inputs) + ", \"semantics\": ";
    json::append_string(out, d.semantics);
    out += "}";
  }
  out += "]";
  return out;
}

}  // namespace branchy
