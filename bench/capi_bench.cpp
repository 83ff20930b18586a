// bench_capi: what the C API's layer costs per call, branchy_classify (branchy.h) against
// Plan::run (the C++ API it wraps), both called from this one process through libbranchy.so
// (bench/capi.py builds and runs it, and writes the results).
//
//   bench_capi [--rounds R] [--round-ms T] [--warmup W] MODEL...
//
// Per model: a plan built through each API, one thread, the same kernels (the C++ plan's choices
// pinned for the C one: measured choices could differ between two builds), a context of one
// sample each, one sample of 0.5s, batch 1. After W warm-up calls through each API, R rounds; a
// round times N calls through each API (N: about T ms of calls, timed on W more C++ calls), C first
// in even rounds and C++ first in odd ones, so that drift of the clock or the host hits both
// alike. Prints one JSON line per model: the exit the sample took and each round's mean ns per
// call through each API.
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

void measure(const std::string& path, const Args& a) {
  branchy::PlanOptions options;
  options.threads = 1;
  const branchy::Plan plan(branchy::load_model(path), options);
  auto context = plan.make_context(1);

  branchy_options* c_options = nullptr;
  branchy_model* model = nullptr;
  branchy_context* c_context = nullptr;
  check(branchy_options_create(&c_options));
  std::unique_ptr<branchy_options, void (*)(branchy_options*)> own_options(c_options, branchy_options_free);
  check(branchy_options_set_threads(c_options, 1));
  check(branchy_options_set_kernels(c_options, ("pin:" + plan.choices()).c_str()));
  check(branchy_model_load(path.c_str(), c_options, &model));
  std::unique_ptr<branchy_model, void (*)(branchy_model*)> own_model(model, branchy_model_free);
  check(branchy_context_create(model, 1, &c_context));
  std::unique_ptr<branchy_context, void (*)(branchy_context*)> own_context(c_context, branchy_context_free);

  const std::vector<float> input(size_t(plan.model().input.numel()), 0.5f);
  branchy_result c_result{};
  branchy::Result cpp_result;
  auto c_call = [&] { check(branchy_classify(model, c_context, input.data(), &c_result)); };
  auto cpp_call = [&] { cpp_result = plan.run(*context, input.data()); };

  time_calls(c_call, a.warmup);
  time_calls(cpp_call, a.warmup);
  if (c_result.prediction != cpp_result.prediction || c_result.exit != cpp_result.exit ||
      c_result.score != cpp_result.score) {
    throw std::runtime_error(path + ": the C and C++ APIs answer differently");
  }
  const long calls = std::max(1L, long(a.round_ms * 1e6 / time_calls(cpp_call, a.warmup)));
  std::vector<double> c_ns, cpp_ns;
  for (int r = 0; r < a.rounds; ++r) {
    if (r % 2 == 0) c_ns.push_back(time_calls(c_call, calls));
    cpp_ns.push_back(time_calls(cpp_call, calls));
    if (r % 2 == 1) c_ns.push_back(time_calls(c_call, calls));
  }
  auto list = [](const std::vector<double>& v) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
    return out + "]";
  };
  std::printf("{\"model\": \"%s\", \"exit\": %d, \"choices\": \"%s\", \"calls\": %ld, \"c_ns\": %s, "
              "\"cpp_ns\": %s}\n",
              path.c_str(), cpp_result.exit, plan.choices().c_str(), calls, list(c_ns).c_str(),
              list(cpp_ns).c_str());
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
