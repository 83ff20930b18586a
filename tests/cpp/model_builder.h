// Builds small .branchy files (format version 2) in memory for the C++ tests, laid out as
// csrc/runtime/model_file.cpp reads them: the header, the graph section (input, criterion,
// thresholds, class names, the tensor table, the ops, the stages, the exits), the metadata and the
// weights, then the checksum.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/model_file.h"

namespace model_builder {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr size_t kHeader = 72;

inline void put32(std::vector<uint8_t>& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
}

inline void put64(std::vector<uint8_t>& b, uint64_t v) {
  put32(b, uint32_t(v));
  put32(b, uint32_t(v >> 32));
}

inline void set64(std::vector<uint8_t>& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = uint8_t(v >> (8 * i));
}

inline void set32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = uint8_t(v >> (8 * i));
}

inline uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// The kind code of an op kind's name, read from registry_json() as the Python writer reads it: the
// public API, so that the C API's test, which links libbranchy.so (its API alone exported), can
// build models too. Throws for a name it does not know.
inline uint32_t code_of(const std::string& kind) {
  static const std::string registry = branchy::registry_json();
  const std::string key = "{\"name\": \"" + kind + "\", \"code\": ";
  const size_t at = registry.find(key);
  if (at == std::string::npos) throw std::logic_error("model_builder: no op kind named " + kind);
  return uint32_t(std::stoul(registry.substr(at + key.size())));
}

// A v2 file as records a test may change before file() writes them. Ops go into one list in the
// order they are added (value k + 1 is op k's output, value 0 the input); stage() and exit() take
// the ops added since the last stage or exit, so a model adds its stages' ops, then its heads'.
// Every tensor is a new table entry filled with fill(i), 0.01 * i unless a model says otherwise.
struct Writer {
  struct Tensor {
    uint64_t offset, count;  // bytes into the weights section, f32 elements
  };
  struct OpRecord {
    uint32_t kind;
    std::vector<uint32_t> inputs;
    std::vector<int32_t> ints;
    std::vector<float> floats;
    std::vector<uint32_t> tensors;  // table ids
  };
  struct StageRecord {
    uint32_t num_ops;
    std::vector<uint32_t> outputs;
  };
  struct ExitRecord {
    uint32_t stage, input, num_ops;
  };

  uint32_t version = 2;
  uint32_t in_c = 1, in_h = 1, in_w = 1, num_classes = 1, criterion = 0;
  std::vector<float> thresholds;
  std::vector<std::string> names;
  std::vector<float> prep;  // the input preparation: pixel_max, then mean and std per input
                            // channel (flag 0x1); empty: none
  std::vector<Tensor> tensors;
  std::vector<OpRecord> ops;
  std::vector<StageRecord> stages;
  std::vector<ExitRecord> exits;
  std::vector<uint32_t> trailing;  // words after the last exit (none in a good file)
  std::vector<uint8_t> weights;
  std::string metadata = "{\"name\": \"tiny\"}";
  size_t taken = 0;  // ops a stage or exit took
  float (*fill)(uint64_t i) = [](uint64_t i) { return 0.01f * float(i); };

  // A new table entry of `count` floats fill(i) at the next 64-byte boundary; its id.
  uint32_t tensor(uint64_t count) {
    weights.resize((weights.size() + 63) / 64 * 64);
    tensors.push_back({weights.size(), count});
    for (uint64_t i = 0; i < count; ++i) put32(weights, bits(fill(i)));
    return uint32_t(tensors.size() - 1);
  }

  // An op of kind `code` reading `inputs` (value ids), with a new tensor per element count;
  // returns its output's value id.
  uint32_t op(uint32_t code, std::vector<uint32_t> inputs, std::vector<int32_t> ints = {},
              std::vector<float> floats = {}, std::vector<uint64_t> tensor_counts = {}) {
    OpRecord r{code, std::move(inputs), std::move(ints), std::move(floats), {}};
    for (uint64_t n : tensor_counts) r.tensors.push_back(tensor(n));
    ops.push_back(std::move(r));
    return uint32_t(ops.size());
  }
  uint32_t op(const std::string& kind, std::vector<uint32_t> inputs, std::vector<int32_t> ints = {},
              std::vector<float> floats = {}, std::vector<uint64_t> tensor_counts = {}) {
    return op(code_of(kind), std::move(inputs), std::move(ints), std::move(floats),
              std::move(tensor_counts));
  }

