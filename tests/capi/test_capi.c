/* Tests of the C API (include/branchy.h), compiled as strict C99: every call, every error path
 * (missing, damaged and short files, bad options, thresholds of the wrong count, NaN and inf
 * input, NULL pointers, buffers too small, a context of another model, an allocation that fails),
 * answers checked against the model's own logits, raw pixels against the floats they become,
 * and threads sharing one model against serial calls, bit for bit. */
#define _XOPEN_SOURCE 700

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "branchy.h"
#include "test_models.h"

static int failures = 0;

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (!(cond)) {                                                       \
      printf("  line %d: CHECK(%s) failed\n", __LINE__, #cond);          \
      ++failures;                                                        \
    }                                                                    \
  } while (0)

/* `call` returns `status`, and the last error holds `words` (NULL: anything). */
#define EXPECT(call, status, words) expect((call), (status), (words), #call, __LINE__)
#define OK(call) EXPECT(call, BRANCHY_OK, NULL)

static void expect(branchy_status got, branchy_status want, const char* words, const char* text,
                   int line) {
  if (got != want) {
    printf("  line %d: %s returned %s, expected %s (last error: %s)\n", line, text,
           branchy_status_name(got), branchy_status_name(want), branchy_last_error());
    ++failures;
  } else if (words != NULL && strstr(branchy_last_error(), words) == NULL) {
    printf("  line %d: %s: the last error \"%s\" lacks \"%s\"\n", line, text, branchy_last_error(),
           words);
    ++failures;
  }
}

/* ---- the test models and their files ---- */

enum { kTinySize = 2 * 6 * 6, kTinyClasses = 3, kTinyExits = 2, kDagSize = 3 * 8 * 8 };
static const float kMixed = 0.1f; /* the tiny model's threshold at which samples leave at both exits */
static const float kMean[2] = {0.5f, 0.25f}, kStd[2] = {0.5f, 2.0f};

static char dir[256], tiny_path[300], dag_path[300], corrupt_path[300], short_path[300],
    garbage_path[300];

static void write_file(const char* path, const void* data, size_t size) {
  FILE* f = fopen(path, "wb");
  if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
    printf("cannot write %s\n", path);
    exit(2);
  }
}

static void write_files(void) {
  const char* tmp = getenv("TMPDIR");
  size_t size;
  const unsigned char* tiny = test_model_tiny(&size);
  unsigned char* damaged = malloc(size);
  snprintf(dir, sizeof dir, "%s/branchy_capi_XXXXXX", tmp ? tmp : "/tmp");
  if (mkdtemp(dir) == NULL || damaged == NULL) {
    printf("cannot make a temporary directory\n");
    exit(2);
  }
  snprintf(tiny_path, sizeof tiny_path, "%s/tiny.branchy", dir);
  snprintf(dag_path, sizeof dag_path, "%s/dag.branchy", dir);
  snprintf(corrupt_path, sizeof corrupt_path, "%s/corrupt.branchy", dir);
  snprintf(short_path, sizeof short_path, "%s/short.branchy", dir);
  snprintf(garbage_path, sizeof garbage_path, "%s/garbage.branchy", dir);
  write_file(tiny_path, tiny, size);
  memcpy(damaged, tiny, size);
  damaged[size / 2] ^= 0x40;
  write_file(corrupt_path, damaged, size);
  write_file(short_path, tiny, size / 2);
  write_file(garbage_path, "hello", 5);
  free(damaged);
  {
    const unsigned char* dag = test_model_dag(&size);
    write_file(dag_path, dag, size);
  }
}

static void remove_files(void) {
  const char* paths[] = {tiny_path, dag_path, corrupt_path, short_path, garbage_path};
  size_t i;
  for (i = 0; i < sizeof paths / sizeof paths[0]; ++i) remove(paths[i]);
  rmdir(dir);
}

/* The tiny model with threshold `threshold` (< 0: the file's) and `kernels` (NULL: measure). */
static branchy_model* tiny_model(float threshold, const char* kernels) {
  branchy_options* options = NULL;
  branchy_model* model = NULL;
  OK(branchy_options_create(&options));
  if (threshold >= 0) OK(branchy_options_set_thresholds(options, &threshold, 1));
  if (kernels != NULL) OK(branchy_options_set_kernels(options, kernels));
  OK(branchy_model_load(tiny_path, options, &model));
  branchy_options_free(options);
  if (model == NULL) exit(2);
  return model;
}

static branchy_context* context_of(const branchy_model* model, int max_batch) {
  branchy_context* context = NULL;
  OK(branchy_context_create(model, max_batch, &context));
  if (context == NULL) exit(2);
  return context;
}

/* n samples of `size` floats in [-2, 2), the same for the same seed. */
static void samples(float* x, int n, int size, unsigned seed) {
  uint32_t state = 2654435761u * (seed + 1);
  int i;
  for (i = 0; i < n * size; ++i) {
    state = state * 1664525u + 1013904223u;
    x[i] = (float)(state >> 8) / (float)(1u << 24) * 4.0f - 2.0f;
  }
}

