// Reading and checking a .branchy model file (docs/model-format.md). No libtorch, no Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "exit_math.h"

namespace branchy {

constexpr uint32_t kFormatVersion = 1;

// A file that is not a usable model: the message names the field or check that failed.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class OpKind : uint32_t {
  Conv2d = 1,
  MaxPool2d = 2,
  AvgPool2d = 3,
  Lrn = 4,
  Relu = 5,
  Linear = 6,
  Flatten = 7,
  ResBlock = 8,
};

const char* op_name(OpKind kind);

// f32 elements inside the model's weights section (64-byte aligned).
struct TensorView {
  const float* data = nullptr;
  int64_t count = 0;
};

// Activation shape of one sample: [channels, height, width]; flattened vectors are [n, 1, 1].
struct Shape {
  int32_t c = 0, h = 0, w = 0;
  int64_t numel() const { return int64_t(c) * h * w; }
  bool operator==(const Shape& o) const { return c == o.c && h == o.h && w == o.w; }
};

// One op with its attributes by name; which fields mean something depends on `kind`
// (the table in docs/model-format.md).
struct Op {
  OpKind kind = OpKind::Relu;
  int32_t in_channels = 0, out_channels = 0;   // conv2d, res_block; linear: features
  int32_t kernel_h = 0, kernel_w = 0;          // conv2d, pools
  int32_t stride_h = 1, stride_w = 1;          // conv2d, pools (res_block: stride_h)
  int32_t pad_h = 0, pad_w = 0;                // conv2d, pools
  bool ceil_mode = false;                      // pools
  bool relu = false;                           // conv2d, pools, linear: ReLU after
  int32_t size = 0;                            // lrn
  float alpha = 0.0f, beta = 0.0f, k = 0.0f;   // lrn
  std::vector<TensorView> tensors;             // weights, biases (the kind's table order)
  Shape in, out;                               // filled by the reader's shape check
};

struct Exit {
  int32_t stage = 0;        // the exit reads this stage's output
  std::vector<Op> head;     // ends in [num_classes]
};

// A parsed, checked model. It owns a copy of the file's bytes, placed 0-63 bytes into `bytes` so
// that the weights section is 64-byte aligned in memory; the TensorViews point into it.
struct Model {
  uint32_t version = 0;
  Shape input;
  int32_t num_classes = 0;
  Criterion criterion = Criterion::Entropy;
  std::vector<float> thresholds;          // one per early exit (num_exits - 1)
  std::vector<std::string> class_names;   // empty or num_classes
  std::vector<std::vector<Op>> stages;
  std::vector<Exit> exits;
  std::string metadata_json;
  std::shared_ptr<const std::vector<uint8_t>> bytes;
};

// Parses and checks a whole model file held in memory; copies the bytes. Throws ModelError.
Model parse_model(const uint8_t* data, size_t size);

// Reads a file and parses it. Throws ModelError (also for I/O errors, naming the path).
Model load_model(const std::string& path);

// The model as JSON (shapes, attributes, thresholds, class names, metadata, weight count): what
// `branchy inspect` prints and what the Python tests compare against the network.
std::string summarize(const Model& model);

// FNV-1a 64 of `size` bytes (the file's checksum).
uint64_t fnv1a64(const uint8_t* data, size_t size);

}  // namespace branchy
