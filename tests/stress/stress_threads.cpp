// stress_threads: threads sharing one Plan, each with its own Context, give the answers of serial
// calls bit for bit (issue 14, section 6). Per model:
//   1. thresholds at each early exit's median score over the samples, so that samples leave at
//      every exit (the file's own thresholds may send them all to one);
//   2. every thread's CALLS calls made serially on one context: the answers to match;
//   3. the same calls again from THREADS std::threads started together, each on a context it
//      makes itself.
// A call is one sample (Plan::run), a batch of 1 to 8 (Plan::run_batch; the contexts hold 5
// samples in flight, so batches of 6 to 8 run in two chunks) or every exit's logits
// (Plan::all_exit_logits). Exits 1 at the first difference (or error), 0 when every answer agrees.
//
//   stress_threads MODEL... [--threads 4] [--calls 10000] [--kernels measure|own|dnnl|pin:CHOICES]
//
// tests/stress/run.sh (make tsan) builds it and the runtime with ThreadSanitizer.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/exit_decision.h"
#include "runtime/model_file.h"
#include "runtime/plan.h"

namespace {

using branchy::Plan;
using branchy::Result;

constexpr int kPool = 64;      // distinct samples the calls draw from
constexpr int kMaxBatch = 5;   // a context's samples in flight
constexpr int kLargest = 8;    // the largest batch a call runs

struct Args {
  std::vector<std::string> models;
  int threads = 4;
  long calls = 10000;
  std::string kernels = "measure";
};

[[noreturn]] void usage(const std::string& error) {
  std::fprintf(stderr,
               "stress_threads: %s\nusage: stress_threads MODEL... [--threads N] [--calls N] "
               "[--kernels measure|own|dnnl|pin:CHOICES]\n",
               error.c_str());
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--threads") a.threads = std::atoi(value().c_str());
    else if (arg == "--calls") a.calls = std::atol(value().c_str());
    else if (arg == "--kernels") a.kernels = value();
    else if (!arg.empty() && arg[0] == '-') usage("unknown option " + arg);
    else a.models.push_back(arg);
  }
  if (a.models.empty()) usage("no model given");
  if (a.threads < 1) usage("--threads must be >= 1, got " + std::to_string(a.threads));
  if (a.calls < 1) usage("--calls must be >= 1, got " + std::to_string(a.calls));
  return a;
}

enum class Kind { One, Batch, Logits };

struct Call {
  Kind kind;
  int first, samples;  // pool samples [first, first + samples)
};

// What a call gave: its results (one per sample), or every exit's logits.
struct Answer {
  std::vector<Result> results;
  std::vector<std::vector<float>> logits;
};

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

bool same(const Answer& a, const Answer& b) {
  if (a.results.size() != b.results.size() || a.logits.size() != b.logits.size()) return false;
  for (size_t i = 0; i < a.results.size(); ++i) {
    const Result &x = a.results[i], &y = b.results[i];
    if (x.prediction != y.prediction || x.exit != y.exit || !same_bits(x.score, y.score)) return false;
  }
  for (size_t e = 0; e < a.logits.size(); ++e) {
    if (a.logits[e].size() != b.logits[e].size() ||
        std::memcmp(a.logits[e].data(), b.logits[e].data(), a.logits[e].size() * sizeof(float)) != 0) {
      return false;
    }
  }
  return true;
}

// A thread's calls, from its seed: 4 in 13 one sample, 8 in 13 a batch, 1 in 13 the logits.
std::vector<Call> calls_for(unsigned seed, long count) {
  std::mt19937 rng(seed);
  std::discrete_distribution<int> kind({4, 8, 1});
  std::uniform_int_distribution<int> batch(1, kLargest);
  std::vector<Call> calls;
  for (long i = 0; i < count; ++i) {
    const Kind k = Kind(kind(rng));
    const int n = k == Kind::Batch ? batch(rng) : 1;
    calls.push_back({k, std::uniform_int_distribution<int>(0, kPool - n)(rng), n});
  }
  return calls;
}

Answer make_call(const Plan& plan, branchy::Context& context, const float* pool, const Call& call) {
  const float* x = pool + size_t(call.first) * size_t(plan.model().input.numel());
  Answer a;
  switch (call.kind) {
    case Kind::One: a.results = {plan.run(context, x)}; break;
    case Kind::Batch:
      a.results.resize(size_t(call.samples));
      plan.run_batch(context, x, call.samples, a.results.data());
      break;
    case Kind::Logits: a.logits = plan.all_exit_logits(context, x); break;
  }
  return a;
}

