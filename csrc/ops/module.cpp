// The Python module branchy_engine._C. Importing it runs the op registrations; it also offers a
// direct entry to the exit decision ops that skips the Python half of torch.ops (overload
// resolution and OpOverload.__call__ cost microseconds, more than the op itself at batch 1).
// The entry still calls the registered op through the C++ dispatcher, so every backend, dispatch
// mode and check is the same as through torch.ops. It answers NotImplemented where __torch_function__
// could apply (tensor subclasses, torch-function modes): the Python wrapper then uses torch.ops.
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <Python.h>
#include <pybind11/pybind11.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/headeronly/version.h>

#include <cstring>

#include "ops/exit_decision.h"
#include "ops/graph_if_node.h"
#include "runtime/exit_decision.h"
#include "runtime/model_file.h"

namespace {

using branchy_ops::Outputs;

// Releases the GIL while the op runs, so other Python threads can go on meanwhile; not for small
// inputs, where handing the GIL over costs more than the op.
struct WithoutGil {
  explicit WithoutGil(const at::Tensor& logits)
      : state(logits.numel() >= (1 << 16) ? PyEval_SaveThread() : nullptr) {}
  ~WithoutGil() {
    if (state) PyEval_RestoreThread(state);
  }
  PyThreadState* state;
};

PyObject* wrap(Outputs out) {
  PyObject* tuple = PyTuple_New(3);
  if (tuple == nullptr) return nullptr;
  PyTuple_SET_ITEM(tuple, 0, THPVariable_Wrap(std::move(std::get<0>(out))));
  PyTuple_SET_ITEM(tuple, 1, THPVariable_Wrap(std::move(std::get<1>(out))));
  PyTuple_SET_ITEM(tuple, 2, THPVariable_Wrap(std::move(std::get<2>(out))));
  return tuple;
}

template <const char* name, class Threshold>
const auto& registered_op(const char* overload) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow((std::string("branchy_engine::") + name).c_str(),
                                                overload)
                             .template typed<Outputs(const at::Tensor&, Threshold)>();
  return op;
}

template <const char* name>
PyObject* decide(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 2) {
    return PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments (logits, threshold), got %zd",
                        name, nargs);
  }
  const bool tensor_threshold = THPVariable_Check(args[1]);
  if (!THPVariable_CheckExact(args[0]) || (tensor_threshold && !THPVariable_CheckExact(args[1])) ||
      at::impl::torch_function_mode_enabled()) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const at::Tensor& logits = THPVariable_Unpack(args[0]);
  if (tensor_threshold) {
    const auto& op = registered_op<name, const at::Tensor&>("tensor");
    const at::Tensor& threshold = THPVariable_Unpack(args[1]);
    Outputs out;
    {
      WithoutGil released(logits);
      out = op.call(logits, threshold);
    }
    return wrap(std::move(out));
  }
  const double threshold = PyFloat_AsDouble(args[1]);
  if (threshold == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    return PyErr_Format(PyExc_TypeError,
                        "%s: threshold must be a float or a one-element tensor, got %s", name,
                        Py_TYPE(args[1])->tp_name);
  }
  const auto& op = registered_op<name, double>("");
  Outputs out;
  {
    WithoutGil released(logits);
    out = op.call(logits, threshold);
  }
  return wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

constexpr char kEntropy[] = "exit_decision";
constexpr char kMaxProb[] = "exit_decision_maxprob";

PyObject* cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(branchy::isa_name(branchy::active_isa()));
}

PyObject* set_cpu_isa(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  branchy::Isa isa;
  if (std::strcmp(name, "portable") == 0) {
    isa = branchy::Isa::Portable;
  } else if (std::strcmp(name, "avx2") == 0) {
    isa = branchy::Isa::Avx2;
  } else if (std::strcmp(name, "avx512") == 0) {
    isa = branchy::Isa::Avx512;
  } else if (std::strcmp(name, "neon") == 0) {
    isa = branchy::Isa::Neon;
  } else if (std::strcmp(name, "best") == 0) {
    isa = branchy::best_isa();
  } else {
    return PyErr_Format(PyExc_ValueError,
                        "unknown CPU instruction set '%s' (portable, avx2, avx512, neon, best)", name);
  }
  return PyUnicode_FromString(branchy::isa_name(branchy::set_active_isa(isa)));
}

