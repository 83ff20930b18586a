#include "plan.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>

#include "buffer.h"
#include "exit_decision.h"

namespace branchy {

// The layers of one stage or one exit head, in order.
struct Sequence {
  std::vector<std::unique_ptr<Layer>> layers;
  std::vector<double> micros;  // measured time of each layer, or 0
  Layout out_layout = Layout::NCHW;
  size_t in_count = 0;  // floats of the input (what an empty sequence copies through)
};

struct Plan::Impl {
  Model model;
  PlanOptions options;
  std::vector<Sequence> stages;
  std::vector<Sequence> heads;           // one per exit
  std::vector<int> exit_after_stage;     // stage -> exit index, or -1
  std::vector<float> thresholds;
  std::string choices;                   // Plan::choices()
  size_t max_activation = 0;             // floats of the largest activation
};

struct Context::State {
  State(const Plan::Impl& plan, int max_batch);
  std::vector<std::vector<std::unique_ptr<LayerState>>> stage_states, head_states;
  Buffer stage_out[2], temp[2], head_temp[2];
  Buffer batch_in, batch_out;            // max_batch stage outputs each
  std::vector<float> logits;
  std::vector<int64_t> alive, still;
  int max_batch;
};

namespace {

using Clock = std::chrono::steady_clock;

bool spatial(const Shape& s) { return s.h * s.w > 1; }

// Ops as the plan runs them: a flatten right before a linear layer folds into it (the linear
// layer reads the [C, H, W] input in flattening order).
std::vector<Op> fold_flatten(const std::vector<Op>& ops) {
  std::vector<Op> out;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind == OpKind::Flatten && i + 1 < ops.size() && ops[i + 1].kind == OpKind::Linear) {
      Op linear = ops[i + 1];
      linear.in = ops[i].in;
      out.push_back(linear);
      ++i;
    } else {
      out.push_back(ops[i]);
    }
  }
  return out;
}

// Median time of one forward() in microseconds, on pseudo-random input.
double measure(const Layer& layer) {
  auto state = layer.make_state();
  Buffer in(layer.in_shape().numel()), out(layer.out_shape().numel());
  uint32_t seed = 12345;
  for (size_t i = 0; i < in.size(); ++i) {
    seed = seed * 1664525u + 1013904223u;
    in.data()[i] = float(seed >> 8) / float(1u << 24) * 2.0f - 1.0f;
  }
  // Warm up by time, not by count: the core takes milliseconds to reach its steady clock, and a
  // layer measured cold loses to one measured warm.
  const auto warm = Clock::now();
  for (int i = 0; i < 3 || Clock::now() - warm < std::chrono::milliseconds(2); ++i) {
    layer.forward(in.data(), out.data(), state.get());
  }
  const auto start = Clock::now();
  layer.forward(in.data(), out.data(), state.get());
  const double once = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  const int reps = std::max(1, int(30.0 / std::max(once, 0.05)));  // rounds of about 30 us
  std::vector<double> rounds;
  for (int r = 0; r < 7; ++r) {
    const auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) layer.forward(in.data(), out.data(), state.get());
    rounds.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / reps);
  }
  std::nth_element(rounds.begin(), rounds.begin() + 3, rounds.end());
  return rounds[3];
}

std::string shape_key(const Shape& s) {
  return std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w);
}

struct Candidate {
  std::unique_ptr<Layer> layer;
  bool dnnl;
};

// A chosen layer, the op it runs (a layout change belongs to the op it prepares for), and what
// it measured (microseconds; 0 when the options forced the choice without measuring).
struct Chosen {
  size_t op;
  std::unique_ptr<Layer> layer;
  double micros = 0.0;
};

// Chooses an implementation for each op of a chain and inserts layout changes, minimising the
// summed cost (measured, or by preference when the options force a kind of kernel): a dynamic
// programme over (op, layout of its output).
class Chooser {
 public:
  explicit Chooser(const PlanOptions& options) : options_(options) {}

