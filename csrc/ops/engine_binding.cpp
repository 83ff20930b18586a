// Python binding of the CPU runtime (branchy_engine.Engine wraps it). run_tensor takes the input
// tensor itself and checks it here, so that a batch-1 call is one cheap crossing.
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/autograd/python_variable.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <new>
#include <sstream>
#include <stdexcept>

#include "runtime/kernels/peak.h"
#include "runtime/layer.h"
#include "runtime/model_file.h"
#include "runtime/ops/registry.h"
#include "runtime/plan.h"
#include "ops/input_check.h"

namespace py = pybind11;

namespace {

using branchy_ops::checked_input;
using branchy_ops::checked_pixels;
using branchy_ops::Pixels;
using branchy_ops::to_python;

// One sample's FLOPs from which a call releases the GIL while the runtime works, so that Python
// threads sharing an engine run in parallel: about 20 us of work, against the 0.1-0.2 us that
// releasing and taking back the GIL costs. B-LeNet (0.44 MFLOP, 6 us) keeps it.
constexpr double kGilFlops = 2e6;

void count(uintptr_t counts, int exit) {
  // Engines are shared between threads: count without a lock.
  __atomic_fetch_add(reinterpret_cast<int64_t*>(counts) + exit, 1, __ATOMIC_RELAXED);
}

// A batch's results as three tensors [B] (prediction, exit, score), each sample counted.
py::object batch_results(const std::vector<branchy::Result>& results, uintptr_t counts) {
  const int64_t batch = int64_t(results.size());
  at::Tensor prediction = at::empty({batch}, at::kLong);
  at::Tensor exit = at::empty({batch}, at::kLong);
  at::Tensor score = at::empty({batch}, at::kFloat);
  for (int64_t i = 0; i < batch; ++i) {
    prediction.data_ptr<int64_t>()[i] = results[i].prediction;
    exit.data_ptr<int64_t>()[i] = results[i].exit;
    score.data_ptr<float>()[i] = results[i].score;
    count(counts, results[i].exit);
  }
  return py::make_tuple(to_python(prediction), to_python(exit), to_python(score));
}

py::tuple shape(const branchy::Shape& s) { return py::make_tuple(s.c, s.h, s.w); }

// One op as a Python dict: its kind, the values it reads and writes, its attributes by name (the
// kind's declaration) and the tensor table entries it uses.
py::dict op_dict(const branchy::Op& op) {
  py::dict d;
  d["index"] = op.index;
  d["kind"] = op.name();
  d["inputs"] = op.inputs;
  d["output"] = op.output;
  py::list ins;
  for (const auto& s : op.ins) ins.append(shape(s));
  d["in_shapes"] = ins;
  d["out_shape"] = shape(op.out);
  py::dict attrs;
  for (size_t i = 0; i < op.ints.size(); ++i) attrs[op.def->ints[i]] = op.ints[i];
  for (size_t i = 0; i < op.floats.size(); ++i) attrs[op.def->floats[i]] = op.floats[i];
  d["attrs"] = attrs;
  d["tensor_ids"] = op.tensor_ids;
  return d;
}

}  // namespace