PyObject* model_summary(PyObject*, PyObject* arg) {
  const char* path = PyUnicode_AsUTF8(arg);
  if (path == nullptr) return nullptr;
  try {
    return PyUnicode_FromString(branchy::summarize(branchy::load_model(path)).c_str());
  } catch (const branchy::ModelError& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
}

PyObject* op_registry_json(PyObject*, PyObject*) {
  return PyUnicode_FromString(branchy::registry_json().c_str());
}

PyMethodDef methods[] = {
    {"op_registry_json", op_registry_json, METH_NOARGS,
     "op_registry_json() -> JSON text: every op kind the runtime reads (name, code, attributes, "
     "tensors, inputs, semantics), from the declarations in csrc/runtime/ops/."},
    {"exit_decision", reinterpret_cast<PyCFunction>(decide<kEntropy>), METH_FASTCALL,
     "exit_decision(logits, threshold): torch.ops.branchy_engine.exit_decision, called directly."},
    {"exit_decision_maxprob", reinterpret_cast<PyCFunction>(decide<kMaxProb>), METH_FASTCALL,
     "exit_decision_maxprob(logits, threshold): the max-probability op, called directly."},
    {"model_summary", model_summary, METH_O,
     "model_summary(path) -> JSON text: the model file as the C++ runtime reads it (ValueError "
     "naming the problem if it is not a usable model)."},
    {"cpu_isa", cpu_isa, METH_NOARGS, "The instruction set the CPU kernels use."},
    {"set_cpu_isa", set_cpu_isa, METH_O,
     "set_cpu_isa('portable' | 'avx2' | 'avx512' | 'neon' | 'best') -> the instruction set now in "
     "use (what the CPU has: its best where it lacks the one asked for). Engines built afterwards "
     "use it."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "Compiled part of branchy_engine: registers torch.ops.branchy_engine.",
                          -1, methods};

}  // namespace

void init_engine_binding(pybind11::module_& m);  // engine_binding.cpp
void init_profile_binding(pybind11::module_& m);  // profile_binding.cpp

#ifdef BRANCHY_WITH_CUDA
namespace {
void init_graph_binding(pybind11::module_& m) {
  m.def("if_node_begin", &branchy_ops::if_node_begin, pybind11::arg("pred"),
        pybind11::arg("pool_a"), pybind11::arg("pool_b"),
        "Opens a CUDA graph IF node on the capturing current stream (ops/graph_if_node.h).");
  m.def("if_node_end", &branchy_ops::if_node_end, "Closes the innermost IF node's body.");
  m.def("if_node_depth", &branchy_ops::if_node_depth, "Open IF node bodies on this thread.");
  m.def("if_body_stream", &branchy_ops::if_body_stream, pybind11::arg("device"),
        pybind11::arg("depth"), "The stream (as an int) that captures IF bodies at that depth.");
}
}  // namespace
#endif

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
#ifdef BRANCHY_WITH_CUDA
  const int with_cuda = 1;
#else
  const int with_cuda = 0;
#endif
  if (PyModule_AddStringConstant(m, "torch_version", TORCH_VERSION) < 0 ||
      PyModule_AddIntConstant(m, "with_cuda", with_cuda) < 0 ||
      PyModule_AddStringConstant(m, "best_cpu_isa", branchy::isa_name(branchy::best_isa())) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  try {
    auto module = pybind11::reinterpret_borrow<pybind11::module_>(m);
    init_engine_binding(module);
    init_profile_binding(module);
#ifdef BRANCHY_WITH_CUDA
    init_graph_binding(module);
#endif
  } catch (pybind11::error_already_set& e) {
    e.restore();
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
