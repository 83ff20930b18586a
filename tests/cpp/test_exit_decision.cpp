// Tests of the libtorch-free exit decision core against a double-precision two-pass reference,
// on every instruction set this CPU has.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "runtime/cpu.h"
#include "runtime/exit_decision.h"

using branchy::Criterion;
using branchy::DecisionArgs;
using branchy::Isa;
using branchy::ScalarType;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Reference {
  double entropy, max_prob;
  int64_t prediction;
};

// Straightforward two-pass reference in double: max, then the sums.
Reference reference(const std::vector<float>& z) {
  const int64_t c = static_cast<int64_t>(z.size());
  for (int64_t i = 0; i < c; ++i) {
    if (std::isnan(z[i])) return {std::nan(""), std::nan(""), i};
  }
  int64_t infs = 0, first_inf = -1;
  for (int64_t i = 0; i < c; ++i) {
    if (z[i] == kInf && infs++ == 0) first_inf = i;
  }
  if (infs) return {std::log(double(infs)), 1.0 / double(infs), first_inf};
  int64_t arg = 0;
  for (int64_t i = 1; i < c; ++i) {
    if (z[i] > z[arg]) arg = i;
  }
  if (z[arg] == -kInf) return {std::log(double(c)), 1.0 / double(c), 0};
  double s = 0, t = 0;
  for (float v : z) {
    const double d = double(v) - double(z[arg]);
    s += std::exp(d);
    t += d == -INFINITY ? 0.0 : std::exp(d) * d;
  }
  return {std::log(s) - t / s, 1.0 / s, arg};
}

// Every set this CPU has (Avx512 dispatches to the AVX2 row kernel).
std::vector<Isa> isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Neon}) {
    if (branchy::isa_supported(isa)) out.push_back(isa);
  }
  return out;
}

struct Out {
  float score;
  bool exit;
  int64_t prediction;
};

Out decide(const void* row, ScalarType dtype, int64_t classes, Criterion criterion,
           float threshold, Isa isa) {
  Out o{};
  DecisionArgs a;
  a.logits = row;
  a.dtype = dtype;
  a.rows = 1;
  a.classes = classes;
  a.row_stride = classes;
  a.criterion = criterion;
  a.threshold = threshold;
  a.score = &o.score;
  a.exit = &o.exit;
  a.prediction = &o.prediction;
  branchy::decide_rows(a, 0, 1, isa);
  return o;
}

Out decide(const std::vector<float>& z, Criterion criterion, float threshold, Isa isa) {
  return decide(z.data(), ScalarType::Float32, static_cast<int64_t>(z.size()), criterion,
                threshold, isa);
}

bool close(double got, double want, double atol = 2e-6, double rtol = 2e-5) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

void expect_matches(const std::vector<float>& z, const char* what) {
  const Reference ref = reference(z);
  for (Isa isa : isas()) {
    const Out h = decide(z, Criterion::Entropy, 0.5f, isa);
    const Out p = decide(z, Criterion::MaxProb, 0.5f, isa);
    CHECK_MSG(close(h.score, ref.entropy), "%s C=%zu %s: entropy %.9g want %.9g", what, z.size(),
              branchy::isa_name(isa), h.score, ref.entropy);
    CHECK_MSG(close(p.score, ref.max_prob), "%s C=%zu %s: max_prob %.9g want %.9g", what,
              z.size(), branchy::isa_name(isa), p.score, ref.max_prob);
    CHECK_MSG(h.prediction == ref.prediction && p.prediction == ref.prediction,
              "%s C=%zu %s: prediction %lld want %lld", what, z.size(), branchy::isa_name(isa),
              (long long)h.prediction, (long long)ref.prediction);
    CHECK(h.exit == (h.score < 0.5f));
    CHECK(p.exit == (p.score >= 0.5f));
  }
}

}  // namespace

TEST(random_rows_match_reference) {
  std::mt19937 gen(1234);
  for (int64_t c : {1, 2, 3, 7, 8, 9, 10, 15, 16, 17, 100, 1000, 32000}) {
    for (float scale : {0.1f, 1.0f, 10.0f, 1000.0f}) {
      std::normal_distribution<float> dist(0.0f, scale);
      std::vector<float> z(c);
      for (auto& v : z) v = dist(gen);
      expect_matches(z, "random");
    }
  }
}

