// Tests of the .branchy reader (format version 2): two small models built here (a chain, tiny(),
// and a graph with skips, branchy_dag()) parse to the right values and shapes; each check of the
// reader refuses a file that breaks it, naming the field; and every truncation and single-byte
// change of both models either parses to a consistent model or throws ModelError.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>

#include "check.h"
#include "model_builder.h"
#include "runtime/model_file.h"
#include "runtime/ops/registry.h"

using branchy::Exit;
using branchy::Model;
using branchy::ModelError;
using branchy::Op;
using branchy::Shape;
using branchy::Stage;
using branchy::TensorView;

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

bool contains(const std::vector<int32_t>& values, int32_t v) {
  return std::find(values.begin(), values.end(), v) != values.end();
}

// What every parsed model guarantees, checked from the model alone: every tensor inside its bytes
// and aligned, each op's tensors entries of the table of the kind's count, every table entry used;
// op inputs earlier values, each input's shape that value's, each op's output value k + 1 of its
// shape; the stages and heads taking the op list in order, whole; each stage and head reading only
// what it sees (the values passed on to it, its own ops' values), each stage passing on values it
// sees; exits after strictly increasing stages, the last after the last stage, reading one of
// their stage's outputs, ending in [num_classes, 1, 1]; counts consistent.
bool consistent(const Model& m) {
  const uint8_t* lo = m.file;
  const uint8_t* hi = lo + m.file_size;
  auto inside = [&](const TensorView& t) {
    const auto* p = reinterpret_cast<const uint8_t*>(t.data);
    if (p < lo || p > hi || t.count < 0 || uint64_t(hi - p) / 4 < uint64_t(t.count)) return false;
    return reinterpret_cast<uintptr_t>(p) % 64 == 0;
  };
  auto usable = [](const Shape& s) {
    return s.c >= 1 && s.h >= 1 && s.w >= 1 && s.numel() <= std::numeric_limits<int32_t>::max();
  };
  if (m.version != branchy::kFormatVersion || !usable(m.input) || m.num_classes < 1) return false;
  if (m.values.size() != m.ops.size() + 1 || m.values[0] != m.input) return false;
  for (const TensorView& t : m.tensors) {
    if (!inside(t)) return false;
  }
  std::vector<bool> used(m.tensors.size(), false);
  for (size_t i = 0; i < m.ops.size(); ++i) {
    const Op& op = m.ops[i];
    if (op.def == nullptr || op.index != int32_t(i) || op.output != int32_t(i) + 1) return false;
    const branchy::OpDef& def = *op.def;
    if (op.inputs.empty() || op.inputs.size() != op.ins.size()) return false;
    if (op.inputs.size() < size_t(def.min_inputs) ||
        (def.max_inputs >= 0 && op.inputs.size() > size_t(def.max_inputs))) {
      return false;
    }
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      if (op.inputs[k] < 0 || op.inputs[k] > int32_t(i)) return false;  // an earlier value
      if (op.ins[k] != m.values[op.inputs[k]]) return false;
    }
    if (op.in != op.ins[0] || !usable(op.out) || m.values[i + 1] != op.out) return false;
    if (op.ints.size() != def.ints.size() || op.floats.size() != def.floats.size()) return false;
    if (op.tensors.size() != def.tensors.size() || op.tensor_ids.size() != op.tensors.size()) {
      return false;
    }
    for (size_t k = 0; k < op.tensors.size(); ++k) {
      const uint32_t id = op.tensor_ids[k];
      if (id >= m.tensors.size() || op.tensors[k].data != m.tensors[id].data ||
          op.tensors[k].count != m.tensors[id].count || !inside(op.tensors[k])) {
        return false;
      }
      used[id] = true;
    }
  }
  if (std::find(used.begin(), used.end(), false) != used.end()) return false;

  // Each part reads what it sees; returns false if an op reads anything else.
  auto reads_ok = [&](std::vector<int32_t>& seen, int32_t first, int32_t count) {
    for (int32_t i = first; i < first + count; ++i) {
      for (int32_t v : m.ops[i].inputs) {
        if (!contains(seen, v)) return false;
      }
      seen.push_back(m.ops[i].output);
    }
    return true;
  };
  int32_t next = 0;
  std::vector<int32_t> visible{0};
  if (m.stages.empty()) return false;
  for (const Stage& s : m.stages) {
    if (s.first_op != next || s.num_ops < 0 || size_t(next) + size_t(s.num_ops) > m.ops.size()) {
      return false;
    }
    next += s.num_ops;
    std::vector<int32_t> seen = visible;
    if (!reads_ok(seen, s.first_op, s.num_ops) || s.outputs.empty()) return false;
    for (size_t k = 0; k < s.outputs.size(); ++k) {
      if (!contains(seen, s.outputs[k])) return false;
      if (std::count(s.outputs.begin(), s.outputs.end(), s.outputs[k]) != 1) return false;
    }
    visible = s.outputs;
  }
  if (m.exits.empty() || m.thresholds.size() != m.exits.size() - 1) return false;
  for (float t : m.thresholds) {
    if (std::isnan(t) || t < 0) return false;
  }
  if (!m.class_names.empty() && m.class_names.size() != size_t(m.num_classes)) return false;
  for (size_t e = 0; e < m.exits.size(); ++e) {
    const Exit& x = m.exits[e];
    if (x.stage < 0 || size_t(x.stage) >= m.stages.size()) return false;
    if (e > 0 && x.stage <= m.exits[e - 1].stage) return false;
    if (!contains(m.stages[x.stage].outputs, x.input)) return false;
    if (x.first_op != next || x.num_ops < 0 || size_t(next) + size_t(x.num_ops) > m.ops.size()) {
      return false;
    }
    next += x.num_ops;
    std::vector<int32_t> seen{x.input};
    if (!reads_ok(seen, x.first_op, x.num_ops)) return false;
    if (x.logits != (x.num_ops ? x.first_op + x.num_ops : x.input)) return false;
    if (!same(m.values[x.logits], m.num_classes, 1, 1)) return false;
  }
  return size_t(next) == m.ops.size() && size_t(m.exits.back().stage) == m.stages.size() - 1;
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

