// Tests of the CPU runtime's Plan on the tiny chain (conv, pools, lrn, res_block, activation,
// flatten, linear) and on the graph with skips (branchy_dag: add, mul, concat, mean,
// channel_shuffle, layer_norm, channel_affine, grouped and dilated convs, values passed on across
// stages): every kernel choice computes what the ops' references compute, threads sharing a plan
// agree with a serial run, batches agree with single samples, and a run allocates nothing.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "count_allocations.h"
#include "model_builder.h"
#include "runtime/cpu.h"
#include "runtime/exit_decision.h"
#include "runtime/layer.h"
#include "runtime/ops/registry.h"
#include "runtime/plan.h"

#if BRANCHY_X86
#include <xmmintrin.h>
#endif

using branchy::Plan;
using branchy::PlanOptions;
using branchy::Result;

namespace {

// A test model and thresholds at which samples leave at every exit.
struct Net {
  const char* name;
  std::vector<uint8_t> file;
  std::vector<float> mixed;
};

const std::vector<Net>& nets() {
  static const std::vector<Net> all = {
      {"tiny", model_builder::tiny(), {0.1f}},
      {"dag", model_builder::branchy_dag(), {0.6f, 1.088f}},
  };
  return all;
}

const Net& tiny_net() { return nets()[0]; }

branchy::Model model_of(const Net& net) {
  return branchy::parse_model(net.file.data(), net.file.size());
}

branchy::Model tiny_model() { return model_of(tiny_net()); }

size_t input_size(const Net& net) { return size_t(model_of(net).input.numel()); }

// n samples of the net's input, spread around zero.
std::vector<float> samples(const Net& net, int n, uint32_t seed) {
  std::vector<float> x(size_t(n) * input_size(net));
  for (auto& v : x) {
    seed = seed * 1664525u + 1013904223u;
    v = float(seed >> 8) / float(1u << 24) * 4.0f - 2.0f;
  }
  return x;
}

Plan plan_with(const Net& net, PlanOptions::Kernels kernels, std::vector<float> thresholds = {}) {
  PlanOptions options;
  options.kernels = kernels;
  options.thresholds = std::move(thresholds);
  return Plan(model_of(net), options);
}

bool same(const Result& a, const Result& b) {
  return a.prediction == b.prediction && a.exit == b.exit && a.score == b.score;
}

// Every exit's logits, computed value by value with the ops' references (plain loops): the model
// run as the file describes it, with none of the plan's folding, layouts or memory reuse.
std::vector<std::vector<float>> reference_logits(const branchy::Model& m, const float* input) {
  std::vector<std::vector<float>> values(m.values.size());
  values[0].assign(input, input + m.input.numel());
  for (const branchy::Op& op : m.ops) {
    std::vector<const float*> ins;
    for (int32_t v : op.inputs) ins.push_back(values[v].data());
    values[op.output].assign(size_t(op.out.numel()), NAN);
    op.def->reference(op, ins.data(), values[op.output].data());
  }
  std::vector<std::vector<float>> logits;
  for (const branchy::Exit& e : m.exits) logits.push_back(values[e.logits]);
  return logits;
}

const char* kernels_name(PlanOptions::Kernels k) {
  switch (k) {
    case PlanOptions::Kernels::Own: return "own";
    case PlanOptions::Kernels::Dnnl: return "dnnl";
    case PlanOptions::Kernels::Measure: return "measure";
    case PlanOptions::Kernels::Pinned: return "pinned";
  }
  return "?";
}

// got within 1e-4 of want relative to want's largest magnitude, per exit.
void check_close(const std::vector<std::vector<float>>& got,
                 const std::vector<std::vector<float>>& want, const std::string& what,
                 const Plan& plan) {
  CHECK_MSG(got.size() == want.size(), "%s: %zu exits, want %zu", what.c_str(), got.size(),
            want.size());
  for (size_t e = 0; e < std::min(got.size(), want.size()); ++e) {
    CHECK(got[e].size() == want[e].size());
    float scale = 0;
    for (float v : want[e]) scale = std::max(scale, std::fabs(v));
    for (size_t c = 0; c < std::min(got[e].size(), want[e].size()); ++c) {
      CHECK_MSG(std::fabs(got[e][c] - want[e][c]) <= 1e-4f * scale + 1e-6f,
                "%s: exit %zu class %zu: %g vs %g\n%s", what.c_str(), e, c, got[e][c], want[e][c],
                plan.describe().c_str());
    }
  }
}

}  // namespace