// Per early exit, the median score of its logits over the pool: about half the samples that
// reach an exit leave there.
std::vector<float> median_thresholds(const Plan& plan, const float* pool) {
  const int exits = plan.num_exits(), classes = plan.model().num_classes;
  auto context = plan.make_context(kMaxBatch);
  std::vector<std::vector<float>> logits(size_t(exits - 1));
  for (int i = 0; i < kPool; ++i) {
    const Answer a = make_call(plan, *context, pool, {Kind::Logits, i, 1});
    for (int e = 0; e + 1 < exits; ++e) logits[e].insert(logits[e].end(), a.logits[e].begin(), a.logits[e].end());
  }
  std::vector<float> thresholds;
  for (const auto& rows : logits) {
    std::vector<float> score(kPool);
    std::vector<int64_t> prediction(kPool);
    std::unique_ptr<bool[]> leave(new bool[kPool]);
    branchy::DecisionArgs args;
    args.logits = rows.data();
    args.rows = kPool;
    args.classes = classes;
    args.row_stride = classes;
    args.criterion = plan.model().criterion;
    args.score = score.data();
    args.exit = leave.get();
    args.prediction = prediction.data();
    branchy::decide_rows(args, 0, kPool);
    std::nth_element(score.begin(), score.begin() + kPool / 2, score.end());
    thresholds.push_back(score[kPool / 2]);
  }
  return thresholds;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Runs the stress on one model; false on any difference or error (printed).
bool stress(const std::string& path, const Args& args) {
  branchy::PlanOptions options;
  branchy::parse_kernels(args.kernels, options);
  const Plan first(branchy::load_model(path), options);

  std::vector<float> pool(size_t(kPool) * size_t(first.model().input.numel()));
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (float& v : pool) v = normal(rng);

  // The plan the threads share: the first one's kernels, unmeasured, and the median thresholds.
  options.thresholds = median_thresholds(first, pool.data());
  branchy::parse_kernels("pin:" + first.choices(), options);
  const Plan plan(branchy::load_model(path), options);

  std::vector<std::vector<Call>> calls;
  for (int t = 0; t < args.threads; ++t) calls.push_back(calls_for(unsigned(t + 1), args.calls));
  long singles = 0, batches = 0, logit_calls = 0, samples = 0;
  for (const auto& list : calls) {
    for (const Call& c : list) {
      singles += c.kind == Kind::One;
      batches += c.kind == Kind::Batch;
      logit_calls += c.kind == Kind::Logits;
      samples += c.kind == Kind::Logits ? 0 : c.samples;
    }
  }
  std::printf("%s: kernels %s, thresholds", path.c_str(), plan.choices().c_str());
  for (float t : plan.thresholds()) std::printf(" %.6g", t);
  std::printf(", %.2f MFLOP a sample\n", plan.demand().flops / 1e6);
  std::printf("  %d threads x %ld calls: %ld single samples, %ld batches of 1 to %d (contexts of %d), "
              "%ld all-exit logits; %ld samples\n",
              args.threads, args.calls, singles, batches, kLargest, kMaxBatch, logit_calls, samples);

  auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<Answer>> serial(size_t(args.threads));
  {
    auto context = plan.make_context(kMaxBatch);
    for (int t = 0; t < args.threads; ++t) {
      for (const Call& c : calls[t]) serial[t].push_back(make_call(plan, *context, pool.data(), c));
    }
  }
  std::vector<long> per_exit(size_t(plan.num_exits()), 0);
  for (const auto& answers : serial) {
    for (const Answer& a : answers) {
      for (const Result& r : a.results) ++per_exit[size_t(r.exit)];
    }
  }
  std::printf("  serial: %.1f s; samples per exit:", seconds_since(start));
  for (long n : per_exit) std::printf(" %ld", n);
  std::printf("\n");
  for (int e = 0; e < plan.num_exits(); ++e) {
    if (per_exit[e] == 0) {
      std::printf("FAIL: no sample leaves at exit %d, so the stress would not cover early exits\n", e);
      return false;
    }
  }

  std::vector<std::vector<Answer>> got(size_t(args.threads));
  std::vector<std::string> errors(size_t(args.threads));
  std::atomic<int> ready{0};
  start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < args.threads; ++t) {
    threads.emplace_back([&, t] {
      try {
        auto context = plan.make_context(kMaxBatch);
        ready.fetch_add(1);
        while (ready.load() < args.threads) std::this_thread::yield();
        for (const Call& c : calls[t]) got[t].push_back(make_call(plan, *context, pool.data(), c));
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::printf("  threads: %.1f s\n", seconds_since(start));

  for (int t = 0; t < args.threads; ++t) {
    if (!errors[t].empty()) {
      std::printf("FAIL: thread %d: %s\n", t, errors[t].c_str());
      return false;
    }
    for (size_t i = 0; i < calls[t].size(); ++i) {
      if (!same(got[t][i], serial[t][i])) {
        const Call& c = calls[t][i];
        std::printf("FAIL: thread %d, call %zu (kind %d, samples %d to %d) differs from the serial call\n",
                    t, i, int(c.kind), c.first, c.first + c.samples - 1);
        return false;
      }
    }
  }
  std::printf("  every answer equals the serial one bit for bit\n");
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  bool ok = true;
  for (const std::string& model : args.models) {
    try {
      ok = stress(model, args) && ok;
    } catch (const std::exception& e) {
      std::printf("FAIL: %s: %s\n", model.c_str(), e.what());
      ok = false;
    }
  }
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