/* n images of `size` raw pixels. */
static void pixels(uint8_t* p, int n, int size, unsigned seed) {
  uint32_t state = 40503u * (seed + 7);
  int i;
  for (i = 0; i < n * size; ++i) {
    state = state * 1664525u + 1013904223u;
    p[i] = (uint8_t)(state >> 24);
  }
}

static int same(branchy_result a, branchy_result b) {
  return a.prediction == b.prediction && a.exit == b.exit && memcmp(&a.score, &b.score, sizeof(float)) == 0;
}

static double entropy(const float* z, int n) {
  double m = z[0], s = 0, t = 0;
  int i;
  for (i = 1; i < n; ++i) m = z[i] > m ? z[i] : m;
  for (i = 0; i < n; ++i) {
    const double e = exp(z[i] - m);
    s += e;
    t += e * (z[i] - m);
  }
  return log(s) - t / s;
}

static int64_t argmax(const float* z, int n) {
  int i, best = 0;
  for (i = 1; i < n; ++i) best = z[i] > z[best] ? i : best;
  return best;
}

/* ---- the tests ---- */

static void version_and_status_names(void) {
  char want[32];
  int s;
  snprintf(want, sizeof want, "%d.%d.%d", BRANCHY_VERSION_MAJOR, BRANCHY_VERSION_MINOR,
           BRANCHY_VERSION_PATCH);
  CHECK(strcmp(branchy_version(), want) == 0);
  for (s = BRANCHY_OK; s <= BRANCHY_ERROR_UNKNOWN; ++s) {
    CHECK(strncmp(branchy_status_name((branchy_status)s), "BRANCHY_", 8) == 0);
  }
  CHECK(strcmp(branchy_status_name(BRANCHY_ERROR_MODEL), "BRANCHY_ERROR_MODEL") == 0);
  CHECK(strcmp(branchy_status_name((branchy_status)99), "unknown status") == 0);
}

static void what_a_model_takes_and_gives(void) {
  branchy_model* model = tiny_model(-1, NULL);
  branchy_model_info info;
  branchy_footprint f;
  float thresholds[4] = {-1, -1, -1, -1};
  size_t count = 0, length = 0;
  const char* name = NULL;
  char small[8], *text;
  OK(branchy_model_get_info(model, &info));
  CHECK(info.channels == 2 && info.height == 6 && info.width == 6);
  CHECK(info.num_classes == 3 && info.num_exits == 2 && info.criterion == 0);
  CHECK(info.has_input_prep == 1 && info.borrows_buffer == 0);

  EXPECT(branchy_model_thresholds(model, NULL, 0, &count), BRANCHY_ERROR_BUFFER_TOO_SMALL,
         "thresholds: capacity is 0 floats, the answer needs 1");
  CHECK(count == 1);
  OK(branchy_model_thresholds(model, thresholds, 4, &count));
  CHECK(count == 1 && thresholds[0] == 0.5f && thresholds[1] == -1);

  OK(branchy_model_class_name(model, 1, &name));
  CHECK(name != NULL && strcmp(name, "dog") == 0);
  OK(branchy_model_class_name(model, 2, &name));
  CHECK(strcmp(name, "d\xc3\xa9j\xc3\xa0") == 0);
  EXPECT(branchy_model_class_name(model, 3, &name), BRANCHY_ERROR_INVALID_ARGUMENT,
         "branchy_model_class_name: index is 3, expected 0 to 2");

  EXPECT(branchy_model_describe(model, NULL, 0, &length), BRANCHY_ERROR_BUFFER_TOO_SMALL, "text: capacity is 0");
  CHECK(length > 0);
  text = malloc(length + 1);
  OK(branchy_model_describe(model, text, length + 1, NULL));
  CHECK(strlen(text) == length);
  CHECK(strstr(text, "stage 1: ") && strstr(text, "exit 2:  ") && strstr(text, "memory: weights"));
  EXPECT(branchy_model_describe(model, small, sizeof small, &length), BRANCHY_ERROR_BUFFER_TOO_SMALL, NULL);
  CHECK(strlen(small) == 7 && strncmp(small, text, 7) == 0);
  free(text);

  OK(branchy_model_footprint(model, 64, &f));
  CHECK(f.weight_bytes > 0 && f.slot_bytes > 0 && f.batch_bytes == 2 * 64 * f.slot_bytes);
  EXPECT(branchy_model_footprint(model, 0, &f), BRANCHY_ERROR_INVALID_ARGUMENT, "max_batch is 0, expected >= 1");
  branchy_model_free(model);
}

/* Each sample leaves at the first exit whose entropy is under the threshold, with that exit's
 * argmax and entropy; a batch (in chunks of max_batch) gives the answers of the samples alone. */