// The count of ops reading value v.
int readers(const Model& m, int32_t v) {
  int n = 0;
  for (const Op& op : m.ops) n += int(std::count(op.inputs.begin(), op.inputs.end(), v));
  return n;
}

}  // namespace

TEST(tiny_model_parses_with_pytorch_shapes) {
  const Model m = parse(tiny());
  CHECK(m.version == 2);
  CHECK(same(m.input, 2, 6, 6));
  CHECK(m.num_classes == 3);
  CHECK(m.thresholds.size() == 1 && m.thresholds[0] == 0.5f);
  CHECK(m.class_names.size() == 3 && m.class_names[2] == "d\xc3\xa9j\xc3\xa0");
  CHECK(m.ops.size() == 10 && m.values.size() == 11 && m.tensors.size() == 10);
  CHECK(m.stages.size() == 2);
  CHECK(m.stages[0].first_op == 0 && m.stages[0].num_ops == 3 && m.stages[0].outputs == std::vector<int32_t>{3});
  CHECK(m.stages[1].first_op == 3 && m.stages[1].num_ops == 3 && m.stages[1].outputs == std::vector<int32_t>{6});
  const auto& ops = m.ops;
  CHECK(std::string(ops[0].name()) == "conv2d" && same(ops[0].out, 4, 6, 6) && ops[0].relu);
  CHECK(ops[0].inputs == std::vector<int32_t>{0} && ops[0].output == 1);
  CHECK(std::string(ops[1].name()) == "max_pool2d" && ops[1].max_pool);
  CHECK(same(ops[1].out, 4, 3, 3) && ops[1].ceil_mode && ops[1].inputs == std::vector<int32_t>{1});
  CHECK(same(ops[2].out, 4, 3, 3) && ops[2].size == 3 && ops[2].beta == 0.75f);
  CHECK(same(ops[3].out, 6, 2, 2) && ops[3].stride_h == 2 && same(ops[3].in, 4, 3, 3));
  CHECK(same(ops[4].out, 6, 3, 3) && !ops[4].max_pool && ops[4].pad_h == 1);
  CHECK(std::string(ops[5].name()) == "activation" && ops[5].act == branchy::Act::Relu);
  CHECK(m.exits.size() == 2 && m.exits[0].stage == 0 && m.exits[1].stage == 1);
  CHECK(m.exits[0].input == 3 && m.exits[0].first_op == 6 && m.exits[0].num_ops == 2 &&
        m.exits[0].logits == 8);
  CHECK(m.exits[1].input == 6 && m.exits[1].first_op == 8 && m.exits[1].num_ops == 2 &&
        m.exits[1].logits == 10);
  CHECK(same(m.values[7], 36, 1, 1) && same(m.values[8], 3, 1, 1) && same(m.values[9], 54, 1, 1));
  CHECK(ops[3].tensors.size() == 4 && ops[3].tensors[2].count == 6 * 6 * 9);
  CHECK((ops[3].tensor_ids == std::vector<uint32_t>{2, 3, 4, 5}));
  CHECK(ops[0].tensors[0].data[2] == 0.02f && ops[0].tensors[0].data == m.tensors[0].data);
  CHECK(m.weight_count() == 72 + 4 + 216 + 6 + 324 + 6 + 108 + 3 + 162 + 3);
  CHECK(m.metadata_json == "{\"name\": \"tiny\"}");
  CHECK(consistent(m));
}

