// Tests of the .branchy reader: a small model built here parses to the right shapes; each check of
// docs/model-format.md refuses a file that breaks it, naming the field; and every truncation and
// single-byte change of the small model either parses to a consistent model or throws ModelError.
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "check.h"
#include "model_builder.h"
#include "runtime/model_file.h"

using branchy::Model;
using branchy::ModelError;
using branchy::Op;
using branchy::OpKind;
using branchy::Shape;

namespace {

using namespace model_builder;

Model parse(const std::vector<uint8_t>& f) { return branchy::parse_model(f.data(), f.size()); }

// The message of the ModelError parsing f throws ("" if it parses).
std::string error_of(const std::vector<uint8_t>& f) {
  try {
    parse(f);
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

#define CHECK_REFUSED(file, text)                                                           \
  do {                                                                                      \
    const std::string message = error_of(file);                                             \
    CHECK_MSG(message.find(text) != std::string::npos, "expected \"%s\", got \"%s\"", text, \
              message.c_str());                                                             \
  } while (0)

bool same(const Shape& s, int32_t c, int32_t h, int32_t w) { return s == Shape{c, h, w}; }

// What every parsed model guarantees: tensors inside its bytes and aligned, shapes chained from
// op to op and stage to exit, exits ending in the classes, counts consistent.
bool consistent(const Model& m) {
  const uint8_t* lo = m.bytes->data();
  const uint8_t* hi = lo + m.bytes->size();
  std::vector<Shape> stage_out;
  Shape x = m.input;
  auto chain = [&](const std::vector<Op>& ops, Shape& shape) {
    for (const Op& op : ops) {
      if (!(op.in == shape) || op.out.numel() < 1) return false;
      for (const auto& t : op.tensors) {
        const auto* p = reinterpret_cast<const uint8_t*>(t.data);
        if (p < lo || t.count < 0 || uint64_t(hi - p) / 4 < uint64_t(t.count)) return false;
        if (reinterpret_cast<uintptr_t>(p) % 64) return false;
      }
      shape = op.out;
    }
    return true;
  };
  for (const auto& stage : m.stages) {
    if (!chain(stage, x)) return false;
    stage_out.push_back(x);
  }
  if (m.exits.empty() || m.thresholds.size() != m.exits.size() - 1) return false;
  if (!m.class_names.empty() && m.class_names.size() != size_t(m.num_classes)) return false;
  for (const auto& e : m.exits) {
    if (e.stage < 0 || size_t(e.stage) >= stage_out.size()) return false;
    Shape h = stage_out[e.stage];
    if (!chain(e.head, h) || !same(h, m.num_classes, 1, 1)) return false;
  }
  return m.exits.back().stage == int32_t(stage_out.size()) - 1;
}

// Parses a mutated file: it must throw ModelError or give a consistent model. Anything else (a
// crash, another exception, an out-of-bounds read under ASan) fails the test.
bool survives(const std::vector<uint8_t>& f) {
  try {
    return consistent(parse(f));
  } catch (const ModelError&) {
    return true;
  }
}

}  // namespace

TEST(tiny_model_parses_with_pytorch_shapes) {
  const Model m = parse(tiny());
  CHECK(m.version == 1);
  CHECK(same(m.input, 2, 6, 6));
  CHECK(m.num_classes == 3);
  CHECK(m.thresholds.size() == 1 && m.thresholds[0] == 0.5f);
  CHECK(m.class_names.size() == 3 && m.class_names[2] == "d\xc3\xa9j\xc3\xa0");
  CHECK(m.stages.size() == 2 && m.stages[0].size() == 3 && m.stages[1].size() == 3);
  CHECK(same(m.stages[0][0].out, 4, 6, 6) && m.stages[0][0].relu);
  CHECK(same(m.stages[0][1].out, 4, 3, 3) && m.stages[0][1].ceil_mode);
  CHECK(same(m.stages[0][2].out, 4, 3, 3) && m.stages[0][2].size == 3 &&
        m.stages[0][2].beta == 0.75f);
  CHECK(same(m.stages[1][0].out, 6, 2, 2) && m.stages[1][0].stride_h == 2);
  CHECK(same(m.stages[1][1].out, 6, 3, 3));
  CHECK(m.exits.size() == 2 && m.exits[0].stage == 0 && m.exits[1].stage == 1);
  CHECK(same(m.exits[0].head[0].out, 36, 1, 1) && same(m.exits[0].head[1].out, 3, 1, 1));
  CHECK(m.stages[1][0].tensors.size() == 4 && m.stages[1][0].tensors[2].count == 6 * 6 * 9);
  CHECK(m.stages[0][0].tensors[0].data[2] == 0.02f);
  CHECK(m.metadata_json == "{\"name\": \"tiny\"}");
  CHECK(consistent(m));
}

TEST(weights_are_64_byte_aligned_in_memory_at_any_buffer_address) {
  const std::vector<uint8_t> f = tiny();
  std::vector<uint8_t> shifted(f.size() + 64);
  for (size_t shift = 0; shift < 64; shift += 7) {
    std::memcpy(shifted.data() + shift, f.data(), f.size());
    const Model m = branchy::parse_model(shifted.data() + shift, f.size());
    CHECK(reinterpret_cast<uintptr_t>(m.stages[0][0].tensors[0].data) % 64 == 0);
  }
}

TEST(summary_names_shapes_thresholds_and_escapes_strings) {
  Tiny t;
  t.thresholds = {kInf};
  t.names = {"a\"b", "back\\slash", "tab\t"};
  const std::string s = branchy::summarize(parse(tiny(t)));
  CHECK(s.find("\"thresholds\": [\"inf\"]") != std::string::npos);
  CHECK(s.find("\"class_names\": [\"a\\\"b\", \"back\\\\slash\", \"tab\\t\"]") !=
        std::string::npos);
  CHECK(s.find("{\"kind\": \"res_block\", \"in\": [4, 3, 3], \"out\": [6, 2, 2]") !=
        std::string::npos);
  CHECK(
      s.find("\"kernel\": [2, 2], \"stride\": [2, 2], \"padding\": [0, 0], \"ceil_mode\": true") !=
      std::string::npos);
  CHECK(s.find("\"alpha\": 1e-04, \"beta\": 0.75, \"k\": 2") != std::string::npos);
  CHECK(s.find("\"weights\": " + std::to_string(72 + 4 + 216 + 6 + 324 + 6 + 108 + 3 + 162 + 3)) !=
        std::string::npos);
  CHECK(s.find("\"metadata\": {\"name\": \"tiny\"}}") != std::string::npos);
}

TEST(pool_sizes_follow_pytorch_ceil_mode) {
  // {H, kernel, stride, pad, PyTorch's MaxPool2d(ceil_mode=True) output size}, read off torch;
  // the first drops a last window that would start in the right padding.
  const int cases[][5] = {
      {5, 2, 3, 1, 2}, {4, 3, 2, 1, 3}, {6, 3, 2, 1, 4}, {7, 3, 3, 1, 3}, {3, 3, 2, 1, 2}};
  for (const auto& c : cases) {
    Writer w;  // input [1, H, H] -> pool -> flatten = the classes; one exit with no ops
    for (int v : {1, c[0], c[0], c[4] * c[4], 0, 0, 0, 1, 2}) w.u32(uint32_t(v));
    w.op(OpKind::MaxPool2d, {c[1], c[1], c[2], c[2], c[3], c[3], 1, 0});
    w.op(OpKind::Flatten, {});
    for (uint32_t v : {1u, 0u, 0u}) w.u32(v);
    const std::string error = error_of(w.file());
    CHECK_MSG(error.empty(), "H %d k %d s %d p %d: %s", c[0], c[1], c[2], c[3], error.c_str());
  }
}

TEST(each_check_names_the_field) {
  Tiny t;
  t.conv_weight = 70;
  CHECK_REFUSED(
      tiny(t), "stage 0 op 0 (conv2d): weight has 70 elements, expected 72 = out 4 * in 2 * 3 * 3");
  t = {};
  t.conv_pad = 3;
  CHECK_REFUSED(tiny(t), "stage 0 op 0 (conv2d): pad_h 3 is more than kernel - 1 = 2");
  t = {};
  t.linear_in = 35;
  CHECK_REFUSED(tiny(t),
                "exit 0 op 1 (linear): in_features is 35 but the input [36, 1, 1] has 36 elements");
  t = {};
  t.thresholds = {};
  CHECK_REFUSED(tiny(t), "num_thresholds is 0, expected num_exits - 1 = 1");
  t.thresholds = {std::nanf("")};
  CHECK_REFUSED(tiny(t), "threshold 0 is nan");
  t.thresholds = {-1.0f};
  CHECK_REFUSED(tiny(t), "threshold 0 is -1");
  t = {};
  t.criterion = 2;
  CHECK_REFUSED(tiny(t), "criterion is 2");
  t = {};
  t.names = {"a", "b"};
  CHECK_REFUSED(tiny(t), "num_class_names is 2, expected 0 or num_classes 3");
  t.names = {"a", "b", "\xff"};
  CHECK_REFUSED(tiny(t), "class name 2: not valid UTF-8");
  t = {};
  t.first_exit_stage = 1;
  t.linear_in = 54;
  CHECK_REFUSED(tiny(t), "exit 1: stage index 1 does not follow exit 0's 1");
  t = {};
  t.last_exit_stage = 5;
  CHECK_REFUSED(tiny(t), "exit 1: stage index 5 is past the last stage 1");
  t = {};
  t.classes_out = 4;
  CHECK_REFUSED(tiny(t), "exit 1: head ends in [4, 1, 1], expected [num_classes 3, 1, 1]");
  t = {};
  t.kind = 9;
  CHECK_REFUSED(tiny(t), "stage 0 op 2: op kind is 9, expected 1 to 8");
  t.kind = uint32_t(OpKind::Linear);  // written with no ints
  CHECK_REFUSED(tiny(t), "stage 0 op 2 (linear): num_ints is 0, expected 3");

  Writer w = tiny_writer();
  w.metadata = "{\"a\": [1, 2,]}";
  CHECK_REFUSED(w.file(), "metadata is not a JSON object: expected a value at byte 12");
  w.metadata = std::string(200, '[');
  CHECK_REFUSED(w.file(), "metadata is not a JSON object: expected a JSON object");
  w.metadata = "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}";
  CHECK_REFUSED(w.file(), "nested too deep");
  w = tiny_writer();
  w.u32(0);
  CHECK_REFUSED(w.file(), "graph section has 4 bytes after the last exit");
}

TEST(header_checks_name_the_field) {
  const std::vector<uint8_t> good = tiny();
  auto with = [&](size_t at, uint64_t value, bool seal) {
    std::vector<uint8_t> f = good;
    set64(f, at, value);
    if (seal) reseal(f);
    return f;
  };
  std::vector<uint8_t> f = good;
  f[0] = 'X';
  CHECK_REFUSED(f, "magic is not");
  CHECK_REFUSED(with(8, 2, true), "format version 2 is newer than this reader's (1)");
  CHECK_REFUSED(with(8, 1 | uint64_t(4) << 32, true),
                "flags 0x4 has bits this reader does not know");
  CHECK_REFUSED(with(16, good.size() + 1, false), "file size field says");
  f = good;
  f[good.size() / 2] ^= 1;
  CHECK_REFUSED(f, "checksum mismatch");
  CHECK_REFUSED(std::vector<uint8_t>(good.begin(), good.begin() + 50),
                "shorter than the 80-byte minimum");
  CHECK_REFUSED(with(24, 8, true), "graph section starts at byte 8, inside the header");
  CHECK_REFUSED(with(56, 64 * 1000, true), "weights section (offset 64000");
  CHECK_REFUSED(with(56, uint64_t(-64), true), "runs past the checksum");
  const uint64_t meta_at = kHeader + tiny_writer().graph.size();
  CHECK_REFUSED(with(40, meta_at - 4, true), "metadata section starts at byte");
  CHECK_REFUSED(with(32, tiny_writer().graph.size() - 4, true),
                "graph section ends inside tensor element count");
}

TEST(hostile_counts_and_offsets_are_refused_without_overflow) {
  // The conv's weight tensor record: after the graph's first words (see tiny_writer).
  const Writer w = tiny_writer();
  size_t conv_tensor = kHeader + 4 * (6 + 1 + 1);  // input, criterion, thresholds; names count
  for (const auto& n : Tiny{}.names) conv_tensor += 4 + (n.size() + 3) / 4 * 4;
  conv_tensor +=
      4 * (1 + 1 + 1 + 1 + 9 + 1 + 1);  // stages, num_ops, kind, num_ints, ints, floats, tensors
  auto with = [&](size_t at, uint64_t value) {
    std::vector<uint8_t> f = w.file();
    set64(f, at, value);
    reseal(f);
    return f;
  };
  CHECK(error_of(with(conv_tensor, 0)).empty());
  CHECK_REFUSED(with(conv_tensor, 64 * 1000),
                "weight (offset 64000, 72 floats) runs past the end of the weights section");
  CHECK_REFUSED(with(conv_tensor, uint64_t(-64)), "runs past the end of the weights section");
  CHECK_REFUSED(with(conv_tensor, 32), "weight offset 32 is not a multiple of 64");
  CHECK_REFUSED(with(conv_tensor + 8, (uint64_t(1) << 62) + 72),
                "weight has 4611686018427387976 elements, expected 72");
  // num_ops of stage 0 (just before the conv's kind)
  std::vector<uint8_t> f = w.file();
  const size_t num_ops = conv_tensor - 4 * (1 + 1 + 1 + 9 + 1 + 1);  // itself, kind .. num_tensors
  f[num_ops] = f[num_ops + 1] = f[num_ops + 2] = f[num_ops + 3] = 0xff;
  reseal(f);
  CHECK_REFUSED(f, "stage 0: num_ops is 4294967295 but only");
}

TEST(activation_sizes_are_bounded) {
  Writer w;
  for (uint32_t v : {65536u, 65536u, 1u}) w.u32(v);
  CHECK_REFUSED(w.file(), "input [65536, 65536, 1] has more than the 2^31-1 elements");
  Writer c;
  for (uint32_t v : {1u, 40000u, 40000u, 1u, 0u, 0u, 0u, 1u, 1u}) c.u32(v);
  c.op(OpKind::Conv2d, {1, 2, 1, 1, 1, 1, 0, 0, 0}, {}, {2, 2});
  CHECK_REFUSED(
      c.file(),
      "stage 0 op 0 (conv2d): output [2, 40000, 40000] has more than the 2^31-1 elements");
}

TEST(truncations_and_byte_flips_throw_or_give_a_consistent_model) {
  const std::vector<uint8_t> good = tiny();
  int bad = 0;
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> f(good.begin(), good.begin() + n);
    bad += !survives(f);
    reseal(f);  // past the size and checksum checks, into the sections
    bad += !survives(f);
  }
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t x : {0x01, 0x80, 0xff}) {
      std::vector<uint8_t> f = good;
      f[i] ^= x;
      bad += !survives(f);
      reseal(f);
      bad += !survives(f);
    }
  }
  CHECK_MSG(bad == 0, "%d mutated files parsed to an inconsistent model", bad);
}

TEST(load_model_names_the_path) {
  try {
    branchy::load_model("/nonexistent/model.branchy");
    CHECK(false);
  } catch (const ModelError& e) {
    CHECK(std::string(e.what()).find("model file /nonexistent/model.branchy: cannot open") == 0);
  }
}

int main() { return check::run_all(); }