static void answers_follow_the_exits_logits(void) {
  enum { n = 300 };
  branchy_model* model = tiny_model(kMixed, NULL);
  branchy_context* context = context_of(model, 8);
  static float x[n * kTinySize];
  static branchy_result alone[n], batch[n];
  float logits[kTinyExits * kTinyClasses];
  int i, exits[kTinyExits] = {0, 0};
  samples(x, n, kTinySize, 1);
  for (i = 0; i < n; ++i) {
    const float* sample = x + i * kTinySize;
    int e;
    OK(branchy_classify(model, context, sample, &alone[i]));
    OK(branchy_all_exit_logits(model, context, sample, logits, kTinyExits * kTinyClasses));
    e = entropy(logits, kTinyClasses) < kMixed ? 0 : 1;
    CHECK(alone[i].exit == e);
    CHECK(alone[i].prediction == argmax(logits + e * kTinyClasses, kTinyClasses));
    CHECK(fabs(alone[i].score - entropy(logits + e * kTinyClasses, kTinyClasses)) < 1e-4);
    ++exits[alone[i].exit];
  }
  CHECK(exits[0] > 0 && exits[1] > 0);
  OK(branchy_classify_batch(model, context, x, n, batch));
  for (i = 0; i < n; ++i) CHECK(same(batch[i], alone[i]));
  OK(branchy_classify_batch(model, context, x, 0, batch));
  branchy_context_free(context);
  branchy_model_free(model);
}

/* Raw pixels give the answers of the floats training's preparation makes of them, in either
 * order, one at a time or in a batch. */
static void pixels_are_prepared_as_the_file_records(void) {
  enum { n = 12 };
  branchy_model* model = tiny_model(kMixed, NULL);
  branchy_context* context = context_of(model, 4);
  static uint8_t chw[n * kTinySize], hwc[n * kTinySize];
  static float prepared[n * kTinySize];
  branchy_result want[n], got[n], one;
  int i, c, k;
  pixels(chw, n, kTinySize, 3);
  for (i = 0; i < n; ++i) {
    for (c = 0; c < 2; ++c) {
      for (k = 0; k < 36; ++k) {
        const uint8_t v = chw[i * kTinySize + c * 36 + k];
        hwc[i * kTinySize + k * 2 + c] = v;
        prepared[i * kTinySize + c * 36 + k] = ((float)v / 255.0f - kMean[c]) / kStd[c];
      }
    }
    OK(branchy_classify(model, context, prepared + i * kTinySize, &want[i]));
    OK(branchy_classify_pixels(model, context, chw + i * kTinySize, BRANCHY_PIXELS_CHW, &one));
    CHECK(same(one, want[i]));
    OK(branchy_classify_pixels(model, context, hwc + i * kTinySize, BRANCHY_PIXELS_HWC, &one));
    CHECK(same(one, want[i]));
  }
  OK(branchy_classify_batch_pixels(model, context, chw, n, BRANCHY_PIXELS_CHW, got));
  for (i = 0; i < n; ++i) CHECK(same(got[i], want[i]));
  OK(branchy_classify_batch_pixels(model, context, hwc, n, BRANCHY_PIXELS_HWC, got));
  for (i = 0; i < n; ++i) CHECK(same(got[i], want[i]));
  EXPECT(branchy_classify_pixels(model, context, chw, (branchy_pixel_order)7, &one),
         BRANCHY_ERROR_INVALID_ARGUMENT, "order is 7, expected BRANCHY_PIXELS_CHW (0) or BRANCHY_PIXELS_HWC (1)");
  EXPECT(branchy_classify_batch_pixels(model, context, chw, n, (branchy_pixel_order)-1, got),
         BRANCHY_ERROR_INVALID_ARGUMENT, "order is -1");
  branchy_context_free(context);
  branchy_model_free(model);
  {
    branchy_model* dag = NULL;
    branchy_context* dag_context;
    static uint8_t image[kDagSize];
    OK(branchy_model_load(dag_path, NULL, &dag));
    dag_context = context_of(dag, 2);
    EXPECT(branchy_classify_pixels(dag, dag_context, image, BRANCHY_PIXELS_HWC, &one),
           BRANCHY_ERROR_INVALID_ARGUMENT, "this model file records no input preparation");
    EXPECT(branchy_classify_batch_pixels(dag, dag_context, image, 1, BRANCHY_PIXELS_CHW, &one),
           BRANCHY_ERROR_INVALID_ARGUMENT, "records no input preparation");
    branchy_context_free(dag_context);
    branchy_model_free(dag);
  }
}

