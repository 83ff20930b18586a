// The program bench/aarch64/count.sh counts instructions of under qemu-aarch64: the first N
// samples of a float32 [N, C, H, W] file through a model, one run() each (batch 1), with the own
// kernels of one instruction set (unmeasured: the same plan on every run), the thresholds of the
// file or, with "last", thresholds 0 (every sample to the final exit). Prints the exit counts.
// Usage: run_samples MODEL INPUTS N portable|neon [last]
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/exit_decision.h"
#include "runtime/plan.h"

int main(int argc, char** argv) {
  if (argc < 5 || argc > 6) {
    std::fprintf(stderr, "usage: run_samples MODEL INPUTS N portable|neon [last]\n");
    return 2;
  }
  const std::string isa = argv[4];
  if (isa != "portable" && isa != "neon") {
    std::fprintf(stderr, "run_samples: isa must be portable or neon, got %s\n", isa.c_str());
    return 2;
  }
  branchy::set_active_isa(isa == "neon" ? branchy::Isa::Neon : branchy::Isa::Portable);
  branchy::Model model = branchy::load_model(argv[1]);
  branchy::PlanOptions options;
  options.kernels = branchy::PlanOptions::Kernels::Own;
  if (argc == 6) options.thresholds.assign(model.thresholds.size(), 0.0f);
  const branchy::Plan plan(std::move(model), options);
  auto context = plan.make_context(1);
  const size_t size = size_t(plan.model().input.numel());
  const long n = std::atol(argv[3]);
  std::vector<float> x(size_t(n) * size);
  std::ifstream in(argv[2], std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(x.data()), std::streamsize(x.size() * sizeof(float)))) {
    std::fprintf(stderr, "run_samples: %s holds fewer than %ld samples\n", argv[2], n);
    return 1;
  }
  std::vector<long> exits(size_t(plan.num_exits()), 0);
  for (long i = 0; i < n; ++i) ++exits[size_t(plan.run(*context, x.data() + size_t(i) * size).exit)];
  std::printf("%s %s:", argv[1], branchy::isa_name(branchy::active_isa()));
  for (long e : exits) std::printf(" %ld", e);
  std::printf(" (samples per exit)\n");
  return 0;
}
