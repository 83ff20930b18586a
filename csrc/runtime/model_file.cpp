// Reading and checking a .branchy model file (docs/model-format.md, "What a reader checks").
// The file may be damaged or hostile: every count is bounded by the bytes left before it is used,
// every offset and size is added and multiplied with overflow checks, and every failure is a
// ModelError naming the field.
#include "runtime/model_file.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>

#include "runtime/json.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "TensorViews point straight at the file's little-endian floats; a big-endian host must swap"
#endif

namespace branchy {

const char* op_name(OpKind kind) {
  switch (kind) {
    case OpKind::Conv2d: return "conv2d";
    case OpKind::MaxPool2d: return "max_pool2d";
    case OpKind::AvgPool2d: return "avg_pool2d";
    case OpKind::Lrn: return "lrn";
    case OpKind::Relu: return "relu";
    case OpKind::Linear: return "linear";
    case OpKind::Flatten: return "flatten";
    case OpKind::ResBlock: return "res_block";
  }
  return "unknown";
}

uint64_t fnv1a64(const uint8_t* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 0x100000001b3ull;
  return h;
}

namespace {

constexpr uint8_t kMagic[8] = {'B', 'R', 'A', 'N', 'C', 'H', 'Y', 0};
constexpr uint64_t kHeaderSize = 72;
constexpr uint64_t kChecksumSize = 8;
constexpr uint64_t kAlign = 64;
// Elements one sample's activation may hold: the engine indexes them with int32.
constexpr int64_t kMaxActivation = std::numeric_limits<int32_t>::max();

// What each op kind carries (the table in docs/model-format.md).
struct OpSpec {
  uint32_t ints, floats;
  std::vector<const char*> tensors;
};

const OpSpec& spec_of(OpKind kind) {
  static const OpSpec conv{9, 0, {"weight", "bias"}}, pool{8, 0, {}}, lrn{1, 3, {}}, none{0, 0, {}},
      linear{3, 0, {"weight", "bias"}},
      res{3, 0, {"conv1 weight", "conv1 bias", "conv2 weight", "conv2 bias"}};
  switch (kind) {
    case OpKind::Conv2d: return conv;
    case OpKind::MaxPool2d:
    case OpKind::AvgPool2d: return pool;
    case OpKind::Lrn: return lrn;
    case OpKind::Linear: return linear;
    case OpKind::ResBlock: return res;
    default: return none;
  }
}

uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }

struct Section {
  const char* name;
  uint64_t offset, size;
};

// A tensor's expected element count and how it follows from the op's attributes, for messages.
struct Expected {
  int64_t count;
  std::string formula;
};

class Parser {
 public:
  Parser(std::string source, const uint8_t* data, size_t size)
      : source_(std::move(source)), data_(data), size_(size) {}

  Model parse() {
    Model m;
    read_header();
    copy_aligned(m);
    m.version = kFormatVersion;
    m.metadata_json = read_metadata();
    read_graph(m);
    return m;
  }

 private:
  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    std::ostringstream s;
    s << source_ << ": ";
    if (!at_.empty()) s << at_ << ": ";
    (s << ... << args);
    throw ModelError(s.str());
  }

  // ---- header and sections ----

