// The plan: per op an implementation (own kernel or oneDNN, measured), layout changes where they
// cost least, and every value a place in memory, fixed once; then runs that only call layers.
//
// Memory. A stage reads the values the stage before passes on from one slot ("in") and writes the
// values it passes on into another ("out"); everything else it computes lives in the arena, at
// offsets assigned by liveness (a value's buffer is free again after its last reader), so a graph
// with skips needs no more than its widest point. An exit head reads its stage's out slot and
// writes the logits. Batched runs keep one slot per sample in flight; survivors' slots are written
// packed, stage by stage.
#include "plan.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "buffer.h"
#include "cpu.h"
#include "exit_decision.h"
#include "ops/registry.h"

#if BRANCHY_X86
#include <xmmintrin.h>
#endif

namespace branchy {

namespace {

enum Region : uint8_t { kIn = 0, kOut = 1, kArena = 2, kLogits = 3, kRegions = 4 };

struct Slot {
  uint8_t region = kArena;
  size_t offset = 0;
};

}  // namespace

// One call: a layer reading value buffers and writing one, or (no layer) a copy of `copy_floats`.
struct Step {
  std::shared_ptr<const Layer> layer;  // ops alike (op_key) share one
  std::vector<Slot> ins;
  Slot out;
  size_t copy_floats = 0;
  double micros = 0.0;  // measured time, or 0
  std::string what;     // describe() of a copy
};

// A stage or an exit head.
struct Program {
  std::vector<Step> steps;
  size_t arena = 0;  // floats of arena it needs
};

struct Plan::Impl {
  Model model;
  PlanOptions options;
  std::vector<Program> stages;
  std::vector<Program> heads;            // one per exit
  std::vector<int> exit_after_stage;     // stage -> exit index, or -1
  std::vector<float> thresholds;
  std::string choices;                   // Plan::choices()
  size_t slot = 0;                       // floats of one in/out slot (the widest stage boundary)
  size_t arena = 0;                      // floats of the arena (the widest program)
  size_t max_inputs = 1;                 // most inputs of one step
  size_t packed = 0, scratch = 0;        // floats of packed weights and per-context scratch
  bool dnnl = false;                     // some layer is oneDNN's
  Demand demand;                         // estimate_demand(model)
};

struct Context::State {
  State(const Plan::Impl& plan, int max_batch);
  // Each step's state; steps of one layer (ops alike) share it, as their runs never overlap.
  std::vector<std::vector<LayerState*>> stage_states, head_states;
  std::map<const Layer*, std::unique_ptr<LayerState>> layer_states;
  Buffer slot[2], arena;
  Buffer batch_in, batch_out;            // slots for the largest batch run so far (<= max_batch)
  int64_t batch_slots = 0;
  std::vector<float> logits;
  std::vector<const float*> ptrs;        // a step's input pointers
  std::vector<int64_t> alive, still;
  int max_batch;
  const Plan::Impl* owner;               // the plan it was made for: its buffers fit no other
};

namespace {

using Clock = std::chrono::steady_clock;

// Flush-to-zero and denormals-are-zero (MXCSR; FPCR.FZ on aarch64, which does both) on the
// calling thread for a scope (runs, and the plan's measurements, so that kernels are timed as
// they will run); the caller's setting comes back.
class FlushDenormals {
 public:
  FlushDenormals() {
#if BRANCHY_X86
    _mm_setcsr(saved_ | kBits);
#elif BRANCHY_ARM64
    set_fpcr(saved_ | kFz);
#endif
  }
  ~FlushDenormals() {
#if BRANCHY_X86
    _mm_setcsr(saved_);
#elif BRANCHY_ARM64
    set_fpcr(saved_);
#endif
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
#if BRANCHY_X86
  static constexpr unsigned kBits = 0x8040;  // FTZ (bit 15) and DAZ (bit 6)
  const unsigned saved_ = _mm_getcsr();
#elif BRANCHY_ARM64
  static constexpr uint64_t kFz = uint64_t(1) << 24;  // FZ: denormal inputs and results are 0
  static uint64_t get_fpcr() {
    uint64_t fpcr;
    asm volatile("mrs %0, fpcr" : "=r"(fpcr));
    return fpcr;
  }
  static void set_fpcr(uint64_t fpcr) { asm volatile("msr fpcr, %0" : : "r"(fpcr)); }
  const uint64_t saved_ = get_fpcr();
#endif
};

// oneDNN's (OpenMP's) thread count on the calling thread for a scope; the caller's comes back.
class DnnlThreads {
 public:
  explicit DnnlThreads(int threads) : before_(set_dnnl_threads(threads)) {}
  ~DnnlThreads() { set_dnnl_threads(before_); }
  DnnlThreads(const DnnlThreads&) = delete;
  DnnlThreads& operator=(const DnnlThreads&) = delete;