  std::vector<Chosen> choose(const std::vector<Op>& ops, Layout start, Layout* end) {
    struct Node {
      double cost = std::numeric_limits<double>::infinity();
      int prev_layout = -1;
      int candidate = -1;
    };
    const size_t first = next_op_;  // this chain's ops in the whole plan's numbering
    next_op_ += ops.size();
    std::vector<std::vector<Candidate>> candidates;
    for (const Op& op : ops) candidates.push_back(candidates_for(op));
    // best[i][layout]: the cheapest way to have run ops [0, i) with the result in `layout`.
    std::vector<std::array<Node, 2>> best(ops.size() + 1);
    best[0][int(start)].cost = 0.0;
    for (size_t i = 0; i < ops.size(); ++i) {
      for (int from = 0; from < 2; ++from) {
        if (!std::isfinite(best[i][from].cost)) continue;
        for (size_t c = 0; c < candidates[i].size(); ++c) {
          const Candidate& cand = candidates[i][c];
          const double cost = best[i][from].cost +
                              reorder_cost(ops[i].in, Layout(from), cand.layer->input_layout()) +
                              layer_cost(cand, first + i);
          Node& to = best[i + 1][int(cand.layer->output_layout())];
          if (cost < to.cost) to = Node{cost, from, int(c)};
        }
      }
    }
    int layout = ops.empty() ? int(start) : (best[ops.size()][0].cost <= best[ops.size()][1].cost ? 0 : 1);
    *end = Layout(layout);
    std::vector<Chosen> reversed;
    std::string kinds(ops.size(), 'o');
    for (size_t i = ops.size(); i-- > 0;) {
      const Node& node = best[i + 1][layout];
      Candidate& cand = candidates[i][node.candidate];
      const double micros = measuring() ? layer_cost(cand, first + i) : 0.0;
      kinds[i] = cand.dnnl ? 'd' : 'o';
      const Layout wants = cand.layer->input_layout();
      reversed.push_back(Chosen{i, std::move(cand.layer), micros});
      if (Layout(node.prev_layout) != wants && spatial(ops[i].in)) {
        const Layout from = Layout(node.prev_layout);
        reversed.push_back(Chosen{i, make_reorder(ops[i].in, from, wants),
                                  measuring() ? reorder_cost(ops[i].in, from, wants) : 0.0});
      }
      layout = node.prev_layout;
    }
    choices_ += kinds;
    return std::vector<Chosen>(std::make_move_iterator(reversed.rbegin()),
                               std::make_move_iterator(reversed.rend()));
  }

  std::vector<Candidate> candidates_for(const Op& op) {
    std::vector<Candidate> all;
    for (auto& layer : own_candidates(op)) all.push_back(Candidate{std::move(layer), false});
    if (options_.kernels != PlanOptions::Kernels::Own) {
      for (auto& layer : dnnl_candidates(op)) all.push_back(Candidate{std::move(layer), true});
    }
    return all;
  }

  // The choices made so far, one per op: 'o' own, 'd' oneDNN.
  const std::string& choices() const { return choices_; }

 private:
  bool measuring() const { return options_.kernels == PlanOptions::Kernels::Measure; }

  double layer_cost(const Candidate& c, size_t op) {
    switch (options_.kernels) {
      case PlanOptions::Kernels::Own: return 1.0;
      case PlanOptions::Kernels::Dnnl: return c.dnnl ? 1.0 : 1000.0;  // own only where no oneDNN
      case PlanOptions::Kernels::Pinned: return c.dnnl == (options_.pinned.at(op) == 'd') ? 1.0 : 1000.0;
      case PlanOptions::Kernels::Measure: break;
    }
    return measured(*c.layer);
  }

  double reorder_cost(const Shape& shape, Layout from, Layout to) {
    if (from == to || !spatial(shape)) return 0.0;
    if (options_.kernels != PlanOptions::Kernels::Measure) return 1.0;
    return measured(*make_reorder(shape, from, to));
  }

  // Identical layers (ResNet repeats its blocks) are measured once.
  double measured(const Layer& layer) {
    const std::string key = layer.describe() + " " + shape_key(layer.in_shape());
    auto it = measured_.find(key);
    if (it == measured_.end()) it = measured_.emplace(key, measure(layer)).first;
    return it->second;
  }

  const PlanOptions& options_;
  std::map<std::string, double> measured_;
  size_t next_op_ = 0;
  std::string choices_;
};

