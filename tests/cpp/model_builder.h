// Builds small .branchy files in memory for the C++ tests (docs/model-format.md layout).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "runtime/model_file.h"

namespace model_builder {

using branchy::OpKind;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr size_t kHeader = 72;

void put32(std::vector<uint8_t>& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
}

void put64(std::vector<uint8_t>& b, uint64_t v) {
  put32(b, uint32_t(v));
  put32(b, uint32_t(v >> 32));
}

void set64(std::vector<uint8_t>& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = uint8_t(v >> (8 * i));
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// A writer for test files, as docs/model-format.md lays them out; tensors are filled with 0.01 * i.
struct Writer {
  std::vector<uint8_t> graph, weights;
  std::string metadata = "{\"name\": \"tiny\"}";

  void u32(uint32_t v) { put32(graph, v); }
  void f32(float v) { put32(graph, bits(v)); }

  void op(OpKind kind, std::vector<int32_t> ints, std::vector<float> floats = {},
          std::vector<uint64_t> tensor_counts = {}) {
    u32(uint32_t(kind));
    u32(uint32_t(ints.size()));
    for (int32_t v : ints) u32(uint32_t(v));
    u32(uint32_t(floats.size()));
    for (float v : floats) f32(v);
    u32(uint32_t(tensor_counts.size()));
    for (uint64_t n : tensor_counts) {
      weights.resize((weights.size() + 63) / 64 * 64);
      put64(graph, weights.size());
      put64(graph, n);
      for (uint64_t i = 0; i < n; ++i) put32(weights, bits(0.01f * float(i)));
    }
  }

  void name(const std::string& s) {
    u32(uint32_t(s.size()));
    graph.insert(graph.end(), s.begin(), s.end());
    graph.resize((graph.size() + 3) / 4 * 4);
  }

  std::vector<uint8_t> file() const {
    std::vector<uint8_t> f(kHeader);
    std::memcpy(f.data(), "BRANCHY\0", 8);
    f[8] = 1;  // version; flags stay 0
    const uint64_t graph_at = kHeader, meta_at = graph_at + graph.size();
    const uint64_t weights_at = (meta_at + metadata.size() + 63) / 64 * 64;
    f.insert(f.end(), graph.begin(), graph.end());
    f.insert(f.end(), metadata.begin(), metadata.end());
    f.resize(weights_at);
    f.insert(f.end(), weights.begin(), weights.end());
    set64(f, 24, graph_at);
    set64(f, 32, graph.size());
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
void reseal(std::vector<uint8_t>& f) {
  if (f.size() < kHeader + 8) return;
  set64(f, 16, f.size());
  set64(f, f.size() - 8, branchy::fnv1a64(f.data(), f.size() - 8));
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
  uint32_t kind = uint32_t(OpKind::Lrn);
};

// input [2, 6, 6], 3 classes
// stage 0: conv 2->4 k3 p1 +relu [4,6,6]; max pool k2 s2 ceil [4,3,3]; lrn
// stage 1: res_block 4->6 stride 2 [6,2,2]; avg pool k2 s1 p1 [6,3,3]; relu
// exit 0 after stage 0: flatten [36]; linear 36->3.  exit 1 after stage 1: flatten [54]; linear
// 54->3
Writer tiny_writer(const Tiny& t = {}) {
  Writer w;
  for (uint32_t v : {2u, 6u, 6u, 3u, t.criterion, uint32_t(t.thresholds.size())}) w.u32(v);
  for (float v : t.thresholds) w.f32(v);
  w.u32(uint32_t(t.names.size()));
  for (const auto& n : t.names) w.name(n);
  w.u32(2);  // stages
  w.u32(3);
  w.op(OpKind::Conv2d, {2, 4, 3, 3, 1, 1, t.conv_pad, t.conv_pad, 1}, {}, {t.conv_weight, 4});
  w.op(OpKind::MaxPool2d, {2, 2, 2, 2, 0, 0, 1, 0});
  if (t.kind == uint32_t(OpKind::Lrn)) {
    w.op(OpKind::Lrn, {3}, {1e-4f, 0.75f, 2.0f});
  } else {
    w.op(OpKind(t.kind), {});
  }
  w.u32(3);
  w.op(OpKind::ResBlock, {4, 6, 2}, {}, {6 * 4 * 9, 6, 6 * 6 * 9, 6});
  w.op(OpKind::AvgPool2d, {2, 2, 1, 1, 1, 1, 0, 0});
  w.op(OpKind::Relu, {});
  w.u32(2);  // exits
  w.u32(t.first_exit_stage);
  w.u32(2);
  w.op(OpKind::Flatten, {});
  w.op(OpKind::Linear, {t.linear_in, 3, 0}, {}, {uint64_t(3 * t.linear_in), 3});
  w.u32(t.last_exit_stage);
  w.u32(2);
  w.op(OpKind::Flatten, {});
  w.op(OpKind::Linear, {54, t.classes_out, 0}, {},
       {uint64_t(t.classes_out * 54), uint64_t(t.classes_out)});
  return w;
}

std::vector<uint8_t> tiny(const Tiny& t = {}) { return tiny_writer(t).file(); }

}  // namespace model_builder