  void read_header() {
    if (size_ < kHeaderSize + kChecksumSize) {
      fail("file is ", size_, " bytes, shorter than the ", kHeaderSize + kChecksumSize,
           "-byte minimum (header and checksum)");
    }
    if (std::memcmp(data_, kMagic, sizeof(kMagic)) != 0) {
      fail("magic is not \"BRANCHY\\0\": not a .branchy model file");
    }
    const uint32_t version = le32(data_ + 8), flags = le32(data_ + 12);
    if (version > kFormatVersion) {
      fail("format version ", version, " is newer than this reader's (", kFormatVersion,
           "); upgrade branchy-engine");
    }
    if (version != kFormatVersion) fail("format version ", version, " is invalid (expected 1)");
    if (flags != 0)
      fail("flags 0x", std::hex, flags, std::dec, " has bits this reader does not know");
    const uint64_t file_size = le64(data_ + 16);
    if (file_size != size_) {
      fail("file size field says ", file_size, " bytes but the file has ", size_,
           " (truncated or appended to)");
    }
    graph_ = {"graph", le64(data_ + 24), le64(data_ + 32)};
    metadata_ = {"metadata", le64(data_ + 40), le64(data_ + 48)};
    weights_ = {"weights", le64(data_ + 56), le64(data_ + 64)};
    const uint64_t body = size_ - kChecksumSize;
    const uint64_t stored = le64(data_ + body), actual = fnv1a64(data_, body);
    if (stored != actual) {
      fail("checksum mismatch: the file says 0x", std::hex, stored, ", its bytes hash to 0x",
           actual, std::dec, " (the file is damaged)");
    }
    uint64_t previous_end = kHeaderSize;
    const char* previous = "header";
    for (const Section* s : {&graph_, &metadata_, &weights_}) {
      uint64_t end;
      if (__builtin_add_overflow(s->offset, s->size, &end) || end > body) {
        fail(s->name, " section (offset ", s->offset, ", size ", s->size,
             ") runs past the checksum at byte ", body);
      }
      if (s->offset < previous_end) {
        fail(s->name, " section starts at byte ", s->offset, ", inside the ", previous,
             " (which ends at byte ", previous_end,
             "): sections must be in order, not overlapping");
      }
      previous_end = end;
      previous = s->name;
    }
    if (graph_.size % 4) fail("graph section size ", graph_.size, " is not a multiple of 4");
    if (weights_.offset % kAlign)
      fail("weights section offset ", weights_.offset, " is not a multiple of 64");
    if (weights_.size % 4) fail("weights section size ", weights_.size, " is not a multiple of 4");
  }

  // Copies the file so that its weights section lands on a 64-byte boundary in memory.
  void copy_aligned(Model& m) {
    auto storage = std::make_shared<std::vector<uint8_t>>(size_ + kAlign - 1);
    const auto base = reinterpret_cast<uintptr_t>(storage->data()) + weights_.offset;
    const size_t shift = (kAlign - base % kAlign) % kAlign;
    std::memcpy(storage->data() + shift, data_, size_);
    data_ = storage->data() + shift;
    m.bytes = std::move(storage);
  }

  std::string read_metadata() {
    const uint8_t* p = data_ + metadata_.offset;
    size_t bad = 0;
    if (!json::valid_utf8(p, metadata_.size, &bad)) {
      fail("metadata is not valid UTF-8 (byte ", bad, " of the section)");
    }
    std::string text(reinterpret_cast<const char*>(p), metadata_.size);
    std::string why;
    if (!json::valid_object(text, &why)) fail("metadata is not a JSON object: ", why);
    return text;
  }

  // ---- graph words ----

  void need(uint64_t bytes, const char* field) const {
    if (bytes > graph_left_) {
      fail("graph section ends inside ", field, " (", graph_left_, " bytes left, ", bytes,
           " needed)");
    }
  }

  uint32_t u32(const char* field) {
    need(4, field);
    const uint32_t v = le32(graph_pos_);
    graph_pos_ += 4;
    graph_left_ -= 4;
    return v;
  }

  uint64_t u64(const char* field) {
    const uint64_t lo = u32(field);
    return lo | uint64_t(u32(field)) << 32;
  }

  float f32(const char* field) {
    const uint32_t bits = u32(field);
    float v;
    std::memcpy(&v, &bits, sizeof(v));
    return v;
  }

  // A count of items of at least `min_bytes` each, refused if the section cannot hold them.
  uint32_t count(const char* field, uint64_t min_bytes) {
    const uint32_t n = u32(field);
    if (n * min_bytes > graph_left_) {
      fail(field, " is ", n, " but only ", graph_left_, " bytes of the graph section are left");
    }
    return n;
  }

  int32_t dimension(const char* field) {
    const uint32_t v = u32(field);
    if (v < 1 || v > uint32_t(std::numeric_limits<int32_t>::max())) {
      fail(field, " is ", v, ", expected 1 to 2^31-1");
    }
    return int32_t(v);
  }