Sequence sequence(std::vector<Chosen>::iterator begin, std::vector<Chosen>::iterator end,
                  Layout out_layout, const Shape& in) {
  Sequence seq;
  for (auto it = begin; it != end; ++it) {
    seq.layers.push_back(std::move(it->layer));
    seq.micros.push_back(it->micros);
  }
  seq.out_layout = out_layout;
  seq.in_count = size_t(in.numel());
  return seq;
}

// Runs a sequence on one sample: `in` -> `out`, intermediate results in the two temporaries.
void run_sequence(const Sequence& seq, std::vector<std::unique_ptr<LayerState>>& states,
                  const float* in, float* out, float* temp0, float* temp1) {
  const size_t n = seq.layers.size();
  if (n == 0) {
    std::memcpy(out, in, seq.in_count * sizeof(float));
    return;
  }
  const float* src = in;
  for (size_t i = 0; i < n; ++i) {
    float* dst = i + 1 == n ? out : (i % 2 == 0 ? temp0 : temp1);
    seq.layers[i]->forward(src, dst, states[i].get());
    src = dst;
  }
}

void check_thresholds(const std::vector<float>& thresholds, size_t expected) {
  if (thresholds.size() != expected) {
    throw std::invalid_argument("thresholds: expected " + std::to_string(expected) +
                                " (one per early exit), got " + std::to_string(thresholds.size()));
  }
  for (float t : thresholds) {
    if (std::isnan(t) || t < 0.0f) {
      throw std::invalid_argument("thresholds must be >= 0 and not NaN, got " + std::to_string(t));
    }
  }
}

}  // namespace

Plan::Plan(Model model, PlanOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& p = *impl_;
  p.model = std::move(model);
  p.options = std::move(options);
  if (p.options.threads < 1) throw std::invalid_argument("threads must be >= 1");
  p.thresholds = p.options.thresholds.empty() ? p.model.thresholds : p.options.thresholds;
  check_thresholds(p.thresholds, p.model.exits.size() - 1);
  set_dnnl_threads(p.options.threads);

  Chooser chooser(p.options);
  p.exit_after_stage.assign(p.model.stages.size(), -1);
  for (size_t e = 0; e < p.model.exits.size(); ++e) p.exit_after_stage[p.model.exits[e].stage] = int(e);

  // The trunk as one chain, so layout changes are placed where they cost least; then split back
  // into stages (a layout change before a stage's first op opens that stage).
  std::vector<Op> trunk;
  std::vector<size_t> stage_begin;
  for (const auto& ops : p.model.stages) {
    stage_begin.push_back(trunk.size());
    for (const Op& op : fold_flatten(ops)) trunk.push_back(op);
  }
  stage_begin.push_back(trunk.size());
  if (p.options.kernels == PlanOptions::Kernels::Pinned) {
    size_t ops = trunk.size();
    for (const Exit& exit : p.model.exits) ops += fold_flatten(exit.head).size();
    if (p.options.pinned.size() != ops) {
      throw std::invalid_argument("kernels pin: this model has " + std::to_string(ops) +
                                  " ops, so 'pin:' takes " + std::to_string(ops) +
                                  " choices ('o' or 'd'), got " + std::to_string(p.options.pinned.size()));
    }
  }
  Layout layout = Layout::NCHW;
  std::vector<Chosen> chosen = chooser.choose(trunk, Layout::NCHW, &layout);
  auto it = chosen.begin();
  Shape in = p.model.input;
  for (size_t s = 0; s < p.model.stages.size(); ++s) {
    auto stage_end = std::find_if(it, chosen.end(), [&](const Chosen& c) { return c.op >= stage_begin[s + 1]; });
    const Layout out_layout = stage_end == it ? (s == 0 ? Layout::NCHW : p.stages.back().out_layout)
                                              : std::prev(stage_end)->layer->output_layout();
    p.stages.push_back(sequence(it, stage_end, out_layout, in));
    if (!p.model.stages[s].empty()) in = p.model.stages[s].back().out;
    it = stage_end;
  }
  for (const Exit& exit : p.model.exits) {
    const Layout start = p.stages[exit.stage].out_layout;
    std::vector<Chosen> head = chooser.choose(fold_flatten(exit.head), start, &layout);
    const Shape head_in = exit.head.empty() ? Shape{p.model.num_classes, 1, 1} : exit.head.front().in;
    p.heads.push_back(sequence(head.begin(), head.end(), layout, head_in));
  }

  p.choices = chooser.choices();
  p.max_activation = size_t(p.model.input.numel());
  for (const auto* seqs : {&p.stages, &p.heads}) {
    for (const Sequence& seq : *seqs) {
      for (const auto& l : seq.layers) {
        p.max_activation = std::max({p.max_activation, size_t(l->in_shape().numel()),
                                     size_t(l->out_shape().numel())});
      }
    }
  }
}

