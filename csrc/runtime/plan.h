// The CPU runtime: a Plan is built once from a model (weights packed, implementations chosen,
// buffer sizes fixed) and shared read-only by any number of threads; each thread runs it with its
// own Context, which holds every buffer a run needs, so a run allocates nothing and takes no lock.
//
//   branchy::Plan plan(branchy::load_model("model.branchy"));
//   auto context = plan.make_context();
//   branchy::Result r = plan.run(*context, pixels);   // pixels: float [C, H, W]
//   // r.prediction, r.exit (0-based), r.score (entropy in nats, or max probability)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layer.h"
#include "model_file.h"
#include "visibility.h"

namespace branchy {

struct PlanOptions {
  // measure: per layer, whichever implementation (own kernels or oneDNN, with the layout changes
  // it implies) is fastest on this machine; own / dnnl: force one (oneDNN where it has the op).
  // pinned: per op, the kernel named in `pinned` (the choices another plan made, as
  // Plan::choices() spells them), so a plan can be rebuilt elsewhere (a simulator) unmeasured.
  enum class Kernels { Measure, Own, Dnnl, Pinned };
  Kernels kernels = Kernels::Measure;
  std::string pinned;              // Pinned: per op, trunk then heads: a digit (that own kernel of
                                   // the kind's list), 'o' (any own kernel) or 'd' (oneDNN)
  int threads = 1;                 // threads a run may use (oneDNN layers)
  std::vector<float> thresholds;   // replace the file's (one per early exit); empty: keep them
  // Resource limits, checked before anything is allocated, packed or timed (std::invalid_argument
  // naming the figure and the limit): the plan's memory (weights as loaded and packed, every
  // activation, a context's boundary slots) and the work of one sample (multiply-adds, window
  // reads and element ops, counted as FLOPs). The defaults admit every real network: ResNet-50 at
  // 224x224 needs about 0.3 GiB and 8 GFLOP.
  int64_t max_memory = int64_t(4) << 30;  // bytes
  double max_flops = 1e12;                // per sample
  bool verify = false;             // run each chosen kernel once against its op's reference at
                                   // build; refuse the plan (std::runtime_error) on a mismatch
  bool check_inputs = true;        // refuse inputs holding NaN or +-inf (std::invalid_argument
                                   // naming the sample and element); false skips the scan
};


// Throws std::invalid_argument naming the first sample and element of x [samples, per_sample]
// that is NaN or infinite ("input sample 2 contains NaN at element 17"; one sample: "input
// contains ..."); the kernels would carry
// it into a plausible-looking answer, or into NaN, depending on which kernel ran.
BRANCHY_API void check_finite_input(const float* x, int64_t samples, int64_t per_sample);

// Sets options.kernels (and pinned) from the tools' spelling: "measure", "own", "dnnl" or
// "pin:" followed by Plan::choices(); std::invalid_argument otherwise.
BRANCHY_API void parse_kernels(const std::string& text, PlanOptions& options);

// Called around each stage and each exit head (with its decision) of an instrumented run: the
// profiler's hook (timers, hardware counters). `index` is the stage or exit index.
class BRANCHY_API Probe {
 public:
  enum class Part { Stage, Exit };
  virtual ~Probe() = default;
  virtual void begin(Part part, int index) = 0;
  virtual void end(Part part, int index) = 0;
};

struct Result {
  int64_t prediction = -1;  // class index
  int32_t exit = -1;        // 0-based exit the sample left at
  float score = 0.0f;       // entropy (nats) or max probability there, by the model's criterion
};

class Plan;

// How raw 8-bit pixels of one image lie in memory: planes [C, H, W], or pixels [H, W, C] (what
// cameras and image files give).
enum class PixelOrder { CHW, HWC };

// One image of raw 8-bit pixels as the float32 [C, H, W] the network takes, as training prepared
// it (the model file's InputPrep): x / pixel_max, then (x - mean[c]) / std[c], in float32 as
// PyTorch computes it, so the floats are the very ones training's preparation gave.
BRANCHY_API void prepare_pixels(const InputPrep& prep, const Shape& shape, const uint8_t* pixels,
                                PixelOrder order, float* out);
// Throws std::invalid_argument, saying what to do, if the model records no input preparation.
BRANCHY_API void check_input_prep(const Model& model);

// What a plan keeps in memory (bytes): the model's weights as the file holds them, weights packed
// for the kernels, the activation arena (values inside a stage or head, placed by liveness), one
// stage-boundary slot (run() holds two; a batch of n holds 2n) and the layers' scratch.
struct Footprint {
  size_t weight_bytes = 0, packed_bytes = 0, arena_bytes = 0, slot_bytes = 0, batch_bytes = 0,
         scratch_bytes = 0;
};

// Everything one thread needs to run a plan: activation buffers, layer scratch, library handles.
// Made by Plan::make_context; used by one thread at a time.
// What a model asks of a plan, estimated from its shapes and tensors alone (the limits' figures).
struct Demand {
  double flops = 0;                 // per sample: 2 x multiply-adds, window reads, element ops
  int64_t weight_bytes = 0;         // the tensors as loaded (each stored once)
  int64_t packed_bytes = 0;         // at most: every candidate kernel of every op packs its own
                                    // copy while the plan chooses (3-4x an op's tensors)
  int64_t activation_bytes = 0;     // every value of the graph (the arena holds fewer at once)
  int64_t memory_bytes() const { return weight_bytes + packed_bytes + activation_bytes; }
};
BRANCHY_API Demand estimate_demand(const Model& model);

class BRANCHY_API Context {
 public:
  ~Context();
  struct State;  // opaque: plan.cpp
  State& state() { return *state_; }
  // Bytes of its activation buffers now (arena, boundary slots, batch slots; not layer scratch):
  // the batch slots grow with the largest batch run so far, up to max_batch.
  size_t bytes() const;

