/* Model files for the C API's test, made by the C++ tests' builder (tests/cpp/model_builder.h). */
#ifndef BRANCHY_TEST_MODELS_H
#define BRANCHY_TEST_MODELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The tiny model: input [2, 6, 6], 3 classes ("cat", "dog", "d\xc3\xa9j\xc3\xa0"), 2 exits,
 * entropy threshold 0.5, and an input preparation: pixel_max 255, mean {0.5, 0.25}, std
 * {0.5, 2}. The bytes live as long as the program. */
const unsigned char* test_model_tiny(size_t* size);

/* The graph with skips: input [3, 8, 8], 3 classes, 3 exits, no input preparation. */
const unsigned char* test_model_dag(size_t* size);

#ifdef __cplusplus
}
#endif

#endif
