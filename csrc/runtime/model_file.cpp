// Reading and checking a .branchy model file (docs/model-format.md, "What a reader checks").
// The file may be damaged or hostile: every count is bounded by the bytes left before it is used,
// every offset and size is added and multiplied with overflow checks, and every failure is a
// ModelError naming the field.
#include "runtime/model_file.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/json.h"
#include "runtime/ops/registry.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "TensorViews point straight at the file's little-endian floats; a big-endian host must swap"
#endif

namespace branchy {

int64_t Model::weight_count() const {
  int64_t n = 0;
  for (const TensorView& t : tensors) n += t.count;
  return n;
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
constexpr uint32_t kMaxOps = 16384;
constexpr uint32_t kMaxStages = 1024;

uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }

struct Section {
  const char* name;
  uint64_t offset, size;
};

class Parser {
 public:
  // `owner`, when given, keeps `data` alive; the model then points into it where its weights lie
  // 64-byte aligned (a mapping: page-aligned), else into an aligned copy.
  Parser(std::string source, const uint8_t* data, size_t size, std::shared_ptr<const void> owner = nullptr)
      : source_(std::move(source)), data_(data), size_(size), owner_(std::move(owner)) {}

  Model parse() {
    Model m;
    read_header();
    if (owner_ && reinterpret_cast<uintptr_t>(data_ + weights_.offset) % kAlign == 0) {
      m.bytes = owner_;
    } else {
      copy_aligned(m);
    }
    m.file = data_;
    m.file_size = size_;
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
    if (version == 1) {
      fail("format version 1 (a chain of a fixed op list) is no longer read; re-export the "
           "checkpoint with this branchy-engine: branchy export CKPT -o FILE (format version 2)");
    }
    if (version != kFormatVersion) fail("format version ", version, " is invalid (expected 2)");
    if (flags & ~kFlagInputPrep)
      fail("flags 0x", std::hex, flags, std::dec, " has bits this reader does not know");
    flags_ = flags;
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
    m.input = OpCheck(source_).shape(c, h, w, "input");
    m.num_classes = dimension("num_classes");
    const uint32_t criterion = u32("criterion");
    if (criterion > 1)
      fail("criterion is ", criterion, ", expected 0 (entropy) or 1 (max probability)");
    m.criterion = criterion == 0 ? Criterion::Entropy : Criterion::MaxProb;
    read_thresholds(m);
    read_class_names(m);
    if (flags_ & kFlagInputPrep) read_input_prep(m);
    read_tensors(m);
    read_ops(m);
    read_stages(m);
    read_exits(m);
    if (graph_left_ != 0) fail("graph section has ", graph_left_, " bytes after the last exit");
    check_reads(m);
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

  // f32 pixel_max, then mean and std per input channel: all finite, pixel_max and std > 0.
  void read_input_prep(Model& m) {
    at_ = "input preparation";
    InputPrep& p = m.prep;
    p.pixel_max = f32("pixel_max");
    if (!(std::isfinite(p.pixel_max) && p.pixel_max > 0)) fail("pixel_max is ", p.pixel_max, ", expected finite and > 0");
    for (auto* list : {&p.mean, &p.std}) {
      const bool mean = list == &p.mean;
      for (int32_t c = 0; c < m.input.c; ++c) {
        const float v = f32(mean ? "mean" : "std");
        if (!std::isfinite(v) || (!mean && !(v > 0))) {
          fail(mean ? "mean" : "std", " of channel ", c, " is ", v, mean ? ", expected finite" : ", expected finite and > 0");
        }
        list->push_back(v);
      }
    }
    at_.clear();
  }

  // Weights must be finite: a NaN or infinite weight gives NaN or an answer that depends on which
  // kernel ran. The scan has no early exit, so it vectorises (about 10 ms for ResNet-50's 100 MB).
  void check_finite(const TensorView& t) const {
    uint32_t special = 0;
    for (int64_t i = 0; i < t.count; ++i) {
      uint32_t bits;
      std::memcpy(&bits, t.data + i, sizeof bits);
      special |= uint32_t((bits & 0x7f800000u) == 0x7f800000u);
    }
    for (int64_t i = 0; special && i < t.count; ++i) {
      if (!std::isfinite(t.data[i])) {
        fail("holds ", std::isnan(t.data[i]) ? "NaN" : t.data[i] > 0 ? "+inf" : "-inf",
             " at element ", i, " (weights must be finite)");
      }
    }
  }

  // The tensor table: each tensor inside the weights section, aligned. Its element count is
  // checked against the ops that use it.
  void read_tensors(Model& m) {
    const uint32_t n = count("num_tensors", 16);
    for (uint32_t i = 0; i < n; ++i) {
      at_ = "tensor " + std::to_string(i);
      const uint64_t offset = u64("tensor offset"), elements = u64("tensor element count");
      if (offset % kAlign) fail("offset ", offset, " is not a multiple of 64");
      uint64_t bytes, end;
      if (__builtin_mul_overflow(elements, uint64_t(4), &bytes) ||
          __builtin_add_overflow(offset, bytes, &end) || end > weights_.size) {
        fail("offset ", offset, " and ", elements,
             " floats run past the end of the weights section (", weights_.size, " bytes)");
      }
      m.tensors.push_back({reinterpret_cast<const float*>(data_ + weights_.offset + offset),
                           int64_t(elements)});
      check_finite(m.tensors.back());
    }
    used_.assign(n, false);
    at_.clear();
  }

  void read_ops(Model& m) {
    const uint32_t n = count("num_ops", 20);
    // A resource limit, so that no file makes the plan's work (linear or near it in the op count)
    // unbounded: the largest torchvision classifiers have a few hundred ops.
    if (n > kMaxOps) fail("num_ops is ", n, "; this reader takes at most ", kMaxOps, " ops");
    m.values.push_back(m.input);
    m.ops.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
      at_ = "op " + std::to_string(i);
      m.ops.push_back(read_op(m, int32_t(i)));
      m.values.push_back(m.ops.back().out);
    }
    for (size_t t = 0; t < used_.size(); ++t) {
      if (!used_[t]) {
        at_ = "tensor " + std::to_string(t);
        fail("no op uses it (a writer stores only the tensors its ops read)");
      }
    }
    at_.clear();
  }