  void read_graph(Model& m) {
    graph_pos_ = data_ + graph_.offset;
    graph_left_ = graph_.size;
    const int32_t c = dimension("in_channels"), h = dimension("in_height"),
                  w = dimension("in_width");
    m.input = shape(c, h, w, "input");
    m.num_classes = dimension("num_classes");
    const uint32_t criterion = u32("criterion");
    if (criterion > 1)
      fail("criterion is ", criterion, ", expected 0 (entropy) or 1 (max probability)");
    m.criterion = criterion == 0 ? Criterion::Entropy : Criterion::MaxProb;
    read_thresholds(m);
    read_class_names(m);

    const uint32_t num_stages = count("num_stages", 4);
    if (num_stages == 0) fail("num_stages is 0; a model has at least one stage");
    std::vector<Shape> stage_out;
    Shape x = m.input;
    for (uint32_t s = 0; s < num_stages; ++s) {
      m.stages.push_back(read_ops("stage " + std::to_string(s), x));
      stage_out.push_back(x);
    }
    read_exits(m, stage_out);
    if (m.thresholds.size() != m.exits.size() - 1) {
      fail("num_thresholds is ", m.thresholds.size(),
           ", expected num_exits - 1 = ", m.exits.size() - 1);
    }
    if (graph_left_ != 0) fail("graph section has ", graph_left_, " bytes after the last exit");
  }

  void read_thresholds(Model& m) {
    const uint32_t n = count("num_thresholds", 4);
    for (uint32_t i = 0; i < n; ++i) {
      const float t = f32("thresholds");
      if (std::isnan(t) || t < 0) fail("threshold ", i, " is ", t, "; thresholds are >= 0 or +inf");
      m.thresholds.push_back(t);
    }
  }

  void read_class_names(Model& m) {
    const uint32_t n = count("num_class_names", 4);
    if (n != 0 && n != uint32_t(m.num_classes)) {
      fail("num_class_names is ", n, ", expected 0 or num_classes ", m.num_classes);
    }
    for (uint32_t i = 0; i < n; ++i) {
      at_ = "class name " + std::to_string(i);
      const uint32_t length = u32("class name length");
      const uint64_t padded = (uint64_t(length) + 3) / 4 * 4;
      need(padded, "class name bytes");
      size_t bad = 0;
      if (!json::valid_utf8(graph_pos_, length, &bad)) fail("not valid UTF-8 (byte ", bad, ")");
      for (uint64_t k = length; k < padded; ++k) {
        if (graph_pos_[k] != 0) fail("padding after the name is not zero");
      }
      m.class_names.emplace_back(reinterpret_cast<const char*>(graph_pos_), length);
      graph_pos_ += padded;
      graph_left_ -= padded;
    }
    at_.clear();
  }

  void read_exits(Model& m, const std::vector<Shape>& stage_out) {
    const uint32_t n = count("num_exits", 8);
    if (n == 0) fail("num_exits is 0; the last stage needs an exit");
    const Shape logits{m.num_classes, 1, 1};
    for (uint32_t e = 0; e < n; ++e) {
      const std::string where = "exit " + std::to_string(e);
      at_ = where;
      Exit exit;
      const uint32_t stage = u32("exit stage index");
      if (stage >= stage_out.size())
        fail("stage index ", stage, " is past the last stage ", stage_out.size() - 1);
      if (e > 0 && stage <= uint32_t(m.exits.back().stage)) {
        fail("stage index ", stage, " does not follow exit ", e - 1, "'s ", m.exits.back().stage,
             " (exit stages strictly increase)");
      }
      if (e == n - 1 && stage != stage_out.size() - 1) {
        fail("the last exit sits after stage ", stage, ", expected the last stage ",
             stage_out.size() - 1);
      }
      exit.stage = int32_t(stage);
      Shape x = stage_out[stage];
      exit.head = read_ops(where, x);
      at_ = where;
      if (!(x == logits)) {
        fail("head ends in ", str(x), ", expected [num_classes ", m.num_classes, ", 1, 1]");
      }
      m.exits.push_back(std::move(exit));
    }
    at_.clear();
  }