  // A stage of the ops added since the last stage or exit, passing on `outputs`.
  void stage(std::vector<uint32_t> outputs) {
    stages.push_back({uint32_t(ops.size() - taken), std::move(outputs)});
    taken = ops.size();
  }

  // An exit after stage `s` reading `input`, its head the ops added since the last stage or exit.
  void exit(uint32_t s, uint32_t input) {
    exits.push_back({s, input, uint32_t(ops.size() - taken)});
    taken = ops.size();
  }

  // ---- byte positions in file() (the graph section starts right after the header) ----

  size_t names_bytes() const {
    size_t n = 0;
    for (const auto& s : names) n += 4 + (s.size() + 3) / 4 * 4;
    return n;
  }
  // The u32 num_tensors.
  size_t table_at() const {
    return kHeader + 4 * (5 + 1 + thresholds.size() + 1 + prep.size()) + names_bytes();
  }
  // Tensor i's record: u64 offset, then u64 element count.
  size_t tensor_at(size_t i) const { return table_at() + 4 + 16 * i; }
  // The u32 num_ops, then op k's words.
  size_t ops_at() const { return tensor_at(tensors.size()); }
  size_t op_at(size_t k) const {
    size_t at = ops_at() + 4;
    for (size_t i = 0; i < k; ++i) at += op_bytes(ops[i]);
    return at;
  }
  // The u32 num_stages, then the stages' records, then the exits'.
  size_t stages_at() const { return op_at(ops.size()); }
  static size_t op_bytes(const OpRecord& r) {
    return 4 * (5 + r.inputs.size() + r.ints.size() + r.floats.size() + r.tensors.size());
  }

  std::vector<uint8_t> graph() const {
    std::vector<uint8_t> g;
    for (uint32_t v : {in_c, in_h, in_w, num_classes, criterion}) put32(g, v);
    put32(g, uint32_t(thresholds.size()));
    for (float t : thresholds) put32(g, bits(t));
    put32(g, uint32_t(names.size()));
    for (const auto& s : names) {
      put32(g, uint32_t(s.size()));
      g.insert(g.end(), s.begin(), s.end());
      g.resize((g.size() + 3) / 4 * 4);
    }
    for (float v : prep) put32(g, bits(v));
    put32(g, uint32_t(tensors.size()));
    for (const Tensor& t : tensors) {
      put64(g, t.offset);
      put64(g, t.count);
    }
    put32(g, uint32_t(ops.size()));
    for (const OpRecord& r : ops) {
      put32(g, r.kind);
      put32(g, uint32_t(r.inputs.size()));
      for (uint32_t v : r.inputs) put32(g, v);
      put32(g, uint32_t(r.ints.size()));
      for (int32_t v : r.ints) put32(g, uint32_t(v));
      put32(g, uint32_t(r.floats.size()));
      for (float v : r.floats) put32(g, bits(v));
      put32(g, uint32_t(r.tensors.size()));
      for (uint32_t t : r.tensors) put32(g, t);
    }
    put32(g, uint32_t(stages.size()));
    for (const StageRecord& s : stages) {
      put32(g, s.num_ops);
      put32(g, uint32_t(s.outputs.size()));
      for (uint32_t v : s.outputs) put32(g, v);
    }
    put32(g, uint32_t(exits.size()));
    for (const ExitRecord& e : exits) {
      put32(g, e.stage);
      put32(g, e.input);
      put32(g, e.num_ops);
    }
    for (uint32_t v : trailing) put32(g, v);
    return g;
  }

  std::vector<uint8_t> file() const {
    const std::vector<uint8_t> g = graph();
    std::vector<uint8_t> f(kHeader);
    std::memcpy(f.data(), "BRANCHY\0", 8);
    set32(f, 8, version);
    set32(f, 12, prep.empty() ? 0 : branchy::kFlagInputPrep);
    const uint64_t graph_at = kHeader, meta_at = graph_at + g.size();
    const uint64_t weights_at = (meta_at + metadata.size() + 63) / 64 * 64;
    f.insert(f.end(), g.begin(), g.end());
    f.insert(f.end(), metadata.begin(), metadata.end());
    f.resize(weights_at);
    f.insert(f.end(), weights.begin(), weights.end());
    set64(f, 24, graph_at);
    set64(f, 32, g.size());
    set64(f, 40, meta_at);
    set64(f, 48, metadata.size());
    set64(f, 56, weights_at);
    set64(f, 64, weights.size());
    set64(f, 16, f.size() + 8);
    put64(f, branchy::fnv1a64(f.data(), f.size()));
    return f;
  }
};