 private:
  explicit Context(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
  friend class Plan;
};

class BRANCHY_API Plan {
 public:
  explicit Plan(Model model, PlanOptions options = PlanOptions());
  ~Plan();
  Plan(Plan&&) noexcept;

  // Per-thread state for run() and run_batch(); `max_batch` samples in flight at once.
  std::unique_ptr<Context> make_context(int max_batch = 64) const;

  // One sample, float32 [C, H, W] (NCHW): runs stage by stage and stops at the first exit whose
  // rule lets it leave; the last exit takes it otherwise.
  Result run(Context& context, const float* input) const;

  // run() with probe->begin/end around every stage and every exit head it runs (the profiler).
  Result run_instrumented(Context& context, const float* input, Probe& probe) const;

  // `batch` samples, contiguous [batch, C, H, W]: each leaves at its own exit. Stage by stage, only
  // the samples still in flight run the next stage. results[i] belongs to input i.
  void run_batch(Context& context, const float* inputs, int64_t batch, Result* results) const;

  // run() and run_batch() on images of raw 8-bit pixels ([C, H, W] or [H, W, C] each, `batch`
  // contiguous), prepared inside the context as the model file records (prepare_pixels): no
  // allocation, no input check needed. Throws std::invalid_argument if the file records no input
  // preparation.
  Result run_pixels(Context& context, const uint8_t* pixels, PixelOrder order) const;
  void run_batch_pixels(Context& context, const uint8_t* pixels, int64_t batch, PixelOrder order,
                        Result* results) const;

  // Every exit's logits for one sample, no early exit (for checking against the framework).
  std::vector<std::vector<float>> all_exit_logits(Context& context, const float* input) const;

  // The layers of every stage and exit head with their implementation, layout and (when the plan
  // measured them) time, one per line; then the memory footprint.
  std::string describe() const;

  // The memory it needs, with contexts of `max_batch`.
  Footprint footprint(int max_batch = 64) const;

  // Per op, trunk then exit heads in order, the kernel chosen: its index in the kind's own list
  // (a digit), or 'd' oneDNN. "pin:" + choices() rebuilds this plan, the same kernels and so the
  // same layouts, without measuring (parse_kernels), in a build with the same kernels.
  const std::string& choices() const;

  const Model& model() const;
  int num_exits() const;
  const std::vector<float>& thresholds() const;
  bool checks_inputs() const;  // PlanOptions::check_inputs
  const Demand& demand() const;  // estimate_demand(model()), as the limits saw it

  struct Impl;  // opaque: plan.cpp

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace branchy
