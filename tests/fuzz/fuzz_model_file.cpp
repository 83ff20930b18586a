// libFuzzer target for the model file reader and the plan builder: on any bytes, parse_model either
// throws ModelError or returns a model whose tensors (the table's, and each op's views of them) can
// all be read and which summarize() can print; a Plan of that model (own kernels, unmeasured,
// resource limits of 64 MiB and 2e7 FLOPs a sample) is either refused with an exception or built
// and runs a sample of zeros. The sanitizers (ASan, UBSan) catch everything else; run.sh gives
// libFuzzer a 1 s limit per input and a memory limit. Random bytes
// never match an FNV checksum, so each input is also parsed with its file size field and checksum
// rewritten, to reach the checks behind them.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/model_file.h"
#include "runtime/plan.h"

namespace {

volatile float sink;

// Own kernels (unmeasured: the first SIMD kernel of each op), then every op pinned to its n-th
// own kernel where it has one (n from the input's bytes), so that each own kernel gets fuzzed.
void plan(const branchy::Model& m, uint32_t pick) {
  branchy::PlanOptions options;
  options.kernels = branchy::PlanOptions::Kernels::Own;
  options.max_memory = int64_t(64) << 20;
  options.max_flops = 2e7;
  try {
    const std::vector<float> zeros(size_t(m.input.numel()), 0.0f);
    const branchy::Plan first(m, options);
    sink = first.run(*first.make_context(2), zeros.data()).score;
    branchy::parse_kernels("pin:" + std::string(first.choices().size(), char('0' + pick % 4)), options);
    const branchy::Plan pinned(m, options);
    sink = pinned.run(*pinned.make_context(2), zeros.data()).score;
  } catch (const std::exception&) {  // refused: limits, no kernel for an op, ...
  }
}

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
    plan(m, size ? data[size / 2] : 0);
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
