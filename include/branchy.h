/* The C API of branchy-engine's CPU runtime (C99; no C++ types cross it, no exception leaves it).
 *
 * A model is loaded once and shared by any number of threads; each thread classifies with its own
 * context, which holds every buffer a call needs, so a call takes no lock and allocates nothing.
 *
 *   branchy_model* model;
 *   branchy_context* context;
 *   branchy_result r;
 *   if (branchy_model_load("b_lenet.branchy", NULL, &model) != BRANCHY_OK ||
 *       branchy_context_create(model, 1, &context) != BRANCHY_OK ||
 *       branchy_classify(model, context, input, &r) != BRANCHY_OK)
 *     fprintf(stderr, "%s\n", branchy_last_error());
 *
 * Every call that can fail returns a branchy_status; on failure branchy_last_error() names the
 * problem (the same words as the Python engine's exceptions) and the call's outputs are unchanged
 * unless it says otherwise. No call aborts the process. The calls that cannot fail (the free
 * functions, which accept NULL, and the three that return strings) return no status.
 *
 * Input is float32 [C, H, W] per sample, prepared as in training ((pixels / 255 - mean) / std), or
 * raw 8-bit pixels that the runtime prepares itself as the model file records (the *_pixels
 * calls). Batches are samples back to back. The C++ API (branchy/runtime/plan.h) is the one
 * implementation; this API is a layer over it.
 */