/* Every classify call counts its samples at their exits; all_exit_logits does not. */
static void exit_counts_count_every_classified_sample(void) {
  enum { n = 20 };
  branchy_model* model = tiny_model(kMixed, NULL);
  branchy_context* context = context_of(model, 4);
  static float x[n * kTinySize];
  static uint8_t p[n * kTinySize];
  branchy_result r[n];
  float logits[kTinyExits * kTinyClasses];
  int64_t counts[kTinyExits], want[kTinyExits] = {0, 0};
  int i;
  samples(x, n, kTinySize, 4);
  pixels(p, n, kTinySize, 5);
  OK(branchy_model_exit_counts(model, counts, kTinyExits));
  CHECK(counts[0] == 0 && counts[1] == 0);
  for (i = 0; i < n; ++i) {
    OK(branchy_classify(model, context, x + i * kTinySize, &r[0]));
    ++want[r[0].exit];
    OK(branchy_classify_pixels(model, context, p + i * kTinySize, BRANCHY_PIXELS_CHW, &r[0]));
    ++want[r[0].exit];
    OK(branchy_all_exit_logits(model, context, x + i * kTinySize, logits, kTinyExits * kTinyClasses));
  }
  OK(branchy_classify_batch(model, context, x, n, r));
  for (i = 0; i < n; ++i) ++want[r[i].exit];
  OK(branchy_classify_batch_pixels(model, context, p, n, BRANCHY_PIXELS_HWC, r));
  for (i = 0; i < n; ++i) ++want[r[i].exit];
  OK(branchy_model_exit_counts(model, counts, kTinyExits));
  CHECK(counts[0] == want[0] && counts[1] == want[1] && want[0] + want[1] == 4 * n);
  EXPECT(branchy_model_exit_counts(model, counts, 1), BRANCHY_ERROR_BUFFER_TOO_SMALL,
         "counts: capacity is 1 counts, the answer needs 2");
  OK(branchy_model_reset_exit_counts(model));
  OK(branchy_model_exit_counts(model, counts, kTinyExits));
  CHECK(counts[0] == 0 && counts[1] == 0);
  branchy_context_free(context);
  branchy_model_free(model);
}

/* A buffer whose weights lie 64-byte aligned is read in place; any other is copied (and may go
 * as soon as the load returns). Both answer as the file does. */
static void a_buffer_loads_in_place_where_aligned(void) {
  enum { n = 16 };
  size_t size;
  const unsigned char* file = test_model_tiny(&size);
  void* aligned = NULL;
  unsigned char* shifted = malloc(size + 1);
  branchy_model *from_file = tiny_model(-1, "own"), *borrowed = NULL, *copied = NULL;
  branchy_options* options = NULL;
  branchy_context *c_file = context_of(from_file, 1), *c_borrowed, *c_copied;
  branchy_model_info info;
  static float x[n * kTinySize];
  int i;
  CHECK(posix_memalign(&aligned, 64, size) == 0 && shifted != NULL);
  memcpy(aligned, file, size);
  memcpy(shifted + 1, file, size);
  OK(branchy_options_create(&options));
  OK(branchy_options_set_kernels(options, "own"));
  OK(branchy_model_load_buffer(aligned, size, options, &borrowed));
  OK(branchy_model_load_buffer(shifted + 1, size, options, &copied));
  branchy_options_free(options);
  free(shifted);
  OK(branchy_model_get_info(borrowed, &info));
  CHECK(info.borrows_buffer == 1);
  OK(branchy_model_get_info(copied, &info));
  CHECK(info.borrows_buffer == 0);
  c_borrowed = context_of(borrowed, 1);
  c_copied = context_of(copied, 1);
  samples(x, n, kTinySize, 6);
  for (i = 0; i < n; ++i) {
    branchy_result a, b, c;
    OK(branchy_classify(from_file, c_file, x + i * kTinySize, &a));
    OK(branchy_classify(borrowed, c_borrowed, x + i * kTinySize, &b));
    OK(branchy_classify(copied, c_copied, x + i * kTinySize, &c));
    CHECK(a.prediction == b.prediction && a.exit == b.exit && fabsf(a.score - b.score) < 1e-5f);
    CHECK(a.prediction == c.prediction && a.exit == c.exit && fabsf(a.score - c.score) < 1e-5f);
  }
  branchy_context_free(c_file);
  branchy_context_free(c_borrowed);
  branchy_context_free(c_copied);
  branchy_model_free(from_file);
  branchy_model_free(borrowed);
  branchy_model_free(copied);
  free(aligned);
}

static void files_that_are_no_model_are_refused(void) {
  branchy_model* model = NULL;
  char missing[320];
  snprintf(missing, sizeof missing, "%s/missing.branchy", dir);
  EXPECT(branchy_model_load(missing, NULL, &model), BRANCHY_ERROR_MODEL,
         "branchy_model_load: model file ");
  EXPECT(branchy_model_load(missing, NULL, &model), BRANCHY_ERROR_MODEL, "missing.branchy: cannot open: No such file");
  EXPECT(branchy_model_load(corrupt_path, NULL, &model), BRANCHY_ERROR_MODEL, "checksum mismatch");
  EXPECT(branchy_model_load(short_path, NULL, &model), BRANCHY_ERROR_MODEL, "(truncated or appended to)");
  EXPECT(branchy_model_load(garbage_path, NULL, &model), BRANCHY_ERROR_MODEL, "shorter than the 80-byte minimum");
  EXPECT(branchy_model_load(dir, NULL, &model), BRANCHY_ERROR_MODEL, "not a regular file");
  EXPECT(branchy_model_load_buffer("hello", 5, NULL, &model), BRANCHY_ERROR_MODEL, "shorter than");
  EXPECT(branchy_model_load_buffer("BRANCHY", 0, NULL, &model), BRANCHY_ERROR_MODEL, "file is 0 bytes");
  CHECK(model == NULL);
}

