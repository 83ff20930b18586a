// classify: a .branchy model from C++ (branchy/runtime/plan.h), the C example's twin. One
// prepared sample of 0.5s, as the README's example; then, given a file of raw 8-bit images
// [N, H, W, C], each image, prepared by the runtime as the model file records, in one batch.
//
//   classify MODEL [IMAGES.u8]
#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <branchy/runtime/plan.h>

namespace {

void print(const char* label, const branchy::Result& r) {
  std::printf("%sclass %lld, exit %d, entropy %.4f\n", label, (long long)r.prediction, r.exit + 1, r.score);
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: classify MODEL [IMAGES.u8]\n");
    return 2;
  }
  branchy::Plan plan(branchy::load_model(argv[1]));  // built once, shared by threads
  auto context = plan.make_context();                // one per thread: all scratch
  const size_t n = size_t(plan.model().input.numel());
  std::vector<float> input(n, 0.5f);                 // one sample, [C, H, W], prepared
  print("", plan.run(*context, input.data()));

  if (argc > 2) {
    std::ifstream file(argv[2], std::ios::binary);
    const std::vector<uint8_t> images{std::istreambuf_iterator<char>(file), {}};
    if (!file.good() && !file.eof()) throw std::runtime_error(std::string(argv[2]) + ": cannot read");
    if (images.empty() || images.size() % n) {
      throw std::runtime_error(std::string(argv[2]) + " is not a file of " + std::to_string(n) + "-byte images");
    }
    std::vector<branchy::Result> results(images.size() / n);
    plan.run_batch_pixels(*context, images.data(), int64_t(results.size()), branchy::PixelOrder::HWC,
                          results.data());
    for (size_t i = 0; i < results.size(); ++i) {
      const std::string label = "image " + std::to_string(i) + ": ";
      print(label.c_str(), results[i]);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "classify: %s\n", e.what());
  return 1;
}
