// The checks a binding of the CPU runtime applies to an input tensor before a Plan reads it:
// errors that name what is wrong (type, dtype, device, shape, NaN).
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

// Index of the first sample holding a NaN, or -1: a NaN input would silently leave at the last exit.
inline int64_t first_nan(const float* x, int64_t samples, int64_t per_sample) {
  for (int64_t s = 0; s < samples; ++s) {
    // No early exit inside a sample, so the compiler vectorises the scan.
    bool nan = false;
    for (int64_t i = 0; i < per_sample; ++i) nan |= x[s * per_sample + i] != x[s * per_sample + i];
    if (nan) return s;
  }
  return -1;
}

inline void check_no_nan(const float* x, int64_t samples, int64_t per_sample) {
  const int64_t bad = first_nan(x, samples, per_sample);
  if (bad >= 0) throw py::value_error("input sample " + std::to_string(bad) + " contains NaN");
}

inline py::object to_python(const at::Tensor& t) {
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(t));
}

}  // namespace branchy_ops
