// branchy-run: classify images with a .branchy model from the command line, no Python.
// `branchy-run --help` prints the options (kUsage below).
//
// IDX images (uint8, as MNIST/Fashion-MNIST ship them) become x / 255, then (x - mean) / std;
// raw files hold float32 samples [N, C, H, W] already prepared. Prints the accuracy (with labels),
// how many samples left at each exit, and the latency of each call (batch 1).
//
// For the cache simulator (branchy_engine/profiling/cachesim.py): --warmup K makes K untimed
// calls first, cycling over the samples, through Plan::run_instrumented, so a simulator
// collecting inside Plan::run leaves them out; --points "T1,T2;T1,T2;..." runs the whole run once
// per set of thresholds, a plan each, its warm-up included, and under callgrind dumps each
// point's counts on their own (callgrind's output file name then gets ".N" for point N).
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/model_file.h"
#include "runtime/plan.h"

// Where valgrind's headers are, a point's counts are dumped apart (a no-op outside valgrind).
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define BRANCHY_DUMP_POINT(name) CALLGRIND_DUMP_STATS_AT(name)
#else
#define BRANCHY_DUMP_POINT(name) ((void)(name))
#endif

namespace {

struct Args {
  std::string model, idx, labels, raw;
  long limit = -1, warmup = 0;
  int threads = 1;
  std::string kernels = "measure";
  std::vector<std::vector<float>> points;  // --thresholds: one; --points: any number
  float mean = 0.0f, std = 1.0f;
  bool normalisation_given = false;     // --mean or --std: instead of the file's preparation
  bool predictions = false, plan = false, check_inputs = true, verify = false;
  double max_memory = 0, max_flops = 0;  // 0: the defaults
};

constexpr const char* kUsage =
    "usage: branchy-run MODEL (--idx IMAGES [--labels LABELS] | --raw FILE.f32) [--limit N]\n"
    "         [--threads T] [--kernels measure|own|dnnl|pin:CHOICES] [--thresholds T1,T2,...]\n"
    "         [--points \"T1,T2;T1,T2\"] [--mean M] [--std S] [--predictions] [--plan] [--warmup K]\n"
    "         [--no-input-check] [--verify] [--max-memory BYTES] [--max-flops N]\n"
    "\n"
    "Classifies samples with a .branchy model (from `branchy export`) at batch 1 and prints the\n"
    "accuracy (with labels), how many samples left at each exit (numbered from 1) and the latency\n"
    "per sample.\n"
    "\n"
    "  --idx IMAGES        IDX images (uint8, gzip or plain), prepared as the model file records\n"
    "                      (branchy export records the training normalisation), else as\n"
    "                      (x / 255 - mean) / std\n"
    "  --labels LABELS     IDX labels for the accuracy\n"
    "  --raw FILE.f32      float32 samples [N, C, H, W], already prepared\n"
    "  --limit N           the first N samples only\n"
    "  --threads T         threads one call may use (oneDNN layers); default 1\n"
    "  --kernels K         measure (default), own, dnnl, or pin:CHOICES (another plan's choices)\n"
    "  --thresholds T1,..  one per early exit, instead of the file's\n"
    "  --points \"..;..\"    instead of --thresholds: the whole run once per set of thresholds\n"
    "  --mean M --std S    the normalisation of --idx images instead of the file's; default 0 and 1\n"
    "  --predictions       one line per sample: index, class, exit, score\n"
    "  --plan              print the chosen layers and the memory first\n"
    "  --warmup K          K untimed calls first, outside Plan::run (for a simulator)\n"
    "  --no-input-check    skip the scan that refuses samples holding NaN or +-inf\n"
    "  --verify            check each chosen kernel against its op's reference\n"
    "  --max-memory BYTES  refuse a model (or an input file) that needs more; default 4 GiB;\n"
    "                      inf: no limit\n"
    "  --max-flops N       refuse a model that needs more FLOPs a sample; default 1e12; inf: none\n"
    "  -h, --help          print this and exit\n";

// A mistake on the command line: what is wrong and the usage, on stderr, exit status 2.
[[noreturn]] void usage(const std::string& error) {
  std::cerr << "branchy-run: " << error << "\n" << kUsage;
  std::exit(2);
}

// The whole of `text` as one number, or a usage error naming the option.
double parse_number(const std::string& text, const std::string& option) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end == text.c_str() || *end) usage(option + ": not a number: '" + text + "'");
  return v;
}