  Op read_op(const Model& m, int32_t index) {
    Op op;
    op.index = index;
    op.output = index + 1;
    const uint32_t kind = u32("op kind");
    op.def = find_op(kind);
    if (op.def == nullptr) {
      fail("op kind is ", kind, ", which this reader does not know (", op_registry().size(),
           " kinds, docs/model-format.md); a newer branchy-engine may read it");
    }
    at_ += std::string(" (") + op.def->name + ")";
    const OpDef& def = *op.def;
    const uint32_t num_inputs = count("num_inputs", 4);
    if (num_inputs < uint32_t(def.min_inputs) ||
        (def.max_inputs >= 0 && num_inputs > uint32_t(def.max_inputs))) {
      fail("num_inputs is ", num_inputs, ", expected ", def.min_inputs,
           def.max_inputs < 0 ? " or more"
                              : (def.max_inputs == def.min_inputs
                                     ? std::string()
                                     : " to " + std::to_string(def.max_inputs)));
    }
    for (uint32_t i = 0; i < num_inputs; ++i) {
      const uint32_t v = u32("input value");
      if (v > uint32_t(index)) {
        fail("input ", i, " is value ", v, ", not yet defined (value 0 is the model's input, value ",
             "k + 1 op k's output; an op reads only earlier values)");
      }
      op.inputs.push_back(int32_t(v));
      op.ins.push_back(m.values[v]);
    }
    op.in = op.ins[0];
    // Attributes added to a kind after files were written go last and read as 0 where missing.
    const uint32_t num_ints = u32("num_ints");
    const size_t oldest = def.ints_before_additions ? def.ints_before_additions : def.ints.size();
    if (num_ints > def.ints.size() || num_ints < oldest) {
      if (oldest == def.ints.size()) fail("num_ints is ", num_ints, ", expected ", def.ints.size());
      fail("num_ints is ", num_ints, ", expected ", oldest, " to ", def.ints.size());
    }
    for (uint32_t i = 0; i < num_ints; ++i) op.ints.push_back(int32_t(u32("ints")));
    op.ints.resize(def.ints.size(), 0);
    const uint32_t num_floats = u32("num_floats");
    if (num_floats != def.floats.size())
      fail("num_floats is ", num_floats, ", expected ", def.floats.size());
    for (uint32_t i = 0; i < num_floats; ++i) op.floats.push_back(f32("floats"));
    const uint32_t num_tensors = u32("num_tensors");
    if (num_tensors != def.tensors.size()) {
      fail("num_tensors is ", num_tensors, ", expected ", def.tensors.size());
    }
    for (uint32_t i = 0; i < num_tensors; ++i) {
      const uint32_t t = u32("tensor id");
      if (t >= m.tensors.size()) fail(def.tensors[i], " is tensor ", t, ", past the table's ", m.tensors.size());
      op.tensor_ids.push_back(t);
      op.tensors.push_back(m.tensors[t]);
      used_[t] = true;
    }
    const std::vector<Expected> expected = def.check(OpCheck(source_ + ": " + at_), op);
    for (size_t i = 0; i < op.tensors.size(); ++i) {
      const Expected& want = expected[i];
      if (want.count < 0 || op.tensors[i].count != want.count) {
        fail(def.tensors[i], " (tensor ", op.tensor_ids[i], ") has ", op.tensors[i].count,
             " elements, expected ",
             want.count < 0 ? std::string("more than 2^63") : std::to_string(want.count), " = ",
             want.formula);
      }
    }
    return op;
  }