  // ---- ops ----

  // Reads a stage's or an exit head's ops; x is the input shape on entry, the output on return.
  std::vector<Op> read_ops(const std::string& where, Shape& x) {
    at_ = where;
    const uint32_t n = count("num_ops", 16);
    std::vector<Op> ops;
    for (uint32_t i = 0; i < n; ++i) {
      at_ = where + " op " + std::to_string(i);
      ops.push_back(read_op(x));
      x = ops.back().out;
    }
    at_.clear();
    return ops;
  }

  Op read_op(const Shape& in) {
    Op op;
    const uint32_t kind = u32("op kind");
    if (kind < 1 || kind > 8)
      fail("op kind is ", kind, ", expected 1 to 8 (the table in docs/model-format.md)");
    op.kind = OpKind(kind);
    at_ += std::string(" (") + op_name(op.kind) + ")";
    const OpSpec& spec = spec_of(op.kind);
    const uint32_t num_ints = u32("num_ints");
    if (num_ints != spec.ints) fail("num_ints is ", num_ints, ", expected ", spec.ints);
    std::vector<int32_t> ints;
    for (uint32_t i = 0; i < num_ints; ++i) ints.push_back(int32_t(u32("ints")));
    const uint32_t num_floats = u32("num_floats");
    if (num_floats != spec.floats) fail("num_floats is ", num_floats, ", expected ", spec.floats);
    std::vector<float> floats;
    for (uint32_t i = 0; i < num_floats; ++i) floats.push_back(f32("floats"));
    const uint32_t num_tensors = u32("num_tensors");
    if (num_tensors != spec.tensors.size()) {
      fail("num_tensors is ", num_tensors, ", expected ", spec.tensors.size());
    }
    std::vector<std::pair<uint64_t, uint64_t>> tensors;  // (offset, count)
    for (uint32_t i = 0; i < num_tensors; ++i) {
      const uint64_t offset = u64("tensor offset");
      tensors.emplace_back(offset, u64("tensor element count"));
    }
    op.in = in;
    const std::vector<Expected> expected = attributes(op, ints, floats);
    for (size_t i = 0; i < tensors.size(); ++i) {
      op.tensors.push_back(
          tensor(spec.tensors[i], tensors[i].first, tensors[i].second, expected[i]));
    }
    return op;
  }