// A whole number in [lo, 2^31).
long parse_count(const std::string& text, const std::string& option, long lo) {
  const double v = parse_number(text, option);
  if (!(v >= double(lo) && v < 2147483648.0) || v != std::floor(v)) {
    usage(option + " must be a whole number >= " + std::to_string(lo) + ", got '" + text + "'");
  }
  return long(v);
}

// A limit: > 0, or inf (none).
double parse_limit(const std::string& text, const std::string& option) {
  const double v = parse_number(text, option);
  if (!(v > 0)) usage(option + " must be > 0 (inf: no limit), got '" + text + "'");
  return v;
}

// At least one number, separated by `separator`.
std::vector<float> parse_floats(const std::string& text, const std::string& option, char separator = ',') {
  std::vector<float> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, separator)) out.push_back(float(parse_number(item, option)));
  if (out.empty()) usage(option + " needs at least one number");
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--idx") a.idx = value();
    else if (arg == "--labels") a.labels = value();
    else if (arg == "--raw") a.raw = value();
    else if (arg == "--limit") a.limit = parse_count(value(), arg, 1);
    else if (arg == "--warmup") a.warmup = parse_count(value(), arg, 0);
    else if (arg == "--threads") a.threads = int(parse_count(value(), arg, 1));
    else if (arg == "--kernels") a.kernels = value();
    else if (arg == "--thresholds") a.points = {parse_floats(value(), arg)};
    else if (arg == "--points") {
      std::stringstream in(value());
      std::string point;
      while (std::getline(in, point, ';')) a.points.push_back(parse_floats(point, arg));
      if (a.points.empty()) usage("--points needs at least one set of thresholds");
    }
    else if (arg == "--mean") a.mean = float(parse_number(value(), arg)), a.normalisation_given = true;
    else if (arg == "--std") a.std = float(parse_number(value(), arg)), a.normalisation_given = true;
    else if (arg == "--predictions") a.predictions = true;
    else if (arg == "--plan") a.plan = true;
    else if (arg == "--no-input-check") a.check_inputs = false;
    else if (arg == "--verify") a.verify = true;
    else if (arg == "--max-memory") a.max_memory = parse_limit(value(), arg);
    else if (arg == "--max-flops") a.max_flops = parse_limit(value(), arg);
    else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    else if (!arg.empty() && arg[0] == '-') usage("unknown option " + arg);
    else if (a.model.empty()) a.model = arg;
    else usage("more than one model given");
  }
  if (a.model.empty()) usage("no model given");
  if (a.idx.empty() == a.raw.empty()) usage("give exactly one of --idx and --raw");
  if (a.threads < 1) usage("--threads must be >= 1");
  if (a.warmup < 0) usage("--warmup must be >= 0");
  if (!(a.std > 0) || !std::isfinite(a.std)) usage("--std must be finite and > 0");
  if (!std::isfinite(a.mean)) usage("--mean must be finite");
  return a;
}

// A whole file, gunzipped if it is gzip (zlib reads plain files unchanged), refused once it
// holds more than `max_bytes` (/dev/zero would fill the memory).
std::vector<uint8_t> read_file(const std::string& path, int64_t max_bytes) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::vector<uint8_t> data;
  uint8_t chunk[1 << 16];
  int n;
  while ((n = gzread(f, chunk, sizeof chunk)) > 0) {
    data.insert(data.end(), chunk, chunk + n);
    if (int64_t(data.size()) > max_bytes) {
      gzclose(f);
      throw std::runtime_error(path + ": holds more than " + std::to_string(max_bytes) +
                               " bytes, over the limit (--max-memory)");
    }
  }
  const bool failed = n < 0;
  gzclose(f);
  if (failed) throw std::runtime_error(path + ": read error (corrupt gzip?)");
  return data;
}