Plan::~Plan() = default;
Plan::Plan(Plan&&) noexcept = default;

Context::Context(std::unique_ptr<State> state) : state_(std::move(state)) {}
Context::~Context() = default;

Context::State::State(const Plan::Impl& plan, int max_batch)
    : logits(plan.model.num_classes), max_batch(max_batch) {
  if (max_batch < 1) throw std::invalid_argument("max_batch must be >= 1");
  auto states = [](const Sequence& seq) {
    std::vector<std::unique_ptr<LayerState>> out;
    for (const auto& layer : seq.layers) out.push_back(layer->make_state());
    return out;
  };
  for (const auto& s : plan.stages) stage_states.push_back(states(s));
  for (const auto& h : plan.heads) head_states.push_back(states(h));
  for (auto* b : {&stage_out[0], &stage_out[1], &temp[0], &temp[1], &head_temp[0], &head_temp[1]}) {
    *b = Buffer(plan.max_activation);
  }
  batch_in = Buffer(plan.max_activation * max_batch);
  batch_out = Buffer(plan.max_activation * max_batch);
  alive.reserve(max_batch);
  still.reserve(max_batch);
}

std::unique_ptr<Context> Plan::make_context(int max_batch) const {
  return std::unique_ptr<Context>(new Context(std::make_unique<Context::State>(*impl_, max_batch)));
}

namespace {

// Runs exit e's head on a stage output and decides: true if the sample leaves there.
bool decide(const Plan::Impl& p, Context::State& ctx, int e, const float* stage_output, Result& result) {
  run_sequence(p.heads[e], ctx.head_states[e], stage_output, ctx.logits.data(),
               ctx.head_temp[0].data(), ctx.head_temp[1].data());
  const bool last = size_t(e) + 1 == p.heads.size();
  DecisionArgs args;
  args.logits = ctx.logits.data();
  args.rows = 1;
  args.classes = p.model.num_classes;
  args.row_stride = p.model.num_classes;
  args.criterion = p.model.criterion;
  args.threshold = last ? 0.0f : p.thresholds[e];
  bool leave = false;
  args.score = &result.score;
  args.exit = &leave;
  args.prediction = &result.prediction;
  decide_rows(args, 0, 1);
  result.exit = e;
  return last || leave;
}

}  // namespace

namespace {

// A probe that does nothing, inlined away: run() pays nothing for instrumentation.
struct NoProbe {
  void begin(Probe::Part, int) {}
  void end(Probe::Part, int) {}
};

template <class P>
Result run_with(const Plan::Impl& p, Context::State& ctx, const float* input, P& probe) {
  Result result;
  const float* x = input;
  for (size_t s = 0; s < p.stages.size(); ++s) {
    float* out = ctx.stage_out[s % 2].data();
    probe.begin(Probe::Part::Stage, int(s));
    run_sequence(p.stages[s], ctx.stage_states[s], x, out, ctx.temp[0].data(), ctx.temp[1].data());
    probe.end(Probe::Part::Stage, int(s));
    x = out;
    const int e = p.exit_after_stage[s];
    if (e < 0) continue;
    probe.begin(Probe::Part::Exit, e);
    const bool leave = decide(p, ctx, e, x, result);
    probe.end(Probe::Part::Exit, e);
    if (leave) return result;
  }
  return result;  // unreachable for a checked model: the last stage has the last exit
}

}  // namespace

Result Plan::run(Context& context, const float* input) const {
  NoProbe none;
  return run_with(*impl_, context.state(), input, none);
}

Result Plan::run_instrumented(Context& context, const float* input, Probe& probe) const {
  return run_with(*impl_, context.state(), input, probe);
}