TEST(kernel_choices_give_the_same_logits) {
  for (const Net& net : nets()) {
    const std::vector<float> x = samples(net, 1, 7);
    Plan own = plan_with(net, PlanOptions::Kernels::Own);
    auto reference = own.all_exit_logits(*own.make_context(), x.data());
    CHECK(reference.size() == size_t(own.num_exits()) && reference[0].size() == 3);
    for (auto kernels : {PlanOptions::Kernels::Dnnl, PlanOptions::Kernels::Measure}) {
      Plan plan = plan_with(net, kernels);
      check_close(plan.all_exit_logits(*plan.make_context(), x.data()), reference,
                  std::string(net.name) + " " + kernels_name(kernels) + " vs own", plan);
    }
  }
}

// The plan against the ops' references run value by value: what the kernels, the choice of
// layouts, the flatten folding and the arena's reuse of memory must not change.
TEST(plans_compute_what_the_ops_references_compute) {
  for (const Net& net : nets()) {
    const branchy::Model model = model_of(net);
    for (auto kernels : {PlanOptions::Kernels::Own, PlanOptions::Kernels::Dnnl,
                         PlanOptions::Kernels::Measure}) {
      Plan plan = plan_with(net, kernels);
      auto context = plan.make_context();
      const std::vector<float> x = samples(net, 3, 21);
      for (int i = 0; i < 3; ++i) {
        const float* sample = x.data() + i * input_size(net);
        check_close(plan.all_exit_logits(*context, sample), reference_logits(model, sample),
                    std::string(net.name) + " " + kernels_name(kernels) + " sample " +
                        std::to_string(i) + " vs references",
                    plan);
      }
      CHECK(plan.footprint().arena_bytes > 0);
      const std::string d = plan.describe();
      const size_t last = d.rfind('\n', d.size() - 2);
      CHECK_MSG(!d.empty() && d.back() == '\n' && last != std::string::npos &&
                    d.compare(last + 1, 7, "memory:") == 0,
                "describe() does not end with a memory line:\n%s", d.c_str());
    }
  }
}

TEST(the_dag_passes_a_value_on_through_a_stage) {
  Plan plan = plan_with(nets()[1], PlanOptions::Kernels::Own);
  const std::string d = plan.describe();
  CHECK_MSG(d.find("stage 2: pass value 5 on [copy]") != std::string::npos, "%s", d.c_str());
  CHECK_MSG(d.find("stage 2: concat 2 -> 6 channels") != std::string::npos, "%s", d.c_str());
  CHECK_MSG(d.find("stage 1: add +relu") != std::string::npos, "%s", d.c_str());
  CHECK_MSG(d.find("stage 2: mul per channel") != std::string::npos, "%s", d.c_str());
  // Two slots of the widest boundary: stage 2 passes on [6, 4, 4] and [2, 4, 4].
  CHECK(plan.footprint().slot_bytes >= (96 + 32) * sizeof(float));
}