  void read_stages(Model& m) {
    const uint32_t n = count("num_stages", 8);
    if (n == 0) fail("num_stages is 0; a model has at least one stage");
    if (n > kMaxStages) fail("num_stages is ", n, "; this reader takes at most ", kMaxStages);
    std::vector<uint32_t> listed(m.values.size(), 0);  // per value: the last stage (+1) listing it
    for (uint32_t s = 0; s < n; ++s) {
      at_ = "stage " + std::to_string(s);
      Stage stage;
      stage.first_op = next_op_;
      stage.num_ops = take_ops(m, "num_ops");
      const uint32_t outputs = count("num_outputs", 4);
      if (outputs == 0) fail("num_outputs is 0; a stage passes on at least one value");
      for (uint32_t i = 0; i < outputs; ++i) {
        const uint32_t v = u32("output value");
        if (v >= m.values.size()) fail("output ", i, " is value ", v, ", past the last ", m.values.size() - 1);
        if (listed[v] == s + 1) fail("output ", i, " repeats value ", v);
        listed[v] = s + 1;
        stage.outputs.push_back(int32_t(v));
      }
      m.stages.push_back(std::move(stage));
    }
    at_.clear();
  }

  void read_exits(Model& m) {
    const uint32_t n = count("num_exits", 12);
    if (n == 0) fail("num_exits is 0; the last stage needs an exit");
    for (uint32_t e = 0; e < n; ++e) {
      at_ = "exit " + std::to_string(e);
      Exit exit;
      const uint32_t stage = u32("exit stage index");
      if (stage >= m.stages.size())
        fail("stage index ", stage, " is past the last stage ", m.stages.size() - 1);
      if (e > 0 && stage <= uint32_t(m.exits.back().stage)) {
        fail("stage index ", stage, " does not follow exit ", e - 1, "'s ", m.exits.back().stage,
             " (exit stages strictly increase)");
      }
      if (e == n - 1 && stage != m.stages.size() - 1) {
        fail("the last exit sits after stage ", stage, ", expected the last stage ",
             m.stages.size() - 1);
      }
      exit.stage = int32_t(stage);
      const uint32_t input = u32("exit input value");
      const auto& outs = m.stages[stage].outputs;
      if (std::find(outs.begin(), outs.end(), int32_t(input)) == outs.end()) {
        fail("input is value ", input, ", not one of stage ", stage, "'s outputs");
      }
      exit.input = int32_t(input);
      exit.first_op = next_op_;
      exit.num_ops = take_ops(m, "num_ops");
      exit.logits = exit.num_ops ? exit.first_op + exit.num_ops : exit.input;
      const Shape logits{m.num_classes, 1, 1};
      if (m.values[exit.logits] != logits) {
        fail("head ends in ", OpCheck::str(m.values[exit.logits]), ", expected [num_classes ",
             m.num_classes, ", 1, 1]");
      }
      m.exits.push_back(exit);
    }
    if (m.thresholds.size() != m.exits.size() - 1) {
      at_.clear();
      fail("num_thresholds is ", m.thresholds.size(), ", expected num_exits - 1 = ", m.exits.size() - 1);
    }
    if (size_t(next_op_) != m.ops.size()) {
      at_.clear();
      fail("the stages and heads take ", next_op_, " ops of ", m.ops.size(),
           "; every op belongs to one");
    }
    at_.clear();
  }

