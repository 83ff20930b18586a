// The model-level equality test of make test-aarch64: networks exported on another machine with
// PyTorch's logits (tests/aarch64/make_models.py) run through this build's engine on every
// instruction set it has, own kernels, every sample: every exit's logits must equal PyTorch's
// within 1e-4 of the exit's largest logit (as tests/test_any_network.py holds the x86 engine),
// and run() must leave at the exit and with the class PyTorch's logits give wherever they are
// clear of the threshold and of a tie. Then on the best set, each op pinned to its second, third
// and fourth own kernel where it has them, so that every kernel runs: the first sample's logits
// (qemu is slow).
// Usage: check_models DIR   (DIR/manifest.txt: "NAME SAMPLES" a line; exit status 1 on a mismatch)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/exit_decision.h"
#include "runtime/plan.h"

namespace {

template <class T>
std::vector<T> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::vector<T> out(size_t(f.tellg()) / sizeof(T));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(out.data()), std::streamsize(out.size() * sizeof(T)));
  return out;
}

// H = log(sum e^(z - m)) - sum p (z - m), in double.
double entropy(const double* z, size_t n) {
  const double m = *std::max_element(z, z + n);
  double s = 0, t = 0;
  for (size_t i = 0; i < n; ++i) s += std::exp(z[i] - m), t += std::exp(z[i] - m) * (z[i] - m);
  return std::log(s) - t / s;
}

// What run() must give for one sample from PyTorch's logits (exits in order, `sizes` classes
// each), or exit -1 where an entropy lies within 1e-4 of its threshold or the top two logits
// within 1e-4 of the largest (either way the engine's float sums may fall on the other side).
branchy::Result expected(const double* want, const std::vector<size_t>& sizes,
                         const std::vector<float>& thresholds) {
  branchy::Result r;
  for (size_t e = 0; e < sizes.size(); ++e, want += sizes[e - 1]) {
    const bool last = e + 1 == sizes.size();
    if (!last) {
      const double h = entropy(want, sizes[e]);
      if (std::fabs(h - thresholds[e]) <= 1e-4 * std::max(1.0, double(thresholds[e]))) return r;
      if (h >= thresholds[e]) continue;
    }
    std::vector<double> z(want, want + sizes[e]);
    const size_t top = size_t(std::max_element(z.begin(), z.end()) - z.begin());
    double second = -INFINITY, scale = 0;
    for (size_t i = 0; i < z.size(); ++i) {
      if (i != top) second = std::max(second, z[i]);
      scale = std::max(scale, std::fabs(z[i]));
    }
    if (z[top] - second <= 1e-4 * scale) return r;
    r.exit = int32_t(e);
    r.prediction = int64_t(top);
    return r;
  }
  return r;
}