uint32_t big_endian(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

// IDX: magic 0x0000080<ndim>, ndim big-endian sizes, then uint8 data. Returns data and sizes.
std::vector<uint8_t> read_idx(const std::string& path, int ndim, std::vector<uint32_t>& dims,
                              int64_t max_bytes) {
  std::vector<uint8_t> data = read_file(path, max_bytes);
  if (data.size() < 4 + 4u * ndim || big_endian(data.data()) != 0x800u + ndim) {
    throw std::runtime_error(path + ": not an IDX file of " + std::to_string(ndim) + " dimensions");
  }
  size_t count = 1;
  for (int d = 0; d < ndim; ++d) {
    dims.push_back(big_endian(data.data() + 4 + 4 * d));
    count *= dims.back();
  }
  const size_t header = 4 + 4 * ndim;
  if (data.size() != header + count) {
    throw std::runtime_error(path + ": " + std::to_string(data.size() - header) +
                             " data bytes, the header says " + std::to_string(count));
  }
  return std::vector<uint8_t>(data.begin() + header, data.end());
}

// What to do about a model file the runtime refused, where the cause is a common mix-up.
std::string hint_for(const std::string& model) {
  char head[4] = {};
  std::ifstream(model, std::ios::binary).read(head, sizeof head);
  if (std::memcmp(head, "PK\x03\x04", 4) == 0) {  // a zip: torch.save's format
    return "\n" + model + " is a PyTorch checkpoint: export it first, `branchy export " + model +
           " -o MODEL.branchy`, and pass MODEL.branchy";
  }
  return "";
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(q * (v.size() - 1) + 0.5))];
}

// The memory limit: --max-memory (inf or past int64: none), else the default.
int64_t memory_limit(const Args& args) {
  if (args.max_memory <= 0) return branchy::PlanOptions().max_memory;
  return args.max_memory >= 9.2e18 ? std::numeric_limits<int64_t>::max() : int64_t(args.max_memory);
}

// The plan of one point, at `thresholds` (empty: the file's).
branchy::Plan make_plan(const Args& args, const branchy::Model& model, const std::vector<float>& thresholds) {
  branchy::PlanOptions options;
  options.threads = args.threads;
  options.thresholds = thresholds;
  options.check_inputs = args.check_inputs;
  options.verify = args.verify;
  options.max_memory = memory_limit(args);
  if (args.max_flops > 0) options.max_flops = args.max_flops;
  try {
    branchy::parse_kernels(args.kernels, options);
  } catch (const std::invalid_argument& e) {
    usage(std::string("--") + e.what());
  }
  return branchy::Plan(model, options);
}