// Rewrites the file size field and the checksum after a change, so the change reaches the checks
// behind them.
inline void reseal(std::vector<uint8_t>& f) {
  if (f.size() < kHeader + 8) return;
  set64(f, 16, f.size());
  set64(f, f.size() - 8, branchy::fnv1a64(f.data(), f.size() - 8));
}

// The activation codes of the file.
constexpr int32_t kNone = 0, kRelu = 1, kClamp = 2, kHardswish = 3, kSigmoid = 6;

// conv2d's ints: square kernel, stride and padding on all sides, no dilation, one group, no input
// scale.
inline std::vector<int32_t> conv_ints(int32_t in, int32_t out, int32_t k, int32_t stride,
                                      int32_t pad, int32_t act) {
  return {in, out, k, k, stride, stride, pad, pad, pad, pad, 1, 1, 1, act, 0};
}

// Knobs that break one thing each in the tiny model.
struct Tiny {
  uint32_t criterion = 0;
  std::vector<float> thresholds{0.5f};
  std::vector<std::string> names{"cat", "dog", "d\xc3\xa9j\xc3\xa0"};
  int32_t conv_pad = 1;
  uint64_t conv_weight = 4 * 2 * 3 * 3;
  int32_t linear_in = 36;
  uint32_t first_exit_stage = 0;
  uint32_t last_exit_stage = 1;
  int32_t classes_out = 3;
  uint32_t kind = 4;  // stage 0's third op: lrn (4), else this code with no attributes
};

// input [2, 6, 6], 3 classes
// stage 0: conv 2->4 k3 p1 +relu [4,6,6] (value 1); max pool k2 s2 ceil [4,3,3] (2); lrn (3)
//   passes on value 3
// stage 1: res_block 4->6 stride 2 [6,2,2] (4); avg pool k2 s1 p1 [6,3,3] (5); relu (6)
//   passes on value 6
// exit 0 after stage 0: flatten [36] (7); linear 36->3 (8)
// exit 1 after stage 1: flatten [54] (9); linear 54->3 (10)
// An exit reads the output of the stage it sits after (value 3 after stage 0, 6 otherwise).
// Tensors, in table order: conv weight, bias; res_block's four; linear 0's two; linear 1's two.
inline Writer tiny_writer(const Tiny& t = {}) {
  Writer w;
  w.in_c = 2, w.in_h = 6, w.in_w = 6, w.num_classes = 3, w.criterion = t.criterion;
  w.thresholds = t.thresholds;
  w.names = t.names;
  uint32_t x = w.op("conv2d", {0}, conv_ints(2, 4, 3, 1, t.conv_pad, kRelu), {0, 0},
                    {t.conv_weight, 4});
  x = w.op("max_pool2d", {x}, {2, 2, 2, 2, 0, 0, 1, kNone}, {0, 0});
  if (t.kind == 4) {
    x = w.op("lrn", {x}, {3}, {1e-4f, 0.75f, 2.0f});
  } else {
    x = w.op(t.kind, {x});
  }
  w.stage({x});
  const uint32_t stage0 = x;
  x = w.op("res_block", {x}, {4, 6, 2}, {}, {6 * 4 * 9, 6, 6 * 6 * 9, 6});
  x = w.op("avg_pool2d", {x}, {2, 2, 1, 1, 1, 1, 0, kNone}, {0, 0});
  x = w.op("activation", {x}, {kRelu}, {0, 0});
  w.stage({x});
  const uint32_t stage1 = x;
  auto output_of = [&](uint32_t s) { return s == 0 ? stage0 : stage1; };
  x = w.op("flatten", {output_of(t.first_exit_stage)});
  x = w.op("linear", {x}, {t.linear_in, 3, kNone}, {0, 0}, {uint64_t(3 * t.linear_in), 3});
  w.exit(t.first_exit_stage, output_of(t.first_exit_stage));
  x = w.op("flatten", {output_of(t.last_exit_stage)});
  x = w.op("linear", {x}, {54, t.classes_out, kNone}, {0, 0},
           {uint64_t(t.classes_out * 54), uint64_t(t.classes_out)});
  w.exit(t.last_exit_stage, output_of(t.last_exit_stage));
  return w;
}

inline std::vector<uint8_t> tiny(const Tiny& t = {}) { return tiny_writer(t).file(); }