static void bad_options_are_refused(void) {
  branchy_options* options = NULL;
  branchy_model* model = NULL;
  const float two[2] = {0.1f, 0.2f}, negative = -1.0f;
  OK(branchy_options_create(&options));
  EXPECT(branchy_options_set_threads(options, 0), BRANCHY_ERROR_INVALID_ARGUMENT, "threads is 0, expected >= 1");
  EXPECT(branchy_options_set_kernels(options, "fast"), BRANCHY_ERROR_INVALID_ARGUMENT,
         "kernels must be 'measure', 'own', 'dnnl' or 'pin:'");
  EXPECT(branchy_options_set_max_memory(options, 0), BRANCHY_ERROR_INVALID_ARGUMENT, "max_memory is 0 bytes");
  EXPECT(branchy_options_set_max_flops(options, NAN), BRANCHY_ERROR_INVALID_ARGUMENT, "max_flops is nan");
  EXPECT(branchy_options_set_max_flops(options, -1), BRANCHY_ERROR_INVALID_ARGUMENT, "expected > 0");
  EXPECT(branchy_options_set_thresholds(options, NULL, 1), BRANCHY_ERROR_INVALID_ARGUMENT, "thresholds is NULL");

  OK(branchy_options_set_thresholds(options, two, 2));
  EXPECT(branchy_model_load(tiny_path, options, &model), BRANCHY_ERROR_INVALID_ARGUMENT,
         "thresholds: expected 1 (one per early exit), got 2");
  OK(branchy_options_set_thresholds(options, &negative, 1));
  EXPECT(branchy_model_load(tiny_path, options, &model), BRANCHY_ERROR_INVALID_ARGUMENT,
         "thresholds must be >= 0 and not NaN");
  OK(branchy_options_set_thresholds(options, NULL, 0));

  OK(branchy_options_set_max_memory(options, 100));
  EXPECT(branchy_model_load(tiny_path, options, &model), BRANCHY_ERROR_MODEL, "over the limit of 100 bytes (max_memory)");
  {
    size_t size;
    const unsigned char* file = test_model_tiny(&size);
    EXPECT(branchy_model_load_buffer(file, size, options, &model), BRANCHY_ERROR_INVALID_ARGUMENT,
           "(max_memory)");
  }
  OK(branchy_options_set_max_memory(options, INT64_MAX));
  OK(branchy_options_set_max_flops(options, 10));
  EXPECT(branchy_model_load(tiny_path, options, &model), BRANCHY_ERROR_INVALID_ARGUMENT, "(max_flops)");
  CHECK(model == NULL);
  OK(branchy_options_set_max_flops(options, 1e12));

  /* Options that build: verify, own kernels, two threads, no input check. */
  OK(branchy_options_set_verify(options, 1));
  OK(branchy_options_set_kernels(options, "own"));
  OK(branchy_options_set_threads(options, 2));
  OK(branchy_options_set_check_inputs(options, 0));
  OK(branchy_model_load(tiny_path, options, &model));
  {
    branchy_context* context = context_of(model, 1);
    float x[kTinySize];
    branchy_result r;
    samples(x, 1, kTinySize, 8);
    x[3] = NAN;
    OK(branchy_classify(model, context, x, &r)); /* unchecked: the caller vouched */
    branchy_context_free(context);
  }
  branchy_model_free(model);
  branchy_options_free(options);
}

static void non_finite_inputs_are_refused(void) {
  branchy_model* model = tiny_model(-1, NULL);
  branchy_context* context = context_of(model, 4);
  static float x[3 * kTinySize];
  float logits[kTinyExits * kTinyClasses];
  branchy_result r[3];
  samples(x, 3, kTinySize, 9);
  x[17] = NAN;
  EXPECT(branchy_classify(model, context, x, &r[0]), BRANCHY_ERROR_INVALID_ARGUMENT,
         "branchy_classify: input contains NaN at element 17");
  EXPECT(branchy_all_exit_logits(model, context, x, logits, kTinyExits * kTinyClasses),
         BRANCHY_ERROR_INVALID_ARGUMENT, "input contains NaN at element 17");
  x[17] = 0;
  x[2 * kTinySize + 5] = INFINITY;
  EXPECT(branchy_classify_batch(model, context, x, 3, r), BRANCHY_ERROR_INVALID_ARGUMENT,
         "input sample 2 contains +inf at element 5");
  x[2 * kTinySize + 5] = 0;
  OK(branchy_classify_batch(model, context, x, 3, r)); /* and the model still works */
  branchy_context_free(context);
  branchy_model_free(model);
}