  // Fills op's attributes from ints/floats, checks their ranges and the input shape, sets op.out.
  // Returns the element count each of the op's tensors must have.
  std::vector<Expected> attributes(Op& op, const std::vector<int32_t>& v,
                                   const std::vector<float>& f) {
    const Shape in = op.in;
    switch (op.kind) {
      case OpKind::Conv2d: {
        op.in_channels = at_least(v[0], 1, "in_channels");
        op.out_channels = at_least(v[1], 1, "out_channels");
        window(op, v.data() + 2, false);
        op.relu = flag(v[8], "relu");
        channels_in(op);
        op.out =
            shape(op.out_channels, conv_size(in.h, op.kernel_h, op.stride_h, op.pad_h, "height"),
                  conv_size(in.w, op.kernel_w, op.stride_w, op.pad_w, "width"), "output");
        return {product({{"out", op.out_channels},
                         {"in", op.in_channels},
                         {"", op.kernel_h},
                         {"", op.kernel_w}}),
                product({{"out", op.out_channels}})};
      }
      case OpKind::MaxPool2d:
      case OpKind::AvgPool2d:
        window(op, v.data(), true);
        op.ceil_mode = flag(v[6], "ceil_mode");
        op.relu = flag(v[7], "relu");
        op.out = shape(
            in.c, pool_size(in.h, op.kernel_h, op.stride_h, op.pad_h, op.ceil_mode, "height"),
            pool_size(in.w, op.kernel_w, op.stride_w, op.pad_w, op.ceil_mode, "width"), "output");
        return {};
      case OpKind::Lrn:
        op.size = at_least(v[0], 1, "size");
        op.alpha = f[0], op.beta = f[1], op.k = f[2];
        if (!std::isfinite(op.alpha) || !std::isfinite(op.beta) || !std::isfinite(op.k)) {
          fail("alpha ", op.alpha, ", beta ", op.beta, ", k ", op.k, " must be finite");
        }
        // k > 0 and alpha >= 0 keep the base of the power positive.
        if (op.alpha < 0) fail("alpha is ", op.alpha, ", expected >= 0");
        if (!(op.k > 0)) fail("k is ", op.k, ", expected > 0");
        op.out = in;
        return {};
      case OpKind::Relu:
      case OpKind::Flatten:
        op.out = op.kind == OpKind::Relu ? in : Shape{int32_t(in.numel()), 1, 1};
        return {};
      case OpKind::Linear:
        op.in_channels = at_least(v[0], 1, "in_features");
        op.out_channels = at_least(v[1], 1, "out_features");
        op.relu = flag(v[2], "relu");
        if (in.numel() != op.in_channels) {
          fail("in_features is ", op.in_channels, " but the input ", str(in), " has ", in.numel(),
               " elements");
        }
        op.out = {op.out_channels, 1, 1};
        return {product({{"out", op.out_channels}, {"in", op.in_channels}}),
                product({{"out", op.out_channels}})};
      case OpKind::ResBlock: {
        op.in_channels = at_least(v[0], 1, "in_channels");
        op.out_channels =
            at_least(v[1], op.in_channels, "out_channels (the shortcut only adds channels)");
        op.stride_h = op.stride_w = at_least(v[2], 1, "stride");
        op.kernel_h = op.kernel_w = 3;
        op.pad_h = op.pad_w = 1;
        channels_in(op);
        // ceil(H / stride): the 3x3, pad-1 conv1's output size.
        op.out = shape(op.out_channels, (int64_t(in.h) + op.stride_h - 1) / op.stride_h,
                       (int64_t(in.w) + op.stride_w - 1) / op.stride_w, "output");
        const Expected bias = product({{"out", op.out_channels}});
        return {product({{"out", op.out_channels}, {"in", op.in_channels}, {"", 3}, {"", 3}}), bias,
                product({{"out", op.out_channels}, {"out", op.out_channels}, {"", 3}, {"", 3}}),
                bias};
      }
    }
    fail("unreachable op kind");
  }

  int32_t at_least(int32_t value, int32_t low, const char* field) const {
    if (value < low) fail(field, " is ", value, ", expected >= ", low);
    return value;
  }

  bool flag(int32_t value, const char* field) const {
    if (value != 0 && value != 1) fail(field, " is ", value, ", expected 0 or 1");
    return value == 1;
  }

  // Kernel, stride and padding from v[0..5]. Pools keep PyTorch's pad <= kernel / 2; convs
  // pad < kernel, so that every window overlaps the input.
  void window(Op& op, const int32_t* v, bool pool) const {
    op.kernel_h = at_least(v[0], 1, "kernel_h");
    op.kernel_w = at_least(v[1], 1, "kernel_w");
    op.stride_h = at_least(v[2], 1, "stride_h");
    op.stride_w = at_least(v[3], 1, "stride_w");
    op.pad_h = at_least(v[4], 0, "pad_h");
    op.pad_w = at_least(v[5], 0, "pad_w");
    const int32_t max_h = pool ? op.kernel_h / 2 : op.kernel_h - 1;
    const int32_t max_w = pool ? op.kernel_w / 2 : op.kernel_w - 1;
    const char* rule = pool ? "kernel / 2" : "kernel - 1";
    if (op.pad_h > max_h) fail("pad_h ", op.pad_h, " is more than ", rule, " = ", max_h);
    if (op.pad_w > max_w) fail("pad_w ", op.pad_w, " is more than ", rule, " = ", max_w);
  }

  void channels_in(const Op& op) const {
    if (op.in.c != op.in_channels) {
      fail("in_channels is ", op.in_channels, " but the input ", str(op.in), " has ", op.in.c,
           " channels");
    }
  }