void init_engine_binding(py::module_& m) {
  py::register_exception<branchy::ModelError>(m, "ModelError", PyExc_ValueError);
  // Any C++ exception reaches Python as one (pybind11 maps std::exception to RuntimeError); an
  // allocation that fails says what ran out, not only "std::bad_alloc".
  py::register_local_exception_translator([](std::exception_ptr thrown) {
    try {
      if (thrown) std::rethrow_exception(thrown);
    } catch (const std::bad_alloc& e) {
      PyErr_SetString(PyExc_MemoryError,
                      (std::string("the engine ran out of memory (") + e.what() +
                       "): the model's weights or a context's buffers did not fit; a smaller "
                       "max_batch or max_memory refuses such a model before it allocates")
                          .c_str());
    }
  });

  py::class_<branchy::Context>(m, "_Context");

  py::class_<branchy::Plan>(m, "_Plan")
      .def(py::init([](const std::string& path, int threads, std::vector<float> thresholds,
                       const std::string& kernels, bool check_inputs, bool verify, int64_t max_memory,
                       double max_flops) {
             branchy::PlanOptions options;
             options.verify = verify;
             if (max_memory > 0) options.max_memory = max_memory;
             if (max_flops > 0) options.max_flops = max_flops;
             options.threads = threads;
             options.thresholds = std::move(thresholds);
             options.check_inputs = check_inputs;
             branchy::parse_kernels(kernels, options);
             py::gil_scoped_release release;
             return std::make_unique<branchy::Plan>(branchy::load_model(path, options.max_memory), options);
           }),
           py::arg("path"), py::arg("threads"), py::arg("thresholds"), py::arg("kernels"),
           py::arg("check_inputs") = true, py::arg("verify") = false, py::arg("max_memory") = 0,
           py::arg("max_flops") = 0.0)
      .def("make_context", &branchy::Plan::make_context, py::arg("max_batch"))
      .def(
          "run_tensor",
          [](const branchy::Plan& plan, branchy::Context& ctx, py::handle input,
             uintptr_t counts) -> py::object {
            const at::Tensor x = checked_input(plan, input);
            const float* data = x.data_ptr<float>();
            if (x.dim() == 3) {  // the latency path: no allocation
              branchy::Result r;
              if (plan.demand().flops < kGilFlops) {
                r = plan.run(ctx, data);  // cheaper than handing the GIL over and back
              } else {
                py::gil_scoped_release release;  // other Python threads run meanwhile
                r = plan.run(ctx, data);
              }
              count(counts, r.exit);
              return py::make_tuple(r.prediction, r.exit, r.score);
            }
            std::vector<branchy::Result> results(x.size(0));
            {
              py::gil_scoped_release release;
              plan.run_batch(ctx, data, x.size(0), results.data());
            }
            return batch_results(results, counts);
          },
          "One sample [C, H, W] -> (prediction, exit, score) as Python numbers; a batch "
          "[B, C, H, W] -> three tensors. Adds each sample to counts[exit]. Errors name the "
          "problem with the input (type, dtype, device, shape, NaN or infinity).")
      .def(
          "run_pixels",
          [](const branchy::Plan& plan, branchy::Context& ctx, py::handle input, uintptr_t counts,
             const std::string& order) -> py::object {
            const Pixels px = checked_pixels(plan, input, order);
            const uint8_t* data = px.x.data_ptr<uint8_t>();
            if (!px.batch) {
              branchy::Result r;
              {
                py::gil_scoped_release release;
                r = plan.run_pixels(ctx, data, px.order);
              }
              count(counts, r.exit);
              return py::make_tuple(r.prediction, r.exit, r.score);
            }
            std::vector<branchy::Result> results(px.x.size(0));
            {
              py::gil_scoped_release release;
              plan.run_batch_pixels(ctx, data, px.x.size(0), px.order, results.data());
            }
            return batch_results(results, counts);
          },
          "run_tensor on raw 8-bit pixels (order 'auto', 'chw' or 'hwc'), prepared inside the "
          "runtime as the model file records.")
      .def("prepare_pixels",
           [](const branchy::Plan& plan, py::handle input, const std::string& order) {
             const Pixels px = checked_pixels(plan, input, order);
             const auto& s = plan.model().input;
             const int64_t batch = px.batch ? px.x.size(0) : 1, per_sample = s.numel();
             branchy::check_input_prep(plan.model());
             at::Tensor out = px.batch ? at::empty({batch, s.c, s.h, s.w}, at::kFloat)
                                       : at::empty({s.c, s.h, s.w}, at::kFloat);
             for (int64_t i = 0; i < batch; ++i) {
               branchy::prepare_pixels(plan.model().prep, s, px.x.data_ptr<uint8_t>() + i * per_sample,
                                       px.order, out.data_ptr<float>() + i * per_sample);
             }
             return to_python(out);
           },
           py::arg("pixels"), py::arg("order"),
           "Raw 8-bit pixels -> the float32 [C, H, W] (or [B, C, H, W]) the network takes, as the "
           "runtime prepares them.")
      .def("all_exit_logits",
           [](const branchy::Plan& plan, branchy::Context& ctx, py::handle input) {
             const at::Tensor x = checked_input(plan, input);
             if (x.dim() != 3) {
               throw py::value_error("all_exit_logits takes one sample [C, H, W]");
             }
             return plan.all_exit_logits(ctx, x.data_ptr<float>());
           })
      .def(
          "run_timed",
          [](const branchy::Plan& plan, branchy::Context& ctx, py::handle input, uintptr_t counts) {
            const at::Tensor x = checked_input(plan, input);
            if (x.dim() != 4) throw py::value_error("run_timed takes a batch [B, C, H, W]");
            const int64_t batch = x.size(0), per_sample = plan.model().input.numel();
            // The whole batch first, so that the error names the sample (each run checks its own).
            if (plan.checks_inputs()) branchy::check_finite_input(x.data_ptr<float>(), batch, per_sample);
            at::Tensor prediction = at::empty({batch}, at::kLong);
            at::Tensor exit = at::empty({batch}, at::kLong);
            at::Tensor score = at::empty({batch}, at::kFloat);
            at::Tensor micros = at::empty({batch}, at::kDouble);
            {
              py::gil_scoped_release release;
              const float* data = x.data_ptr<float>();
              for (int64_t i = 0; i < batch; ++i) {
                const auto start = std::chrono::steady_clock::now();
                const branchy::Result r = plan.run(ctx, data + i * per_sample);
                micros.data_ptr<double>()[i] = std::chrono::duration<double, std::micro>(
                    std::chrono::steady_clock::now() - start).count();
                prediction.data_ptr<int64_t>()[i] = r.prediction;
                exit.data_ptr<int64_t>()[i] = r.exit;
                score.data_ptr<float>()[i] = r.score;
                count(counts, r.exit);
              }
            }
            auto wrap = [](const at::Tensor& t) {
              return py::reinterpret_steal<py::object>(THPVariable_Wrap(t));
            };
            return py::make_tuple(wrap(prediction), wrap(exit), wrap(score), wrap(micros));
          },
          "Runs each sample of [B, C, H, W] alone (batch 1), timing each call in C++: "
          "(prediction, exit, score, microseconds), tensors [B].")
      .def(
          "time_run",
          [](const branchy::Plan& plan, branchy::Context& ctx, py::handle input, int warmup,
             int rounds, int calls) {
            const at::Tensor x = checked_input(plan, input);
            if (x.dim() != 3) throw py::value_error("time_run takes one sample [C, H, W]");
            const float* data = x.data_ptr<float>();
            std::vector<double> micros;
            py::gil_scoped_release release;
            for (int i = 0; i < warmup; ++i) plan.run(ctx, data);
            for (int r = 0; r < rounds; ++r) {
              const auto start = std::chrono::steady_clock::now();
              for (int i = 0; i < calls; ++i) plan.run(ctx, data);
              micros.push_back(std::chrono::duration<double, std::micro>(
                                   std::chrono::steady_clock::now() - start).count() / calls);
            }
            return micros;
          },
          py::arg("context"), py::arg("input"), py::arg("warmup"), py::arg("rounds"), py::arg("calls"),
          "Times plan.run on one sample in C++ (no Python in the loop): microseconds per call, "
          "one figure per round of `calls` calls, after `warmup` calls.")
      .def("describe", &branchy::Plan::describe)
      .def(
          "footprint",
          [](const branchy::Plan& p, int max_batch) {
            const branchy::Footprint f = p.footprint(max_batch);
            py::dict d;
            d["weight_bytes"] = f.weight_bytes;
            d["packed_bytes"] = f.packed_bytes;
            d["arena_bytes"] = f.arena_bytes;
            d["slot_bytes"] = f.slot_bytes;
            d["batch_bytes"] = f.batch_bytes;
            d["scratch_bytes"] = f.scratch_bytes;
            return d;
          },
          py::arg("max_batch") = 64,
          "Memory the plan needs, in bytes: weights (file), packed weights, activation arena, one "
          "stage-boundary slot, the batch slots of a context of max_batch, layer scratch.")
      .def_property_readonly("choices", [](const branchy::Plan& p) { return p.choices(); },
                             "per op, trunk then heads: o (own kernel) or d (oneDNN); kernels=\"pin:\" + this rebuilds the plan")
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
      .def_property_readonly("metadata_json", [](const branchy::Plan& p) { return p.model().metadata_json; })
      .def_property_readonly("input_prep", [](const branchy::Plan& p) -> py::object {
        const branchy::InputPrep& prep = p.model().prep;
        if (!prep.recorded()) return py::none();
        py::dict d;
        d["pixel_max"] = prep.pixel_max;
        d["mean"] = prep.mean;
        d["std"] = prep.std;
        return std::move(d);
      });

  m.def(
      "load_model_ops",
      [](const std::string& path, int64_t max_bytes) {
        const branchy::Model model = branchy::load_model(path, max_bytes);
        py::dict d;
        const branchy::Demand demand = branchy::estimate_demand(model);
        py::dict demand_dict;
        demand_dict["flops"] = demand.flops;
        demand_dict["weight_bytes"] = demand.weight_bytes;
        demand_dict["activation_bytes"] = demand.activation_bytes;
        d["demand"] = demand_dict;
        d["input_shape"] = py::make_tuple(model.input.c, model.input.h, model.input.w);
        d["num_classes"] = model.num_classes;
        d["criterion"] = model.criterion == branchy::Criterion::Entropy ? "entropy" : "maxprob";
        d["thresholds"] = model.thresholds;
        d["class_names"] = model.class_names;
        d["metadata_json"] = model.metadata_json;
        py::list tensors;
        for (const auto& t : model.tensors) {
          at::Tensor copy = at::empty({t.count}, at::kFloat);
          std::memcpy(copy.data_ptr<float>(), t.data, t.count * sizeof(float));
          tensors.append(py::reinterpret_steal<py::object>(THPVariable_Wrap(copy)));
        }
        d["tensors"] = tensors;
        py::list ops;
        for (const auto& op : model.ops) ops.append(op_dict(op));
        d["ops"] = ops;
        py::list stages;
        for (const auto& s : model.stages) {
          py::dict x;
          x["first_op"] = s.first_op;
          x["num_ops"] = s.num_ops;
          x["outputs"] = s.outputs;
          stages.append(x);
        }
        d["stages"] = stages;
        py::list exits;
        for (const auto& e : model.exits) {
          py::dict x;
          x["stage"] = e.stage;
          x["input"] = e.input;
          x["first_op"] = e.first_op;
          x["num_ops"] = e.num_ops;
          x["logits"] = e.logits;
          exits.append(x);
        }
        d["exits"] = exits;
        return d;
      },
      py::arg("path"), py::arg("max_bytes") = int64_t(4) << 30,
      "A model file as the C++ reader checked it (a file over max_bytes is refused before it is "
      "read): shapes, exit rule, the tensor table (flat float32 tensors), every op with its "
      "values and attributes, the stages and exits, and its demand (per sample: flops, and bytes "
      "of weights and of every activation value, as the CPU plan's limits estimate them); for "
      "runtimes built in Python (the GPU engine).");
  m.def("dnnl_version", &branchy::dnnl_version, "The oneDNN the runtime uses, or '' if none.");
  m.def("fma_peak_gflops", &branchy::fma_peak_gflops, py::arg("lanes"),
        py::call_guard<py::gil_scoped_release>(),
        "Measured fp32 FMA GFLOP/s of one thread with 8-lane (AVX2) or 16-lane (AVX-512) "
        "vectors; 0 where the CPU lacks them.");
}
