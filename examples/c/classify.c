/* classify: a .branchy model from C (include/branchy.h). One prepared sample of 0.5s, as the
 * README's example; then, given a file of raw 8-bit images [N, H, W, C], each image, prepared by
 * the runtime as the model file records, in one batch call.
 *
 *   classify MODEL [IMAGES.u8]
 *   class 3, exit 1, entropy 0.0123
 *   image 0: class 9, exit 1, entropy 0.0012
 */
#include <stdio.h>
#include <stdlib.h>

#include "branchy.h"

/* The whole file at `path` into a new buffer; NULL when it cannot be read. */
static unsigned char* read_all(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* data = NULL;
  long n;
  if (f != NULL && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (data = malloc((size_t)n)) != NULL && fread(data, 1, (size_t)n, f) != (size_t)n) {
    free(data);
    data = NULL;
  }
  if (data != NULL) *size = (size_t)n;
  if (f != NULL) fclose(f);
  return data;
}

static void print(const char* label, branchy_result r) {
  printf("%sclass %lld, exit %d, entropy %.4f\n", label, (long long)r.prediction, r.exit + 1, r.score);
}

int main(int argc, char** argv) {
  branchy_model* model = NULL;
  branchy_context* context = NULL;
  branchy_model_info info;
  branchy_result r, *results = NULL;
  float* input = NULL;
  unsigned char* images = NULL;
  size_t i, n, size = 0;
  int failed = 1;
  if (argc < 2) {
    fprintf(stderr, "usage: classify MODEL [IMAGES.u8]\n");
    return 2;
  }
  if (branchy_model_load(argv[1], NULL, &model) != BRANCHY_OK ||      /* built once, shared by threads */
      branchy_context_create(model, 64, &context) != BRANCHY_OK ||    /* one per thread: all scratch */
      branchy_model_get_info(model, &info) != BRANCHY_OK)
    goto done;
  n = (size_t)info.channels * info.height * info.width;
  if ((input = malloc(n * sizeof *input)) == NULL) goto done;
  for (i = 0; i < n; ++i) input[i] = 0.5f; /* one sample, [C, H, W], prepared */
  if (branchy_classify(model, context, input, &r) != BRANCHY_OK) goto done;
  print("", r);

  if (argc > 2) {
    char label[32];
    if ((images = read_all(argv[2], &size)) == NULL || size % n != 0 ||
        (results = malloc(size / n * sizeof *results)) == NULL) {
      fprintf(stderr, "classify: %s is not a file of %zu-byte images\n", argv[2], n);
      goto done;
    }
    if (branchy_classify_batch_pixels(model, context, images, (int64_t)(size / n), BRANCHY_PIXELS_HWC,
                                      results) != BRANCHY_OK)
      goto done;
    for (i = 0; i < size / n; ++i) {
      snprintf(label, sizeof label, "image %zu: ", i);
      print(label, results[i]);
    }
  }
  failed = 0;
done:
  if (failed && branchy_last_error()[0]) fprintf(stderr, "classify: %s\n", branchy_last_error());
  free(results);
  free(images);
  free(input);
  branchy_context_free(context);
  branchy_model_free(model);
  return failed;
}