#ifndef BRANCHY_H
#define BRANCHY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define BRANCHY_NOEXCEPT noexcept
extern "C" {
#else
#define BRANCHY_NOEXCEPT
#endif

/* The library's version; CMake's project version is read from these lines. */
#define BRANCHY_VERSION_MAJOR 0
#define BRANCHY_VERSION_MINOR 1
#define BRANCHY_VERSION_PATCH 0

typedef enum branchy_status {
  BRANCHY_OK = 0,
  /* A NULL pointer, a value out of range, thresholds of the wrong count, an input holding NaN or
   * +-inf, raw pixels for a model file that records no input preparation, a context made for
   * another model (C++: std::invalid_argument). */
  BRANCHY_ERROR_INVALID_ARGUMENT = 1,
  /* The file or buffer is no usable model: missing, unreadable, too large, damaged, of another
   * format version (C++: branchy::ModelError). */
  BRANCHY_ERROR_MODEL = 2,
  /* An output buffer the caller sized is too small; the message says how large it must be. */
  BRANCHY_ERROR_BUFFER_TOO_SMALL = 3,
  /* An allocation failed (C++: std::bad_alloc); the model and contexts stay usable. */
  BRANCHY_ERROR_OUT_OF_MEMORY = 4,
  /* Any other failure of the runtime, e.g. a kernel that disagreed with its reference under
   * verify (C++: std::exception). */
  BRANCHY_ERROR_RUNTIME = 5,
  /* Something was thrown that is not a std::exception (a bug: please report it). */
  BRANCHY_ERROR_UNKNOWN = 6
} branchy_status;

/* How one image of raw 8-bit pixels lies in memory: planes [C, H, W], or pixels [H, W, C] (what
 * cameras and image files give). */
typedef enum branchy_pixel_order { BRANCHY_PIXELS_CHW = 0, BRANCHY_PIXELS_HWC = 1 } branchy_pixel_order;

/* One sample's answer. */
typedef struct branchy_result {
  int64_t prediction; /* class index, 0 to num_classes - 1 */
  int32_t exit;       /* 0-based exit the sample left at */
  float score;        /* entropy (nats) or max probability at that exit, by the model's criterion */
} branchy_result;

/* What a loaded model takes and gives. */
typedef struct branchy_model_info {
  int32_t channels, height, width; /* one sample's input [C, H, W] */
  int32_t num_classes;
  int32_t num_exits;           /* the last one takes every sample no early exit took */
  int32_t criterion;           /* 0: leave when entropy < threshold; 1: when max probability > it */
  int32_t has_input_prep;      /* 1: the file records the input preparation (the *_pixels calls) */
  int32_t borrows_buffer;      /* 1: the model reads the caller's buffer (branchy_model_load_buffer) */
} branchy_model_info;

/* What a model keeps in memory, bytes (the C++ branchy::Footprint). */
typedef struct branchy_footprint {
  uint64_t weight_bytes;  /* the weights as the file holds them */
  uint64_t packed_bytes;  /* weights packed for the kernels */
  uint64_t arena_bytes;   /* per context: activations inside a stage or head */
  uint64_t slot_bytes;    /* per context: one stage-boundary slot (a single sample holds two) */
  uint64_t batch_bytes;   /* per context: the batch slots for max_batch samples */
  uint64_t scratch_bytes; /* per context: the layers' scratch */
} branchy_footprint;

typedef struct branchy_options branchy_options;
typedef struct branchy_model branchy_model;
typedef struct branchy_context branchy_context;

/* "0.1.0": the library's version (BRANCHY_VERSION_* of the header it was built with). */
const char* branchy_version(void) BRANCHY_NOEXCEPT;

/* The message of this thread's last failed call ("" before any); a later failure on this thread
 * replaces it, a success leaves it. The pointer stays valid until then. */
const char* branchy_last_error(void) BRANCHY_NOEXCEPT;

/* "BRANCHY_OK", "BRANCHY_ERROR_MODEL", ...; "unknown status" for a value not in the enum. */
const char* branchy_status_name(branchy_status status) BRANCHY_NOEXCEPT;

/* ---- options: how a model is built (the C++ branchy::PlanOptions); one set may load many models */

/* Options at their defaults: 1 thread, kernels "measure", the file's thresholds, max_memory 4 GiB,
 * max_flops 1e12 a sample, verify off, input check on. Free with branchy_options_free. */
branchy_status branchy_options_create(branchy_options** out) BRANCHY_NOEXCEPT;
void branchy_options_free(branchy_options* options) BRANCHY_NOEXCEPT;

/* Threads one call may use (the oneDNN layers); >= 1. */
branchy_status branchy_options_set_threads(branchy_options* options, int threads) BRANCHY_NOEXCEPT;

/* Which kernels serve each layer: "measure" (the fastest on this machine), "own", "dnnl", or
 * "pin:" followed by a plan's choices (as branchy-run --plan prints them). */
branchy_status branchy_options_set_kernels(branchy_options* options, const char* kernels) BRANCHY_NOEXCEPT;

/* Replaces the file's thresholds: `count` floats, one per early exit (num_exits - 1), each >= 0 or
 * +inf; the count is checked when a model is loaded. count 0 keeps the file's. */
branchy_status branchy_options_set_thresholds(branchy_options* options, const float* thresholds,
                                              size_t count) BRANCHY_NOEXCEPT;

/* Resource limits, checked before anything is allocated: the model's memory in bytes (its file
 * and its built plan), and the work of one sample in FLOPs. Both > 0. */
branchy_status branchy_options_set_max_memory(branchy_options* options, int64_t bytes) BRANCHY_NOEXCEPT;
branchy_status branchy_options_set_max_flops(branchy_options* options, double flops) BRANCHY_NOEXCEPT;

/* 1: run each chosen kernel once against its op's reference when the model is built, and refuse
 * it (BRANCHY_ERROR_RUNTIME) on a mismatch. Default 0. */
branchy_status branchy_options_set_verify(branchy_options* options, int verify) BRANCHY_NOEXCEPT;

/* 0: skip the scan that refuses float inputs holding NaN or +-inf (for a caller that guarantees
 * finite inputs). Default 1. */
branchy_status branchy_options_set_check_inputs(branchy_options* options, int check) BRANCHY_NOEXCEPT;

/* ---- model: loaded and built once (weights packed, kernels chosen), shared by threads ---- */

/* Maps the file at `path` and builds the model with `options` (NULL: the defaults). */
branchy_status branchy_model_load(const char* path, const branchy_options* options,
                                  branchy_model** out) BRANCHY_NOEXCEPT;

/* The same from a whole model file held in memory, `size` bytes. The model reads the weights in
 * place when they lie 64-byte aligned in it (the buffer's start 64-byte aligned suffices), and
 * copies it otherwise (info.borrows_buffer says which). Where it reads in place, the buffer must
 * stay valid and unchanged until branchy_model_free. */
branchy_status branchy_model_load_buffer(const void* data, size_t size, const branchy_options* options,
                                         branchy_model** out) BRANCHY_NOEXCEPT;

/* Frees the model; its contexts must be freed first. NULL: nothing. */
void branchy_model_free(branchy_model* model) BRANCHY_NOEXCEPT;

branchy_status branchy_model_get_info(const branchy_model* model, branchy_model_info* info) BRANCHY_NOEXCEPT;

/* The thresholds in use (num_exits - 1 floats) into `thresholds` (`capacity` floats); `*count`
 * gets the number even when the buffer is too small (BRANCHY_ERROR_BUFFER_TOO_SMALL; NULL with
 * capacity 0 asks only for it). */
branchy_status branchy_model_thresholds(const branchy_model* model, float* thresholds, size_t capacity,
                                        size_t* count) BRANCHY_NOEXCEPT;

/* Class `index`'s name (UTF-8) as the file records it, valid while the model lives; "" when the
 * file records none. */
branchy_status branchy_model_class_name(const branchy_model* model, int64_t index,
                                        const char** name) BRANCHY_NOEXCEPT;

/* The layers of every stage and exit head with their kernel, layout and (where the build
 * measured them) time, one per line, then the memory footprint: copied into `text` as a
 * NUL-terminated string, cut to `capacity` bytes with BRANCHY_ERROR_BUFFER_TOO_SMALL when it does
 * not fit. `*length` (may be NULL) gets its length without the NUL either way. */
branchy_status branchy_model_describe(const branchy_model* model, char* text, size_t capacity,
                                      size_t* length) BRANCHY_NOEXCEPT;

/* The memory the model keeps, with contexts of `max_batch` (>= 1) samples. */
branchy_status branchy_model_footprint(const branchy_model* model, int max_batch,
                                       branchy_footprint* footprint) BRANCHY_NOEXCEPT;

/* Samples that left at each exit, over every classify call on any of the model's contexts since
 * it was loaded or the counts were reset: num_exits counts into `counts` (`capacity` of them). */
branchy_status branchy_model_exit_counts(const branchy_model* model, int64_t* counts,
                                         size_t capacity) BRANCHY_NOEXCEPT;
branchy_status branchy_model_reset_exit_counts(branchy_model* model) BRANCHY_NOEXCEPT;

/* ---- context: one per thread, every buffer a call needs ---- */

/* A context for `model` running up to `max_batch` (>= 1) samples at once; larger batches run in
 * chunks of it. Used by one thread at a time; freed before its model. */
branchy_status branchy_context_create(const branchy_model* model, int max_batch,
                                      branchy_context** out) BRANCHY_NOEXCEPT;
void branchy_context_free(branchy_context* context) BRANCHY_NOEXCEPT;

/* ---- classify: each sample runs stage by stage and leaves at the first exit whose rule lets it;
 * the last exit takes it otherwise. `context` must be one of `model`'s. ---- */

/* One sample, float32 [C, H, W]. */
branchy_status branchy_classify(const branchy_model* model, branchy_context* context, const float* input,
                                branchy_result* result) BRANCHY_NOEXCEPT;

/* `batch` samples [batch, C, H, W]; results[i] (`batch` of them) belongs to sample i. */
branchy_status branchy_classify_batch(const branchy_model* model, branchy_context* context,
                                      const float* inputs, int64_t batch,
                                      branchy_result* results) BRANCHY_NOEXCEPT;

/* One image of raw 8-bit pixels ([C, H, W] or [H, W, C]), prepared inside the context as the
 * model file records (pixel / pixel_max, then (x - mean[c]) / std[c], as training did). */
branchy_status branchy_classify_pixels(const branchy_model* model, branchy_context* context,
                                       const uint8_t* pixels, branchy_pixel_order order,
                                       branchy_result* result) BRANCHY_NOEXCEPT;

/* `batch` such images back to back. */
branchy_status branchy_classify_batch_pixels(const branchy_model* model, branchy_context* context,
                                             const uint8_t* pixels, int64_t batch,
                                             branchy_pixel_order order,
                                             branchy_result* results) BRANCHY_NOEXCEPT;

/* Every exit's logits for one sample [C, H, W], no early exit (to check against the framework):
 * [num_exits, num_classes] floats, exit by exit, into `logits` (`capacity` floats). Not counted
 * in the exit counts. */
branchy_status branchy_all_exit_logits(const branchy_model* model, branchy_context* context,
                                       const float* input, float* logits,
                                       size_t capacity) BRANCHY_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* BRANCHY_H */