  // The next `num_ops` ops, for a stage or a head.
  int32_t take_ops(const Model& m, const char* field) {
    const uint32_t n = u32(field);
    if (n > m.ops.size() - size_t(next_op_)) {
      fail(field, " is ", n, " but only ", m.ops.size() - size_t(next_op_), " ops are left");
    }
    next_op_ += int32_t(n);
    return int32_t(n);
  }

  // An op reads only what its stage or head sees: the values the stage before passes on (the
  // model's input for stage 0), or the exit's input, and values of earlier ops of its own part.
  // A stage passes on values it sees. Linear in the ops: each value carries the number of the
  // last part that sees it.
  void check_reads(const Model& m) {
    std::vector<int32_t> seen_by(m.values.size(), -1);
    int32_t part = 0;
    auto run = [&](const std::vector<int32_t>& visible, int32_t first, int32_t count,
                   const std::string& where) {
      for (int32_t v : visible) seen_by[v] = part;
      for (int32_t i = first; i < first + count; ++i) {
        const Op& op = m.ops[i];
        for (size_t k = 0; k < op.inputs.size(); ++k) {
          if (seen_by[op.inputs[k]] != part) {
            at_ = where + ", op " + std::to_string(i) + " (" + op.name() + ")";
            fail("input ", k, " is value ", op.inputs[k],
                 ", which this part of the graph does not see (a stage sees what the stage before "
                 "passes on and its own ops' values; a head its input and its own ops' values)");
          }
        }
        seen_by[op.output] = part;
      }
    };
    std::vector<int32_t> visible{0};
    for (size_t s = 0; s < m.stages.size(); ++s, ++part) {
      const Stage& stage = m.stages[s];
      const std::string where = "stage " + std::to_string(s);
      run(visible, stage.first_op, stage.num_ops, where);
      for (size_t i = 0; i < stage.outputs.size(); ++i) {
        if (seen_by[stage.outputs[i]] != part) {
          at_ = where;
          fail("output ", i, " is value ", stage.outputs[i], ", which the stage does not see");
        }
      }
      visible = stage.outputs;
    }
    for (size_t e = 0; e < m.exits.size(); ++e, ++part) {
      const Exit& exit = m.exits[e];
      run({exit.input}, exit.first_op, exit.num_ops, "exit " + std::to_string(e));
    }
    at_.clear();
  }

  std::string source_;
  const uint8_t* data_;
  size_t size_;
  std::shared_ptr<const void> owner_;
  Section graph_{}, metadata_{}, weights_{};
  uint32_t flags_ = 0;
  const uint8_t* graph_pos_ = nullptr;
  uint64_t graph_left_ = 0;
  std::string at_;  // where in the graph the parser is, for messages
  std::vector<bool> used_;  // per tensor: some op reads it
  int32_t next_op_ = 0;     // the first op no stage or head has taken yet
};

}  // namespace

Model parse_model(const uint8_t* data, size_t size, std::shared_ptr<const void> owner) {
  return Parser("model file", data, size, std::move(owner)).parse();
}

Model load_model(const std::string& path, int64_t max_bytes) {
  const std::string source = "model file " + path;
  // Non-blocking, so that a FIFO is refused below, not waited on (no effect on regular files).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw ModelError(source + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    throw ModelError(source + ": cannot stat: " + std::strerror(error));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ModelError(source + ": not a regular file");
  }
  if (st.st_size > max_bytes) {
    ::close(fd);
    throw ModelError(source + " is " + std::to_string(st.st_size) + " bytes, over the limit of " +
                     std::to_string(max_bytes) + " bytes (max_memory)");
  }
  const size_t size = size_t(st.st_size);
  void* mapped = size ? ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  const int map_error = errno;
  ::close(fd);  // the mapping stays
  if (mapped == MAP_FAILED) {
    if (size == 0) return Parser(source, nullptr, 0).parse();  // refused: too small
    throw ModelError(source + ": cannot map: " + std::strerror(map_error));
  }
  std::shared_ptr<const void> owner(mapped, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
  return Parser(source, static_cast<const uint8_t*>(mapped), size, std::move(owner)).parse();
}

}  // namespace branchy
