// The op registry: every op kind the engine runs is declared once, in its own file under
// csrc/runtime/ops/, as an OpDef: its file code and name, its attributes and tensors (the file's
// word order), its inputs, its check and shape rule, its reference (plain loops, the test oracle),
// its own kernels and its oneDNN primitive. The reader, the plan, the summary, the Python writer
// (through registry_json()) and docs/model-format.md all read these declarations; registry.cpp is
// the one list of them.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../layer.h"
#include "../model_file.h"

namespace branchy {

// An element count a tensor must have and how it follows from the attributes, for messages.
struct Expected {
  int64_t count;
  std::string formula;
};

// What an op kind's check uses: range checks that throw ModelError naming the field, prefixed with
// where the op is ("model file x: op 3 (conv2d)").
class OpCheck {
 public:
  explicit OpCheck(std::string where) : where_(std::move(where)) {}

  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    std::ostringstream s;
    s << where_ << ": ";
    (s << ... << args);
    throw ModelError(s.str());
  }

  int32_t at_least(int32_t value, int32_t low, const char* field) const;
  bool flag(int32_t value, const char* field) const;
  // A shape whose element count fits the int32 the engine indexes activations with.
  Shape shape(int64_t c, int64_t h, int64_t w, const char* what) const;
  // Reads the fused activation from ints[at] and floats[lo_at], floats[lo_at + 1] into op.act.
  void activation(Op& op, size_t at, size_t lo_at) const;
  // Every input has the first input's shape.
  void same_shapes(const Op& op) const;
  static std::string str(const Shape& x);
  static Expected product(std::initializer_list<std::pair<const char*, int64_t>> factors);

 private:
  std::string where_;
};

using Layers = std::vector<std::unique_ptr<Layer>>;

struct OpDef {
  const char* name;
  uint32_t code;                       // the kind's number in the file
  std::vector<const char*> ints;       // integer attributes, in file order
  std::vector<const char*> floats;     // float attributes, in file order
  std::vector<const char*> tensors;    // tensors, in file order, with their layout, e.g. "weight [out, in]"
  int32_t min_inputs = 1, max_inputs = 1;  // max_inputs < 0: any number
  const char* semantics;               // one sentence: what it computes, its output shape
  // Checks the attributes (op.ints, op.floats) and input shapes (op.ins), fills the typed fields
  // and op.out; returns the element count each tensor must have. Throws through `c`.
  std::vector<Expected> (*check)(const OpCheck& c, Op& op);
  // Plain loops on NCHW samples (ins: one pointer per input): the oracle the kernels are tested
  // against.
  void (*reference)(const Op& op, const float* const* ins, float* out);
  // The implementations the plan chooses from: own kernels (at least one) and oneDNN's (none
  // where oneDNN lacks the op or the build has no oneDNN).
  Layers (*own)(const Op& op);
  Layers (*dnnl)(const Op& op);
  // Integer attributes files had before later ones were appended (0: none appended); a file may
  // stop after them, the rest reading as 0, so that its older files still load.
  size_t ints_before_additions = 0;
};

// Every kind, in code order.
const std::vector<const OpDef*>& op_registry();
// The kind with this code or name, or null.
const OpDef* find_op(uint32_t code);
const OpDef* find_op(const std::string& name);

// No oneDNN primitive for this kind.
inline Layers no_dnnl(const Op&) { return {}; }

// The fused epilogue on n floats, in place or from `in` to `out` (any layout: elementwise).
void apply_act(Act act, float lo, float hi, float* x, size_t n);
void apply_act(Act act, float lo, float hi, const float* in, float* out, size_t n);
float act_value(Act act, float lo, float hi, float x);

// A layer that runs the kind's reference on NCHW samples: the own kernel of kinds whose work is
// too small to deserve a SIMD one yet.
std::unique_ptr<Layer> reference_layer(const Op& op, const char* what = "portable");

// The own kernel of a kind that runs in either layout as one function: run(op, layout, ins, out)
// (one pointer per input), described as what(op) + " [own, LAYOUT]". both_layouts<run, what> is
// such a kind's `own`: the plan picks the layout its neighbours make cheapest.
using LayoutRun = void (*)(const Op& op, Layout layout, const float* const* ins, float* out);
using LayoutName = std::string (*)(const Op& op);
std::unique_ptr<Layer> layout_layer(const Op& op, LayoutRun run, LayoutName what, Layout layout);

template <LayoutRun run, LayoutName what>
Layers both_layouts(const Op& op) {
  Layers out;
  out.push_back(layout_layer(op, run, what, Layout::NCHW));
  out.push_back(layout_layer(op, run, what, Layout::NHWC));
  return out;
}

}  // namespace branchy
