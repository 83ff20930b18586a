// The profiler's entry to the CPU runtime: each sample runs alone through Plan::run_instrumented,
// with timers (and, when asked, the calling thread's hardware counters) around every stage and
// every exit head.
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>

#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include "ops/input_check.h"
#include "runtime/perf_counters.h"
#include "runtime/plan.h"
#include "runtime/probes.h"

namespace py = pybind11;

namespace {

using Part = branchy::Probe::Part;

// One event's counts: per sample [N], per stage [N, S], per exit [N, E].
struct EventCounts {
  branchy::PerfEvent event;
  at::Tensor total, stage, exit;
};

// Copies one sample's per-part figures into row `row` of a [N, parts] tensor.
template <class T, class Figure>
void put_row(at::Tensor& t, int64_t row, Figure figure) {
  const int64_t parts = t.size(1);
  T* out = t.data_ptr<T>() + row * parts;
  for (int64_t i = 0; i < parts; ++i) out[i] = figure(int(i));
}

py::dict profile_plan(const branchy::Plan& plan, branchy::Context& context, py::handle input,
                      bool counters) {
  const at::Tensor x = branchy_ops::checked_input(plan, input);
  if (x.dim() != 4) {
    std::ostringstream m;
    m << "profile_plan takes a batch [N, C, H, W], got " << x.sizes();
    throw py::value_error(m.str());
  }
  const int64_t n = x.size(0), per_sample = plan.model().input.numel();
  const int64_t stages = int64_t(plan.model().stages.size()), exits = plan.num_exits();
  if (plan.checks_inputs()) branchy::check_finite_input(x.data_ptr<float>(), n, per_sample);

  at::Tensor prediction = at::empty({n}, at::kLong);
  at::Tensor exit = at::empty({n}, at::kLong);
  at::Tensor score = at::empty({n}, at::kFloat);
  at::Tensor total_us = at::empty({n}, at::kDouble);
  at::Tensor stage_us = at::zeros({n, stages}, at::kDouble);
  at::Tensor exit_us = at::zeros({n, exits}, at::kDouble);

  branchy::PerfCounters perf;
  const std::string status = counters ? perf.open().text() : "not requested";
  const bool counting = perf.status().available;
  std::vector<EventCounts> events;
  for (int e = 0; e < branchy::kPerfEvents; ++e) {
    if (counting && perf.counts(branchy::PerfEvent(e))) {
      events.push_back({branchy::PerfEvent(e), at::empty({n}, at::kLong),
                        at::empty({n, stages}, at::kLong), at::empty({n, exits}, at::kLong)});
    }
  }

  {
    py::gil_scoped_release release;
    branchy::TimerProbe timer(plan);
    branchy::CounterProbe count(perf, plan);
    branchy::NestedProbes both(count, timer);  // the timers leave out the counter reads
    branchy::Probe& probe = counting ? static_cast<branchy::Probe&>(both) : timer;
    const float* data = x.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      timer.reset();
      count.reset();
      if (counting) {
        perf.reset();
        perf.enable();
      }
      const auto start = std::chrono::steady_clock::now();
      const branchy::Result r = plan.run_instrumented(context, data + i * per_sample, probe);
      total_us.data_ptr<double>()[i] =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
      branchy::PerfValues totals{};
      if (counting) {
        perf.disable();
        perf.read(totals);
      }
      prediction.data_ptr<int64_t>()[i] = r.prediction;
      exit.data_ptr<int64_t>()[i] = r.exit;
      score.data_ptr<float>()[i] = r.score;
      put_row<double>(stage_us, i, [&](int s) { return timer.nanoseconds(Part::Stage, s) * 1e-3; });
      put_row<double>(exit_us, i, [&](int e) { return timer.nanoseconds(Part::Exit, e) * 1e-3; });
      for (auto& ev : events) {
        const int e = int(ev.event);
        ev.total.data_ptr<int64_t>()[i] = int64_t(totals[e]);
        put_row<int64_t>(ev.stage, i, [&](int s) { return int64_t(count.counts(Part::Stage, s)[e]); });
        put_row<int64_t>(ev.exit, i, [&](int j) { return int64_t(count.counts(Part::Exit, j)[e]); });
      }
    }
  }

  using branchy_ops::to_python;
  py::dict out;
  out["prediction"] = to_python(prediction);
  out["exit"] = to_python(exit);
  out["score"] = to_python(score);
  out["total_us"] = to_python(total_us);
  out["stage_us"] = to_python(stage_us);
  out["exit_us"] = to_python(exit_us);
  out["counters_status"] = status;
  if (counting) {
    py::dict by_name;
    for (const auto& ev : events) {
      py::dict d;
      d["total"] = to_python(ev.total);
      d["stage"] = to_python(ev.stage);
      d["exit"] = to_python(ev.exit);
      by_name[branchy::perf_event_name(ev.event)] = d;
    }
    out["counters"] = by_name;
  }
  return out;
}

}  // namespace

void init_profile_binding(py::module_& m) {
  m.def("profile_plan", &profile_plan, py::arg("plan"), py::arg("context"), py::arg("x"),
        py::arg("counters") = false,
        "profile_plan(plan: _Plan, context: _Context, x: float32 CPU tensor [N, C, H, W], "
        "counters=False) -> dict. Runs each sample alone (batch 1), on the calling thread, with a "
        "timer around every stage and every exit head (with its decision). Keys: prediction [N] "
        "int64, exit [N] int64 (0-based), score [N] float32, total_us [N] float64 (the whole "
        "call), stage_us [N, S] and exit_us [N, E] float64 (0 where the part did not run), "
        "counters_status (str: 'available...', the reason counters are not, or 'not requested'). "
        "With counters=True and counters available, also counters: {event name: {'total': [N], "
        "'stage': [N, S], 'exit': [N, E]}} int64, counting user space of this thread only, "
        "enabled around each run and nowhere else; events the kernel refused are absent (the "
        "status names them).");
  m.def(
      "perf_counters_status", [] { return branchy::PerfCounters().open().text(); },
      "Whether this thread can count cycles, instructions, L1D/LL/dTLB read misses and branch "
      "misses with perf_event_open: 'available' (with notes on events left out), or why not.");
}