TEST(extreme_and_infinite_logits) {
  expect_matches({1e4f, -1e4f, 0.0f}, "+-1e4");
  expect_matches({-1e4f, -1e4f + 1.0f, -1e4f}, "near -1e4");
  expect_matches({3.4e38f, -3.4e38f, 1.0f}, "near FLT_MAX");
  expect_matches({kInf, 1.0f, 2.0f}, "one +inf");
  expect_matches({1.0f, kInf, 2.0f, kInf, 3, 4, 5, 6, 7, kInf}, "three +inf");
  expect_matches({-kInf, -kInf, -kInf}, "all -inf");
  expect_matches(std::vector<float>(19, -kInf), "all -inf, 19");
  expect_matches({-kInf, 2.0f, -kInf, 1.0f, -kInf, -kInf, -kInf, -kInf, -kInf}, "some -inf");
  expect_matches({1.0f, kNaN, 2.0f}, "NaN");
  expect_matches({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, kNaN, kNaN}, "NaN in tail");
  expect_matches({kInf, kNaN}, "NaN beats +inf");
  std::vector<float> big(1000, 0.0f);
  big[997] = kNaN;
  expect_matches(big, "NaN late");
}

TEST(special_values_have_the_mathematical_limit) {
  for (Isa isa : isas()) {
    const Out one_inf = decide({kInf, 1.0f, 2.0f}, Criterion::Entropy, 1e-30f, isa);
    CHECK(one_inf.score == 0.0f && one_inf.exit && one_inf.prediction == 0);
    const Out two_inf = decide({0.0f, kInf, 5.0f, kInf}, Criterion::Entropy, 1.0f, isa);
    CHECK(two_inf.score == std::log(2.0f) && two_inf.exit && two_inf.prediction == 1);
    const Out nan = decide({kNaN, 1.0f}, Criterion::Entropy, kInf, isa);
    CHECK(std::isnan(nan.score) && !nan.exit && nan.prediction == 0);
    const Out nan_p = decide({1.0f, kNaN}, Criterion::MaxProb, -kInf, isa);
    CHECK(std::isnan(nan_p.score) && !nan_p.exit && nan_p.prediction == 1);
    const Out single = decide({42.0f}, Criterion::Entropy, 0.0f, isa);
    CHECK(single.score == 0.0f && !single.exit && single.prediction == 0);
  }
}

TEST(ties_pick_the_first_index) {
  for (Isa isa : isas()) {
    for (int c : {2, 8, 9, 33}) {
      std::vector<float> z(c, 1.5f);
      const Out o = decide(z, Criterion::Entropy, 0.0f, isa);
      CHECK_MSG(o.prediction == 0, "C=%d %s: %lld", c, branchy::isa_name(isa),
                (long long)o.prediction);
      CHECK(close(o.score, std::log(double(c))));
      z.assign(c, 0.0f);
      z[c - 1] = 3.0f;
      z[1] = 3.0f;
      CHECK(decide(z, Criterion::Entropy, 0.0f, isa).prediction == 1);
    }
  }
}

TEST(threshold_is_strict_for_entropy_and_inclusive_for_max_prob) {
  const std::vector<float> z{0.3f, -1.2f, 2.5f, 0.0f, 1.0f};
  for (Isa isa : isas()) {
    const float h = decide(z, Criterion::Entropy, 0.0f, isa).score;
    CHECK(!decide(z, Criterion::Entropy, h, isa).exit);
    CHECK(decide(z, Criterion::Entropy, std::nextafter(h, kInf), isa).exit);
    const float p = decide(z, Criterion::MaxProb, 0.0f, isa).score;
    CHECK(decide(z, Criterion::MaxProb, p, isa).exit);
    CHECK(!decide(z, Criterion::MaxProb, std::nextafter(p, kInf), isa).exit);
  }
}

namespace {
uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return static_cast<uint16_t>(u >> 16);  // truncation: exact for the values used below
}
}  // namespace