static void null_pointers_are_named(void) {
  branchy_model* model = tiny_model(-1, NULL);
  branchy_context* context = context_of(model, 1);
  branchy_options* options = NULL;
  branchy_model_info info;
  branchy_footprint footprint;
  branchy_result r;
  float x[kTinySize], logits[kTinyExits * kTinyClasses], t;
  uint8_t p[kTinySize];
  int64_t counts[kTinyExits];
  size_t count;
  const char* name;
  const branchy_status invalid = BRANCHY_ERROR_INVALID_ARGUMENT;
  samples(x, 1, kTinySize, 10);
  memset(p, 0, sizeof p);
  EXPECT(branchy_options_create(NULL), invalid, "branchy_options_create: out is NULL");
  EXPECT(branchy_options_set_threads(NULL, 1), invalid, "options is NULL");
  EXPECT(branchy_options_set_kernels(NULL, "own"), invalid, "options is NULL");
  OK(branchy_options_create(&options));
  EXPECT(branchy_options_set_kernels(options, NULL), invalid, "kernels is NULL");
  branchy_options_free(options);
  EXPECT(branchy_options_set_thresholds(NULL, &t, 1), invalid, "options is NULL");
  EXPECT(branchy_options_set_max_memory(NULL, 1), invalid, "options is NULL");
  EXPECT(branchy_options_set_max_flops(NULL, 1), invalid, "options is NULL");
  EXPECT(branchy_options_set_verify(NULL, 1), invalid, "options is NULL");
  EXPECT(branchy_options_set_check_inputs(NULL, 1), invalid, "options is NULL");
  EXPECT(branchy_model_load(NULL, NULL, &model), invalid, "branchy_model_load: path is NULL");
  EXPECT(branchy_model_load(tiny_path, NULL, NULL), invalid, "out is NULL");
  EXPECT(branchy_model_load_buffer(NULL, 100, NULL, &model), invalid, "data is NULL");
  EXPECT(branchy_model_load_buffer("x", 1, NULL, NULL), invalid, "out is NULL");
  EXPECT(branchy_model_get_info(NULL, &info), invalid, "model is NULL");
  EXPECT(branchy_model_get_info(model, NULL), invalid, "info is NULL");
  EXPECT(branchy_model_thresholds(NULL, &t, 1, &count), invalid, "model is NULL");
  EXPECT(branchy_model_thresholds(model, &t, 1, NULL), invalid, "count is NULL");
  EXPECT(branchy_model_thresholds(model, NULL, 1, &count), invalid, "thresholds is NULL");
  EXPECT(branchy_model_class_name(NULL, 0, &name), invalid, "model is NULL");
  EXPECT(branchy_model_class_name(model, 0, NULL), invalid, "name is NULL");
  EXPECT(branchy_model_describe(NULL, NULL, 0, NULL), invalid, "model is NULL");
  EXPECT(branchy_model_describe(model, NULL, 10, NULL), invalid, "text is NULL");
  EXPECT(branchy_model_footprint(NULL, 1, &footprint), invalid, "model is NULL");
  EXPECT(branchy_model_footprint(model, 1, NULL), invalid, "footprint is NULL");
  EXPECT(branchy_model_exit_counts(NULL, counts, 2), invalid, "model is NULL");
  EXPECT(branchy_model_exit_counts(model, NULL, 2), invalid, "counts is NULL");
  EXPECT(branchy_model_reset_exit_counts(NULL), invalid, "model is NULL");
  EXPECT(branchy_context_create(NULL, 1, &context), invalid, "model is NULL");
  EXPECT(branchy_context_create(model, 1, NULL), invalid, "out is NULL");
  EXPECT(branchy_classify(NULL, context, x, &r), invalid, "branchy_classify: model is NULL");
  EXPECT(branchy_classify(model, NULL, x, &r), invalid, "context is NULL");
  EXPECT(branchy_classify(model, context, NULL, &r), invalid, "input is NULL");
  EXPECT(branchy_classify(model, context, x, NULL), invalid, "result is NULL");
  EXPECT(branchy_classify_batch(NULL, context, x, 1, &r), invalid, "model is NULL");
  EXPECT(branchy_classify_batch(model, NULL, x, 1, &r), invalid, "context is NULL");
  EXPECT(branchy_classify_batch(model, context, NULL, 1, &r), invalid, "inputs is NULL");
  EXPECT(branchy_classify_batch(model, context, x, 1, NULL), invalid, "results is NULL");
  EXPECT(branchy_classify_batch(model, context, x, -1, &r), invalid, "batch is -1, expected >= 0");
  EXPECT(branchy_classify_pixels(NULL, context, p, BRANCHY_PIXELS_CHW, &r), invalid, "model is NULL");
  EXPECT(branchy_classify_pixels(model, NULL, p, BRANCHY_PIXELS_CHW, &r), invalid, "context is NULL");
  EXPECT(branchy_classify_pixels(model, context, NULL, BRANCHY_PIXELS_CHW, &r), invalid, "pixels is NULL");
  EXPECT(branchy_classify_pixels(model, context, p, BRANCHY_PIXELS_CHW, NULL), invalid, "result is NULL");
  EXPECT(branchy_classify_batch_pixels(NULL, context, p, 1, BRANCHY_PIXELS_CHW, &r), invalid, "model is NULL");
  EXPECT(branchy_classify_batch_pixels(model, NULL, p, 1, BRANCHY_PIXELS_CHW, &r), invalid, "context is NULL");
  EXPECT(branchy_classify_batch_pixels(model, context, NULL, 1, BRANCHY_PIXELS_CHW, &r), invalid, "pixels is NULL");
  EXPECT(branchy_classify_batch_pixels(model, context, p, 1, BRANCHY_PIXELS_CHW, NULL), invalid, "results is NULL");
  EXPECT(branchy_classify_batch_pixels(model, context, p, -2, BRANCHY_PIXELS_CHW, &r), invalid, "batch is -2");
  EXPECT(branchy_all_exit_logits(NULL, context, x, logits, 6), invalid, "model is NULL");
  EXPECT(branchy_all_exit_logits(model, NULL, x, logits, 6), invalid, "context is NULL");
  EXPECT(branchy_all_exit_logits(model, context, NULL, logits, 6), invalid, "input is NULL");
  EXPECT(branchy_all_exit_logits(model, context, x, NULL, 6), invalid, "logits is NULL");
  EXPECT(branchy_all_exit_logits(model, context, x, logits, 5), BRANCHY_ERROR_BUFFER_TOO_SMALL,
         "logits: capacity is 5 floats, the answer needs 6");
  /* The free functions take NULL. */
  branchy_options_free(NULL);
  branchy_context_free(NULL);
  branchy_model_free(NULL);
  branchy_context_free(context);
  branchy_model_free(model);
}

