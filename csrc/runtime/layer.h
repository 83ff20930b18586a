// A layer: one op of the model, built once (weights packed, shapes fixed), run many times with no
// allocation. A plan is a list of layers per stage and per exit head, each reading the buffers of
// the values its op reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model_file.h"
#include "visibility.h"

namespace branchy {

// How one sample's activation [C, H, W] lies in memory.
enum class Layout : int { NCHW = 0, NHWC = 1 };

BRANCHY_API const char* layout_name(Layout layout);

// Per-thread state a layer may need (scratch buffers, library handles); made by the layer, owned
// by a Context, never shared between threads.
struct BRANCHY_API LayerState {
  virtual ~LayerState() = default;
};

class BRANCHY_API Layer {
 public:
  virtual ~Layer() = default;
  // Reads one sample's input (in `input_layout()`), writes its output (in `output_layout()`).
  // `in` and `out` never alias; both hold at least in_shape().numel() / out_shape().numel() floats.
  virtual void forward(const float* in, float* out, LayerState* state) const = 0;
  // All inputs (one pointer each, in the op's order); layers of single-input ops need not
  // override it. Outputs never alias inputs.
  virtual void forward_n(const float* const* ins, float* out, LayerState* state) const {
    forward(ins[0], out, state);
  }
  // Per-thread state for forward(); null when the layer needs none.
  virtual std::unique_ptr<LayerState> make_state() const { return nullptr; }
  virtual Layout input_layout() const = 0;
  virtual Layout output_layout() const = 0;
  // What the layer is and which implementation runs it, e.g. "conv2d 5->10 k3 s1 p1 +relu [own avx2]".
  virtual std::string describe() const = 0;
  // Floats of per-thread scratch (make_state) and of weights packed at build (for the footprint).
  virtual size_t scratch_floats() const { return 0; }
  virtual size_t packed_floats() const { return 0; }
  // Plain loops (no SIMD tier): what a plan forced to own kernels takes only when nothing else
  // runs the op.
  virtual bool portable() const { return false; }

  Shape in_shape() const { return in_; }
  Shape out_shape() const { return out_; }
  const std::vector<Shape>& in_shapes() const { return ins_; }

 protected:
  Layer(Shape in, Shape out) : in_(in), out_(out), ins_{in} {}
  Layer(std::vector<Shape> ins, Shape out) : in_(ins.at(0)), out_(out), ins_(std::move(ins)) {}
  Shape in_, out_;
  std::vector<Shape> ins_;
};

// Changes one sample's layout between NCHW and NHWC.
BRANCHY_API std::unique_ptr<Layer> make_reorder(Shape shape, Layout from, Layout to);

// Runs `layer` once on pseudo-random inputs against its op's reference (plain loops, NCHW) and
// throws std::runtime_error naming the op, the kernel and the error where they differ by more
// than 1e-4 of the reference's largest magnitude (plus 1e-5), NaN where the other has none
// included: PlanOptions::verify's check of every chosen kernel.
BRANCHY_API void verify_layer(const Op& op, const Layer& layer);

// The oneDNN layers of the kinds oneDNN runs (layers_dnnl.cpp; none without oneDNN). Each kind's
// declaration (ops/) names its own.
BRANCHY_API std::vector<std::unique_ptr<Layer>> dnnl_conv2d(const Op& op);
BRANCHY_API std::vector<std::unique_ptr<Layer>> dnnl_pool2d(const Op& op);
BRANCHY_API std::vector<std::unique_ptr<Layer>> dnnl_lrn(const Op& op);
BRANCHY_API std::vector<std::unique_ptr<Layer>> dnnl_linear(const Op& op);
BRANCHY_API std::vector<std::unique_ptr<Layer>> dnnl_res_block(const Op& op);

// Whether this build has the oneDNN layers, and which oneDNN it is ("" when none).
BRANCHY_API bool have_dnnl();
BRANCHY_API std::string dnnl_version();

// Sets the thread count oneDNN layers use from the calling thread (OpenMP's, which the caller's
// other libraries share: PyTorch's torch.get_num_threads() among them) and returns the count it
// replaced, so that the caller's can be put back (no-op without oneDNN: returns `threads`).
BRANCHY_API int set_dnnl_threads(int threads);

}  // namespace branchy
