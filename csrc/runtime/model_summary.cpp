// summarize(): a parsed model as JSON, for `branchy inspect` and the Python tests.
#include <utility>

#include "runtime/json.h"
#include "runtime/model_file.h"

namespace branchy {
namespace {

void append_shape(std::string& out, const Shape& x) {
  out += "[" + std::to_string(x.c) + ", " + std::to_string(x.h) + ", " + std::to_string(x.w) + "]";
}

void append_pair(std::string& out, const char* key, int32_t a, int32_t b) {
  out += std::string(", \"") + key + "\": [" + std::to_string(a) + ", " + std::to_string(b) + "]";
}

void append_int(std::string& out, const char* key, int64_t value) {
  out += std::string(", \"") + key + "\": " + std::to_string(value);
}

void append_bool(std::string& out, const char* key, bool value) {
  out += std::string(", \"") + key + "\": " + (value ? "true" : "false");
}

void append_op(std::string& out, const Op& op, int64_t& weights) {
  out += "{\"kind\": \"";
  out += op_name(op.kind);
  out += "\", \"in\": ";
  append_shape(out, op.in);
  out += ", \"out\": ";
  append_shape(out, op.out);
  switch (op.kind) {
    case OpKind::Conv2d:
    case OpKind::MaxPool2d:
    case OpKind::AvgPool2d:
      if (op.kind == OpKind::Conv2d) {
        append_int(out, "in_channels", op.in_channels);
        append_int(out, "out_channels", op.out_channels);
      }
      append_pair(out, "kernel", op.kernel_h, op.kernel_w);
      append_pair(out, "stride", op.stride_h, op.stride_w);
      append_pair(out, "padding", op.pad_h, op.pad_w);
      if (op.kind != OpKind::Conv2d) append_bool(out, "ceil_mode", op.ceil_mode);
      append_bool(out, "relu", op.relu);
      break;
    case OpKind::Lrn:
      append_int(out, "size", op.size);
      for (const auto& [key, value] :
           {std::pair{"alpha", op.alpha}, {"beta", op.beta}, {"k", op.k}}) {
        out += std::string(", \"") + key + "\": ";
        json::append_float(out, value);
      }
      break;
    case OpKind::Linear:
      append_int(out, "in_features", op.in_channels);
      append_int(out, "out_features", op.out_channels);
      append_bool(out, "relu", op.relu);
      break;
    case OpKind::ResBlock:
      append_int(out, "in_channels", op.in_channels);
      append_int(out, "out_channels", op.out_channels);
      append_int(out, "stride", op.stride_h);
      break;
    case OpKind::Relu:
    case OpKind::Flatten: break;
  }
  out += ", \"tensors\": [";
  for (size_t i = 0; i < op.tensors.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(op.tensors[i].count);
    weights += op.tensors[i].count;
  }
  out += "]}";
}

void append_ops(std::string& out, const std::vector<Op>& ops, int64_t& weights) {
  out += "[";
  for (size_t i = 0; i < ops.size(); ++i) {
    if (i) out += ", ";
    append_op(out, ops[i], weights);
  }
  out += "]";
}

}  // namespace

std::string summarize(const Model& model) {
  std::string out = "{\"version\": " + std::to_string(model.version) + ", \"input\": ";
  append_shape(out, model.input);
  append_int(out, "num_classes", model.num_classes);
  out += ", \"criterion\": ";
  out += model.criterion == Criterion::Entropy ? "\"entropy\"" : "\"maxprob\"";
  out += ", \"thresholds\": [";
  for (size_t i = 0; i < model.thresholds.size(); ++i) {
    if (i) out += ", ";
    json::append_float(out, model.thresholds[i]);
  }
  out += "], \"class_names\": [";
  for (size_t i = 0; i < model.class_names.size(); ++i) {
    if (i) out += ", ";
    json::append_string(out, model.class_names[i]);
  }
  int64_t weights = 0;
  out += "], \"stages\": [";
  for (size_t s = 0; s < model.stages.size(); ++s) {
    if (s) out += ", ";
    append_ops(out, model.stages[s], weights);
  }
  out += "], \"exits\": [";
  for (size_t e = 0; e < model.exits.size(); ++e) {
    out += (e ? ", " : "") + std::string("{\"stage\": ") + std::to_string(model.exits[e].stage) +
           ", \"head\": ";
    append_ops(out, model.exits[e].head, weights);
    out += "}";
  }
  out += "]";
  append_int(out, "weights", weights);
  out += ", \"metadata\": " +
         (model.metadata_json.empty() ? std::string("null") : model.metadata_json) + "}";
  return out;
}

}  // namespace branchy
