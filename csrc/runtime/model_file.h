// Reading and checking a .branchy model file, format version 2 (docs/model-format.md): a graph of
// values and ops, cut into stages and exit heads. No libtorch, no Python. What each op kind means
// lives in its declaration (csrc/runtime/ops/), found through the op registry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "exit_math.h"
#include "visibility.h"

namespace branchy {

constexpr uint32_t kFormatVersion = 2;
// Header flag: the graph section records the input preparation (InputPrep) after the class names.
constexpr uint32_t kFlagInputPrep = 0x1;

// A file that is not a usable model: the message names the field or check that failed.
class BRANCHY_API ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct OpDef;  // ops/registry.h

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
  bool operator!=(const Shape& o) const { return !(*this == o); }
};

// An elementwise function: the `activation` op's, and the epilogue an op fuses after itself.
// The codes are the file's (docs/model-format.md, "Activations").
enum class Act : int32_t {
  None = 0,
  Relu = 1,
  Clamp = 2,        // min(max(x, lo), hi): ReLU6, hardtanh
  Hardswish = 3,    // x * relu6(x + 3) / 6
  Hardsigmoid = 4,  // relu6(x + 3) / 6
  Silu = 5,         // x * sigmoid(x)
  Sigmoid = 6,
  GeluErf = 7,      // x / 2 * (1 + erf(x / sqrt 2))
  GeluTanh = 8,     // x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))
};
constexpr int32_t kLastAct = 8;
BRANCHY_API const char* act_name(Act act);

// One op: its kind's declaration, the values it reads and writes, its attributes and tensors.
// `ints` and `floats` are the file's words in the kind's order; the kind's check turns them into
// the typed fields below (which fields mean something depends on the kind, see its declaration).
struct BRANCHY_API Op {
  const OpDef* def = nullptr;
  int32_t index = 0;                    // position in the model's op list
  std::vector<int32_t> inputs;          // value ids
  int32_t output = 0;                   // value id: index + 1 (value 0 is the model's input)
  std::vector<int32_t> ints;
  std::vector<float> floats;
  std::vector<TensorView> tensors;      // the kind's tensors, in its order
  std::vector<uint32_t> tensor_ids;     // their entries in the model's tensor table
  std::vector<Shape> ins;               // shape of each input
  Shape in, out;                        // in: the first input's shape

  // Typed attributes.
  int32_t in_channels = 0, out_channels = 0;  // conv2d, res_block; linear: features
  int32_t kernel_h = 0, kernel_w = 0;         // conv2d, pools
  int32_t stride_h = 1, stride_w = 1;         // conv2d, pools (res_block: stride_h)
  int32_t pad_h = 0, pad_w = 0;               // conv2d, pools: top and left padding
  int32_t pad_bottom = 0, pad_right = 0;      // conv2d, pools
  int32_t dilation_h = 1, dilation_w = 1;     // conv2d
  int32_t groups = 1;                         // conv2d, channel_shuffle
  bool input_scale = false;                   // conv2d: input 1 scales input 0 per channel
  bool ceil_mode = false;                     // pools
  bool max_pool = false;                      // pools: max (else average)
  Act act = Act::None;                        // fused epilogue (activation: the function)
  float act_lo = 0.0f, act_hi = 0.0f;         // Act::Clamp's bounds
  bool relu = false;                          // act == Act::Relu (the kernels' fast path)
  int32_t size = 0;                           // lrn
  float alpha = 0.0f, beta = 0.0f, k = 0.0f;  // lrn
  float eps = 0.0f;                           // layer_norm
  int32_t start = 0;                          // channel_slice: first channel

  const char* name() const;  // the kind's name
};

// The input [C, H, W] and its first ops, cut off where the exits' stages are.
struct Stage {
  int32_t first_op = 0, num_ops = 0;    // ops [first_op, first_op + num_ops) of Model::ops
  std::vector<int32_t> outputs;         // values the later stages and this stage's exit read
};

struct Exit {
  int32_t stage = 0;                    // the exit reads this stage's output value `input`
  int32_t input = 0;
  int32_t first_op = 0, num_ops = 0;    // the head: ops of Model::ops, ending in [num_classes]
  int32_t logits = 0;                   // value id of the logits (input when the head is empty)
};

// How raw 8-bit pixels became the float input the network was trained on: x / pixel_max, then
// (x - mean[c]) / std[c], each step in float32 as PyTorch computes it (so that the runtime's
// preparation gives the very floats training's did).
struct InputPrep {
  float pixel_max = 0.0f;  // 0: the file records none (then only prepared float input runs)
  std::vector<float> mean, std;  // one per input channel
  bool recorded() const { return pixel_max > 0.0f; }
};

// A parsed, checked model. It owns a copy of the file's bytes, placed 0-63 bytes into `bytes` so
// that the weights section is 64-byte aligned in memory; the TensorViews point into it.
struct BRANCHY_API Model {
  uint32_t version = 0;
  Shape input;
  int32_t num_classes = 0;
  Criterion criterion = Criterion::Entropy;
  std::vector<float> thresholds;          // one per early exit (num_exits - 1)
  std::vector<std::string> class_names;   // empty or num_classes
  InputPrep prep;                         // the input preparation, when the file records it
  std::vector<TensorView> tensors;        // the tensor table; every one used by some op
  std::vector<Op> ops;                    // the stages' ops, then the heads'
  std::vector<Shape> values;              // value 0: the input; value i + 1: ops[i]'s output
  std::vector<Stage> stages;
  std::vector<Exit> exits;
  std::string metadata_json;
  std::shared_ptr<const void> bytes;      // owns what the tensors point into: the file mapped, or a copy
  const uint8_t* file = nullptr;          // the file's bytes as the tensors see them (inside `bytes`)
  size_t file_size = 0;

  int64_t weight_count() const;           // f32 elements of the tensor table (each stored once)
};

// Parses and checks a whole model file held in memory. Copies the bytes, unless `owner` keeps
// them alive and the weights section lies 64-byte aligned in them: then the model points into
// them (and holds `owner`). Throws ModelError.
BRANCHY_API Model parse_model(const uint8_t* data, size_t size, std::shared_ptr<const void> owner = nullptr);

// Maps a file and parses it, the weights read in place (no copy). Refused before reading: a path
// that is not a regular file (/dev/zero), a file over `max_bytes` (PlanOptions::max_memory's
// default). Throws ModelError (also for I/O errors, naming the path).
BRANCHY_API Model load_model(const std::string& path, int64_t max_bytes = int64_t(4) << 30);

// The model as JSON (shapes, attributes, thresholds, class names, metadata, weight count): what
// `branchy inspect` prints and what the Python tests compare against the network.
BRANCHY_API std::string summarize(const Model& model);

// The op registry as JSON: per kind its name, code, attributes, tensors, inputs and semantics (what
// the Python writer and the docs read).
BRANCHY_API std::string registry_json();

// FNV-1a 64 of `size` bytes (the file's checksum).
BRANCHY_API uint64_t fnv1a64(const uint8_t* data, size_t size);

}  // namespace branchy