TEST(dag_model_parses_with_its_skips_fan_out_and_two_values_passed_on) {
  const Model m = parse(branchy_dag());
  CHECK(same(m.input, 3, 8, 8) && m.num_classes == 3 && m.thresholds.size() == 2);
  CHECK(m.ops.size() == 22 && m.stages.size() == 3 && m.exits.size() == 3);
  const auto& ops = m.ops;
  // Stage 0: conv A (value 1) feeds conv B, the add and conv C.
  CHECK(readers(m, 1) == 3);
  CHECK(same(ops[1].out, 4, 8, 8) && ops[1].pad_h == 2 && ops[1].pad_w == 0 &&
        ops[1].pad_bottom == 0 && ops[1].pad_right == 2);
  CHECK(std::string(ops[2].name()) == "add" && (ops[2].inputs == std::vector<int32_t>{1, 2}) &&
        ops[2].relu);
  CHECK(same(ops[4].out, 2, 4, 4) && ops[4].inputs == std::vector<int32_t>{1});
  CHECK((m.stages[0].outputs == std::vector<int32_t>{4, 5}));
  // Stage 1 reads both: squeeze-and-excitation on 4, concatenated with 5; passes 5 on unchanged.
  CHECK(same(ops[5].out, 4, 1, 1) && ops[5].inputs == std::vector<int32_t>{4});
  CHECK(ops[7].act == branchy::Act::Sigmoid);
  CHECK(std::string(ops[8].name()) == "mul" && (ops[8].inputs == std::vector<int32_t>{4, 8}) &&
        same(ops[8].ins[1], 4, 1, 1) && same(ops[8].out, 4, 4, 4));
  CHECK((ops[9].inputs == std::vector<int32_t>{9, 5}) && same(ops[9].out, 6, 4, 4));
  CHECK(std::string(ops[10].name()) == "channel_shuffle" && ops[10].groups == 2);
  CHECK((m.stages[1].outputs == std::vector<int32_t>{11, 5}));
  // Stage 2 reads 5 from two stages back, passed on by stage 1.
  CHECK(ops[11].groups == 6 && ops[11].dilation_h == 2 && same(ops[11].out, 6, 4, 4) &&
        ops[11].act == branchy::Act::Hardswish && ops[11].tensors[0].count == 6 * 9);
  CHECK((ops[12].inputs == std::vector<int32_t>{12, 5}) && same(ops[12].out, 8, 4, 4));
  CHECK(readers(m, 5) == 2);
  CHECK(m.exits[0].input == 4 && m.exits[0].logits == 15);
  CHECK(m.exits[1].input == 11 && m.exits[1].logits == 18 && std::string(ops[15].name()) == "layer_norm");
  CHECK(m.exits[2].input == 13 && m.exits[2].logits == 22 && ops[18].act == branchy::Act::Clamp &&
        ops[18].act_hi == 6.0f);
  CHECK(consistent(m));
}

// consistent() is what the mutation tests hold every parsed model to: it must see breakage.
TEST(consistent_refuses_broken_models) {
  const Model good = parse(branchy_dag());
  CHECK(consistent(good));
  std::vector<std::function<void(Model&)>> breaks = {
      [](Model& m) { m.ops[3].inputs[0] = 7; },             // a later value
      [](Model& m) { m.ops[3].ins[0] = Shape{4, 4, 4}; },   // not the value's shape
      [](Model& m) { m.values[4] = Shape{4, 2, 2}; },       // not the op's output
      [](Model& m) { m.ops[5].inputs[0] = 3; },             // stage 1 does not see value 3
      [](Model& m) { m.ops[5].ins[0] = m.values[3]; m.ops[5].inputs[0] = 3; },
      [](Model& m) { m.stages[1].outputs = {11}; },         // stage 2 reads 5
      [](Model& m) { m.stages[0].outputs.push_back(3); m.stages[0].outputs.push_back(3); },
      [](Model& m) { m.stages[1].num_ops -= 1; },           // an op no part takes
      [](Model& m) { m.exits[0].input = 5; },               // the head reads 4
      [](Model& m) { m.exits[1].logits = 17; },
      [](Model& m) { m.exits[2].stage = 1; },
      [](Model& m) { m.thresholds.pop_back(); },
      [](Model& m) { m.ops[0].tensor_ids[0] = 1; },         // the entry differs from the view
      [](Model& m) { m.tensors.push_back(m.tensors[0]); },  // an unused entry
      [](Model& m) { m.tensors[0].data += 1; m.ops[0].tensors[0].data += 1; },  // misaligned
      [](Model& m) { m.tensors[0].count = 1 << 20; m.ops[0].tensors[0].count = 1 << 20; },
  };
  for (size_t i = 0; i < breaks.size(); ++i) {
    Model m = good;
    breaks[i](m);
    CHECK_MSG(!consistent(m), "break %zu went unnoticed", i);
  }
}

TEST(weights_are_64_byte_aligned_in_memory_at_any_buffer_address) {
  for (const std::vector<uint8_t>& f : {tiny(), branchy_dag()}) {
    std::vector<uint8_t> shifted(f.size() + 64);
    for (size_t shift = 0; shift < 64; shift += 7) {
      std::memcpy(shifted.data() + shift, f.data(), f.size());
      const Model m = branchy::parse_model(shifted.data() + shift, f.size());
      for (const TensorView& t : m.tensors) CHECK(reinterpret_cast<uintptr_t>(t.data) % 64 == 0);
      CHECK(m.ops[0].tensors[0].data == m.tensors[0].data);
    }
  }
}