 private:
  const int before_;
};

constexpr size_t kAlignFloats = 16;  // 64 bytes
size_t aligned(size_t floats) { return (floats + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

bool spatial(const Shape& s) { return s.h * s.w > 1; }

}  // namespace

void verify_layer(const Op& op, const Layer& layer) {
  // Inputs in [-2, 2] (NCHW) for the reference, and in the layer's layout for the layer.
  std::vector<Buffer> ins, laid;
  std::vector<const float*> ref_ptrs, layer_ptrs;
  uint32_t seed = 777;
  for (const Shape& s : op.ins) {
    ins.emplace_back(size_t(s.numel()));
    for (size_t i = 0; i < ins.back().size(); ++i) {
      seed = seed * 1664525u + 1013904223u;
      ins.back().data()[i] = float(seed >> 8) / float(1u << 24) * 4.0f - 2.0f;
    }
  }
  for (size_t k = 0; k < ins.size(); ++k) {
    ref_ptrs.push_back(ins[k].data());
    if (layer.input_layout() == Layout::NHWC && spatial(op.ins[k])) {
      laid.emplace_back(ins[k].size());
      make_reorder(op.ins[k], Layout::NCHW, Layout::NHWC)->forward(ins[k].data(), laid.back().data(), nullptr);
      layer_ptrs.push_back(laid.back().data());
    } else {
      layer_ptrs.push_back(ins[k].data());
    }
  }
  const size_t n = size_t(op.out.numel());
  Buffer want(n), got(n), back(n);
  op.def->reference(op, ref_ptrs.data(), want.data());
  auto state = layer.make_state();
  layer.forward_n(layer_ptrs.data(), got.data(), state.get());
  const float* out = got.data();
  if (layer.output_layout() == Layout::NHWC && spatial(op.out)) {
    make_reorder(op.out, Layout::NHWC, Layout::NCHW)->forward(got.data(), back.data(), nullptr);
    out = back.data();
  }
  double scale = 0.0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isfinite(want.data()[i])) scale = std::max(scale, double(std::fabs(want.data()[i])));
  }
  const double tolerance = 1e-4 * scale + 1e-5;
  for (size_t i = 0; i < n; ++i) {
    const float w = want.data()[i], g = out[i];
    const bool same = std::isnan(w) ? std::isnan(g) : std::fabs(double(g) - double(w)) <= tolerance;
    if (!same) {
      std::ostringstream m;
      m << "verify: " << layer.describe() << " (" << op.name() << ") gives " << g << " at output "
        << i << " where the reference gives " << w << " (tolerance " << tolerance
        << "); this kernel changes answers: run without it (kernels=own or pin:)";
      throw std::runtime_error(m.str());
    }
  }
}

namespace {

// Median time of one forward_n() in microseconds, on pseudo-random inputs.
double measure(const Layer& layer) {
  auto state = layer.make_state();
  std::vector<Buffer> ins;
  std::vector<const float*> ptrs;
  uint32_t seed = 12345;
  for (const Shape& s : layer.in_shapes()) {
    ins.emplace_back(size_t(s.numel()));
    for (size_t i = 0; i < ins.back().size(); ++i) {
      seed = seed * 1664525u + 1013904223u;
      ins.back().data()[i] = float(seed >> 8) / float(1u << 24) * 2.0f - 1.0f;
    }
  }
  for (const Buffer& b : ins) ptrs.push_back(b.data());
  Buffer out(size_t(layer.out_shape().numel()));
  // Warm up by time, not by count: the core takes milliseconds to reach its steady clock, and a
  // layer measured cold loses to one measured warm.
  const auto warm = Clock::now();
  for (int i = 0; i < 3 || Clock::now() - warm < std::chrono::milliseconds(2); ++i) {
    layer.forward_n(ptrs.data(), out.data(), state.get());
  }
  const auto start = Clock::now();
  layer.forward_n(ptrs.data(), out.data(), state.get());
  const double once = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  const int reps = std::max(1, int(30.0 / std::max(once, 0.05)));  // rounds of about 30 us
  std::vector<double> rounds;
  for (int r = 0; r < 7; ++r) {
    const auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) layer.forward_n(ptrs.data(), out.data(), state.get());
    rounds.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / reps);
  }
  std::nth_element(rounds.begin(), rounds.begin() + 3, rounds.end());
  return rounds[3];
}

std::string shape_key(const std::vector<Shape>& shapes) {
  std::string key;
  for (const Shape& s : shapes) {
    key += std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w) + " ";
  }
  return key;
}

// What makes two ops run alike: kind, attributes, tensors (where they are in the file) and shapes.
std::string op_key(const Op& op) {
  std::ostringstream k;
  k << op.def->code << ';';
  for (int32_t v : op.ints) k << v << ',';
  k << ';';
  for (float v : op.floats) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    k << bits << ',';
  }
  k << ';';
  for (const TensorView& t : op.tensors) k << static_cast<const void*>(t.data) << ':' << t.count << ',';
  k << ';' << shape_key(op.ins) << "-> " << shape_key({op.out});
  return k.str();
}

struct Candidate {
  std::shared_ptr<const Layer> layer;
  bool dnnl;
  int own_index;  // its place in the kind's own list (-1: oneDNN)
};

// A candidate as Plan::choices() spells it: its own-list index as a digit, or 'd' for oneDNN.
char choice_of(const Candidate& c) {
  return c.dnnl ? 'd' : c.own_index < 10 ? char('0' + c.own_index) : 'o';
}

// The op as the plan runs it, and the chosen layer.
struct Placed {
  Op op;                        // inputs resolved through the folds
  std::shared_ptr<const Layer> layer;
  double micros = 0.0;
};

// Chooses an implementation for each op and where layout changes go, minimising the summed cost
// (measured, or by preference when the options force a kind of kernel). A dynamic programme over
// the ops in order whose state is the layout of every value still to be read (the live values);
// a chain has one live value, so this is the chain's programme, and a DAG's state stays small
// (the widest DenseNet block holds a few dozen). At most kBeam states are kept per step.
class Chooser {
 public:
  explicit Chooser(const PlanOptions& options) : options_(options) {}

  // `layouts` maps value ids to their layout (0 NCHW, 1 NHWC) and gains the ops' outputs.
  std::vector<Placed> choose(std::vector<Op> ops, std::map<int32_t, int>& layouts) {
    const size_t n = ops.size();
    const size_t first = next_op_;  // these ops' numbering in the whole plan (choices)
    next_op_ += n;
    // Candidates live while their ops are chosen: the losers go with this call.
    struct Forget {
      std::map<std::string, std::vector<Candidate>>& alike;
      ~Forget() { alike.clear(); }
    } forget{alike_};
    std::map<int32_t, size_t> last_use;
    for (size_t i = 0; i < n; ++i) {
      for (int32_t v : ops[i].inputs) last_use[v] = i;
    }
    if (widest_live(ops, layouts, last_use) > kMaxLive) return greedy(std::move(ops), layouts, first);
    // live[i]: values read at or after op i and defined before it, ascending.
    std::vector<std::vector<int32_t>> live(n + 1);
    for (const auto& [v, use] : last_use) {
      if (layouts.count(v)) live[0].push_back(v);
    }
    for (size_t i = 0; i < n; ++i) {
      for (int32_t v : live[i]) {
        if (last_use[v] > i) live[i + 1].push_back(v);
      }
      auto it = last_use.find(ops[i].output);
      if (it != last_use.end() && it->second > i) live[i + 1].push_back(ops[i].output);
      std::sort(live[i + 1].begin(), live[i + 1].end());
    }
    std::vector<std::vector<Candidate>> candidates;
    for (size_t i = 0; i < n; ++i) candidates.push_back(candidates_for(ops[i], first + i));

    struct Node {
      double cost = std::numeric_limits<double>::infinity();
      std::string prev;
      int candidate = -1;
    };
    // best[i]: per state (a layout character per value of live[i]) the cheapest way there.
    std::vector<std::map<std::string, Node>> best(n + 1);
    std::string start;
    for (int32_t v : live[0]) start += char('0' + layouts.at(v));
    best[0][start].cost = 0.0;
    for (size_t i = 0; i < n; ++i) {
      const Op& op = ops[i];
      for (const auto& [state, node] : best[i]) {
        for (size_t c = 0; c < candidates[i].size(); ++c) {
          const Layer& layer = *candidates[i][c].layer;
          double cost = node.cost + layer_cost(candidates[i][c], first + i);
          for (size_t k = 0; k < op.inputs.size(); ++k) {
            const Layout have = Layout(state[index_of(live[i], op.inputs[k])] - '0');
            cost += reorder_cost(op.ins[k], have, layer.input_layout());
          }
          std::string next;
          for (int32_t v : live[i + 1]) {
            next += v == op.output ? char('0' + int(layer.output_layout()))
                                   : state[index_of(live[i], v)];
          }
          Node& to = best[i + 1][next];
          if (cost < to.cost) to = Node{cost, state, int(c)};
        }
      }
      prune(best[i + 1]);
    }
    // Back from the end (no value is live after the last op: one state).
    std::vector<int> picked(n);
    std::string state = best[n].begin()->first;
    for (size_t i = n; i-- > 0;) {
      const Node& node = best[i + 1].at(state);
      picked[i] = node.candidate;
      state = node.prev;
    }
    std::vector<Placed> out;
    std::string kinds;
    for (size_t i = 0; i < n; ++i) {
      Candidate& cand = candidates[i][picked[i]];
      kinds += choice_of(cand);
      const double micros = measuring() ? layer_cost(cand, first + i) : 0.0;
      layouts[ops[i].output] = int(cand.layer->output_layout());
      out.push_back(Placed{std::move(ops[i]), cand.layer, micros});
    }
    choices_ += kinds;
    return out;
  }

