// The checks a binding of the CPU runtime applies to an input tensor before a Plan reads it:
// errors that name what is wrong (type, dtype, device, shape). The Plan refuses NaN and infinity.
#pragma once

#include <ATen/ATen.h>
#include <pybind11/pybind11.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>
#include <sstream>
#include <string>

#include "runtime/plan.h"

namespace branchy_ops {

namespace py = pybind11;

// The input as a contiguous float32 CPU tensor [C, H, W] or [B, C, H, W] of the model's shape, or
// an error naming what is wrong with it.
inline at::Tensor checked_input(const branchy::Plan& plan, py::handle obj) {
  if (!THPVariable_Check(obj.ptr())) {
    throw py::type_error(std::string("input must be a torch.Tensor or numpy array, got ") +
                         Py_TYPE(obj.ptr())->tp_name);
  }
  const at::Tensor& x = THPVariable_Unpack(obj.ptr());
  if (x.scalar_type() == at::kByte) {
    throw py::type_error(
        "input is uint8 (raw pixels?); this engine takes float32 prepared as in training "
        "(normalised). Make it with Engine(..., input=\"uint8\"), which prepares pixels itself, "
        "or convert with engine.prepare(pixels)");
  }
  if (x.scalar_type() != at::kFloat) {
    throw py::type_error("input must be float32, got " + py::str(obj.attr("dtype")).cast<std::string>());
  }
  if (!x.is_cpu()) {
    throw py::value_error("input must be on the CPU for this engine, got " + x.device().str());
  }
  const auto& s = plan.model().input;
  const bool fits = (x.dim() == 3 || x.dim() == 4) && x.size(-3) == s.c && x.size(-2) == s.h &&
                    x.size(-1) == s.w;
  if (!fits) {
    std::ostringstream m;
    m << "input must be [C, H, W] = [" << s.c << ", " << s.h << ", " << s.w
      << "] or [B, C, H, W], got " << x.sizes();
    throw py::value_error(m.str());
  }
  return x.contiguous();
}

// Raw 8-bit pixels: one image [C, H, W] or [H, W, C] ([H, W] when C is 1), or a batch
// [B, C, H, W] / [B, H, W, C] ([B, H, W] when C is 1). `order` "chw" or "hwc" says which; "auto"
// tells them apart by the model's shape (an image whose shape reads both ways must say). Returns
// the contiguous tensor, its order and whether it is a batch.
struct Pixels {
  at::Tensor x;
  branchy::PixelOrder order;
  bool batch;
};

inline Pixels checked_pixels(const branchy::Plan& plan, py::handle obj, const std::string& order) {
  if (!THPVariable_Check(obj.ptr())) {
    throw py::type_error(std::string("pixels must be a torch.Tensor or numpy array, got ") +
                         Py_TYPE(obj.ptr())->tp_name);
  }
  const at::Tensor& x = THPVariable_Unpack(obj.ptr());
  if (x.scalar_type() != at::kByte) {
    throw py::type_error("this engine takes raw pixels, uint8 (Engine(..., input=\"uint8\")), got " +
                         py::str(obj.attr("dtype")).cast<std::string>() +
                         "; for prepared float32 input make an Engine without input=\"uint8\"");
  }
  if (!x.is_cpu()) throw py::value_error("pixels must be on the CPU for this engine, got " + x.device().str());
  const auto& s = plan.model().input;
  const auto sizes = x.sizes();
  auto is = [&](int64_t from, std::initializer_list<int64_t> want) {
    if (int64_t(sizes.size()) - from != int64_t(want.size())) return false;
    int64_t k = from;
    for (int64_t w : want) {
      if (sizes[k++] != w) return false;
    }
    return true;
  };
  const bool chw_order = order != "hwc", hwc_order = order != "chw";
  for (int64_t lead : {0, 1}) {  // one image, then a batch
    if (lead == 1 && sizes.size() < 3) break;
    const bool chw = chw_order && (is(lead, {s.c, s.h, s.w}) || (s.c == 1 && is(lead, {s.h, s.w})));
    const bool hwc = hwc_order && is(lead, {s.h, s.w, s.c});
    if (chw && hwc && order == "auto") {
      std::ostringstream m;
      m << "pixels " << x.sizes() << " read both as [C, H, W] and as [H, W, C] for this model's input ["
        << s.c << ", " << s.h << ", " << s.w << "]: say which with input=\"uint8_chw\" or \"uint8_hwc\"";
      throw py::value_error(m.str());
    }
    if (chw || hwc) return {x.contiguous(), chw ? branchy::PixelOrder::CHW : branchy::PixelOrder::HWC, lead == 1};
  }
  std::ostringstream m;
  m << "pixels must be one image ";
  if (chw_order) m << "[C, H, W] = [" << s.c << ", " << s.h << ", " << s.w << "]" << (hwc_order ? " or " : "");
  if (hwc_order) m << "[H, W, C] = [" << s.h << ", " << s.w << ", " << s.c << "]";
  m << " or a batch of them, got " << x.sizes();
  throw py::value_error(m.str());
}

inline py::object to_python(const at::Tensor& t) {
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(t));
}

}  // namespace branchy_ops