static void a_context_of_another_model_is_refused(void) {
  branchy_model *tiny = tiny_model(-1, NULL), *dag = NULL;
  branchy_context *mine, *theirs, *none = NULL;
  float x[kTinySize], logits[kTinyExits * kTinyClasses];
  uint8_t p[kTinySize];
  branchy_result r;
  OK(branchy_model_load(dag_path, NULL, &dag));
  mine = context_of(tiny, 2);
  theirs = context_of(dag, 2);
  samples(x, 1, kTinySize, 11);
  memset(p, 0, sizeof p);
  EXPECT(branchy_classify(tiny, theirs, x, &r), BRANCHY_ERROR_INVALID_ARGUMENT, "this Context was made by another Plan");
  EXPECT(branchy_classify_batch(tiny, theirs, x, 1, &r), BRANCHY_ERROR_INVALID_ARGUMENT, "another Plan");
  EXPECT(branchy_classify_pixels(tiny, theirs, p, BRANCHY_PIXELS_CHW, &r), BRANCHY_ERROR_INVALID_ARGUMENT, "another Plan");
  EXPECT(branchy_classify_batch_pixels(tiny, theirs, p, 1, BRANCHY_PIXELS_CHW, &r), BRANCHY_ERROR_INVALID_ARGUMENT, "another Plan");
  EXPECT(branchy_all_exit_logits(tiny, theirs, x, logits, 6), BRANCHY_ERROR_INVALID_ARGUMENT, "another Plan");
  OK(branchy_classify(tiny, mine, x, &r));
  EXPECT(branchy_context_create(tiny, 0, &none), BRANCHY_ERROR_INVALID_ARGUMENT, "max_batch must be >= 1");
  CHECK(none == NULL);
  branchy_context_free(mine);
  branchy_context_free(theirs);
  branchy_model_free(tiny);
  branchy_model_free(dag);
}

/* In a child process with little address space: a context too large to allocate is
 * BRANCHY_ERROR_OUT_OF_MEMORY with a message saying what ran out, and the model still works.
 * Skipped where the limit does not take: qemu-user (make test-aarch64) reports success but
 * applies no address-space limit to its guest. */
