// Tests of the CPU runtime's Plan on the tiny model (every op kind): kernel choices agree, threads
// sharing a plan agree with a serial run, batches agree with single samples, and a run allocates
// nothing.
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <thread>
#include <vector>

#include "check.h"
#include "count_allocations.h"
#include "model_builder.h"
#include "runtime/exit_decision.h"
#include "runtime/plan.h"


using branchy::Plan;
using branchy::PlanOptions;
using branchy::Result;

namespace {

branchy::Model tiny_model() {
  const std::vector<uint8_t> file = model_builder::tiny();
  return branchy::parse_model(file.data(), file.size());
}

// Samples [n, 2, 6, 6] spread around zero.
std::vector<float> samples(int n, uint32_t seed) {
  std::vector<float> x(size_t(n) * 2 * 6 * 6);
  for (auto& v : x) {
    seed = seed * 1664525u + 1013904223u;
    v = float(seed >> 8) / float(1u << 24) * 4.0f - 2.0f;
  }
  return x;
}

Plan plan_with(PlanOptions::Kernels kernels, std::vector<float> thresholds = {}) {
  PlanOptions options;
  options.kernels = kernels;
  options.thresholds = std::move(thresholds);
  return Plan(tiny_model(), options);
}

bool same(const Result& a, const Result& b) {
  return a.prediction == b.prediction && a.exit == b.exit && a.score == b.score;
}

}  // namespace

TEST(kernel_choices_give_the_same_logits) {
  const std::vector<float> x = samples(1, 7);
  Plan own = plan_with(PlanOptions::Kernels::Own);
  auto reference = own.all_exit_logits(*own.make_context(), x.data());
  CHECK(reference.size() == 2 && reference[0].size() == 3);
  for (auto kernels : {PlanOptions::Kernels::Dnnl, PlanOptions::Kernels::Measure}) {
    Plan plan = plan_with(kernels);
    auto logits = plan.all_exit_logits(*plan.make_context(), x.data());
    for (size_t e = 0; e < logits.size(); ++e) {
      float scale = 0;
      for (float v : reference[e]) scale = std::max(scale, std::fabs(v));
      for (size_t c = 0; c < logits[e].size(); ++c) {
        CHECK_MSG(std::fabs(logits[e][c] - reference[e][c]) <= 1e-4f * scale + 1e-6f,
                  "exit %zu class %zu: %g vs own %g\n%s", e, c, logits[e][c], reference[e][c],
                  plan.describe().c_str());
      }
    }
  }
}

TEST(pinned_choices_rebuild_a_plan_unmeasured) {
  // oneDNN wherever it has the op (own kernels elsewhere), and own kernels throughout.
  Plan dnnl = plan_with(PlanOptions::Kernels::Dnnl);
  Plan own = plan_with(PlanOptions::Kernels::Own);
  CHECK(dnnl.choices().find('d') != std::string::npos);
  CHECK(own.choices().find_first_not_of('o') == std::string::npos);
  CHECK(dnnl.choices().size() == own.choices().size());
  for (const Plan* source : {&dnnl, &own}) {
    PlanOptions options;
    branchy::parse_kernels("pin:" + source->choices(), options);
    CHECK(options.kernels == PlanOptions::Kernels::Pinned);
    Plan pinned(tiny_model(), options);
    CHECK_MSG(pinned.choices() == source->choices(), "%s vs %s", pinned.choices().c_str(),
              source->choices().c_str());
    CHECK_MSG(pinned.describe() == source->describe(), "%s\nvs\n%s", pinned.describe().c_str(),
              source->describe().c_str());
  }
  // Mixed: the first op pinned to oneDNN, the rest own.
  std::string mixed = own.choices();
  mixed[0] = 'd';
  PlanOptions options;
  branchy::parse_kernels("pin:" + mixed, options);
  CHECK(Plan(tiny_model(), options).choices() == mixed);
}

