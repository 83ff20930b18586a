// Model files for the C API's test (test_models.h), from the C++ tests' builder.
#include "test_models.h"

#include <cstdint>
#include <vector>

#include "model_builder.h"

const unsigned char* test_model_tiny(size_t* size) {
  static const std::vector<uint8_t> file = [] {
    model_builder::Writer w = model_builder::tiny_writer();
    w.prep = {255.0f, 0.5f, 0.25f, 0.5f, 2.0f};
    return w.file();
  }();
  *size = file.size();
  return file.data();
}

const unsigned char* test_model_dag(size_t* size) {
  static const std::vector<uint8_t> file = model_builder::branchy_dag();
  *size = file.size();
  return file.data();
}