TEST(pinned_choices_rebuild_a_plan_unmeasured) {
  for (const Net& net : nets()) {
    // oneDNN wherever it has the op (own kernels elsewhere), and own kernels throughout.
    Plan dnnl = plan_with(net, PlanOptions::Kernels::Dnnl);
    Plan own = plan_with(net, PlanOptions::Kernels::Own);
    if (branchy::have_dnnl()) CHECK(dnnl.choices().find('d') != std::string::npos);
    CHECK(own.choices().find_first_not_of("0123456789") == std::string::npos);
    CHECK(dnnl.choices().size() == own.choices().size());
    for (const Plan* source : {&dnnl, &own}) {
      PlanOptions options;
      branchy::parse_kernels("pin:" + source->choices(), options);
      CHECK(options.kernels == PlanOptions::Kernels::Pinned);
      Plan pinned(model_of(net), options);
      CHECK_MSG(pinned.choices() == source->choices(), "%s: %s vs %s", net.name,
                pinned.choices().c_str(), source->choices().c_str());
      CHECK_MSG(pinned.describe() == source->describe(), "%s\nvs\n%s", pinned.describe().c_str(),
                source->describe().c_str());
    }
    // Mixed: the first op (a conv2d) pinned to oneDNN, the rest own; a build without oneDNN has
    // only its own kernels to give.
    std::string mixed = own.choices();
    mixed[0] = 'd';
    PlanOptions options;
    branchy::parse_kernels("pin:" + mixed, options);
    CHECK(Plan(model_of(net), options).choices() == (branchy::have_dnnl() ? mixed : own.choices()));
  }
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
  refused("pin:o", "choices (a digit, 'o' or 'd'), got 1");
  const std::string ops = std::to_string(plan_with(tiny_net(), PlanOptions::Kernels::Own).choices().size());
  refused("pin:oo", "this model has " + ops + " ops");
  bool threw = false;
  try {
    PlanOptions options;
    options.threads = 0;
    Plan plan(tiny_model(), options);
  } catch (const std::invalid_argument& e) {
    threw = std::string(e.what()).find("threads") != std::string::npos;
  }
  CHECK(threw);
}

TEST(four_threads_sharing_a_plan_match_a_serial_run) {
  for (const Net& net : nets()) {
    const size_t size = input_size(net);
    for (auto kernels : {PlanOptions::Kernels::Own, PlanOptions::Kernels::Dnnl}) {
      const Plan plan = plan_with(net, kernels, net.mixed);
      const int n = 200;
      const std::vector<float> x = samples(net, n, 11);
      std::vector<Result> serial(n);
      auto context = plan.make_context();
      for (int i = 0; i < n; ++i) serial[i] = plan.run(*context, x.data() + i * size);
      std::vector<int> exits(plan.num_exits(), 0);
      for (const auto& r : serial) ++exits[r.exit];
      for (int e = 0; e < plan.num_exits(); ++e) {
        CHECK_MSG(exits[e] > 0, "%s: want samples at every exit, exit %d has none", net.name, e);
      }

      std::vector<std::vector<Result>> got(4, std::vector<Result>(n));
      std::vector<std::thread> threads;
      for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
          auto own_context = plan.make_context();
          for (int round = 0; round < 5; ++round) {
            for (int i = 0; i < n; ++i) got[t][i] = plan.run(*own_context, x.data() + i * size);
          }
        });
      }
      for (auto& thread : threads) thread.join();
      for (int t = 0; t < 4; ++t) {
        for (int i = 0; i < n; ++i) CHECK(same(got[t][i], serial[i]));
      }
    }
  }
}

TEST(a_batch_equals_its_samples_one_by_one) {
  for (const Net& net : nets()) {
    const size_t size = input_size(net);
    for (auto kernels : {PlanOptions::Kernels::Own, PlanOptions::Kernels::Dnnl}) {
      const Plan plan = plan_with(net, kernels, net.mixed);
      const int n = 37;
      const std::vector<float> x = samples(net, n, 5);
      auto context = plan.make_context(8);  // five chunks
      std::vector<Result> batch(n);
      plan.run_batch(*context, x.data(), n, batch.data());
      std::vector<int> exits(plan.num_exits(), 0);
      for (int i = 0; i < n; ++i) {
        const Result one = plan.run(*context, x.data() + i * size);
        CHECK_MSG(same(batch[i], one), "%s sample %d: batch exit %d class %lld, alone exit %d class %lld",
                  net.name, i, batch[i].exit, (long long)batch[i].prediction, one.exit,
                  (long long)one.prediction);
        ++exits[one.exit];
      }
      // Survivors are compacted between stages only when some leave early and some do not.
      CHECK_MSG(exits.front() > 0 && exits.back() > 0, "%s: exits %d .. %d", net.name,
                exits.front(), exits.back());
    }
  }
}