void Plan::run_batch(Context& context, const float* inputs, int64_t batch, Result* results) const {
  const Impl& p = *impl_;
  Context::State& ctx = context.state();
  const size_t in_size = p.model.input.numel(), slot = p.max_activation;
  for (int64_t first = 0; first < batch; first += ctx.max_batch) {
    const int64_t n = std::min<int64_t>(ctx.max_batch, batch - first);
    // alive[j]: the sample whose activation is in slot j. Slots stay put; the list is compacted.
    ctx.alive.clear();
    for (int64_t i = 0; i < n; ++i) ctx.alive.push_back(first + i);
    float* cur = ctx.batch_in.data();
    float* next = ctx.batch_out.data();
    for (size_t s = 0; s < p.stages.size() && !ctx.alive.empty(); ++s) {
      const int e = p.exit_after_stage[s];
      ctx.still.clear();
      for (size_t j = 0; j < ctx.alive.size(); ++j) {
        const int64_t i = ctx.alive[j];
        const float* src = s == 0 ? inputs + i * in_size : cur + j * slot;
        float* dst = next + ctx.still.size() * slot;
        run_sequence(p.stages[s], ctx.stage_states[s], src, dst, ctx.temp[0].data(),
                     ctx.temp[1].data());
        if (e >= 0 && decide(p, ctx, e, dst, results[i])) continue;
        ctx.still.push_back(i);  // survives: its output stays in slot still.size() - 1
      }
      std::swap(ctx.alive, ctx.still);
      std::swap(cur, next);
    }
  }
}

std::vector<std::vector<float>> Plan::all_exit_logits(Context& context, const float* input) const {
  const Impl& p = *impl_;
  Context::State& ctx = context.state();
  std::vector<std::vector<float>> logits;
  const float* x = input;
  for (size_t s = 0; s < p.stages.size(); ++s) {
    float* out = ctx.stage_out[s % 2].data();
    run_sequence(p.stages[s], ctx.stage_states[s], x, out, ctx.temp[0].data(), ctx.temp[1].data());
    x = out;
    const int e = p.exit_after_stage[s];
    if (e < 0) continue;
    run_sequence(p.heads[e], ctx.head_states[e], x, ctx.logits.data(), ctx.head_temp[0].data(),
                 ctx.head_temp[1].data());
    logits.push_back(ctx.logits);
  }
  return logits;
}

std::string Plan::describe() const {
  const Impl& p = *impl_;
  std::ostringstream s;
  auto lines = [&s](const Sequence& seq, const std::string& label) {
    for (size_t l = 0; l < seq.layers.size(); ++l) {
      s << label << seq.layers[l]->describe();
      if (seq.micros[l] > 0) s << "  " << std::fixed << std::setprecision(2) << seq.micros[l] << " us";
      s << "\n";
    }
  };
  for (size_t i = 0; i < p.stages.size(); ++i) {
    lines(p.stages[i], "stage " + std::to_string(i) + ": ");
    const int e = p.exit_after_stage[i];
    if (e >= 0) lines(p.heads[e], "exit " + std::to_string(e) + ":  ");
  }
  return s.str();
}

const std::string& Plan::choices() const { return impl_->choices; }
const Model& Plan::model() const { return impl_->model; }

void parse_kernels(const std::string& text, PlanOptions& options) {
  const std::string pin = "pin:";
  if (text == "measure") options.kernels = PlanOptions::Kernels::Measure;
  else if (text == "own") options.kernels = PlanOptions::Kernels::Own;
  else if (text == "dnnl") options.kernels = PlanOptions::Kernels::Dnnl;
  else if (text.compare(0, pin.size(), pin) == 0 &&
           text.find_first_not_of("od", pin.size()) == std::string::npos) {
    options.kernels = PlanOptions::Kernels::Pinned;
    options.pinned = text.substr(pin.size());
  } else {
    throw std::invalid_argument("kernels must be 'measure', 'own', 'dnnl' or 'pin:' followed by "
                                "one 'o' (own) or 'd' (oneDNN) per op, got '" + text + "'");
  }
}
int Plan::num_exits() const { return int(impl_->heads.size()); }
const std::vector<float>& Plan::thresholds() const { return impl_->thresholds; }

}  // namespace branchy
