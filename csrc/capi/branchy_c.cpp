// The C API (include/branchy.h) over the C++ runtime: each call checks its pointers, calls the
// C++ API inside one guard that turns every exception into a status and this thread's last error,
// and copies the answer out. The runtime's logic stays in the C++ API; nothing here repeats it.
// The library is built with hidden visibility (runtime/visibility.h); every function that branchy.h
// declares is exported, and nothing else of this file.
#pragma GCC visibility push(default)
#include "branchy.h"
#pragma GCC visibility pop

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/model_file.h"
#include "runtime/plan.h"

struct branchy_options {
  branchy::PlanOptions plan;
};

struct branchy_model {
  branchy_model(branchy::Plan built, const void* buffer)
      : plan(std::move(built)),
        counts(new std::atomic<int64_t>[size_t(plan.num_exits())]),
        borrows(buffer != nullptr && plan.model().file == buffer) {
    for (int e = 0; e < plan.num_exits(); ++e) counts[e].store(0, std::memory_order_relaxed);
  }
  branchy::Plan plan;
  // Samples per exit; contexts on many threads add to them without a lock.
  std::unique_ptr<std::atomic<int64_t>[]> counts;
  bool borrows;

  void count(int32_t exit) const { counts[size_t(exit)].fetch_add(1, std::memory_order_relaxed); }
};

struct branchy_context {
  std::unique_ptr<branchy::Context> context;
  // A batch's answers before they are copied out: grown to the largest batch run, as the
  // context's batch slots are, so that later batches of that size allocate nothing.
  std::vector<branchy::Result> results;
};

namespace {

// Messages are set by failing calls only, so a success costs nothing here.
thread_local std::string last_error;
// When even the message could not be stored (no memory for it), this stands in.
thread_local const char* last_error_fallback = nullptr;

branchy_status fail(branchy_status status, const char* call, const char* what) noexcept {
  try {
    last_error.assign(call).append(": ").append(what);
    last_error_fallback = nullptr;
  } catch (...) {
    last_error_fallback = "out of memory while storing the error message";
  }
  return status;
}

// Thrown for an output buffer the caller sized too small (BRANCHY_ERROR_BUFFER_TOO_SMALL).
struct TooSmall : std::length_error {
  using std::length_error::length_error;
};

// Runs `body`, turning any exception into a status and this thread's last error; `name` is the
// C function's, for the message.
template <typename Body>
branchy_status call(const char* name, Body&& body) noexcept {
  try {
    body();
    return BRANCHY_OK;
  } catch (const branchy::ModelError& e) {
    return fail(BRANCHY_ERROR_MODEL, name, e.what());
  } catch (const TooSmall& e) {
    return fail(BRANCHY_ERROR_BUFFER_TOO_SMALL, name, e.what());
  } catch (const std::invalid_argument& e) {
    return fail(BRANCHY_ERROR_INVALID_ARGUMENT, name, e.what());
  } catch (const std::bad_alloc& e) {
    try {
      const std::string why = std::string("the engine ran out of memory (") + e.what() +
                              "): the model's weights or a context's buffers did not fit; a "
                              "smaller max_batch (branchy_context_create) or max_memory "
                              "(branchy_options_set_max_memory) refuses such a model before it "
                              "allocates";
      return fail(BRANCHY_ERROR_OUT_OF_MEMORY, name, why.c_str());
    } catch (...) {
      return fail(BRANCHY_ERROR_OUT_OF_MEMORY, name, e.what());
    }
  } catch (const std::exception& e) {
    return fail(BRANCHY_ERROR_RUNTIME, name, e.what());
  } catch (...) {
    return fail(BRANCHY_ERROR_UNKNOWN, name, "an exception that is not a std::exception");
  }
}

// Throws std::invalid_argument naming the argument when it is NULL.
void need(const void* pointer, const char* name) {
  if (pointer == nullptr) throw std::invalid_argument(std::string(name) + " is NULL");
}

void fits(size_t capacity, size_t needed, const char* name, const char* unit) {
  if (capacity < needed) {
    throw TooSmall(std::string(name) + ": capacity is " + std::to_string(capacity) + " " + unit +
                   ", the answer needs " + std::to_string(needed));
  }
}

// A C enum argument's value as the caller passed it. C lets an enum hold any int; in C++ loading
// one outside the enum's range is undefined, so the bits are read as its underlying type.
template <typename Enum>
int value_of(const Enum& e) {
  std::underlying_type_t<Enum> v;
  std::memcpy(&v, &e, sizeof v);
  return int(v);
}

branchy::PixelOrder pixel_order(const branchy_pixel_order& order) {
  const int o = value_of(order);
  if (o == BRANCHY_PIXELS_CHW) return branchy::PixelOrder::CHW;
  if (o == BRANCHY_PIXELS_HWC) return branchy::PixelOrder::HWC;
  throw std::invalid_argument("order is " + std::to_string(o) +
                              ", expected BRANCHY_PIXELS_CHW (0) or BRANCHY_PIXELS_HWC (1)");
}

// The checks every classify call makes before the runtime's own (which refuses a context of
// another model, an input holding NaN, pixels for a model without input preparation).
void need_run(const branchy_model* model, const branchy_context* context, const void* input,
              const char* input_name, const void* out, const char* out_name) {
  need(model, "model");
  need(context, "context");
  need(input, input_name);
  need(out, out_name);
}

branchy_result to_c(const branchy::Result& r) { return branchy_result{r.prediction, r.exit, r.score}; }

// Runs a batch through `run(results)`, then copies out and counts each answer.
template <typename Run>
void run_batch(const branchy_model* model, branchy_context* context, int64_t batch, branchy_result* out,
               Run&& run) {
  if (batch < 0) throw std::invalid_argument("batch is " + std::to_string(batch) + ", expected >= 0");
  std::vector<branchy::Result>& results = context->results;
  if (int64_t(results.size()) < batch) results.resize(size_t(batch));
  run(results.data());
  for (int64_t i = 0; i < batch; ++i) {
    out[i] = to_c(results[size_t(i)]);
    model->count(results[size_t(i)].exit);
  }
}

// Builds a model from what `read(options)` returns; `buffer` is the caller's, if any.
template <typename Read>
branchy_status load(const char* name, const branchy_options* options, branchy_model** out,
                    const void* buffer, Read&& read) noexcept {
  return call(name, [&] {
    need(out, "out");
    const branchy::PlanOptions defaults;
    const branchy::PlanOptions& o = options ? options->plan : defaults;
    *out = new branchy_model(branchy::Plan(read(o), o), buffer);
  });
}

#define BRANCHY_STRING(x) #x
#define BRANCHY_VERSION_TEXT(a, b, c) BRANCHY_STRING(a) "." BRANCHY_STRING(b) "." BRANCHY_STRING(c)
constexpr const char* kVersion =
    BRANCHY_VERSION_TEXT(BRANCHY_VERSION_MAJOR, BRANCHY_VERSION_MINOR, BRANCHY_VERSION_PATCH);

}  // namespace