  double reorder_cost(const Shape& shape, Layout from, Layout to) {
    if (from == to || !spatial(shape)) return 0.0;
    if (options_.kernels != PlanOptions::Kernels::Measure) return 1.0;
    return measured(*make_reorder(shape, from, to));
  }

  bool measuring() const { return options_.kernels == PlanOptions::Kernels::Measure; }

  // The choices made so far, one per op: the own kernel's index in its kind's list (a digit), or
  // 'd' oneDNN.
  const std::string& choices() const { return choices_; }

 private:
  static constexpr size_t kBeam = 64;
  // Beyond this many values alive at once (a DenseNet block holds a few dozen... of which few at
  // a time; a hostile file could hold thousands) the programme's states would grow with them:
  // each op then takes the layout that is cheapest given its inputs' (greedy, linear).
  static constexpr size_t kMaxLive = 24;

  // The most values alive at once between the ops (defined, and read by a later op).
  static size_t widest_live(const std::vector<Op>& ops, const std::map<int32_t, int>& layouts,
                            const std::map<int32_t, size_t>& last_use) {
    std::vector<int> delta(ops.size() + 2, 0);
    std::map<int32_t, size_t> defined;
    for (size_t i = 0; i < ops.size(); ++i) defined[ops[i].output] = i + 1;
    for (const auto& [v, use] : last_use) {
      auto d = defined.find(v);
      const size_t from = d != defined.end() ? d->second : (layouts.count(v) ? 0 : use + 1);
      if (from > use) continue;
      delta[from] += 1;
      delta[use + 1] -= 1;
    }
    size_t widest = 0;
    long live = 0;
    for (int d : delta) widest = std::max(widest, size_t(live += d));
    return widest;
  }

  std::vector<Placed> greedy(std::vector<Op> ops, std::map<int32_t, int>& layouts, size_t first) {
    std::vector<Placed> out;
    std::string kinds;
    for (size_t i = 0; i < ops.size(); ++i) {
      std::vector<Candidate> candidates = candidates_for(ops[i], first + i);
      size_t best = 0;
      double best_cost = std::numeric_limits<double>::infinity();
      for (size_t c = 0; c < candidates.size(); ++c) {
        double cost = layer_cost(candidates[c], first + i);
        for (size_t k = 0; k < ops[i].inputs.size(); ++k) {
          cost += reorder_cost(ops[i].ins[k], Layout(layouts.at(ops[i].inputs[k])),
                               candidates[c].layer->input_layout());
        }
        if (cost < best_cost) best_cost = cost, best = c;
      }
      Candidate& cand = candidates[best];
      kinds += choice_of(cand);
      const double micros = measuring() ? layer_cost(cand, first + i) : 0.0;
      layouts[ops[i].output] = int(cand.layer->output_layout());
      out.push_back(Placed{std::move(ops[i]), cand.layer, micros});
    }
    choices_ += kinds;
    return out;
  }

  static size_t index_of(const std::vector<int32_t>& values, int32_t v) {
    return size_t(std::lower_bound(values.begin(), values.end(), v) - values.begin());
  }

  template <class M>
  static void prune(M& states) {
    if (states.size() <= kBeam) return;
    std::vector<double> costs;
    for (const auto& [key, node] : states) costs.push_back(node.cost);
    std::nth_element(costs.begin(), costs.begin() + (kBeam - 1), costs.end());
    const double limit = costs[kBeam - 1];
    size_t kept = 0;
    for (auto it = states.begin(); it != states.end();) {
      if (it->second.cost > limit || kept == kBeam) {
        it = states.erase(it);
      } else {
        ++kept;
        ++it;
      }
    }
  }

  // Op `index`'s kernels. Pinned to an own kernel that exists, the own ones only (oneDNN's
  // primitives cost JIT compilation, heavy under a cache simulator); pinned to oneDNN, oneDNN's
  // only where it has any.
  std::vector<Candidate> candidates_for(const Op& op, size_t index) {
    // Ops alike (3,000 convolutions of one weight tensor) share their candidates, and so the
    // chosen layer: their weights are packed once.
    std::string key = op_key(op);
    if (options_.kernels == PlanOptions::Kernels::Pinned) key += options_.pinned.at(index);
    auto known = alike_.find(key);
    if (known != alike_.end()) return known->second;
    std::vector<Candidate> made = new_candidates(op, index);
    alike_.emplace(std::move(key), made);
    return made;
  }