TEST(summary_names_shapes_values_thresholds_and_escapes_strings) {
  Tiny t;
  t.thresholds = {kInf};
  t.names = {"a\"b", "back\\slash", "tab\t"};
  const std::string s = branchy::summarize(parse(tiny(t)));
  auto has = [&s](const std::string& text) {
    CHECK_MSG(s.find(text) != std::string::npos, "no %s in %s", text.c_str(), s.c_str());
  };
  has("{\"version\": 2, \"input\": [2, 6, 6], \"num_classes\": 3, \"criterion\": \"entropy\"");
  has("\"thresholds\": [\"inf\"]");
  has("\"class_names\": [\"a\\\"b\", \"back\\\\slash\", \"tab\\t\"]");
  has("{\"index\": 3, \"kind\": \"res_block\", \"inputs\": [3], \"output\": 4, \"in\": [4, 3, 3], "
      "\"ins\": [[4, 3, 3]], \"out\": [6, 2, 2], \"attrs\": {\"in_channels\": 4, "
      "\"out_channels\": 6, \"stride\": 2}, \"tensors\": [216, 6, 324, 6], "
      "\"tensor_ids\": [2, 3, 4, 5]}");
  has("\"attrs\": {\"kernel_h\": 2, \"kernel_w\": 2, \"stride_h\": 2, \"stride_w\": 2, "
      "\"pad_h\": 0, \"pad_w\": 0, \"ceil_mode\": 1, \"activation\": 0, \"activation_lo\": 0, "
      "\"activation_hi\": 0}");
  has("\"attrs\": {\"size\": 3, \"alpha\": 1e-04, \"beta\": 0.75, \"k\": 2}");
  has("], \"outputs\": [3]}, {\"ops\": [");
  has("\"exits\": [{\"stage\": 0, \"input\": 3, \"logits\": 8, \"head\": [{\"index\": 6, "
      "\"kind\": \"flatten\"");
  has("\"tensors\": [72, 4, 216, 6, 324, 6, 108, 3, 162, 3]");
  has("\"weights\": " + std::to_string(72 + 4 + 216 + 6 + 324 + 6 + 108 + 3 + 162 + 3));
  has("\"metadata\": {\"name\": \"tiny\"}}");

  const std::string d = branchy::summarize(parse(branchy_dag()));
  CHECK(d.find("\"kind\": \"add\", \"inputs\": [1, 2], \"output\": 3, \"in\": [4, 8, 8], "
               "\"ins\": [[4, 8, 8], [4, 8, 8]]") != std::string::npos);
  CHECK(d.find("\"kind\": \"mul\", \"inputs\": [4, 8], \"output\": 9, \"in\": [4, 4, 4], "
               "\"ins\": [[4, 4, 4], [4, 1, 1]], \"out\": [4, 4, 4]") != std::string::npos);
  CHECK(d.find("\"outputs\": [4, 5]}") != std::string::npos);
  CHECK(d.find("\"outputs\": [11, 5]}") != std::string::npos);
}

TEST(pool_sizes_follow_pytorch_ceil_mode) {
  // {H, kernel, stride, pad, PyTorch's MaxPool2d(ceil_mode=True) output size}, read off torch;
  // the first drops a last window that would start in the right padding.
  const int cases[][5] = {
      {5, 2, 3, 1, 2}, {4, 3, 2, 1, 3}, {6, 3, 2, 1, 4}, {7, 3, 3, 1, 3}, {3, 3, 2, 1, 2}};
  for (const auto& c : cases) {
    Writer w;  // input [1, H, H] -> pool -> flatten = the classes; one exit with no ops
    w.in_c = 1, w.in_h = w.in_w = uint32_t(c[0]), w.num_classes = uint32_t(c[4] * c[4]);
    uint32_t x = w.op("max_pool2d", {0}, {c[1], c[1], c[2], c[2], c[3], c[3], 1, 0}, {0, 0});
    x = w.op("flatten", {x});
    w.stage({x});
    w.exit(0, x);
    const std::string error = error_of(w.file());
    CHECK_MSG(error.empty(), "H %d k %d s %d p %d: %s", c[0], c[1], c[2], c[3], error.c_str());
    w.num_classes += 1;  // one more than PyTorch's size squared
    CHECK_REFUSED(w.file(), "exit 0: head ends in [");
  }
}

TEST(each_check_names_the_field) {
  Tiny t;
  t.conv_weight = 70;
  CHECK_REFUSED(tiny(t),
                "op 0 (conv2d): weight [out, in / groups, kernel_h, kernel_w] (tensor 0) has 70 "
                "elements, expected 72 = out 4 * in / groups 2 * 3 * 3");
  t = {};
  t.conv_pad = 3;
  CHECK_REFUSED(tiny(t), "op 0 (conv2d): pad_top 3 is not smaller than the dilated kernel 3");
  t = {};
  t.linear_in = 35;
  CHECK_REFUSED(tiny(t), "op 7 (linear): in_features is 35 but the input [36, 1, 1] has 36 elements");
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
  t.kind = branchy::op_registry().back()->code + 1;  // one past the last kind
  const std::string unknown = "op 2: op kind is " + std::to_string(t.kind) + ", which this reader does not know";
  CHECK_REFUSED(tiny(t), unknown.c_str());
  t.kind = 0xffffffffu;
  CHECK_REFUSED(tiny(t), "op 2: op kind is 4294967295, which this reader does not know");
  t.kind = 0;
  CHECK_REFUSED(tiny(t), "op 2: op kind is 0, which this reader does not know");
  t.kind = 6;  // linear, written with no ints
  CHECK_REFUSED(tiny(t), "op 2 (linear): num_ints is 0, expected 3");

  Writer w = tiny_writer();
  w.metadata = "{\"a\": [1, 2,]}";
  CHECK_REFUSED(w.file(), "metadata is not a JSON object: expected a value at byte 12");
  w.metadata = std::string(200, '[');
  CHECK_REFUSED(w.file(), "metadata is not a JSON object: expected a JSON object");
  w.metadata = "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}";
  CHECK_REFUSED(w.file(), "nested too deep");
  w = tiny_writer();
  w.trailing = {0};
  CHECK_REFUSED(w.file(), "graph section has 4 bytes after the last exit");
}