TEST(half_and_bfloat16_rows_equal_their_float_values) {
  // fp16 bit patterns and their values: 1, -2, 0.5, smallest subnormal, 65504, -0, +inf, NaN.
  const std::vector<uint16_t> half{0x3c00, 0xc000, 0x3800, 0x0001, 0x7bff, 0x8000, 0x7c00, 0x7e00};
  const std::vector<float> value{1.0f, -2.0f, 0.5f, 5.9604644775390625e-8f, 65504.0f, -0.0f, kInf,
                                 kNaN};
  for (size_t k = 0; k + 1 < half.size(); ++k) {
    // Rows of the first k+1 values (so +inf and NaN rows come last), then a long random row.
    std::vector<uint16_t> h(half.begin(), half.begin() + k + 2);
    std::vector<float> f(value.begin(), value.begin() + k + 2);
    std::vector<uint16_t> b;
    for (float v : f) b.push_back(bf16_bits(v));
    std::vector<float> fb;
    for (uint16_t bits : b) {
      uint32_t u = uint32_t(bits) << 16;
      float x;
      std::memcpy(&x, &u, sizeof x);
      fb.push_back(x);
    }
    for (Isa isa : isas()) {
      const Out want = decide(f, Criterion::Entropy, 0.5f, isa);
      const Out got = decide(h.data(), ScalarType::Float16, int64_t(h.size()), Criterion::Entropy,
                             0.5f, isa);
      CHECK_MSG((got.score == want.score || (std::isnan(got.score) && std::isnan(want.score))) &&
                    got.prediction == want.prediction,
                "fp16 row of %zu %s: %g/%lld want %g/%lld", h.size(), branchy::isa_name(isa),
                got.score, (long long)got.prediction, want.score, (long long)want.prediction);
      const Out want_b = decide(fb, Criterion::Entropy, 0.5f, isa);
      const Out got_b = decide(b.data(), ScalarType::BFloat16, int64_t(b.size()),
                               Criterion::Entropy, 0.5f, isa);
      CHECK((got_b.score == want_b.score || (std::isnan(got_b.score) && std::isnan(want_b.score))) &&
            got_b.prediction == want_b.prediction);
    }
  }
  std::mt19937 gen(7);
  std::uniform_int_distribution<int> bits(0x0000, 0x7bff);  // finite non-negative halves
  for (int c : {5, 8, 1000}) {
    std::vector<uint16_t> h(c);
    std::vector<float> f(c);
    for (int i = 0; i < c; ++i) {
      h[i] = static_cast<uint16_t>(bits(gen) % 0x4c00);  // up to 16.0
      const uint32_t e = (h[i] >> 10) & 0x1f, m = h[i] & 0x3ff;
      f[i] = e ? std::ldexp(1.0f + m / 1024.0f, int(e) - 15) : std::ldexp(float(m), -24);
    }
    for (Isa isa : isas()) {
      const Out want = decide(f, Criterion::Entropy, 0.5f, isa);
      const Out got = decide(h.data(), ScalarType::Float16, c, Criterion::Entropy, 0.5f, isa);
      CHECK_MSG(got.score == want.score && got.prediction == want.prediction,
                "random fp16 C=%d %s: %.9g want %.9g", c, branchy::isa_name(isa), got.score,
                want.score);
    }
  }
}

TEST(row_stride_skips_the_gaps) {
  // Three rows of 5 logits, 8 apart; the gaps hold NaN, which must not be read.
  std::vector<float> data(3 * 8, kNaN);
  std::mt19937 gen(3);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 5; ++c) data[r * 8 + c] = dist(gen);
  for (Isa isa : isas()) {
    float score[3];
    bool exit[3];
    int64_t pred[3];
    DecisionArgs a;
    a.logits = data.data();
    a.rows = 3;
    a.classes = 5;
    a.row_stride = 8;
    a.threshold = 1.0f;
    a.score = score;
    a.exit = exit;
    a.prediction = pred;
    branchy::decide_rows(a, 0, 3, isa);
    for (int r = 0; r < 3; ++r) {
      const std::vector<float> row(data.begin() + r * 8, data.begin() + r * 8 + 5);
      const Reference ref = reference(row);
      CHECK(close(score[r], ref.entropy) && pred[r] == ref.prediction);
    }
  }
}

TEST(isa_selection) {
  const Isa best = branchy::best_isa();
  CHECK(branchy::set_active_isa(Isa::Portable) == Isa::Portable);
  CHECK(branchy::active_isa() == Isa::Portable);
  // Asking for a set the CPU lacks (above its best, or another architecture's) gives its best.
  for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Neon}) {
    CHECK(branchy::set_active_isa(isa) == (branchy::isa_supported(isa) ? isa : best));
  }
  CHECK(branchy::isa_supported(Isa::Portable) && branchy::isa_supported(best));
  // aarch64 always has NEON and nothing of x86; x86-64 never NEON.
  CHECK(BRANCHY_ARM64 ? best == Isa::Neon && !branchy::isa_supported(Isa::Avx2)
                      : !branchy::isa_supported(Isa::Neon));
  CHECK(branchy::set_active_isa(best) == best);
  CHECK(branchy::active_isa() == best);
  CHECK(std::string(branchy::isa_name(Isa::Avx512)) == "avx512");
  CHECK(std::string(branchy::isa_name(Isa::Neon)) == "neon");
  CHECK(branchy::rows_per_task(10) == 6553 && branchy::rows_per_task(1 << 20) == 1);
}

int main() { return check::run_all(); }
