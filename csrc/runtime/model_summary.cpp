// summarize(): a parsed model as JSON, for `branchy inspect` and the Python tests. Generic over op
// kinds: each op's attributes are named by its declaration (ops/).
#include "runtime/json.h"
#include "runtime/model_file.h"
#include "runtime/ops/registry.h"

namespace branchy {
namespace {

void append_shape(std::string& out, const Shape& x) {
  out += "[" + std::to_string(x.c) + ", " + std::to_string(x.h) + ", " + std::to_string(x.w) + "]";
}

template <class T, class F>
void append_list(std::string& out, const std::vector<T>& items, F each) {
  out += "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    each(items[i]);
  }
  out += "]";
}

void append_op(std::string& out, const Op& op) {
  out += "{\"index\": " + std::to_string(op.index) + ", \"kind\": ";
  json::append_string(out, op.name());
  out += ", \"inputs\": ";
  append_list(out, op.inputs, [&](int32_t v) { out += std::to_string(v); });
  out += ", \"output\": " + std::to_string(op.output) + ", \"in\": ";
  append_shape(out, op.in);
  out += ", \"ins\": ";
  append_list(out, op.ins, [&](const Shape& s) { append_shape(out, s); });
  out += ", \"out\": ";
  append_shape(out, op.out);
  out += ", \"attrs\": {";
  bool first = true;
  for (size_t i = 0; i < op.ints.size(); ++i) {
    out += first ? "" : ", ";
    first = false;
    json::append_string(out, op.def->ints[i]);
    out += ": " + std::to_string(op.ints[i]);
  }
  for (size_t i = 0; i < op.floats.size(); ++i) {
    out += first ? "" : ", ";
    first = false;
    json::append_string(out, op.def->floats[i]);
    out += ": ";
    json::append_float(out, op.floats[i]);
  }
  out += "}, \"tensors\": ";
  append_list(out, op.tensors, [&](const TensorView& t) { out += std::to_string(t.count); });
  out += ", \"tensor_ids\": ";
  append_list(out, op.tensor_ids, [&](uint32_t t) { out += std::to_string(t); });
  out += "}";
}

void append_ops(std::string& out, const Model& m, int32_t first, int32_t count) {
  out += "[";
  for (int32_t i = first; i < first + count; ++i) {
    if (i > first) out += ", ";
    append_op(out, m.ops[i]);
  }
  out += "]";
}

}  // namespace

std::string summarize(const Model& model) {
  std::string out = "{\"version\": " + std::to_string(model.version) + ", \"input\": ";
  append_shape(out, model.input);
  out += ", \"num_classes\": " + std::to_string(model.num_classes);
  out += ", \"criterion\": ";
  out += model.criterion == Criterion::Entropy ? "\"entropy\"" : "\"maxprob\"";
  out += ", \"thresholds\": ";
  append_list(out, model.thresholds, [&](float t) { json::append_float(out, t); });
  out += ", \"class_names\": ";
  append_list(out, model.class_names, [&](const std::string& s) { json::append_string(out, s); });
  out += ", \"input_prep\": ";
  if (model.prep.recorded()) {
    out += "{\"pixel_max\": ";
    json::append_float(out, model.prep.pixel_max);
    out += ", \"mean\": ";
    append_list(out, model.prep.mean, [&](float v) { json::append_float(out, v); });
    out += ", \"std\": ";
    append_list(out, model.prep.std, [&](float v) { json::append_float(out, v); });
    out += "}";
  } else {
    out += "null";
  }
  out += ", \"stages\": ";
  append_list(out, model.stages, [&](const Stage& s) {
    out += "{\"ops\": ";
    append_ops(out, model, s.first_op, s.num_ops);
    out += ", \"outputs\": ";
    append_list(out, s.outputs, [&](int32_t v) { out += std::to_string(v); });
    out += "}";
  });
  out += ", \"exits\": ";
  append_list(out, model.exits, [&](const Exit& e) {
    out += "{\"stage\": " + std::to_string(e.stage) + ", \"input\": " + std::to_string(e.input) +
           ", \"logits\": " + std::to_string(e.logits) + ", \"head\": ";
    append_ops(out, model, e.first_op, e.num_ops);
    out += "}";
  });
  out += ", \"tensors\": ";
  append_list(out, model.tensors, [&](const TensorView& t) { out += std::to_string(t.count); });
  out += ", \"weights\": " + std::to_string(model.weight_count());
  out += ", \"metadata\": " +
         (model.metadata_json.empty() ? std::string("null") : model.metadata_json) + "}";
  return out;
}

}  // namespace branchy