// The checks of the graph: inputs, what each part sees, stage outputs, exit inputs, the tensor
// table, ops no part takes. Each starts from a good model (tiny_writer or dag_writer) and breaks
// one thing.
TEST(graph_checks_name_the_field) {
  auto tiny_with = [](const std::function<void(Writer&)>& change) {
    Writer w = tiny_writer();
    change(w);
    return w.file();
  };
  auto dag_with = [](const std::function<void(Writer&)>& change) {
    Writer w = dag_writer();
    change(w);
    return w.file();
  };
  CHECK(error_of(tiny_with([](Writer&) {})).empty());
  CHECK(error_of(dag_with([](Writer&) {})).empty());

  // The number of inputs the kind takes.
  CHECK_REFUSED(tiny_with([](Writer& w) { w.ops[1].inputs = {1, 1}; }),
                "op 1 (max_pool2d): num_inputs is 2, expected 1");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[2].inputs = {1}; }),
                "op 2 (add): num_inputs is 1, expected 2");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[8].inputs = {4, 8, 8}; }),
                "op 8 (mul): num_inputs is 3, expected 2");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[9].inputs = {}; }),
                "op 9 (concat): num_inputs is 0, expected 1 or more");
  // Inputs are earlier values.
  CHECK_REFUSED(tiny_with([](Writer& w) { w.ops[1].inputs = {2}; }),
                "op 1 (max_pool2d): input 0 is value 2, not yet defined");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[2].inputs = {1, 9}; }),
                "op 2 (add): input 1 is value 9, not yet defined");
  // An op sees what the stage before passes on and its own stage's values: not a value of two
  // stages back that the stage between does not pass on, not another stage's inner value.
  CHECK_REFUSED(dag_with([](Writer& w) { w.stages[1].outputs = {11}; }),
                "stage 2, op 12 (concat): input 1 is value 5, which this part of the graph does "
                "not see");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[5].inputs = {3}; }),
                "stage 1, op 5 (mean): input 0 is value 3, which this part of the graph does not see");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.ops[3].inputs = {2}; }),
                "stage 1, op 3 (res_block): input 0 is value 2, which this part");
  // A head sees its exit's input and its own values.
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[13].inputs = {9}; }),
                "exit 0, op 13 (flatten): input 0 is value 9, which this part of the graph does "
                "not see");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.ops[6].inputs = {2}; }),
                "exit 0, op 6 (flatten): input 0 is value 2, which this part");
  // A stage passes on values it sees, each once.
  CHECK_REFUSED(dag_with([](Writer& w) { w.stages[1].outputs = {11, 3}; }),
                "stage 1: output 1 is value 3, which the stage does not see");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.stages[1].outputs = {6, 8}; }),
                "stage 1: output 1 is value 8, which the stage does not see");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.stages[1].outputs = {6, 11}; }),
                "stage 1: output 1 is value 11, past the last 10");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.stages[1].outputs = {6, 6}; }),
                "stage 1: output 1 repeats value 6");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.stages[0].outputs = {}; }),
                "stage 0: num_outputs is 0; a stage passes on at least one value");
  // An exit reads one of its stage's outputs.
  CHECK_REFUSED(dag_with([](Writer& w) { w.exits[0].input = 3; }),
                "exit 0: input is value 3, not one of stage 0's outputs");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.exits[0].input = 6; }),
                "exit 0: input is value 6, not one of stage 0's outputs");
  // Stages and exits: at least one, the last exit after the last stage.
  CHECK_REFUSED(tiny_with([](Writer& w) { w.stages.clear(); }), "num_stages is 0");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.exits.clear(); }), "num_exits is 0");
  CHECK_REFUSED(dag_with([](Writer& w) { w.exits.pop_back(); }),
                "exit 1: the last exit sits after stage 1, expected the last stage 2");
  // Every op belongs to a stage or a head.
  CHECK_REFUSED(tiny_with([](Writer& w) { w.op("activation", {10}, {kRelu}, {0, 0}); }),
                "the stages and heads take 10 ops of 11; every op belongs to one");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.exits[1].num_ops = 3; }),
                "exit 1: num_ops is 3 but only 2 ops are left");
  // The tensor table.
  CHECK_REFUSED(tiny_with([](Writer& w) { w.ops[0].tensors[0] = 10; }),
                "op 0 (conv2d): weight [out, in / groups, kernel_h, kernel_w] is tensor 10, past "
                "the table's 10");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.ops[0].tensors = {1}; }),
                "op 0 (conv2d): num_tensors is 1, expected 2");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.tensor(4); }),
                "tensor 10: no op uses it (a writer stores only the tensors its ops read)");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.tensors[9].count = 2; }),
                "op 9 (linear): bias [out] (tensor 9) has 2 elements, expected 3 = out 3");
  CHECK_REFUSED(tiny_with([](Writer& w) { w.ops[3].tensors[1] = 3; w.ops[3].tensors[2] = 3; }),
                "op 3 (res_block): conv2 weight [out, out, 3, 3] (tensor 3) has 6 elements, "
                "expected 324 = out 6 * out 6 * 3 * 3");
  CHECK_REFUSED(dag_with([](Writer& w) { w.tensors[12].count = 5; }),
                "op 15 (layer_norm): weight [C] (tensor 12) has 5 elements, expected 6 = C 6");
  // Ops may share a tensor of the count each needs (the table stores it once), no other.
  {
    Writer w = tiny_writer();
    w.ops[9].tensors[1] = 7;  // both linear biases: 3 floats
    w.tensors.pop_back();
    const std::string error = error_of(w.file());
    CHECK_MSG(error.empty(), "%s", error.c_str());
    if (error.empty()) {
      const Model m = parse(w.file());
      CHECK(m.tensors.size() == 9 && m.ops[9].tensors[1].data == m.ops[7].tensors[1].data);
      CHECK(m.weight_count() == 72 + 4 + 216 + 6 + 324 + 6 + 108 + 3 + 162);
    }
  }
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[6].tensors = w.ops[0].tensors; }),
                "op 6 (conv2d): weight [out, in / groups, kernel_h, kernel_w] (tensor 0) has 108 "
                "elements, expected 16 = out 4 * in / groups 4 * 1 * 1");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[18].tensors = w.ops[15].tensors; }),
                "op 18 (channel_affine): scale [C] (tensor 12) has 6 elements, expected 8 = C 8");

  // Shapes across several inputs, and the attributes of the graph's kinds.
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[2].inputs = {1, 0}; }),
                "op 2 (add): input 1 is [3, 8, 8], expected input 0's [4, 8, 8]");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[8].inputs = {4, 5}; }),
                "op 8 (mul): input 1 is [2, 4, 4], expected input 0's [4, 4, 4]");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[9].inputs = {9, 3}; }),
                "op 9 (concat): input 1 is [4, 8, 8], expected height and width 4x4 as input 0's");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[1].inputs = {0}; }),
                "op 1 (conv2d): in_channels is 4 but the input [3, 8, 8] has 3 channels");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[11].ints[12] = 4; }),
                "op 11 (conv2d): groups 4 does not divide in_channels 6 and out_channels 6");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[10].ints = {4}; }),
                "op 10 (channel_shuffle): groups 4 does not divide the input's 6 channels");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[7].ints = {9}; }),
                "op 7 (activation): activation is 9, expected 0 to 8");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[7].ints = {0}; }),
                "op 7 (activation): activation is 0 (none): an identity is not written as an op");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[7].floats = {1, 0}; }),
                "op 7 (activation): activation bounds are 1, 0; only clamp has bounds");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[18].floats = {6, 0}; }),
                "op 18 (channel_affine): clamp bounds [6, 0] are NaN or reversed");
  CHECK_REFUSED(dag_with([](Writer& w) { w.ops[15].floats = {0}; }),
                "op 15 (layer_norm): eps is 0, expected finite and > 0");
}

