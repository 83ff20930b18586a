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

inline py::object to_python(const at::Tensor& t) {
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(t));
}

}  // namespace branchy_ops
