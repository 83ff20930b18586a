// libFuzzer target for the model file reader: on any bytes, parse_model either throws ModelError or
// returns a model whose tensors (the table's, and each op's views of them) can all be read and
// which summarize() can print; the sanitizers (ASan, UBSan) catch everything else. Random bytes
// never match an FNV checksum, so each input is also parsed with its file size field and checksum
// rewritten, to reach the checks behind them.
#include <cstdint>
#include <cstring>
#include <vector>

#include "runtime/model_file.h"

namespace {

volatile float sink;

void parse(const uint8_t* data, size_t size) {
  try {
    const branchy::Model m = branchy::parse_model(data, size);
    // Every tensor of the table, and each op's views of it.
    for (const auto& t : m.tensors) {
      if (t.count) sink = t.data[0] + t.data[t.count - 1];
    }
    for (const auto& op : m.ops) {
      for (const auto& t : op.tensors) {
        if (t.count) sink = t.data[0] + t.data[t.count - 1];
      }
    }
    branchy::summarize(m);
  } catch (const branchy::ModelError&) {
  }
}

void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  parse(data, size);
  if (size >= 80) {
    std::vector<uint8_t> sealed(data, data + size);
    put64(sealed.data() + 16, size);
    put64(sealed.data() + size - 8, branchy::fnv1a64(sealed.data(), size - 8));
    parse(sealed.data(), size);
  }
  return 0;
}