  std::vector<Candidate> new_candidates(const Op& op, size_t index) {
    std::vector<Candidate> all;
    for (auto& layer : op.def->own(op)) all.push_back(Candidate{std::move(layer), false, int(all.size())});
    if (options_.kernels == PlanOptions::Kernels::Pinned) {
      const char want = options_.pinned.at(index);
      const bool own_pinned = want == 'o' ? !all.empty() : want != 'd' && size_t(want - '0') < all.size();
      if (own_pinned) return all;
      if (want == 'd') {
        std::vector<Candidate> dnnl;
        for (auto& layer : op.def->dnnl(op)) dnnl.push_back(Candidate{std::move(layer), true, -1});
        if (!dnnl.empty()) return dnnl;
      }
    }
    if (options_.kernels != PlanOptions::Kernels::Own) {
      for (auto& layer : op.def->dnnl(op)) all.push_back(Candidate{std::move(layer), true, -1});
    }
    if (all.empty()) throw std::runtime_error(std::string("no kernel in this build runs ") + op.name());
    return all;
  }

  double layer_cost(const Candidate& c, size_t op) {
    switch (options_.kernels) {
      // Unmeasured: any SIMD kernel (with two layout changes) before plain loops.
      case PlanOptions::Kernels::Own: return c.layer->portable() ? 10.0 : 1.0;
      case PlanOptions::Kernels::Dnnl: return c.dnnl ? 1.0 : (c.layer->portable() ? 1010.0 : 1000.0);
      case PlanOptions::Kernels::Pinned: {
        // A digit or 'd' names the very kernel (so the layouts follow); 'o' any own one.
        const char want = options_.pinned.at(op);
        const bool match = want == 'o' ? !c.dnnl : want == choice_of(c);
        return (match ? 1.0 : 1000.0) + (c.layer->portable() ? 10.0 : 0.0);
      }
      case PlanOptions::Kernels::Measure: break;
    }
    return measured(*c.layer);
  }

  // Identical layers (ResNets repeat their blocks) are measured once. BRANCHY_PLAN_TRACE set in
  // the environment prints every candidate's time to stderr (for kernel work).
  double measured(const Layer& layer) {
    const std::string key = layer.describe() + " " + shape_key(layer.in_shapes()) + "-> " +
                            shape_key({layer.out_shape()});
    auto it = measured_.find(key);
    if (it == measured_.end()) {
      it = measured_.emplace(key, measure(layer)).first;
      if (std::getenv("BRANCHY_PLAN_TRACE")) std::fprintf(stderr, "plan: %9.2f us  %s\n", it->second, key.c_str());
    }
    return it->second;
  }

  const PlanOptions& options_;
  std::map<std::string, double> measured_;
  std::map<std::string, std::vector<Candidate>> alike_;  // candidates_for's, during one choose()
  size_t next_op_ = 0;
  std::string choices_;
};

// The model's ops as the plan runs them: a flatten read only by linear ops (which read any
// [C, H, W] in flattening order) and not passed on is dropped, its readers reading its input.
std::vector<Op> folded(const Model& m, int32_t first, int32_t count, const std::vector<bool>& kept_values,
                       const std::vector<bool>& read_by_other_than_linear, std::vector<int32_t>& alias) {
  std::vector<Op> out;
  for (int32_t i = first; i < first + count; ++i) {
    Op op = m.ops[i];
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      op.inputs[k] = alias[op.inputs[k]];
      op.ins[k] = m.values[op.inputs[k]];
    }
    op.in = op.ins[0];
    if (std::string(op.name()) == "flatten" && !kept_values[op.output] &&
        !read_by_other_than_linear[op.output]) {
      alias[op.output] = op.inputs[0];
      continue;
    }
    out.push_back(std::move(op));
  }
  return out;
}

// Assigns the arena values of a program offsets by liveness: largest first, each at the lowest
// offset that overlaps no value alive at the same time. Returns the arena's size.
struct Interval {
  int32_t value;
  size_t floats, from, to;  // steps [from, to]
  size_t offset = 0;
};

size_t assign_offsets(std::vector<Interval>& values) {
  std::vector<Interval*> order;
  for (auto& v : values) order.push_back(&v);
  std::stable_sort(order.begin(), order.end(),
                   [](const Interval* a, const Interval* b) { return a->floats > b->floats; });
  std::vector<const Interval*> placed;
  size_t size = 0;
  for (Interval* v : order) {
    std::vector<std::pair<size_t, size_t>> busy;
    for (const Interval* p : placed) {
      if (p->from <= v->to && v->from <= p->to) busy.emplace_back(p->offset, p->offset + aligned(p->floats));
    }
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;
    for (const auto& [lo, hi] : busy) {
      if (offset + aligned(v->floats) <= lo) break;
      offset = std::max(offset, hi);
    }
    v->offset = offset;
    size = std::max(size, offset + aligned(v->floats));
    placed.push_back(v);
  }
  return size;
}