// One point: the plan's warm-up, then every sample once, timed; prints the exits taken and the
// latency (with labels, the accuracy).
void run_point(const Args& args, const branchy::Plan& plan, const std::vector<float>& thresholds,
               const std::vector<float>& inputs, const std::vector<uint8_t>& labels, size_t samples) {
  const branchy::Model& model = plan.model();
  if (args.plan) std::cout << plan.describe() << "kernels: pin:" << plan.choices() << "\n";
  const size_t per_sample = size_t(model.input.numel());
  auto context = plan.make_context(1);
  struct Quiet final : branchy::Probe {
    void begin(Part, int) override {}
    void end(Part, int) override {}
  } quiet;
  // Warm-up call i runs sample i mod N: with K >= N every sample's path has run once, so a
  // simulator's counts afterwards are steady state, not the first touch of a deeper stage.
  for (long i = 0; i < args.warmup; ++i) {
    plan.run_instrumented(*context, inputs.data() + (size_t(i) % samples) * per_sample, quiet);
  }
  std::vector<long> per_exit(plan.num_exits(), 0);
  std::vector<double> micros;
  micros.reserve(samples);
  long correct = 0;
  for (size_t i = 0; i < samples; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const branchy::Result r = plan.run(*context, inputs.data() + i * per_sample);
    micros.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    ++per_exit[r.exit];
    if (!labels.empty()) correct += r.prediction == labels[i];
    if (args.predictions) {
      const auto& names = model.class_names;
      std::cout << i << " " << r.prediction << (names.empty() ? "" : " " + names[r.prediction])
                << " exit " << r.exit + 1 << " score " << r.score << "\n";
    }
  }
  BRANCHY_DUMP_POINT("point");
  std::printf("%zu samples, batch 1, %d thread(s)\n", samples, args.threads);
  if (!thresholds.empty()) {
    std::printf("thresholds:");
    for (float t : thresholds) std::printf(" %g", t);
    std::printf("\n");
  }
  if (!labels.empty()) std::printf("accuracy: %.2f%%\n", 100.0 * correct / samples);
  std::printf("exits:");
  for (int e = 0; e < plan.num_exits(); ++e) {
    std::printf("  %d: %ld (%.1f%%)", e + 1, per_exit[e], 100.0 * per_exit[e] / samples);
  }
  double sum = 0;
  for (double m : micros) sum += m;
  std::printf("\nlatency per sample (us): mean %.2f  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n",
              sum / samples, percentile(micros, 0.5), percentile(micros, 0.9),
              percentile(micros, 0.99), percentile(micros, 1.0));
  // Each point's lines as soon as it ends: the profiler reads them through a pipe (which stdio
  // buffers whole) to report a sweep's progress.
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  try {
    const int64_t limit = memory_limit(args);
    const branchy::Model model = branchy::load_model(args.model, limit);
    const branchy::Shape in = model.input;
    const size_t per_sample = size_t(in.numel());
    // The plans first: a model over the limits is refused before any input is read.
    const auto points = args.points.empty() ? std::vector<std::vector<float>>{{}} : args.points;
    std::vector<branchy::Plan> plans;
    for (const auto& thresholds : points) plans.push_back(make_plan(args, model, thresholds));

    std::vector<float> inputs;
    std::vector<uint8_t> labels;
    if (!args.idx.empty()) {
      std::vector<uint32_t> dims;
      const std::vector<uint8_t> images = read_idx(args.idx, 3, dims, limit / 4);
      if (in.c != 1 || dims[1] != uint32_t(in.h) || dims[2] != uint32_t(in.w)) {
        throw std::runtime_error(args.idx + ": images are " + std::to_string(dims[1]) + "x" +
                                 std::to_string(dims[2]) + " grey, the model takes [" +
                                 std::to_string(in.c) + ", " + std::to_string(in.h) + ", " +
                                 std::to_string(in.w) + "]");
      }
      inputs.resize(images.size());
      if (model.prep.recorded() && !args.normalisation_given) {
        // As training prepared them: the runtime's own preparation, the floats Python's gave.
        for (size_t i = 0; i < images.size() / per_sample; ++i) {
          branchy::prepare_pixels(model.prep, in, images.data() + i * per_sample, branchy::PixelOrder::CHW,
                                  inputs.data() + i * per_sample);
        }
      } else {
        for (size_t i = 0; i < images.size(); ++i) {
          inputs[i] = (float(images[i]) / 255.0f - args.mean) / args.std;
        }
      }
      if (!args.labels.empty()) {
        std::vector<uint32_t> label_dims;
        labels = read_idx(args.labels, 1, label_dims, limit);
        if (label_dims[0] != dims[0]) throw std::runtime_error("labels and images differ in count");
      }
    } else {
      const std::vector<uint8_t> bytes = read_file(args.raw, limit);
      if (bytes.size() % (per_sample * sizeof(float))) {
        throw std::runtime_error(args.raw + ": " + std::to_string(bytes.size()) +
                                 " bytes is not a whole number of float32 samples of " +
                                 std::to_string(per_sample));
      }
      inputs.resize(bytes.size() / sizeof(float));
      std::memcpy(inputs.data(), bytes.data(), bytes.size());
    }
    size_t samples = inputs.size() / per_sample;
    if (args.limit >= 0) samples = std::min(samples, size_t(args.limit));
    if (samples == 0) throw std::runtime_error("no samples to run");
    // All of them first, so that the error names the sample (each run checks its own input).
    if (args.check_inputs) branchy::check_finite_input(inputs.data(), int64_t(samples), int64_t(per_sample));
    for (size_t p = 0; p < plans.size(); ++p) run_point(args, plans[p], points[p], inputs, labels, samples);
  } catch (const std::exception& e) {
    std::cerr << "branchy-run: " << e.what() << hint_for(args.model) << "\n";
    return 1;
  }
  return 0;
}