// One network in one mode, its first `samples` samples, run()'s decisions too where `decisions`;
// the number of mismatches (each printed).
int check(const std::string& name, const branchy::Model& model, branchy::Isa isa,
          const std::string& kernels, const std::vector<float>& inputs,
          const std::vector<double>& want, int samples, bool decisions) {
  // "pin:" and a digit per op, shown as "pin:1*".
  const std::string mode = kernels.size() > 6 ? kernels.substr(0, 5) + "*" : kernels;
  const auto start = std::chrono::steady_clock::now();
  branchy::set_active_isa(isa);
  branchy::PlanOptions options;
  branchy::parse_kernels(kernels, options);
  const branchy::Plan plan(model, options);
  auto context = plan.make_context();
  const size_t in_size = size_t(model.input.numel());
  const size_t out_size = want.size() / (inputs.size() / in_size);
  int bad = 0, decided = 0;
  double worst = 0;  // the largest error as a fraction of the exit's largest logit
  for (int n = 0; n < samples; ++n) {
    const float* x = inputs.data() + n * in_size;
    const double* w = want.data() + n * out_size;
    const auto logits = plan.all_exit_logits(*context, x);
    std::vector<size_t> sizes;
    for (size_t e = 0, at = 0; e < logits.size(); at += logits[e].size(), ++e) {
      sizes.push_back(logits[e].size());
      if (at + logits[e].size() > out_size) break;
      double scale = 0, error = 0;
      for (size_t i = 0; i < logits[e].size(); ++i) {
        scale = std::max(scale, std::fabs(w[at + i]));
        error = std::max(error, std::fabs(double(logits[e][i]) - w[at + i]));
      }
      worst = std::max(worst, error / std::max(scale, 1e-30));
      if (!(error <= 1e-4 * scale + 1e-6)) {
        std::printf("  %s %s %s: sample %d exit %zu: error %.3g of %.3g\n", name.c_str(),
                    branchy::isa_name(isa), mode.c_str(), n, e, error, scale);
        ++bad;
      }
    }
    size_t total = 0;
    for (size_t s : sizes) total += s;
    if (total != out_size) {
      std::printf("  %s: %zu logits a sample, PyTorch gave %zu\n", name.c_str(), total, out_size);
      return bad + 1;
    }
    const branchy::Result want_r = expected(w, sizes, plan.thresholds());
    if (!decisions || want_r.exit < 0) continue;
    ++decided;
    const branchy::Result r = plan.run(*context, x);
    if (r.exit != want_r.exit || r.prediction != want_r.prediction) {
      std::printf("  %s %s %s: sample %d left at exit %d with class %lld, PyTorch's logits say "
                  "exit %d class %lld\n", name.c_str(), branchy::isa_name(isa), mode.c_str(), n,
                  r.exit, (long long)r.prediction, want_r.exit, (long long)want_r.prediction);
      ++bad;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s %-20s %-8s %-6s %d sample(s): largest error %.2g of the exit's largest logit, "
              "%d decision(s) checked (%.1f s)\n", bad ? "FAIL" : "ok  ", name.c_str(),
              branchy::isa_name(isa), mode.c_str(), samples, worst, decided, seconds);
  std::fflush(stdout);
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: check_models DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::ifstream manifest(dir + "/manifest.txt");
  if (!manifest) {
    std::fprintf(stderr, "check_models: no %s/manifest.txt (tests/aarch64/make_models.py writes it)\n",
                 dir.c_str());
    return 2;
  }
  int bad = 0, networks = 0;
  std::string name;
  int samples = 0;
  while (manifest >> name >> samples) {
    ++networks;
    const branchy::Model model = branchy::load_model(dir + "/" + name + ".branchy");
    const auto inputs = read_all<float>(dir + "/" + name + ".inputs");
    const auto want = read_all<double>(dir + "/" + name + ".logits");
    if (samples < 1 || inputs.size() != size_t(samples) * size_t(model.input.numel()) ||
        want.size() % size_t(samples) != 0) {
      std::printf("FAIL %s: %zu input floats, %zu logits for %d samples\n", name.c_str(),
                  inputs.size(), want.size(), samples);
      ++bad;
      continue;
    }
    const branchy::Isa best = branchy::best_isa();
    bad += check(name, model, branchy::Isa::Portable, "own", inputs, want, samples, true);
    if (best == branchy::Isa::Portable) continue;
    bad += check(name, model, best, "own", inputs, want, samples, true);
    branchy::set_active_isa(best);
    const size_t ops = branchy::Plan(model, [] {
                         branchy::PlanOptions o;
                         o.kernels = branchy::PlanOptions::Kernels::Own;
                         return o;
                       }()).choices().size();
    for (char digit : {'1', '2', '3'}) {
      bad += check(name, model, best, "pin:" + std::string(ops, digit), inputs, want, 1, false);
    }
  }
  branchy::set_active_isa(branchy::best_isa());
  std::printf("%d network(s), %d mismatch(es)\n", networks, bad);
  return bad || networks == 0 ? 1 : 0;
}