TEST(bad_kernel_options_are_refused_by_name) {
  auto refused = [](const std::string& text, const std::string& says) {
    try {
      PlanOptions options;
      branchy::parse_kernels(text, options);
      Plan plan(tiny_model(), options);
    } catch (const std::invalid_argument& e) {
      CHECK_MSG(std::string(e.what()).find(says) != std::string::npos, "%s", e.what());
      return;
    }
    CHECK_MSG(false, "'%s' was accepted", text.c_str());
  };
  refused("fastest", "kernels must be");
  refused("pin:oxo", "kernels must be");
  refused("pin:o", "choices ('o' or 'd'), got 1");
}

TEST(four_threads_sharing_a_plan_match_a_serial_run) {
  for (auto kernels : {PlanOptions::Kernels::Own, PlanOptions::Kernels::Dnnl}) {
    const Plan plan = plan_with(kernels, {1.05f});
    const int n = 200;
    const std::vector<float> x = samples(n, 11);
    std::vector<Result> serial(n);
    auto context = plan.make_context();
    for (int i = 0; i < n; ++i) serial[i] = plan.run(*context, x.data() + i * 72);
    int exits[2] = {0, 0};
    for (const auto& r : serial) ++exits[r.exit];
    CHECK_MSG(exits[0] > 0 && exits[1] > 0, "want mixed exits, got %d / %d", exits[0], exits[1]);

    std::vector<std::vector<Result>> got(4, std::vector<Result>(n));
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        auto own_context = plan.make_context();
        for (int round = 0; round < 5; ++round) {
          for (int i = 0; i < n; ++i) got[t][i] = plan.run(*own_context, x.data() + i * 72);
        }
      });
    }
    for (auto& thread : threads) thread.join();
    for (int t = 0; t < 4; ++t) {
      for (int i = 0; i < n; ++i) CHECK(same(got[t][i], serial[i]));
    }
  }
}

TEST(a_batch_equals_its_samples_one_by_one) {
  const Plan plan = plan_with(PlanOptions::Kernels::Own, {1.05f});
  const int n = 37;
  const std::vector<float> x = samples(n, 5);
  auto context = plan.make_context(8);  // five chunks
  std::vector<Result> batch(n);
  plan.run_batch(*context, x.data(), n, batch.data());
  for (int i = 0; i < n; ++i) CHECK(same(batch[i], plan.run(*context, x.data() + i * 72)));
}

TEST(thresholds_decide_where_samples_leave) {
  const std::vector<float> x = samples(20, 3);
  const Plan everyone_first = plan_with(PlanOptions::Kernels::Own, {INFINITY});
  const Plan nobody_early = plan_with(PlanOptions::Kernels::Own, {0.0f});
  auto a = everyone_first.make_context(), b = nobody_early.make_context();
  for (int i = 0; i < 20; ++i) {
    CHECK(everyone_first.run(*a, x.data() + i * 72).exit == 0);
    CHECK(nobody_early.run(*b, x.data() + i * 72).exit == 1);
  }
  bool threw = false;
  try {
    plan_with(PlanOptions::Kernels::Own, {0.1f, 0.2f});
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
}

// The runtime's own code allocates nothing per run. (oneDNN 2.6's primitive execution allocates
// its argument bookkeeping internally, 6 small blocks per primitive call, so a plan with oneDNN
// layers is not allocation-free; kernels=own is.)
TEST(a_run_with_own_kernels_allocates_nothing) {
  const Plan plan = plan_with(PlanOptions::Kernels::Own, {1.05f});
  const std::vector<float> x = samples(16, 9);
  auto context = plan.make_context();
  std::vector<Result> out(16);
  const long before = allocations.load();
  for (int i = 0; i < 16; ++i) out[i] = plan.run(*context, x.data() + i * 72);
  plan.run_batch(*context, x.data(), 16, out.data());
  CHECK_MSG(allocations.load() == before, "%ld allocations in 32 runs",
            allocations.load() - before);
}

int main() { return check::run_all(); }