TEST(header_checks_name_the_field) {
  const std::vector<uint8_t> good = tiny();
  auto with = [&](size_t at, uint64_t value, bool seal) {
    std::vector<uint8_t> f = good;
    set64(f, at, value);
    if (seal) reseal(f);
    return f;
  };
  CHECK(error_of(good).empty());
  std::vector<uint8_t> f = good;
  f[0] = 'X';
  CHECK_REFUSED(f, "magic is not");
  CHECK_REFUSED(with(8, 3, true), "format version 3 is newer than this reader's (2)");
  CHECK_REFUSED(with(8, 1, true), "format version 1 (a chain of a fixed op list) is no longer read; "
                                  "re-export the checkpoint");
  CHECK_REFUSED(with(8, 0, true), "format version 0 is invalid (expected 2)");
  CHECK_REFUSED(with(8, 2 | uint64_t(4) << 32, true),
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
  const uint64_t meta_at = kHeader + tiny_writer().graph().size();
  CHECK_REFUSED(with(40, meta_at - 4, true), "metadata section starts at byte");
  CHECK_REFUSED(with(32, tiny_writer().graph().size() - 4, true),
                "num_exits is 2 but only 20 bytes of the graph section are left");
  CHECK_REFUSED(with(32, 8, true), "graph section ends inside in_width (0 bytes left, 4 needed)");
  const std::string odd = "graph section size " + std::to_string(tiny_writer().graph().size() - 2) +
                          " is not a multiple of 4";
  CHECK_REFUSED(with(32, tiny_writer().graph().size() - 2, true), odd.c_str());
  // A version 1 file (the old layout) written by an old exporter.
  Writer old = tiny_writer();
  old.version = 1;
  CHECK_REFUSED(old.file(), "re-export");
}

TEST(hostile_counts_and_offsets_are_refused_without_overflow) {
  const Writer w = tiny_writer();
  auto with = [&](size_t at, uint64_t value, int bytes = 8) {
    std::vector<uint8_t> f = w.file();
    if (bytes == 8) {
      set64(f, at, value);
    } else {
      set32(f, at, uint32_t(value));
    }
    reseal(f);
    return f;
  };
  // The conv's weight is tensor 0: its record's offset, then its count. Pointing it at the
  // res_block's first weight (216 floats, room for 72) is fine.
  const size_t weight = w.tensor_at(0);
  {
    const std::vector<uint8_t> f = with(weight, w.tensors[2].offset);
    const std::string error = error_of(f);
    CHECK_MSG(error.empty(), "%s", error.c_str());
    if (error.empty()) {
      const Model m = parse(f);
      CHECK(m.tensors[0].data == m.tensors[2].data && m.ops[0].tensors[0].data == m.tensors[2].data);
    }
  }
  CHECK_REFUSED(with(weight, 64 * 1000),
                "tensor 0: offset 64000 and 72 floats run past the end of the weights section");
  CHECK_REFUSED(with(weight, uint64_t(-64)), "run past the end of the weights section");
  CHECK_REFUSED(with(weight, 32), "tensor 0: offset 32 is not a multiple of 64");
  CHECK_REFUSED(with(weight + 8, (uint64_t(1) << 62) + 72),
                "tensor 0: offset 0 and 4611686018427387976 floats run past the end");
  CHECK_REFUSED(with(weight + 8, uint64_t(-1)), "tensor 0: offset 0 and 18446744073709551615 floats");
  CHECK_REFUSED(with(weight + 8, 70),
                "op 0 (conv2d): weight [out, in / groups, kernel_h, kernel_w] (tensor 0) has 70 "
                "elements, expected 72");
  // Counts of items, each bounded by the bytes left.
  const uint64_t all = 0xffffffffu;
  CHECK_REFUSED(with(w.table_at(), all, 4), "num_tensors is 4294967295 but only");
  CHECK_REFUSED(with(w.ops_at(), all, 4), "num_ops is 4294967295 but only");
  CHECK_REFUSED(with(w.op_at(0) + 4, all, 4), "op 0 (conv2d): num_inputs is 4294967295 but only");
  CHECK_REFUSED(with(w.op_at(0) + 8, all, 4),
                "op 0 (conv2d): input 0 is value 4294967295, not yet defined");
  CHECK_REFUSED(with(w.op_at(0) + 12, all, 4), "op 0 (conv2d): num_ints is 4294967295, expected 14 to 15");
  CHECK_REFUSED(with(w.op_at(1) - 4, all, 4),
                "op 0 (conv2d): bias [out] is tensor 4294967295, past the table's 10");
  CHECK_REFUSED(with(w.stages_at(), all, 4), "num_stages is 4294967295 but only");
  CHECK_REFUSED(with(w.stages_at() + 4, all, 4), "stage 0: num_ops is 4294967295 but only 10 ops are left");
  CHECK_REFUSED(with(w.stages_at() + 8, all, 4), "stage 0: num_outputs is 4294967295 but only");
  CHECK_REFUSED(with(w.stages_at() + 12, all, 4), "stage 0: output 0 is value 4294967295, past the last 10");
  const size_t exits_at = w.stages_at() + 4 + 2 * 12;
  CHECK_REFUSED(with(exits_at, all, 4), "num_exits is 4294967295 but only");
  CHECK_REFUSED(with(exits_at + 4, all, 4), "exit 0: stage index 4294967295 is past the last stage 1");
  CHECK_REFUSED(with(exits_at + 8, all, 4), "exit 0: input is value 4294967295, not one of stage 0's outputs");
  CHECK_REFUSED(with(exits_at + 12, all, 4), "exit 0: num_ops is 4294967295 but only 4 ops are left");

  // A kernel whose weight count overflows 64 bits: [2^20, 1, 2^22, 2^22], on a [1, 1, 1] input
  // padded to fit it, at a stride that leaves one output pixel.
  Writer big;
  big.num_classes = 1 << 20;
  const int32_t k = 1 << 22;
  const uint32_t x = big.op("conv2d", {0}, {1, 1 << 20, k, k, k, k, k - 1, k - 1, k - 1, k - 1, 1, 1, 1, 0, 0},
                            {0, 0}, {1, 1 << 20});
  big.stage({x});
  big.exit(0, x);
  CHECK_REFUSED(big.file(),
                "op 0 (conv2d): weight [out, in / groups, kernel_h, kernel_w] (tensor 0) has 1 "
                "elements, expected more than 2^63 = out 1048576 * in / groups 1 * 4194304 * "
                "4194304");
  // A dilated kernel past the padded input: the message's sizes are right.
  Writer wide;
  const uint32_t y = wide.op("conv2d", {0}, {1, 1, 1000, 1000, 1, 1, 998, 998, 998, 998, 2, 2, 1, 0, 0},
                             {0, 0}, {1, 1});
  wide.stage({y});
  wide.exit(0, y);
  CHECK_REFUSED(wide.file(),
                "op 0 (conv2d): the dilated kernel 1999x1999 is larger than the padded input 1997x1997");
  // A padded input past 2^31 - 1 (every index the kernels form stays within int32).
  const int32_t m = std::numeric_limits<int32_t>::max();
  Writer huge;
  const uint32_t z = huge.op("conv2d", {0}, {1, 1, m, m, 1, 1, m - 2, m - 2, m - 2, m - 2, 2, 2, 1, 0, 0},
                             {0, 0}, {1, 1});
  huge.stage({z});
  huge.exit(0, z);
  CHECK_REFUSED(huge.file(), "op 0 (conv2d): the padded input 4294967291x4294967291 is larger than 2^31-1");
}

// conv2d's input_scale came after the first files: a conv2d of 14 ints reads with input_scale 0;
// 13 or 16 are refused with the range.
TEST(appended_attributes_read_as_zero_in_older_files) {
  for (size_t count : {13u, 14u, 15u, 16u}) {
    Writer w;
    w.in_c = 2, w.num_classes = 3;
    std::vector<int32_t> ints = {2, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0};
    ints.resize(count);
    const uint32_t x = w.op("conv2d", {0}, ints, {0, 0}, {6, 3});
    w.stage({x});
    w.exit(0, x);
    if (count == 14 || count == 15) {
      const Model m = parse(w.file());
      CHECK(m.ops.size() == 1 && m.ops[0].ints.size() == 15 && !m.ops[0].input_scale);
    } else {
      CHECK_REFUSED(w.file(), ("op 0 (conv2d): num_ints is " + std::to_string(count) + ", expected 14 to 15").c_str());
    }
  }
}

TEST(activation_sizes_are_bounded) {
  Writer w;
  w.in_c = 65536, w.in_h = 65536, w.in_w = 1;
  CHECK_REFUSED(w.file(), "input [65536, 65536, 1] has more than the 2^31-1 elements");
  Writer c;
  c.in_c = 1, c.in_h = 40000, c.in_w = 40000;
  uint32_t x = c.op("conv2d", {0}, conv_ints(1, 2, 1, 1, 0, kNone), {0, 0}, {2, 2});
  c.stage({x});
  CHECK_REFUSED(c.file(), "op 0 (conv2d): output [2, 40000, 40000] has more than the 2^31-1 elements");
  Writer j;  // concat of one value with itself
  j.in_c = 1, j.in_h = 40000, j.in_w = 40000;
  x = j.op("concat", {0, 0});
  j.stage({x});
  CHECK_REFUSED(j.file(), "op 0 (concat): output [2, 40000, 40000] has more than the 2^31-1 elements");
}

TEST(truncations_and_byte_flips_throw_or_give_a_consistent_model) {
  for (const std::vector<uint8_t>& good : {tiny(), branchy_dag()}) {
    CHECK(consistent(parse(good)));
    int bad = 0, parsed = 0;
    auto count = [&](const std::vector<uint8_t>& f) {
      bad += !survives(f);
      parsed += error_of(f).empty();
    };
    for (size_t n = 0; n < good.size(); ++n) {
      std::vector<uint8_t> f(good.begin(), good.begin() + n);
      count(f);
      reseal(f);  // past the size and checksum checks, into the sections
      count(f);
    }
    for (size_t i = 0; i < good.size(); ++i) {
      for (uint8_t x : {0x01, 0x80, 0xff}) {
        std::vector<uint8_t> f = good;
        f[i] ^= x;
        count(f);
        reseal(f);
        count(f);
      }
    }
    CHECK_MSG(bad == 0, "%d mutated files parsed to an inconsistent model", bad);
    // Flipped weights, metadata padding and the like parse: the mutations reach past the checks.
    CHECK_MSG(parsed > 0, "no mutated file parsed");
  }
}

TEST(load_model_reads_a_file_and_names_the_path) {
  try {
    branchy::load_model("/nonexistent/model.branchy");
    CHECK(false);
  } catch (const ModelError& e) {
    CHECK(std::string(e.what()).find("model file /nonexistent/model.branchy: cannot open") == 0);
  }
  char path[] = "/tmp/branchy_test_XXXXXX";
  const int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd < 0) return;
  close(fd);
  std::vector<uint8_t> f = branchy_dag();
  std::FILE* out = std::fopen(path, "wb");
  std::fwrite(f.data(), 1, f.size(), out);
  std::fclose(out);
  const Model m = branchy::load_model(path);
  CHECK(m.ops.size() == 22 && consistent(m));
  f.pop_back();
  out = std::fopen(path, "wb");
  std::fwrite(f.data(), 1, f.size(), out);
  std::fclose(out);
  try {
    branchy::load_model(path);
    CHECK(false);
  } catch (const ModelError& e) {
    CHECK(std::string(e.what()).find(std::string("model file ") + path + ": file size field says") == 0);
  }
  std::remove(path);
}

