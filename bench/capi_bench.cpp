// bench_capi: what the C API's layer costs per call, branchy_classify (branchy.h) against
// Plan::run (the C++ API it wraps), both called from this one process through libbranchy.so
// (bench/capi.py builds and runs it, and writes the results).
//
//   bench_capi [--plans P] [--rounds R] [--round-ms T] [--warmup W] MODEL...
//
// Per model, 2P plans built alike (one thread, the kernels a first plan measured, pinned, so that
// all run the same ones), each with a context of one sample: P through the C API, P through the
// C++ API, built in turn. Several of each, because two plans of one model can differ by a few
// percent in time by where their memory lies, which would otherwise pass for a difference
// between the APIs. One sample of 0.5s, batch 1. After W warm-up calls through each plan, R
// rounds; a round times N calls through each plan (N: about T ms of calls, timed on W more calls
// of a C++ plan), the plan timed first rotating round by round, so that drift of the clock or the
// host hits all alike. Prints one JSON line per model: the exit the sample took and, per API, per
// plan, each round's mean ns per call.
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
  int plans = 5, rounds = 101, warmup = 200;
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
    if (arg == "--plans") {
      a.plans = std::atoi(value());
    } else if (arg == "--rounds") {
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
  if (a.models.empty() || a.plans < 1 || a.rounds < 1 || a.warmup < 1 || !(a.round_ms > 0)) {
    throw std::invalid_argument("usage: bench_capi [--plans P >= 1] [--rounds R >= 1] [--round-ms T > 0] "
                                "[--warmup W >= 1] MODEL...");
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

// A plan through the C API with its context, and what a call answered last.
struct CPlan {
  CPlan(const std::string& path, const branchy_options* options) {
    check(branchy_model_load(path.c_str(), options, &model));
    if (branchy_context_create(model, 1, &context) != BRANCHY_OK) {
      branchy_model_free(model);
      throw std::runtime_error(branchy_last_error());
    }
  }
  ~CPlan() {
    branchy_context_free(context);
    branchy_model_free(model);
  }
  CPlan(const CPlan&) = delete;
  CPlan& operator=(const CPlan&) = delete;
  branchy_model* model = nullptr;
  branchy_context* context = nullptr;
  branchy_result result{};
};

// The same through the C++ API.
struct CppPlan {
  CppPlan(const std::string& path, const branchy::PlanOptions& options)
      : plan(branchy::load_model(path), options), context(plan.make_context(1)) {}
  branchy::Plan plan;
  std::unique_ptr<branchy::Context> context;
  branchy::Result result;
};

std::string json_list(const std::vector<double>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

void measure(const std::string& path, const Args& a) {
  branchy::PlanOptions options;
  options.threads = 1;
  const std::string kernels = "pin:" + branchy::Plan(branchy::load_model(path), options).choices();
  branchy::parse_kernels(kernels, options);
  branchy_options* c_options = nullptr;
  check(branchy_options_create(&c_options));
  std::unique_ptr<branchy_options, void (*)(branchy_options*)> own_options(c_options, branchy_options_free);
  check(branchy_options_set_threads(c_options, 1));
  check(branchy_options_set_kernels(c_options, kernels.c_str()));
  std::vector<std::unique_ptr<CPlan>> c;
  std::vector<std::unique_ptr<CppPlan>> cpp;
  for (int p = 0; p < a.plans; ++p) {
    c.push_back(std::make_unique<CPlan>(path, c_options));
    cpp.push_back(std::make_unique<CppPlan>(path, options));
  }

  const std::vector<float> input(size_t(cpp[0]->plan.model().input.numel()), 0.5f);
  // Plan k's mean ns per call over n calls (k < P: the C plans, then the C++ ones), each call
  // inlined in its loop as a caller's would be.
  auto time_plan = [&](int k, long n) {
    if (k < a.plans) {
      CPlan& p = *c[size_t(k)];
      return time_calls([&] { check(branchy_classify(p.model, p.context, input.data(), &p.result)); }, n);
    }
    CppPlan& p = *cpp[size_t(k - a.plans)];
    return time_calls([&] { p.result = p.plan.run(*p.context, input.data()); }, n);
  };
  const int plans = 2 * a.plans;
  for (int k = 0; k < plans; ++k) time_plan(k, a.warmup);
  const branchy::Result& want = cpp[0]->result;
  for (int p = 0; p < a.plans; ++p) {
    const branchy_result& r = c[size_t(p)]->result;
    const branchy::Result& s = cpp[size_t(p)]->result;
    if (r.prediction != want.prediction || r.exit != want.exit || r.score != want.score ||
        s.prediction != want.prediction || s.exit != want.exit || s.score != want.score) {
      throw std::runtime_error(path + ": the plans answer differently");
    }
  }
  const long calls = std::max(1L, long(a.round_ms * 1e6 / time_plan(a.plans, a.warmup)));
  std::vector<std::vector<double>> ns(static_cast<size_t>(plans));
  for (int r = 0; r < a.rounds; ++r) {
    for (int i = 0; i < plans; ++i) {
      const int k = (r + i) % plans;
      ns[size_t(k)].push_back(time_plan(k, calls));
    }
  }
  std::string c_ns = "[", cpp_ns = "[";
  for (int p = 0; p < a.plans; ++p) {
    c_ns += (p ? ", " : "") + json_list(ns[size_t(p)]);
    cpp_ns += (p ? ", " : "") + json_list(ns[size_t(a.plans + p)]);
  }
  std::printf("{\"model\": \"%s\", \"exit\": %d, \"choices\": \"%s\", \"calls\": %ld, \"c_ns\": %s], "
              "\"cpp_ns\": %s]}\n",
              path.c_str(), want.exit, cpp[0]->plan.choices().c_str(), calls, c_ns.c_str(), cpp_ns.c_str());
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
