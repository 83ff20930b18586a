// The layout change between NCHW and NHWC that the plan inserts where a layer wants the other
// layout. (Each op kind's own layers live with its declaration, in ops/.)
#include "kernels/simple_ops.h"
#include "layer.h"

namespace branchy {

const char* layout_name(Layout layout) { return layout == Layout::NCHW ? "NCHW" : "NHWC"; }

namespace {

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

}  // namespace branchy