// A weight that is NaN or +-inf is refused, naming the tensor and the element: it would give NaN,
// or an answer that depends on which kernel ran. The Python writer refuses to write one; a file
// from elsewhere may hold one.
TEST(non_finite_weights_are_refused_naming_the_tensor_and_element) {
  for (float bad : {std::nanf(""), kInf, -kInf}) {
    Writer w = tiny_writer();
    set32(w.weights, w.tensors[2].offset + 4 * 5, bits(bad));  // res_block's conv1 weight
    const std::string name = std::isnan(bad) ? "NaN" : bad > 0 ? "+inf" : "-inf";
    const std::string says = "tensor 2: holds " + name + " at element 5 (weights must be finite)";
    CHECK_REFUSED(w.file(), says.c_str());
  }
}

// Files refused before they are read: what is not a regular file (reading /dev/zero ran out of
// memory) and a file over the caller's byte limit.
TEST(load_model_refuses_a_non_regular_file_and_one_over_the_limit) {
  auto message = [](const std::string& path, int64_t max_bytes) -> std::string {
    try {
      branchy::load_model(path, max_bytes);
    } catch (const ModelError& e) {
      return e.what();
    }
    return "";
  };
  for (const char* path : {"/dev/zero", "/tmp"}) {
    const std::string says = std::string("model file ") + path + ": not a regular file";
    CHECK_MSG(message(path, int64_t(4) << 30) == says, "%s", message(path, int64_t(4) << 30).c_str());
  }
  char path[] = "/tmp/branchy_test_XXXXXX";
  const int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd < 0) return;
  close(fd);
  const std::vector<uint8_t> f = tiny();
  std::FILE* out = std::fopen(path, "wb");
  std::fwrite(f.data(), 1, f.size(), out);
  std::fclose(out);
  const std::string says = std::string("model file ") + path + " is " + std::to_string(f.size()) +
                           " bytes, over the limit of 100 bytes (max_memory)";
  CHECK_MSG(message(path, 100) == says, "%s", message(path, 100).c_str());
  CHECK(message(path, int64_t(f.size())).empty());
  std::remove(path);
}

int main() { return check::run_all(); }