// Builds a program from placed ops: layout changes before the ops that need them, a copy for each
// value passed on unchanged, and every value's slot. `in` gives the values read from the in slot
// (with offsets), `out` those written to the out (or logits) region.
Program build(std::vector<Placed> placed, const std::map<int32_t, size_t>& in,
              const std::map<int32_t, size_t>& out, uint8_t out_region, const Model& m,
              const std::map<int32_t, int>& layouts, Chooser& chooser) {
  Program program;
  struct Pending {
    Step step;
    std::vector<int32_t> ins;  // value ids (temps: negative)
    int32_t out;
  };
  std::vector<Pending> pending;
  std::map<int32_t, Shape> temps;
  int32_t next_temp = -1;
  for (Placed& p : placed) {
    Pending step;
    for (size_t k = 0; k < p.op.inputs.size(); ++k) {
      const int32_t v = p.op.inputs[k];
      const Layout have = Layout(layouts.at(v)), want = p.layer->input_layout();
      if (have != want && spatial(p.op.ins[k])) {
        Pending reorder;
        reorder.step.layer = make_reorder(p.op.ins[k], have, want);
        if (chooser.measuring()) reorder.step.micros = chooser.reorder_cost(p.op.ins[k], have, want);
        reorder.ins = {v};
        reorder.out = next_temp;
        temps[next_temp] = p.op.ins[k];
        step.ins.push_back(next_temp--);
        pending.push_back(std::move(reorder));
      } else {
        step.ins.push_back(v);
      }
    }
    step.out = p.op.output;
    step.step.layer = p.layer;
    step.step.micros = p.micros;
    pending.push_back(std::move(step));
  }
  // Values passed on unchanged (read from the in slot, written to the out region).
  for (const auto& [v, offset] : out) {
    if (!in.count(v)) continue;
    Pending copy;
    copy.ins = {v};
    copy.out = v;
    copy.step.copy_floats = size_t(m.values[v].numel());
    copy.step.what = "pass value " + std::to_string(v) + " on [copy]";
    pending.push_back(std::move(copy));
  }
  // Liveness of the arena values.
  std::map<int32_t, Interval> arena;
  for (size_t s = 0; s < pending.size(); ++s) {
    const int32_t o = pending[s].out;
    if (!out.count(o) && !in.count(o)) {
      const Shape shape = o < 0 ? temps.at(o) : m.values[o];
      arena[o] = Interval{o, size_t(shape.numel()), s, s};
    }
    for (int32_t v : pending[s].ins) {
      auto it = arena.find(v);
      if (it != arena.end()) it->second.to = s;
    }
  }
  std::vector<Interval> intervals;
  for (auto& [v, interval] : arena) intervals.push_back(interval);
  program.arena = assign_offsets(intervals);
  std::map<int32_t, size_t> arena_offset;
  for (const Interval& i : intervals) arena_offset[i.value] = i.offset;
  for (size_t s = 0; s < pending.size(); ++s) {
    Pending& p = pending[s];
    const bool copy = !p.step.layer;
    for (int32_t v : p.ins) {
      if (in.count(v)) {
        p.step.ins.push_back(Slot{kIn, in.at(v)});
      } else if (out.count(v)) {
        p.step.ins.push_back(Slot{out_region, out.at(v)});
      } else {
        p.step.ins.push_back(Slot{kArena, arena_offset.at(v)});
      }
    }
    if (out.count(p.out) && (copy || !in.count(p.out))) {
      p.step.out = Slot{out_region, out.at(p.out)};
    } else {
      p.step.out = Slot{kArena, arena_offset.at(p.out)};
    }
    program.steps.push_back(std::move(p.step));
  }
  return program;
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

Demand estimate_demand(const Model& model) {
  Demand d;
  d.weight_bytes = model.weight_count() * int64_t(sizeof(float));
  for (const Shape& v : model.values) d.activation_bytes += v.numel() * int64_t(sizeof(float));
  std::set<std::string> alike;
  for (const Op& op : model.ops) {
    // While the plan chooses, every candidate kernel of an op holds its own packing: the GEMM,
    // oneDNN's reorder and, for a 3x3 stride-1 convolution, Winograd's 16/9 (and its transform
    // on the way): up to 4 copies of the weights, 3 elsewhere. Ops alike share theirs (a
    // linear layer whose input flatten is folded for one reader and kept for another is packed
    // twice: a bounded miss, linear weights only).
    const bool winograd = op.kernel_h == 3 && op.kernel_w == 3 && op.stride_h == 1 && op.stride_w == 1;
    int64_t tensor_bytes = 0;
    for (const TensorView& t : op.tensors) tensor_bytes += t.count * int64_t(sizeof(float));
    if (tensor_bytes > 0 && alike.insert(op_key(op)).second) d.packed_bytes += tensor_bytes * (winograd ? 4 : 3);
    const double out = double(op.out.numel());
    double per_output = 1.0;  // an element op
    if (!op.tensors.empty() && op.out.c > 0) {
      // Weighted: a convolution's or linear layer's weights per output channel are the
      // multiply-adds of one output (res_block: both convolutions', weights at 0 and 2).
      const double weights = double(op.tensors[0].count) + (op.tensors.size() > 2 ? double(op.tensors[2].count) : 0.0);
      per_output = std::max(1.0, weights / op.out.c);
    } else if (op.kernel_h > 0 && op.kernel_w > 0) {
      per_output = double(op.kernel_h) * op.kernel_w;  // a pool's window
    } else {
      double read = 0;  // a reduction (mean) or a per-element op reads all of its inputs
      for (const Shape& in : op.ins) read += double(in.numel());
      per_output = std::max(1.0, read / std::max(1.0, out));
    }
    d.flops += 2.0 * out * per_output;
  }
  return d;
}

namespace {

std::string gib(double bytes) {
  std::ostringstream s;
  s << std::setprecision(3) << bytes / double(int64_t(1) << 30) << " GiB";
  return s.str();
}

// Refuses a model over the options' limits before anything is allocated, packed or timed.
Demand check_demand(const Model& model, const PlanOptions& options) {
  const Demand d = estimate_demand(model);
  if (d.memory_bytes() > options.max_memory) {
    throw std::invalid_argument(
        "the model needs about " + gib(double(d.memory_bytes())) + " (activations " +
        gib(double(d.activation_bytes)) + ", weights " + gib(double(d.weight_bytes)) +
        " as loaded and " + gib(double(d.packed_bytes)) + " as packed), over the limit of " +
        gib(double(options.max_memory)) +
        " (max_memory)");
  }
  if (!(d.flops <= options.max_flops)) {
    std::ostringstream m;
    m << "a sample costs about " << std::setprecision(3) << d.flops / 1e9 << " GFLOP, over the limit of "
      << options.max_flops / 1e9 << " GFLOP (max_flops)";
    throw std::invalid_argument(m.str());
  }
  return d;
}

}  // namespace

Plan::Plan(Model model, PlanOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& p = *impl_;
  p.model = std::move(model);
  p.options = std::move(options);
  const Model& m = p.model;
  if (p.options.threads < 1) throw std::invalid_argument("threads must be >= 1");
  p.thresholds = p.options.thresholds.empty() ? m.thresholds : p.options.thresholds;
  check_thresholds(p.thresholds, m.exits.size() - 1);
  p.demand = check_demand(m, p.options);
  const DnnlThreads threads(p.options.threads);  // the measurements run as runs will
  const FlushDenormals flush;

  p.exit_after_stage.assign(m.stages.size(), -1);
  for (size_t e = 0; e < m.exits.size(); ++e) p.exit_after_stage[m.exits[e].stage] = int(e);

  // Values that must exist as themselves: passed on by a stage, read by an exit, logits.
  std::vector<bool> kept(m.values.size(), false);
  kept[0] = true;
  for (const Stage& s : m.stages) {
    for (int32_t v : s.outputs) kept[v] = true;
  }
  for (const Exit& e : m.exits) kept[e.input] = kept[e.logits] = true;
  std::vector<int32_t> alias(m.values.size());
  for (size_t v = 0; v < alias.size(); ++v) alias[v] = int32_t(v);
  std::vector<bool> other_reader(m.values.size(), false);
  for (const Op& op : m.ops) {
    if (std::string(op.name()) == "linear") continue;
    for (int32_t v : op.inputs) other_reader[v] = true;
  }

  // The trunk as one list, so layout changes are placed where they cost least; then split back
  // into stages.
  std::vector<std::vector<Op>> stage_ops, head_ops;
  size_t count = 0;
  for (const Stage& s : m.stages) {
    stage_ops.push_back(folded(m, s.first_op, s.num_ops, kept, other_reader, alias));
    count += stage_ops.back().size();
  }
  for (const Exit& e : m.exits) {
    head_ops.push_back(folded(m, e.first_op, e.num_ops, kept, other_reader, alias));
    count += head_ops.back().size();
  }
  if (p.options.kernels == PlanOptions::Kernels::Pinned && p.options.pinned.size() != count) {
    throw std::invalid_argument("kernels pin: this model has " + std::to_string(count) +
                                " ops, so 'pin:' takes " + std::to_string(count) +
                                " choices (a digit, 'o' or 'd'), got " + std::to_string(p.options.pinned.size()));
  }

  Chooser chooser(p.options);
  std::map<int32_t, int> layouts{{0, int(Layout::NCHW)}};
  std::vector<Op> trunk;
  std::vector<size_t> stage_end;
  for (auto& ops : stage_ops) {
    for (Op& op : ops) trunk.push_back(std::move(op));
    stage_end.push_back(trunk.size());
  }
  std::vector<Placed> placed = chooser.choose(std::move(trunk), layouts);
  auto verify = [&](const std::vector<Placed>& chosen) {
    if (!p.options.verify) return;
    for (const Placed& one : chosen) verify_layer(one.op, *one.layer);
  };
  verify(placed);

  // Where each stage's passed-on values sit in its slot.
  std::vector<std::map<int32_t, size_t>> carry(m.stages.size());
  p.slot = aligned(size_t(m.input.numel()));
  for (size_t s = 0; s < m.stages.size(); ++s) {
    size_t at = 0;
    for (int32_t v : m.stages[s].outputs) {
      carry[s][v] = at;
      at += aligned(size_t(m.values[v].numel()));
    }
    p.slot = std::max(p.slot, at);
  }
  size_t begin = 0;
  for (size_t s = 0; s < m.stages.size(); ++s) {
    std::vector<Placed> part(std::make_move_iterator(placed.begin() + begin),
                             std::make_move_iterator(placed.begin() + stage_end[s]));
    begin = stage_end[s];
    const std::map<int32_t, size_t> in = s == 0 ? std::map<int32_t, size_t>{{0, 0}} : carry[s - 1];
    p.stages.push_back(build(std::move(part), in, carry[s], kOut, m, layouts, chooser));
  }
  for (size_t e = 0; e < m.exits.size(); ++e) {
    const Exit& exit = m.exits[e];
    std::map<int32_t, int> head_layouts{{exit.input, layouts.at(exit.input)}};
    std::vector<Placed> head = chooser.choose(std::move(head_ops[e]), head_layouts);
    verify(head);
    const std::map<int32_t, size_t> in{{exit.input, carry[exit.stage].at(exit.input)}};
    p.heads.push_back(build(std::move(head), in, {{exit.logits, 0}}, kLogits, m, head_layouts, chooser));
  }

  p.choices = chooser.choices();
  p.dnnl = p.choices.find('d') != std::string::npos;
  std::set<const Layer*> counted;  // a layer shared by ops alike: one packing, one state
  for (const auto* programs : {&p.stages, &p.heads}) {
    for (const Program& program : *programs) {
      p.arena = std::max(p.arena, program.arena);
      for (const Step& step : program.steps) {
        p.max_inputs = std::max(p.max_inputs, step.ins.size());
        if (step.layer) {
          if (counted.insert(step.layer.get()).second) {
            p.packed += step.layer->packed_floats();
            p.scratch += step.layer->scratch_floats();
          }
        }
      }
    }
  }
  // What the plan holds and what each context will: refused before any context is made.
  const double bytes = double(m.weight_count() + p.packed + p.arena + 2 * p.slot + p.scratch) * sizeof(float);
  if (bytes > double(p.options.max_memory)) {
    throw std::invalid_argument("the plan needs about " + gib(bytes) + " (weights, packed weights, and a " +
                                "context's activations and scratch), over the limit of " +
                                gib(double(p.options.max_memory)) + " (max_memory)");
  }
}

Plan::~Plan() = default;
Plan::Plan(Plan&&) noexcept = default;

Context::Context(std::unique_ptr<State> state) : state_(std::move(state)) {}
Context::~Context() = default;
size_t Context::bytes() const {
  const State& s = *state_;
  return (s.slot[0].size() + s.slot[1].size() + s.arena.size() + s.batch_in.size() + s.batch_out.size()) *
         sizeof(float);
}

Context::State::State(const Plan::Impl& plan, int max_batch)
    : logits(plan.model.num_classes), ptrs(plan.max_inputs), max_batch(max_batch), owner(&plan) {
  if (max_batch < 1) throw std::invalid_argument("max_batch must be >= 1");
  auto states = [&](const Program& program) {
    std::vector<LayerState*> out;
    for (const Step& step : program.steps) {
      if (!step.layer) {
        out.push_back(nullptr);
        continue;
      }
      auto [it, made] = layer_states.try_emplace(step.layer.get());
      if (made) it->second = step.layer->make_state();
      out.push_back(it->second.get());
    }
    return out;
  };
  for (const auto& s : plan.stages) stage_states.push_back(states(s));
  for (const auto& h : plan.heads) head_states.push_back(states(h));
  slot[0] = Buffer(plan.slot);
  slot[1] = Buffer(plan.slot);
  arena = Buffer(plan.arena);
  alive.reserve(max_batch);
  still.reserve(max_batch);
}

std::unique_ptr<Context> Plan::make_context(int max_batch) const {
  return std::unique_ptr<Context>(new Context(std::make_unique<Context::State>(*impl_, max_batch)));
}

namespace {

// Runs a program with its regions at `base`.
void run_program(const Program& program, const std::vector<LayerState*>& states,
                 float* const* base, const float** ptrs) {
  for (size_t i = 0; i < program.steps.size(); ++i) {
    const Step& step = program.steps[i];
    float* out = base[step.out.region] + step.out.offset;
    if (!step.layer) {
      std::memcpy(out, base[step.ins[0].region] + step.ins[0].offset, step.copy_floats * sizeof(float));
      continue;
    }
    for (size_t k = 0; k < step.ins.size(); ++k) ptrs[k] = base[step.ins[k].region] + step.ins[k].offset;
    step.layer->forward_n(ptrs, out, states[i]);
  }
}

// Runs stage s from `in` (its in slot; the sample for stage 0) into `out`.
void run_stage(const Plan::Impl& p, Context::State& ctx, size_t s, const float* in, float* out) {
  float* base[kRegions] = {const_cast<float*>(in), out, ctx.arena.data(), ctx.logits.data()};
  run_program(p.stages[s], ctx.stage_states[s], base, ctx.ptrs.data());
}

// Runs exit e's head on its stage's out slot, leaving the logits in ctx.logits.
void run_head(const Plan::Impl& p, Context::State& ctx, int e, const float* stage_out) {
  float* base[kRegions] = {const_cast<float*>(stage_out), nullptr, ctx.arena.data(), ctx.logits.data()};
  run_program(p.heads[e], ctx.head_states[e], base, ctx.ptrs.data());
}

// Runs exit e's head and decides: true if the sample leaves there.
bool decide(const Plan::Impl& p, Context::State& ctx, int e, const float* stage_out, Result& result) {
  run_head(p, ctx, e, stage_out);
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

// A probe that does nothing, inlined away: run() pays nothing for instrumentation.
struct NoProbe {
  void begin(Probe::Part, int) {}
  void end(Probe::Part, int) {}
};

// What a run sets on the calling thread, for its duration (the caller's settings come back after):
// - oneDNN's thread count, which is OpenMP's, per thread (a plan built on one thread and run from a
//   pool's would otherwise run its layers on every core);
// - flush-to-zero and denormals-are-zero (MXCSR): a denormal input made a 32->32 3x3 convolution
//   117x slower. The caller's MXCSR comes back when the run ends, however it ends. oneDNN's own
//   worker threads (threads > 1) keep theirs.
class RunScope {
 public:
  explicit RunScope(const Plan::Impl& p) : threads_before_(p.dnnl ? set_dnnl_threads(p.options.threads) : 0) {}
  ~RunScope() {
    if (threads_before_ > 0) set_dnnl_threads(threads_before_);
  }
  RunScope(const RunScope&) = delete;
  RunScope& operator=(const RunScope&) = delete;

 private:
  const int threads_before_;  // 0: oneDNN's count untouched
  const FlushDenormals flush_;
};

// `check`: the input check, unless the input is known finite (prepared from pixels).
template <class P>
Result run_with(const Plan::Impl& p, Context::State& ctx, const float* input, P& probe, bool check = true) {
  if (check && p.options.check_inputs) check_finite_input(input, 1, p.model.input.numel());
  const RunScope scope(p);
  Result result;
  const float* x = input;
  for (size_t s = 0; s < p.stages.size(); ++s) {
    float* out = ctx.slot[s % 2].data();
    probe.begin(Probe::Part::Stage, int(s));
    run_stage(p, ctx, s, x, out);
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

// A batch's samples: float32 [batch, C, H, W] (floats), or raw pixels prepared a chunk at a time
// into the context's batch slots.
struct Samples {
  const float* floats;
  const uint8_t* pixels;
  PixelOrder order;
};

void run_batch_from(const Plan::Impl& p, Context::State& ctx, int64_t batch, Result* results,
                    const Samples& samples) {
  const RunScope scope(p);
  const size_t in_size = size_t(p.model.input.numel()), slot = p.slot;
  // The batch slots grow with the batches actually run (not max_batch up front): the first batch
  // of a larger size allocates, later ones of that size or smaller do not.
  const int64_t wanted = std::min<int64_t>(ctx.max_batch, batch);
  if (ctx.batch_slots < wanted) {
    ctx.batch_in = Buffer(slot * size_t(wanted));
    ctx.batch_out = Buffer(slot * size_t(wanted));
    ctx.batch_slots = wanted;
  }
  for (int64_t first = 0; first < batch; first += ctx.max_batch) {
    const int64_t n = std::min<int64_t>(ctx.max_batch, batch - first);
    // alive[j]: the sample whose values are in slot j. Slots stay put; the list is compacted.
    ctx.alive.clear();
    for (int64_t i = 0; i < n; ++i) ctx.alive.push_back(first + i);
    float* cur = ctx.batch_in.data();
    float* next = ctx.batch_out.data();
    if (samples.pixels) {
      for (int64_t j = 0; j < n; ++j) {
        prepare_pixels(p.model.prep, p.model.input, samples.pixels + (first + j) * in_size, samples.order,
                       cur + j * slot);
      }
    }
    for (size_t s = 0; s < p.stages.size() && !ctx.alive.empty(); ++s) {
      const int e = p.exit_after_stage[s];
      ctx.still.clear();
      for (size_t j = 0; j < ctx.alive.size(); ++j) {
        const int64_t i = ctx.alive[j];
        const float* src = s > 0 || samples.pixels ? cur + j * slot : samples.floats + i * in_size;
        float* dst = next + ctx.still.size() * slot;
        run_stage(p, ctx, s, src, dst);
        if (e >= 0 && decide(p, ctx, e, dst, results[i])) continue;
        ctx.still.push_back(i);  // survives: its values stay in slot still.size() - 1
      }
      std::swap(ctx.alive, ctx.still);
      std::swap(cur, next);
    }
  }
}


}  // namespace

namespace {

// The context's state, if `p` made it: another plan's buffers are sized for its own layers.
Context::State& own_state(const Plan::Impl& p, Context& context) {
  Context::State& state = context.state();
  if (state.owner != &p) {
    throw std::invalid_argument("this Context was made by another Plan; make one with this plan's "
                                "make_context()");
  }
  return state;
}

}  // namespace

void check_input_prep(const Model& m) {
  if (!m.prep.recorded()) {
    throw std::invalid_argument(
        "this model file records no input preparation, so the engine cannot turn raw pixels into "
        "its input: re-export it (branchy export records the training normalisation; write_model "
        "takes input_prep=), or pass float32 input prepared as in training");
  }
}

void prepare_pixels(const InputPrep& prep, const Shape& shape, const uint8_t* pixels, PixelOrder order,
                    float* out) {
  const size_t plane = size_t(shape.h) * shape.w, channels = size_t(shape.c);
  for (size_t c = 0; c < channels; ++c) {
    // The 256 values a pixel of this channel can become, each computed as PyTorch does.
    float value[256];
    for (int v = 0; v < 256; ++v) value[v] = (float(v) / prep.pixel_max - prep.mean[c]) / prep.std[c];
    float* dst = out + c * plane;
    if (order == PixelOrder::CHW) {
      const uint8_t* src = pixels + c * plane;
      for (size_t i = 0; i < plane; ++i) dst[i] = value[src[i]];
    } else {
      for (size_t i = 0; i < plane; ++i) dst[i] = value[pixels[i * channels + c]];
    }
  }
}

void check_finite_input(const float* x, int64_t samples, int64_t per_sample) {
  for (int64_t s = 0; s < samples; ++s) {
    const float* v = x + s * per_sample;
    // A float is NaN or infinite when its exponent bits are all set. No early exit inside a
    // sample, so the compiler vectorises the scan (tens of ns for a 28x28 image).
    uint32_t special = 0;
    for (int64_t i = 0; i < per_sample; ++i) {
      uint32_t bits;
      std::memcpy(&bits, v + i, sizeof bits);
      special |= uint32_t((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (!special) continue;
    for (int64_t i = 0; i < per_sample; ++i) {
      if (std::isfinite(v[i])) continue;
      throw std::invalid_argument((samples == 1 ? std::string("input") : "input sample " + std::to_string(s)) +
                                  " contains " +
                                  (std::isnan(v[i]) ? "NaN" : v[i] > 0 ? "+inf" : "-inf") +
                                  " at element " + std::to_string(i) +
                                  " (inputs must be finite; a caller that guarantees it can skip the scan: Engine(check_inputs=False), "
                                  "PlanOptions::check_inputs = false, branchy_options_set_check_inputs(options, 0), "
                                  "branchy-run --no-input-check)");
    }
  }
}

Result Plan::run(Context& context, const float* input) const {
  NoProbe none;
  return run_with(*impl_, own_state(*impl_, context), input, none);
}

Result Plan::run_instrumented(Context& context, const float* input, Probe& probe) const {
  return run_with(*impl_, own_state(*impl_, context), input, probe);
}

void Plan::run_batch(Context& context, const float* inputs, int64_t batch, Result* results) const {
  const Impl& p = *impl_;
  Context::State& ctx = own_state(p, context);
  if (p.options.check_inputs) check_finite_input(inputs, batch, p.model.input.numel());
  run_batch_from(p, ctx, batch, results, Samples{inputs, nullptr, PixelOrder::CHW});
}

void Plan::run_batch_pixels(Context& context, const uint8_t* pixels, int64_t batch, PixelOrder order,
                            Result* results) const {
  const Impl& p = *impl_;
  Context::State& ctx = own_state(p, context);
  check_input_prep(p.model);
  run_batch_from(p, ctx, batch, results, Samples{nullptr, pixels, order});
}

Result Plan::run_pixels(Context& context, const uint8_t* pixels, PixelOrder order) const {
  const Impl& p = *impl_;
  Context::State& ctx = own_state(p, context);
  check_input_prep(p.model);
  // Into the second boundary slot, which stage 0 neither reads nor writes (it writes the first).
  prepare_pixels(p.model.prep, p.model.input, pixels, order, ctx.slot[1].data());
  NoProbe none;
  return run_with(p, ctx, ctx.slot[1].data(), none, false);
}

std::vector<std::vector<float>> Plan::all_exit_logits(Context& context, const float* input) const {
  const Impl& p = *impl_;
  Context::State& ctx = own_state(p, context);
  if (p.options.check_inputs) check_finite_input(input, 1, p.model.input.numel());
  const RunScope scope(p);
  std::vector<std::vector<float>> logits;
  const float* x = input;
  for (size_t s = 0; s < p.stages.size(); ++s) {
    float* out = ctx.slot[s % 2].data();
    run_stage(p, ctx, s, x, out);
    x = out;
    const int e = p.exit_after_stage[s];
    if (e < 0) continue;
    run_head(p, ctx, e, x);
    logits.push_back(ctx.logits);
  }
  return logits;
}

Footprint Plan::footprint(int max_batch) const {
  const Impl& p = *impl_;
  Footprint f;
  f.weight_bytes = size_t(p.model.weight_count()) * sizeof(float);
  f.packed_bytes = p.packed * sizeof(float);
  f.arena_bytes = p.arena * sizeof(float);
  f.slot_bytes = p.slot * sizeof(float);
  f.batch_bytes = 2 * p.slot * size_t(std::max(max_batch, 1)) * sizeof(float);
  f.scratch_bytes = p.scratch * sizeof(float);
  return f;
}

std::string Plan::describe() const {
  const Impl& p = *impl_;
  std::ostringstream s;
  auto lines = [&s](const Program& program, const std::string& label) {
    for (const Step& step : program.steps) {
      s << label << (step.layer ? step.layer->describe() : step.what);
      if (step.micros > 0) s << "  " << std::fixed << std::setprecision(2) << step.micros << " us";
      s << "\n";
    }
  };
  for (size_t i = 0; i < p.stages.size(); ++i) {
    lines(p.stages[i], "stage " + std::to_string(i + 1) + ": ");
    const int e = p.exit_after_stage[i];
    if (e >= 0) lines(p.heads[e], "exit " + std::to_string(e + 1) + ":  ");
  }
  const Footprint f = footprint(64);
  auto kib = [](size_t bytes) {
    std::ostringstream k;
    k << std::fixed << std::setprecision(1) << double(bytes) / 1024.0 << " KiB";
    return k.str();
  };
  s << "memory: weights " << kib(f.weight_bytes) << " (file) + " << kib(f.packed_bytes)
    << " packed; activations: arena " << kib(f.arena_bytes) << " + 2 slots of "
    << kib(f.slot_bytes) << " (batch: 2 x 64 slots, " << kib(f.batch_bytes)
    << "); scratch " << kib(f.scratch_bytes) << " per context\n";
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
           text.find_first_not_of("od0123456789", pin.size()) == std::string::npos) {
    options.kernels = PlanOptions::Kernels::Pinned;
    options.pinned = text.substr(pin.size());
  } else {
    throw std::invalid_argument("kernels must be 'measure', 'own', 'dnnl' or 'pin:' followed by "
                                "one choice per op (a digit: that own kernel; 'o': any own kernel; "
                                "'d': oneDNN), got '" + text + "'");
  }
}
int Plan::num_exits() const { return int(impl_->heads.size()); }
const std::vector<float>& Plan::thresholds() const { return impl_->thresholds; }
bool Plan::checks_inputs() const { return impl_->options.check_inputs; }
const Demand& Plan::demand() const { return impl_->demand; }

}  // namespace branchy