// A graph with skips: input [3, 8, 8], 3 classes, three stages and three exits.
// stage 0: conv A 3->4 k3 p1 +relu [4,8,8] (1); conv B on A 4->4 k3, pads top 2 left 0 bottom 0
//   right 2 (2); add(A, B) +relu (3); max pool k2 s2 [4,4,4] (4); conv C on A 4->2 k1 s2 [2,4,4] (5)
//   passes on values 4 and 5
// stage 1: mean(4) [4,1,1] (6); conv 1x1 4->4 (7); sigmoid (8); mul(4, 8) per channel [4,4,4] (9);
//   concat(9, 5) [6,4,4] (10); channel_shuffle groups 2 (11)
//   passes on values 11 and 5 (5 unchanged)
// stage 2: depthwise conv 6->6 k3 dilation 2 pad 2 groups 6 +hardswish (12); concat(12, 5)
//   [8,4,4] (13)
//   passes on value 13
// exit 0 after stage 0 on value 4: flatten [64] (14); linear 64->3 (15)
// exit 1 after stage 1 on value 11: layer_norm (16); flatten [96] (17); linear 96->3 (18)
// exit 2 after stage 2 on value 13: channel_affine +clamp(0, 6) (19); avg pool k2 s2 [8,2,2]
//   (20); flatten [32] (21); linear 32->3 (22)
// Its tensors hold -0.3 to 0.3 in steps of 0.05, in a cycle of 13, so that activations stay near
// 1 in size, signs mix and every exit's entropy varies from sample to sample.
inline Writer dag_writer() {
  Writer w;
  w.fill = [](uint64_t i) { return 0.05f * float(int((i * 5 + 3) % 13) - 6); };
  w.in_c = 3, w.in_h = 8, w.in_w = 8, w.num_classes = 3;
  w.thresholds = {0.5f, 0.5f};
  w.metadata = "{\"name\": \"dag\"}";
  const uint32_t a = w.op("conv2d", {0}, conv_ints(3, 4, 3, 1, 1, kRelu), {0, 0}, {4 * 3 * 9, 4});
  const uint32_t b = w.op("conv2d", {a}, {4, 4, 3, 3, 1, 1, 2, 0, 0, 2, 1, 1, 1, kNone, 0}, {0, 0},
                          {4 * 4 * 9, 4});
  const uint32_t sum = w.op("add", {a, b}, {kRelu}, {0, 0});
  const uint32_t pooled = w.op("max_pool2d", {sum}, {2, 2, 2, 2, 0, 0, 0, kNone}, {0, 0});
  const uint32_t side = w.op("conv2d", {a}, conv_ints(4, 2, 1, 2, 0, kNone), {0, 0}, {2 * 4, 2});
  w.stage({pooled, side});
  uint32_t s = w.op("mean", {pooled});
  s = w.op("conv2d", {s}, conv_ints(4, 4, 1, 1, 0, kNone), {0, 0}, {4 * 4, 4});
  s = w.op("activation", {s}, {kSigmoid}, {0, 0});
  const uint32_t scaled = w.op("mul", {pooled, s}, {kNone}, {0, 0});
  const uint32_t joined = w.op("concat", {scaled, side});
  const uint32_t shuffled = w.op("channel_shuffle", {joined}, {2});
  w.stage({shuffled, side});
  const uint32_t depthwise = w.op("conv2d", {shuffled}, {6, 6, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 6, kHardswish, 0},
                                  {0, 0}, {6 * 1 * 9, 6});
  const uint32_t last = w.op("concat", {depthwise, side});
  w.stage({last});
  uint32_t x = w.op("flatten", {pooled});
  w.op("linear", {x}, {64, 3, kNone}, {0, 0}, {3 * 64, 3});
  w.exit(0, pooled);
  x = w.op("layer_norm", {shuffled}, {}, {1e-5f}, {6, 6});
  x = w.op("flatten", {x});
  w.op("linear", {x}, {96, 3, kNone}, {0, 0}, {3 * 96, 3});
  w.exit(1, shuffled);
  x = w.op("channel_affine", {last}, {kClamp}, {0, 6}, {8, 8});
  x = w.op("avg_pool2d", {x}, {2, 2, 2, 2, 0, 0, 0, kNone}, {0, 0});
  x = w.op("flatten", {x});
  w.op("linear", {x}, {32, 3, kNone}, {0, 0}, {3 * 32, 3});
  w.exit(2, last);
  return w;
}

inline std::vector<uint8_t> branchy_dag() { return dag_writer().file(); }

}  // namespace model_builder