  int64_t conv_size(int32_t in, int32_t k, int32_t s, int32_t p, const char* dim) const {
    const int64_t span = int64_t(in) + 2 * int64_t(p) - k;
    if (span < 0)
      fail("kernel ", k, " is larger than the padded input ", dim, " ",
           int64_t(in) + 2 * int64_t(p));
    return span / s + 1;
  }

  // PyTorch's pooling_output_shape: with ceil_mode the last window must start inside the input
  // or its left padding.
  int64_t pool_size(int32_t in, int32_t k, int32_t s, int32_t p, bool ceil_mode,
                    const char* dim) const {
    const int64_t span = int64_t(in) + 2 * int64_t(p) - k;
    if (span < 0)
      fail("kernel ", k, " is larger than the padded input ", dim, " ",
           int64_t(in) + 2 * int64_t(p));
    int64_t out = (ceil_mode ? span + s - 1 : span) / s + 1;
    if (ceil_mode && (out - 1) * s >= int64_t(in) + p) --out;
    return out;
  }

  // A shape whose sizes are >= 1 (the callers ensure it) and whose element count fits int32.
  Shape shape(int64_t c, int64_t h, int64_t w, const char* what) const {
    int64_t ch, n;
    if (__builtin_mul_overflow(c, h, &ch) || __builtin_mul_overflow(ch, w, &n) ||
        n > kMaxActivation) {
      fail(what, " [", c, ", ", h, ", ", w,
           "] has more than the 2^31-1 elements an activation may hold");
    }
    return {int32_t(c), int32_t(h), int32_t(w)};
  }

  static Expected product(std::initializer_list<std::pair<const char*, int32_t>> factors) {
    Expected e{1, ""};
    bool overflow = false;
    for (const auto& [name, value] : factors) {
      overflow |= __builtin_mul_overflow(e.count, int64_t(value), &e.count);
      e.formula += e.formula.empty() ? "" : " * ";
      e.formula += *name ? std::string(name) + " " + std::to_string(value) : std::to_string(value);
    }
    if (overflow) e.count = -1;  // no u64 count equals it
    return e;
  }

  TensorView tensor(const char* name, uint64_t offset, uint64_t count, const Expected& want) const {
    if (want.count < 0 || count != uint64_t(want.count)) {
      fail(name, " has ", count, " elements, expected ",
           want.count < 0 ? std::string("more than 2^63") : std::to_string(want.count), " = ",
           want.formula);
    }
    if (offset % kAlign) fail(name, " offset ", offset, " is not a multiple of 64");
    uint64_t bytes, end;
    if (__builtin_mul_overflow(count, uint64_t(4), &bytes) ||
        __builtin_add_overflow(offset, bytes, &end) || end > weights_.size) {
      fail(name, " (offset ", offset, ", ", count,
           " floats) runs past the end of the weights section (", weights_.size, " bytes)");
    }
    return {reinterpret_cast<const float*>(data_ + weights_.offset + offset), int64_t(count)};
  }

  static std::string str(const Shape& x) {
    return "[" + std::to_string(x.c) + ", " + std::to_string(x.h) + ", " + std::to_string(x.w) +
           "]";
  }

  std::string source_;
  const uint8_t* data_;
  size_t size_;
  Section graph_{}, metadata_{}, weights_{};
  const uint8_t* graph_pos_ = nullptr;
  uint64_t graph_left_ = 0;
  std::string at_;  // where in the graph the parser is, for messages
};

}  // namespace

Model parse_model(const uint8_t* data, size_t size) {
  return Parser("model file", data, size).parse();
}

Model load_model(const std::string& path) {
  const std::string source = "model file " + path;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw ModelError(source + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof(chunk), f)) > 0)
    bytes.insert(bytes.end(), chunk, chunk + got);
  const int error = std::ferror(f) ? errno : 0;
  std::fclose(f);
  if (error) throw ModelError(source + ": cannot read: " + std::strerror(error));
  return Parser(source, bytes.data(), bytes.size()).parse();
}

}  // namespace branchy