extern "C" {

const char* branchy_version(void) noexcept { return kVersion; }

const char* branchy_last_error(void) noexcept {
  return last_error_fallback ? last_error_fallback : last_error.c_str();
}

const char* branchy_status_name(branchy_status status) noexcept {
  switch (value_of(status)) {
    case BRANCHY_OK: return "BRANCHY_OK";
    case BRANCHY_ERROR_INVALID_ARGUMENT: return "BRANCHY_ERROR_INVALID_ARGUMENT";
    case BRANCHY_ERROR_MODEL: return "BRANCHY_ERROR_MODEL";
    case BRANCHY_ERROR_BUFFER_TOO_SMALL: return "BRANCHY_ERROR_BUFFER_TOO_SMALL";
    case BRANCHY_ERROR_OUT_OF_MEMORY: return "BRANCHY_ERROR_OUT_OF_MEMORY";
    case BRANCHY_ERROR_RUNTIME: return "BRANCHY_ERROR_RUNTIME";
    case BRANCHY_ERROR_UNKNOWN: return "BRANCHY_ERROR_UNKNOWN";
  }
  return "unknown status";
}

// ---- options ----

branchy_status branchy_options_create(branchy_options** out) noexcept {
  return call("branchy_options_create", [&] {
    need(out, "out");
    *out = new branchy_options();
  });
}

void branchy_options_free(branchy_options* options) noexcept { delete options; }

branchy_status branchy_options_set_threads(branchy_options* options, int threads) noexcept {
  return call("branchy_options_set_threads", [&] {
    need(options, "options");
    if (threads < 1) throw std::invalid_argument("threads is " + std::to_string(threads) + ", expected >= 1");
    options->plan.threads = threads;
  });
}

branchy_status branchy_options_set_kernels(branchy_options* options, const char* kernels) noexcept {
  return call("branchy_options_set_kernels", [&] {
    need(options, "options");
    need(kernels, "kernels");
    branchy::PlanOptions changed = options->plan;  // unchanged on a bad spelling
    branchy::parse_kernels(kernels, changed);
    options->plan = std::move(changed);
  });
}

branchy_status branchy_options_set_thresholds(branchy_options* options, const float* thresholds,
                                              size_t count) noexcept {
  return call("branchy_options_set_thresholds", [&] {
    need(options, "options");
    if (count > 0) need(thresholds, "thresholds");
    options->plan.thresholds.assign(thresholds, thresholds + count);
  });
}

branchy_status branchy_options_set_max_memory(branchy_options* options, int64_t bytes) noexcept {
  return call("branchy_options_set_max_memory", [&] {
    need(options, "options");
    if (bytes <= 0) throw std::invalid_argument("max_memory is " + std::to_string(bytes) + " bytes, expected > 0");
    options->plan.max_memory = bytes;
  });
}

branchy_status branchy_options_set_max_flops(branchy_options* options, double flops) noexcept {
  return call("branchy_options_set_max_flops", [&] {
    need(options, "options");
    if (!(flops > 0)) throw std::invalid_argument("max_flops is " + std::to_string(flops) + ", expected > 0");
    options->plan.max_flops = flops;
  });
}

branchy_status branchy_options_set_verify(branchy_options* options, int verify) noexcept {
  return call("branchy_options_set_verify", [&] {
    need(options, "options");
    options->plan.verify = verify != 0;
  });
}

branchy_status branchy_options_set_check_inputs(branchy_options* options, int check) noexcept {
  return call("branchy_options_set_check_inputs", [&] {
    need(options, "options");
    options->plan.check_inputs = check != 0;
  });
}

// ---- model ----

branchy_status branchy_model_load(const char* path, const branchy_options* options,
                                  branchy_model** out) noexcept {
  return load("branchy_model_load", options, out, nullptr, [&](const branchy::PlanOptions& o) {
    need(path, "path");
    return branchy::load_model(path, o.max_memory);
  });
}

branchy_status branchy_model_load_buffer(const void* data, size_t size, const branchy_options* options,
                                         branchy_model** out) noexcept {
  return load("branchy_model_load_buffer", options, out, data, [&](const branchy::PlanOptions&) {
    need(data, "data");
    // The caller owns the buffer: the model holds it without ever freeing it.
    std::shared_ptr<const void> borrowed(data, [](const void*) {});
    return branchy::parse_model(static_cast<const uint8_t*>(data), size, std::move(borrowed));
  });
}

void branchy_model_free(branchy_model* model) noexcept { delete model; }

branchy_status branchy_model_get_info(const branchy_model* model, branchy_model_info* info) noexcept {
  return call("branchy_model_get_info", [&] {
    need(model, "model");
    need(info, "info");
    const branchy::Model& m = model->plan.model();
    info->channels = m.input.c;
    info->height = m.input.h;
    info->width = m.input.w;
    info->num_classes = m.num_classes;
    info->num_exits = model->plan.num_exits();
    info->criterion = m.criterion == branchy::Criterion::Entropy ? 0 : 1;
    info->has_input_prep = m.prep.recorded() ? 1 : 0;
    info->borrows_buffer = model->borrows ? 1 : 0;
  });
}

branchy_status branchy_model_thresholds(const branchy_model* model, float* thresholds, size_t capacity,
                                        size_t* count) noexcept {
  return call("branchy_model_thresholds", [&] {
    need(model, "model");
    need(count, "count");
    const std::vector<float>& t = model->plan.thresholds();
    *count = t.size();
    fits(capacity, t.size(), "thresholds", "floats");
    if (!t.empty()) need(thresholds, "thresholds");
    std::copy(t.begin(), t.end(), thresholds);
  });
}

branchy_status branchy_model_class_name(const branchy_model* model, int64_t index, const char** name) noexcept {
  return call("branchy_model_class_name", [&] {
    need(model, "model");
    need(name, "name");
    const branchy::Model& m = model->plan.model();
    if (index < 0 || index >= m.num_classes) {
      throw std::invalid_argument("index is " + std::to_string(index) + ", expected 0 to " +
                                  std::to_string(m.num_classes - 1));
    }
    *name = m.class_names.empty() ? "" : m.class_names[size_t(index)].c_str();
  });
}

branchy_status branchy_model_describe(const branchy_model* model, char* text, size_t capacity,
                                      size_t* length) noexcept {
  return call("branchy_model_describe", [&] {
    need(model, "model");
    if (capacity > 0) need(text, "text");
    const std::string d = model->plan.describe();
    if (length) *length = d.size();
    if (capacity > 0) {
      const size_t n = std::min(d.size(), capacity - 1);
      std::memcpy(text, d.data(), n);
      text[n] = '\0';
    }
    fits(capacity, d.size() + 1, "text", "bytes");
  });
}

branchy_status branchy_model_footprint(const branchy_model* model, int max_batch,
                                       branchy_footprint* footprint) noexcept {
  return call("branchy_model_footprint", [&] {
    need(model, "model");
    need(footprint, "footprint");
    if (max_batch < 1) throw std::invalid_argument("max_batch is " + std::to_string(max_batch) + ", expected >= 1");
    const branchy::Footprint f = model->plan.footprint(max_batch);
    *footprint = branchy_footprint{f.weight_bytes, f.packed_bytes, f.arena_bytes,
                                   f.slot_bytes,   f.batch_bytes,  f.scratch_bytes};
  });
}

branchy_status branchy_model_exit_counts(const branchy_model* model, int64_t* counts, size_t capacity) noexcept {
  return call("branchy_model_exit_counts", [&] {
    need(model, "model");
    const size_t exits = size_t(model->plan.num_exits());
    fits(capacity, exits, "counts", "counts");
    need(counts, "counts");
    for (size_t e = 0; e < exits; ++e) counts[e] = model->counts[e].load(std::memory_order_relaxed);
  });
}

branchy_status branchy_model_reset_exit_counts(branchy_model* model) noexcept {
  return call("branchy_model_reset_exit_counts", [&] {
    need(model, "model");
    for (int e = 0; e < model->plan.num_exits(); ++e) model->counts[e].store(0, std::memory_order_relaxed);
  });
}

// ---- context ----

branchy_status branchy_context_create(const branchy_model* model, int max_batch,
                                      branchy_context** out) noexcept {
  return call("branchy_context_create", [&] {
    need(model, "model");
    need(out, "out");
    auto context = std::make_unique<branchy_context>();
    context->context = model->plan.make_context(max_batch);
    *out = context.release();
  });
}

void branchy_context_free(branchy_context* context) noexcept { delete context; }

// ---- classify ----

branchy_status branchy_classify(const branchy_model* model, branchy_context* context, const float* input,
                                branchy_result* result) noexcept {
  return call("branchy_classify", [&] {
    need_run(model, context, input, "input", result, "result");
    const branchy::Result r = model->plan.run(*context->context, input);
    *result = to_c(r);
    model->count(r.exit);
  });
}

branchy_status branchy_classify_batch(const branchy_model* model, branchy_context* context,
                                      const float* inputs, int64_t batch, branchy_result* results) noexcept {
  return call("branchy_classify_batch", [&] {
    need_run(model, context, inputs, "inputs", results, "results");
    run_batch(model, context, batch, results, [&](branchy::Result* out) {
      model->plan.run_batch(*context->context, inputs, batch, out);
    });
  });
}

branchy_status branchy_classify_pixels(const branchy_model* model, branchy_context* context,
                                       const uint8_t* pixels, branchy_pixel_order order,
                                       branchy_result* result) noexcept {
  return call("branchy_classify_pixels", [&] {
    need_run(model, context, pixels, "pixels", result, "result");
    const branchy::Result r = model->plan.run_pixels(*context->context, pixels, pixel_order(order));
    *result = to_c(r);
    model->count(r.exit);
  });
}

branchy_status branchy_classify_batch_pixels(const branchy_model* model, branchy_context* context,
                                             const uint8_t* pixels, int64_t batch, branchy_pixel_order order,
                                             branchy_result* results) noexcept {
  return call("branchy_classify_batch_pixels", [&] {
    need_run(model, context, pixels, "pixels", results, "results");
    const branchy::PixelOrder o = pixel_order(order);
    run_batch(model, context, batch, results, [&](branchy::Result* out) {
      model->plan.run_batch_pixels(*context->context, pixels, batch, o, out);
    });
  });
}

branchy_status branchy_all_exit_logits(const branchy_model* model, branchy_context* context,
                                       const float* input, float* logits, size_t capacity) noexcept {
  return call("branchy_all_exit_logits", [&] {
    need_run(model, context, input, "input", logits, "logits");
    const size_t classes = size_t(model->plan.model().num_classes);
    fits(capacity, size_t(model->plan.num_exits()) * classes, "logits", "floats");
    const std::vector<std::vector<float>> all = model->plan.all_exit_logits(*context->context, input);
    for (size_t e = 0; e < all.size(); ++e) std::copy(all[e].begin(), all[e].end(), logits + e * classes);
  });
}

}  // extern "C"