static void an_allocation_that_fails_is_a_status(void) {
  const pid_t child = fork();
  int status = 0;
  if (child == 0) {
    branchy_model* model = tiny_model(-1, "own");
    branchy_context *huge = NULL, *context;
    float x[kTinySize];
    branchy_result r;
    struct rlimit limit, now;
    long pages = 0;
    FILE* statm = fopen("/proc/self/statm", "r");
    if (statm == NULL || fscanf(statm, "%ld", &pages) != 1) _exit(3);
    fclose(statm);
    getrlimit(RLIMIT_AS, &limit);
    limit.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)256 << 20);
    if (setrlimit(RLIMIT_AS, &limit) != 0) _exit(3);
    if (getrlimit(RLIMIT_AS, &now) != 0 || now.rlim_cur != limit.rlim_cur) {
      printf("  skipped: the address-space limit did not take (an emulator?)\n");
      fflush(stdout);
      _exit(0);
    }
    EXPECT(branchy_context_create(model, INT_MAX, &huge), BRANCHY_ERROR_OUT_OF_MEMORY,
           "branchy_context_create: the engine ran out of memory (std::bad_alloc)");
    CHECK(huge == NULL);
    context = context_of(model, 2);
    samples(x, 1, kTinySize, 12);
    OK(branchy_classify(model, context, x, &r));
    branchy_context_free(context);
    branchy_model_free(model);
    fflush(stdout);
    _exit(failures ? 1 : 0);
  }
  CHECK(child > 0 && waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ---- threads: a few share one model, each with its own context, and answer as serial calls ---- */

enum { kThreads = 4, kCalls = 200, kMostBatch = 8 };

struct worker {
  const branchy_model* model;
  int id;
  branchy_result got[kCalls][kMostBatch];
  float logits[kCalls][kTinyExits * kTinyClasses];
  int failed;
};

static float pool_x[64 * kTinySize];
static uint8_t pool_p[64 * kTinySize];

/* The answers call i of worker `id` gives (all_exit_logits: none). */
static int answers(int id, int i) {
  const int kind = (id + i) % 4;
  return kind == 0 ? 1 : kind == 3 ? 0 : 1 + (id + i) % kMostBatch;
}

/* Call i of worker `id`: a sample, a batch of 1 to 8, raw pixels or every exit's logits, on
 * samples drawn from the pool. */
static int run_call(const branchy_model* model, branchy_context* context, int id, int i,
                    branchy_result* out, float* logits) {
  const int first = (id * 7 + i * 3) % (64 - kMostBatch), batch = answers(id, i);
  switch ((id + i) % 4) {
    case 0: return branchy_classify(model, context, pool_x + first * kTinySize, out);
    case 1: return branchy_classify_batch(model, context, pool_x + first * kTinySize, batch, out);
    case 2: return branchy_classify_batch_pixels(model, context, pool_p + first * kTinySize, batch,
                                                 BRANCHY_PIXELS_HWC, out);
    default:
      return branchy_all_exit_logits(model, context, pool_x + first * kTinySize, logits,
                                     kTinyExits * kTinyClasses);
  }
}

static void* work(void* arg) {
  struct worker* w = arg;
  branchy_context* context = NULL;
  int i;
  if (branchy_context_create(w->model, 5, &context) != BRANCHY_OK) {
    w->failed = 1;
    return NULL;
  }
  for (i = 0; i < kCalls; ++i) {
    if (run_call(w->model, context, w->id, i, w->got[i], w->logits[i]) != BRANCHY_OK) w->failed = 1;
  }
  branchy_context_free(context);
  return NULL;
}

static void threads_sharing_a_model_answer_as_serial_calls(void) {
  static struct worker serial[kThreads], threaded[kThreads];
  branchy_model* model = tiny_model(kMixed, NULL);
  branchy_context* context = context_of(model, 5);
  pthread_t threads[kThreads];
  int64_t counts[kTinyExits];
  int t, i, k;
  int64_t exits[kTinyExits] = {0, 0};
  samples(pool_x, 64, kTinySize, 13);
  pixels(pool_p, 64, kTinySize, 14);
  memset(serial, 0, sizeof serial);
  memset(threaded, 0, sizeof threaded);
  for (t = 0; t < kThreads; ++t) {
    for (i = 0; i < kCalls; ++i) {
      OK(run_call(model, context, t, i, serial[t].got[i], serial[t].logits[i]));
    }
  }
  OK(branchy_model_reset_exit_counts(model));
  for (t = 0; t < kThreads; ++t) {
    threaded[t].model = model;
    threaded[t].id = t;
    CHECK(pthread_create(&threads[t], NULL, work, &threaded[t]) == 0);
  }
  for (t = 0; t < kThreads; ++t) CHECK(pthread_join(threads[t], NULL) == 0);
  for (t = 0; t < kThreads; ++t) {
    CHECK(!threaded[t].failed);
    for (i = 0; i < kCalls; ++i) {
      CHECK(memcmp(threaded[t].logits[i], serial[t].logits[i], sizeof serial[t].logits[i]) == 0);
      for (k = 0; k < answers(t, i); ++k) {
        CHECK(same(threaded[t].got[i][k], serial[t].got[i][k]));
        ++exits[threaded[t].got[i][k].exit];
      }
    }
  }
  CHECK(exits[0] > 0 && exits[1] > 0);
  OK(branchy_model_exit_counts(model, counts, kTinyExits)); /* every thread's, none lost */
  CHECK(counts[0] == exits[0] && counts[1] == exits[1]);
  branchy_context_free(context);
  branchy_model_free(model);
}

int main(void) {
  struct {
    const char* name;
    void (*run)(void);
  } tests[] = {
      /* First, before any thread of the runtime's exists: it forks. */
      {"an_allocation_that_fails_is_a_status", an_allocation_that_fails_is_a_status},
      {"version_and_status_names", version_and_status_names},
      {"what_a_model_takes_and_gives", what_a_model_takes_and_gives},
      {"answers_follow_the_exits_logits", answers_follow_the_exits_logits},
      {"pixels_are_prepared_as_the_file_records", pixels_are_prepared_as_the_file_records},
      {"exit_counts_count_every_classified_sample", exit_counts_count_every_classified_sample},
      {"a_buffer_loads_in_place_where_aligned", a_buffer_loads_in_place_where_aligned},
      {"files_that_are_no_model_are_refused", files_that_are_no_model_are_refused},
      {"bad_options_are_refused", bad_options_are_refused},
      {"non_finite_inputs_are_refused", non_finite_inputs_are_refused},
      {"null_pointers_are_named", null_pointers_are_named},
      {"a_context_of_another_model_is_refused", a_context_of_another_model_is_refused},
      {"threads_sharing_a_model_answer_as_serial_calls", threads_sharing_a_model_answer_as_serial_calls},
  };
  size_t i;
  write_files();
  for (i = 0; i < sizeof tests / sizeof tests[0]; ++i) {
    const int before = failures;
    tests[i].run();
    printf("%s %s\n", failures == before ? "PASS" : "FAIL", tests[i].name);
    fflush(stdout);
  }
  remove_files();
  printf("%d failure(s)\n", failures);
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