TEST(thresholds_decide_where_samples_leave) {
  for (const Net& net : nets()) {
    const size_t size = input_size(net);
    const size_t early = net.mixed.size();
    const std::vector<float> x = samples(net, 20, 3);
    const Plan everyone_first =
        plan_with(net, PlanOptions::Kernels::Own, std::vector<float>(early, INFINITY));
    const Plan nobody_early = plan_with(net, PlanOptions::Kernels::Own, std::vector<float>(early, 0.0f));
    auto a = everyone_first.make_context(), b = nobody_early.make_context();
    for (int i = 0; i < 20; ++i) {
      CHECK(everyone_first.run(*a, x.data() + i * size).exit == 0);
      CHECK(nobody_early.run(*b, x.data() + i * size).exit == int32_t(early));
    }
    bool threw = false;
    try {
      plan_with(net, PlanOptions::Kernels::Own, std::vector<float>(early + 1, 0.1f));
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    CHECK(threw);
  }
}

// The runtime's own code allocates nothing per run. (oneDNN 2.6's primitive execution allocates
// its argument bookkeeping internally, 6 small blocks per primitive call, so a plan with oneDNN
// layers is not allocation-free; kernels=own is.)
TEST(a_run_with_own_kernels_allocates_nothing) {
  for (const Net& net : nets()) {
    const size_t size = input_size(net);
    const Plan plan = plan_with(net, PlanOptions::Kernels::Own, net.mixed);
    const std::vector<float> x = samples(net, 16, 9);
    auto context = plan.make_context();
    std::vector<Result> out(16);
    const long before = allocations.load();
    for (int i = 0; i < 16; ++i) out[i] = plan.run(*context, x.data() + i * size);
    plan.run_batch(*context, x.data(), 16, out.data());
    CHECK_MSG(allocations.load() == before, "%s: %ld allocations in 32 runs", net.name,
              allocations.load() - before);
  }
}

// verify: every chosen kernel of both test nets (every op kind between them) agrees with its op's
// reference in every kernel mode; a kernel that does not is refused by name.
TEST(verify_checks_every_chosen_kernel_and_refuses_a_wrong_one) {
  for (const Net& net : nets()) {
    for (auto kernels : {PlanOptions::Kernels::Own, PlanOptions::Kernels::Dnnl, PlanOptions::Kernels::Measure}) {
      PlanOptions options;
      options.kernels = kernels;
      options.verify = true;
      try {
        const Plan plan(model_of(net), options);
      } catch (const std::exception& e) {
        CHECK_MSG(false, "%s %s: %s", net.name, kernels_name(kernels), e.what());
      }
    }
  }
  // A layer that writes zeros where the op's reference gives numbers.
  struct Zeros final : branchy::Layer {
    explicit Zeros(const branchy::Op& op) : Layer(op.ins, op.out) {}
    void forward(const float*, float* out, branchy::LayerState*) const override {
      std::fill(out, out + out_.numel(), 0.0f);
    }
    branchy::Layout input_layout() const override { return branchy::Layout::NCHW; }
    branchy::Layout output_layout() const override { return branchy::Layout::NCHW; }
    std::string describe() const override { return "zeros [test]"; }
  };
  const branchy::Model model = tiny_model();
  const branchy::Op& conv = model.ops.front();
  bool refused = false;
  try {
    branchy::verify_layer(conv, Zeros(conv));
  } catch (const std::runtime_error& e) {
    refused = std::string(e.what()).find("verify: zeros [test] (conv2d)") == 0;
  }
  CHECK(refused);
}

// A context's batch slots grow with the batches run, up to max_batch, not max_batch up front.
TEST(a_contexts_memory_grows_with_the_batch_used) {
  const Net& net = nets()[1];
  const Plan plan = plan_with(net, PlanOptions::Kernels::Own, net.mixed);
  auto context = plan.make_context(64);
  const size_t empty = context->bytes();
  const size_t slot = plan.footprint(1).batch_bytes / 2;  // one sample's slot
  const std::vector<float> x = samples(net, 100, 4);
  std::vector<Result> out(100);
  plan.run_batch(*context, x.data(), 4, out.data());
  CHECK(context->bytes() == empty + 2 * 4 * slot);
  plan.run_batch(*context, x.data(), 2, out.data());
  CHECK(context->bytes() == empty + 2 * 4 * slot);
  plan.run_batch(*context, x.data(), 100, out.data());  // in chunks of 64
  CHECK_MSG(context->bytes() == empty + 2 * 64 * slot, "%zu bytes, want %zu", context->bytes(),
            empty + 2 * 64 * slot);
  std::vector<Result> single(100);
  for (int i = 0; i < 100; ++i) single[i] = plan.run(*context, x.data() + i * input_size(net));
  for (int i = 0; i < 100; ++i) CHECK(same(out[i], single[i]));
}

// A Context holds buffers sized for the plan that made it: every entry point of another plan
// refuses it by name (it overflowed the heap before).
TEST(a_context_from_another_plan_is_refused) {
  const Plan tiny = plan_with(tiny_net(), PlanOptions::Kernels::Own, tiny_net().mixed);
  const Plan other = plan_with(tiny_net(), PlanOptions::Kernels::Own, tiny_net().mixed);
  auto foreign = other.make_context();
  const std::vector<float> x = samples(tiny_net(), 2, 1);
  std::vector<Result> out(2);
  struct Quiet final : branchy::Probe {
    void begin(Part, int) override {}
    void end(Part, int) override {}
  } quiet;
  auto refused = [](const char* entry, auto call) {
    try {
      call();
    } catch (const std::invalid_argument& e) {
      CHECK_MSG(std::string(e.what()).find("made by another Plan") != std::string::npos, "%s: %s",
                entry, e.what());
      return;
    }
    CHECK_MSG(false, "%s ran with another plan's context", entry);
  };
  refused("run", [&] { tiny.run(*foreign, x.data()); });
  refused("run_instrumented", [&] { tiny.run_instrumented(*foreign, x.data(), quiet); });
  refused("run_batch", [&] { tiny.run_batch(*foreign, x.data(), 2, out.data()); });
  refused("all_exit_logits", [&] { tiny.all_exit_logits(*foreign, x.data()); });
  Plan moved = plan_with(tiny_net(), PlanOptions::Kernels::Own, tiny_net().mixed);
  auto mine = moved.make_context();
  const Plan after(std::move(moved));  // a moved plan keeps its contexts
  after.run(*mine, x.data());
}

// A plan checks its limits and thresholds when it is built, before anything is allocated, packed
// or timed; each refusal names the figure.
TEST(limits_and_thresholds_are_refused_by_name) {
  auto refused = [](PlanOptions options, const std::string& starts, const std::string& ends) {
    options.kernels = PlanOptions::Kernels::Own;
    try {
      const Plan plan(tiny_model(), options);
    } catch (const std::invalid_argument& e) {
      const std::string m = e.what();
      CHECK_MSG(m.find(starts) == 0 && m.size() >= ends.size() &&
                    m.compare(m.size() - ends.size(), ends.size(), ends) == 0,
                "expected \"%s...%s\", got \"%s\"", starts.c_str(), ends.c_str(), m.c_str());
      return;
    }
    CHECK_MSG(false, "a plan was built; expected \"%s...%s\"", starts.c_str(), ends.c_str());
  };
  PlanOptions options;
  options.max_memory = 100;
  refused(options, "the model needs about ", ", over the limit of 9.31e-08 GiB (max_memory)");
  options = {};
  options.max_flops = 10;
  refused(options, "a sample costs about ", ", over the limit of 1e-08 GFLOP (max_flops)");
  options = {};
  options.thresholds = {0.1f, 0.2f};
  refused(options, "thresholds: expected 1 (one per early exit), got 2", "");
  options.thresholds = {NAN};
  refused(options, "thresholds must be >= 0 and not NaN", "");
  options.thresholds = {-1.0f};
  refused(options, "thresholds must be >= 0 and not NaN", "");
}

// Every entry point refuses an input holding NaN or +-inf, naming it (a batch: the sample too);
// check_inputs = false skips the scan.
TEST(non_finite_inputs_are_refused_by_every_entry_point) {
  const Net& net = tiny_net();
  const size_t size = input_size(net);
  const Plan plan = plan_with(net, PlanOptions::Kernels::Own, net.mixed);
  auto context = plan.make_context();
  struct Quiet final : branchy::Probe {
    void begin(Part, int) override {}
    void end(Part, int) override {}
  } quiet;
  std::vector<Result> out(3);
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> x = samples(net, 3, 7);
    x[2 * size + 4] = bad;
    const std::string name = std::isnan(bad) ? "NaN" : bad > 0 ? "+inf" : "-inf";
    auto refused = [&](const char* entry, auto call, const std::string& says) {
      try {
        call();
      } catch (const std::invalid_argument& e) {
        CHECK_MSG(std::string(e.what()).find(says) == 0, "%s: %s", entry, e.what());
        return;
      }
      CHECK_MSG(false, "%s ran an input holding %s", entry, name.c_str());
    };
    const float* third = x.data() + 2 * size;
    refused("run", [&] { plan.run(*context, third); }, "input contains " + name + " at element 4");
    refused("run_instrumented", [&] { plan.run_instrumented(*context, third, quiet); },
            "input contains " + name + " at element 4");
    refused("all_exit_logits", [&] { plan.all_exit_logits(*context, third); },
            "input contains " + name + " at element 4");
    refused("run_batch", [&] { plan.run_batch(*context, x.data(), 3, out.data()); },
            "input sample 2 contains " + name + " at element 4");
    PlanOptions options;
    options.kernels = PlanOptions::Kernels::Own;
    options.check_inputs = false;
    const Plan unchecked(model_of(net), options);
    auto c = unchecked.make_context();
    unchecked.run(*c, third);  // no scan: whatever the kernels make of it, no throw
    CHECK(!unchecked.checks_inputs() && plan.checks_inputs());
  }
}

