// bench_capi: what the C API's layer costs per call, branchy_classify (branchy.h) against
// Plan::run (the C++ API it wraps), both called from this one process through libbranchy.so
// (bench/capi.py builds and runs it, and writes the results).
//
//   bench_capi [--rounds R] [--round-ms T] [--warmup W] MODEL...
//
// Per model, three plans built alike (one thread, the kernels a first plan measured, pinned, so
// that all run the same ones), a context of one sample each: one through the C API, two through
// the C++ API, the second a control: how far two plans of one model differ by where their
// memory lies, which bounds what a difference between the APIs can show. One sample of 0.5s,
// batch 1. After W warm-up calls through each, R rounds; a round times N calls through each (N:
// about T ms of calls, timed on W more C++ calls), the first of the three rotating round by round,
// so that drift of the clock or the host hits all alike. Prints one JSON line per model: the exit
// the sample took and each round's mean ns per call through each.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "branchy.h"
#include "runtime/plan.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  int rounds = 101, warmup = 200;
  double round_ms = 10.0;
  std::vector<std::string> models;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--rounds") {
      a.rounds = std::atoi(value());
    } else if (arg == "--round-ms") {
      a.round_ms = std::atof(value());
    } else if (arg == "--warmup") {
      a.warmup = std::atoi(value());
    } else if (!arg.empty() && arg[0] == '-') {
      throw std::invalid_argument("unknown option " + arg);
    } else {
      a.models.push_back(arg);
    }
  }
  if (a.models.empty() || a.rounds < 1 || a.warmup < 1 || !(a.round_ms > 0)) {
    throw std::invalid_argument(
        "usage: bench_capi [--rounds R >= 1] [--round-ms T > 0] [--warmup W >= 1] MODEL...");
  }
  return a;
}

void check(branchy_status status) {
  if (status != BRANCHY_OK) throw std::runtime_error(branchy_last_error());
}

// Mean ns per call of `calls` calls of f.
template <class F>
double time_calls(F&& f, long calls) {
  const auto start = Clock::now();
  for (long i = 0; i < calls; ++i) f();
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count() / double(calls);
}

// One plan through the C++ API with its context, and what a run answered last.
struct CppRunner {
  CppRunner(const std::string& path, const branchy::PlanOptions& options)
      : plan(branchy::load_model(path), options), context(plan.make_context(1)) {}
  branchy::Plan plan;
  std::unique_ptr<branchy::Context> context;
  branchy::Result result;
};

void measure(const std::string& path, const Args& a) {
  branchy::PlanOptions options;
  options.threads = 1;
  const std::string kernels = "pin:" + branchy::Plan(branchy::load_model(path), options).choices();
  branchy::parse_kernels(kernels, options);
  CppRunner cpp(path, options), control(path, options);

  branchy_options* c_options = nullptr;
  branchy_model* model = nullptr;
  branchy_context* context = nullptr;
  check(branchy_options_create(&c_options));
  std::unique_ptr<branchy_options, void (*)(branchy_options*)> own_options(c_options, branchy_options_free);
  check(branchy_options_set_threads(c_options, 1));
  check(branchy_options_set_kernels(c_options, kernels.c_str()));
  check(branchy_model_load(path.c_str(), c_options, &model));
  std::unique_ptr<branchy_model, void (*)(branchy_model*)> own_model(model, branchy_model_free);
  check(branchy_context_create(model, 1, &context));
  std::unique_ptr<branchy_context, void (*)(branchy_context*)> own_context(context, branchy_context_free);

  const std::vector<float> input(size_t(cpp.plan.model().input.numel()), 0.5f);
  branchy_result c_result{};
  // Runner k's mean ns per call over n calls, each call inlined in its loop as a caller's would be.
  auto time_runner = [&](int k, long n) {
    if (k == 0) {
      return time_calls([&] { check(branchy_classify(model, context, input.data(), &c_result)); }, n);
    }
    CppRunner& runner = k == 1 ? cpp : control;
    return time_calls([&] { runner.result = runner.plan.run(*runner.context, input.data()); }, n);
  };
  for (int k = 0; k < 3; ++k) time_runner(k, a.warmup);
  for (const branchy::Result& r : {cpp.result, control.result}) {
    if (c_result.prediction != r.prediction || c_result.exit != r.exit || c_result.score != r.score) {
      throw std::runtime_error(path + ": the C and C++ APIs answer differently");
    }
  }
  const long calls = std::max(1L, long(a.round_ms * 1e6 / time_runner(1, a.warmup)));
  std::vector<double> ns[3];
  for (int r = 0; r < a.rounds; ++r) {
    for (int i = 0; i < 3; ++i) ns[(r + i) % 3].push_back(time_runner((r + i) % 3, calls));
  }
  auto list = [](const std::vector<double>& v) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
    return out + "]";
  };
  std::printf("{\"model\": \"%s\", \"exit\": %d, \"choices\": \"%s\", \"calls\": %ld, \"c_ns\": %s, "
              "\"cpp_ns\": %s, \"control_ns\": %s}\n",
              path.c_str(), cpp.result.exit, cpp.plan.choices().c_str(), calls, list(ns[0]).c_str(),
              list(ns[1]).c_str(), list(ns[2]).c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) try {
  const Args a = parse(argc, argv);
  for (const std::string& path : a.models) measure(path, a);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_capi: %s\n", e.what());
  return 1;
}
