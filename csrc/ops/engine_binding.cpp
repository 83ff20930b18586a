// Python binding of the CPU runtime (branchy_engine.Engine wraps it). Tensors cross as data
// pointers: the Python side checks their shape, dtype, device and contiguity and keeps them alive.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <stdexcept>

#include "runtime/layer.h"
#include "runtime/model_file.h"
#include "runtime/plan.h"

namespace py = pybind11;

namespace {

branchy::PlanOptions::Kernels parse_kernels(const std::string& name) {
  if (name == "measure") return branchy::PlanOptions::Kernels::Measure;
  if (name == "own") return branchy::PlanOptions::Kernels::Own;
  if (name == "dnnl") return branchy::PlanOptions::Kernels::Dnnl;
  throw std::invalid_argument("kernels must be 'measure', 'own' or 'dnnl', got '" + name + "'");
}

const float* floats(uintptr_t address) { return reinterpret_cast<const float*>(address); }

// Index of the first sample holding a NaN, or -1: a NaN input would silently leave at the last exit.
int64_t first_nan(const float* x, int64_t samples, int64_t per_sample) {
  for (int64_t i = 0; i < samples * per_sample; ++i) {
    if (std::isnan(x[i])) return i / per_sample;
  }
  return -1;
}

}  // namespace

void init_engine_binding(py::module_& m) {
  py::register_exception<branchy::ModelError>(m, "ModelError", PyExc_ValueError);

  py::class_<branchy::Context>(m, "_Context");

  py::class_<branchy::Plan>(m, "_Plan")
      .def(py::init([](const std::string& path, int threads, std::vector<float> thresholds,
                       const std::string& kernels) {
             branchy::PlanOptions options;
             options.threads = threads;
             options.thresholds = std::move(thresholds);
             options.kernels = parse_kernels(kernels);
             py::gil_scoped_release release;
             return std::make_unique<branchy::Plan>(branchy::load_model(path), options);
           }),
           py::arg("path"), py::arg("threads"), py::arg("thresholds"), py::arg("kernels"))
      .def("make_context", &branchy::Plan::make_context, py::arg("max_batch"))
      .def(
          "run",
          [](const branchy::Plan& plan, branchy::Context& ctx, uintptr_t input, int64_t batch,
             uintptr_t prediction, uintptr_t exit, uintptr_t score, uintptr_t counts) {
            const auto& in = plan.model().input;
            const int64_t bad = first_nan(floats(input), batch, in.numel());
            if (bad >= 0) return bad;
            auto* p = reinterpret_cast<int64_t*>(prediction);
            auto* e = reinterpret_cast<int64_t*>(exit);
            auto* s = reinterpret_cast<float*>(score);
            auto* per_exit = reinterpret_cast<int64_t*>(counts);
            auto store = [&](int64_t i, const branchy::Result& r) {
              p[i] = r.prediction;
              e[i] = r.exit;
              s[i] = r.score;
              // Engines are shared between threads: count without a lock.
              __atomic_fetch_add(per_exit + r.exit, 1, __ATOMIC_RELAXED);
            };
            if (batch == 1) {  // the latency path: no allocation, no GIL hand-over
              store(0, plan.run(ctx, floats(input)));
              return int64_t(-1);
            }
            std::vector<branchy::Result> results(batch);
            {
              py::gil_scoped_release release;
              plan.run_batch(ctx, floats(input), batch, results.data());
            }
            for (int64_t i = 0; i < batch; ++i) store(i, results[i]);
            return int64_t(-1);
          },
          "Runs `batch` samples and adds them to counts[exit]; returns -1, or the index of a "
          "sample holding NaN (then nothing is run).")
      .def("all_exit_logits",
           [](const branchy::Plan& plan, branchy::Context& ctx, uintptr_t input) {
             py::gil_scoped_release release;
             return plan.all_exit_logits(ctx, floats(input));
           })
      .def("describe", &branchy::Plan::describe)
      .def_property_readonly("num_exits", &branchy::Plan::num_exits)
      .def_property_readonly("thresholds", &branchy::Plan::thresholds)
      .def_property_readonly("input_shape",
                             [](const branchy::Plan& p) {
                               const auto& s = p.model().input;
                               return py::make_tuple(s.c, s.h, s.w);
                             })
      .def_property_readonly("num_classes", [](const branchy::Plan& p) { return p.model().num_classes; })
      .def_property_readonly("criterion",
                             [](const branchy::Plan& p) {
                               return p.model().criterion == branchy::Criterion::Entropy ? "entropy" : "maxprob";
                             })
      .def_property_readonly("class_names", [](const branchy::Plan& p) { return p.model().class_names; })
      .def_property_readonly("metadata_json", [](const branchy::Plan& p) { return p.model().metadata_json; });

  m.def("dnnl_version", &branchy::dnnl_version, "The oneDNN the runtime uses, or '' if none.");
}