#if BRANCHY_X86 || BRANCHY_ARM64
// The calling thread's floating-point control: MXCSR, or FPCR on aarch64.
#if BRANCHY_X86
using Control = unsigned;
constexpr Control kFlush = 0x8040, kRoundDown = 0x2000;  // FTZ and DAZ; rounding toward -inf
Control get_control() { return _mm_getcsr(); }
void set_control(Control c) { _mm_setcsr(c); }
#else
using Control = uint64_t;
constexpr Control kFlush = Control(1) << 24, kRoundDown = Control(2) << 22;  // FZ; RMode to -inf
Control get_control() {
  Control c;
  asm volatile("mrs %0, fpcr" : "=r"(c));
  return c;
}
void set_control(Control c) { asm volatile("msr fpcr, %0" : : "r"(c)); }
#endif

// Every entry point runs with flush-to-zero and denormals-are-zero set on the calling thread, and
// gives the caller's control register back as it was (flushing off or on, another rounding mode):
// denormal inputs then compute what zeros compute, bit for bit.
TEST(a_run_flushes_denormals_and_restores_the_callers_fp_control) {
  struct Seen final : branchy::Probe {
    Control csr = 0;
    void begin(Part, int) override { csr = get_control(); }
    void end(Part, int) override {}
  } seen;
  const Control original = get_control();
  for (const Net& net : nets()) {
    const size_t size = input_size(net);
    const Plan plan = plan_with(net, PlanOptions::Kernels::Own, net.mixed);
    auto context = plan.make_context();
    const std::vector<float> zeros(size, 0.0f), denormals(size, 1e-40f), x = samples(net, 4, 5);
    std::vector<Result> out(4);
    for (Control caller : {original & ~kFlush, original | kFlush, (original & ~kFlush) | kRoundDown}) {
      set_control(caller);
      plan.run(*context, x.data());
      CHECK(get_control() == caller);
      plan.run_batch(*context, x.data(), 4, out.data());
      CHECK(get_control() == caller);
      const auto from_zeros = plan.all_exit_logits(*context, zeros.data());
      const auto from_denormals = plan.all_exit_logits(*context, denormals.data());
      CHECK(get_control() == caller);
      CHECK_MSG(from_zeros == from_denormals, "%s: denormal inputs computed otherwise than zeros",
                net.name);
      seen.csr = 0;
      plan.run_instrumented(*context, x.data(), seen);
      CHECK_MSG((seen.csr & kFlush) == kFlush, "%s: control %#llx inside a run, want flushing",
                net.name, (unsigned long long)seen.csr);
      CHECK(get_control() == caller);
    }
  }
  set_control(original);
}
#endif

int main() { return check::run_all(); }
