// Tests of the perf_event_open wrapper and the probes. The kernel is replaced by a fake (the build
// machines refuse hardware counters): scripted group reads, refusals of the leader or of one event;
// then the real kernel, which must answer "available" or say why not, without crashing.
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <string>
#include <vector>

#include "check.h"
#include "count_allocations.h"
#include "model_builder.h"
#include "runtime/perf_counters.h"
#include "runtime/plan.h"
#include "runtime/probes.h"


using branchy::PerfCounters;
using branchy::PerfEvent;
using branchy::PerfValues;
using branchy::Probe;
using Part = branchy::Probe::Part;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A kernel that opens events as fds 10, 11, ... (ids 1000 + fd) unless `refuse` says otherwise,
// and answers the n-th group read (n = 1, 2, ...) with n * (k + 1) for the k-th open event, listed
// in reverse order (so the wrapper must match counts to events by id).
struct FakeKernel final : branchy::PerfSyscalls {
  // -errno to refuse the event `attr` with `group_fd` (-1: alone), 0 to open it.
  std::function<int(const perf_event_attr&, int group_fd)> refuse = [](const perf_event_attr&, int) { return 0; };
  std::string paranoid_level = "2";

  struct Open {
    int fd;
    perf_event_attr attr;
    int group_fd;
  };
  struct Ioctl {
    int fd;
    unsigned long request, arg;
  };
  std::vector<Open> opened;   // in the group, in order
  std::vector<Ioctl> ioctls;  // enable/disable/reset only
  std::vector<int> closed;
  int next_fd = 10;
  long reads = 0;

  FakeKernel() { ioctls.reserve(4096); }  // so that logging allocates nothing during a run

  int open(const perf_event_attr& attr, int group_fd) override {
    if (const int err = refuse(attr, group_fd)) return err;
    opened.push_back({next_fd, attr, group_fd});
    return next_fd++;
  }
  int ioctl(int fd, unsigned long request, unsigned long arg) override {
    if (request == PERF_EVENT_IOC_ID) {
      *reinterpret_cast<uint64_t*>(arg) = 1000 + fd;
    } else {
      ioctls.push_back({fd, request, arg});
    }
    return 0;
  }
  long read(int fd, void* buffer, size_t bytes) override {
    ++reads;
    size_t members = 0;  // the open events of the group led by fd
    for (const auto& o : opened) members += is_member(o, fd);
    const size_t need = (1 + 2 * members) * sizeof(uint64_t);
    if (bytes < need) return -ENOSPC;
    uint64_t* out = static_cast<uint64_t*>(buffer);
    out[0] = members;
    size_t k = 0;
    for (const auto& o : opened) {
      if (!is_member(o, fd)) continue;
      const size_t slot = members - 1 - k;  // reverse order
      out[1 + 2 * slot] = uint64_t(reads) * (k + 1);
      out[2 + 2 * slot] = 1000 + uint64_t(o.fd);
      ++k;
    }
    return long(need);
  }
  void close(int fd) override { closed.push_back(fd); }
  std::string paranoid() override { return paranoid_level; }

  bool is_member(const Open& o, int leader) const {
    return (o.fd == leader || o.group_fd == leader) && !is_closed(o.fd);
  }
  bool is_closed(int fd) const {
    for (int c : closed) {
      if (c == fd) return true;
    }
    return false;
  }
};

bool is_event(const perf_event_attr& a, uint32_t type, uint64_t config) {
  return a.type == type && a.config == config;
}

constexpr uint64_t kDtlbReadMiss = PERF_COUNT_HW_CACHE_DTLB | (PERF_COUNT_HW_CACHE_OP_READ << 8) |
                                   (PERF_COUNT_HW_CACHE_RESULT_MISS << 16);
constexpr uint64_t kLlReadMiss = PERF_COUNT_HW_CACHE_LL | (PERF_COUNT_HW_CACHE_OP_READ << 8) |
                                 (PERF_COUNT_HW_CACHE_RESULT_MISS << 16);

branchy::Plan tiny_plan(float threshold) {
  const std::vector<uint8_t> file = model_builder::tiny();
  branchy::PlanOptions options;
  options.kernels = branchy::PlanOptions::Kernels::Own;
  options.thresholds = {threshold};
  return branchy::Plan(branchy::parse_model(file.data(), file.size()), options);
}

std::vector<float> sample() {
  std::vector<float> x(2 * 6 * 6);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 7) - 3) * 0.5f;
  return x;
}

}  // namespace

TEST(fake_kernel_opens_the_whole_group_for_this_thread_in_user_space) {
  FakeKernel kernel;
  PerfCounters counters(kernel);
  const auto& status = counters.open();
  CHECK(status.available && status.missing.empty());
  CHECK_MSG(status.text() == "available", "%s", status.text().c_str());
  CHECK(kernel.opened.size() == size_t(branchy::kPerfEvents));
  for (size_t i = 0; i < kernel.opened.size(); ++i) {
    const auto& o = kernel.opened[i];
    CHECK(o.attr.size == sizeof(perf_event_attr));
    CHECK(o.attr.exclude_kernel == 1 && o.attr.exclude_hv == 1);
    CHECK(o.attr.read_format == (PERF_FORMAT_GROUP | PERF_FORMAT_ID));
    CHECK(o.group_fd == (i == 0 ? -1 : kernel.opened[0].fd));
    CHECK(o.attr.disabled == (i == 0));  // the group starts when its leader is enabled
    CHECK(counters.counts(PerfEvent(i)));
  }
  CHECK(is_event(kernel.opened[0].attr, PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES));
  CHECK(is_event(kernel.opened[1].attr, PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS));
  CHECK(is_event(kernel.opened[3].attr, PERF_TYPE_HW_CACHE, kLlReadMiss));
  CHECK(is_event(kernel.opened[4].attr, PERF_TYPE_HW_CACHE, kDtlbReadMiss));
  CHECK(is_event(kernel.opened[5].attr, PERF_TYPE_HARDWARE, PERF_COUNT_HW_BRANCH_MISSES));
  CHECK(std::string(branchy::perf_event_name(PerfEvent::L1dReadMisses)) == "l1d_read_misses");
}

TEST(reads_match_counts_to_events_by_id_and_ioctls_address_the_group) {
  FakeKernel kernel;
  {
    PerfCounters counters(kernel);
    counters.open();
    CHECK(counters.reset() && counters.enable());
    PerfValues first, second;
    CHECK(counters.read(first) && counters.read(second));
    CHECK(counters.disable());
    for (int e = 0; e < branchy::kPerfEvents; ++e) {
      CHECK_MSG(first[e] == uint64_t(e + 1) && second[e] == 2 * first[e], "event %d: %llu then %llu",
                e, (unsigned long long)first[e], (unsigned long long)second[e]);
    }
    const int leader = kernel.opened[0].fd;
    const unsigned long expected[] = {PERF_EVENT_IOC_RESET, PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_DISABLE};
    CHECK(kernel.ioctls.size() == 3);
    for (size_t i = 0; i < kernel.ioctls.size() && i < 3; ++i) {
      CHECK(kernel.ioctls[i].fd == leader && kernel.ioctls[i].request == expected[i] &&
            kernel.ioctls[i].arg == PERF_IOC_FLAG_GROUP);
    }
    CHECK(kernel.closed.empty());
  }
  CHECK(kernel.closed.size() == kernel.opened.size());  // every fd closed on destruction
  for (const auto& o : kernel.opened) CHECK(kernel.is_closed(o.fd));
}

TEST(counter_probe_attributes_deltas_to_the_parts_that_ran) {
  const std::vector<float> x = sample();
  for (float threshold : {model_builder::kInf, 0.0f}) {
    const bool all_run = threshold == 0.0f;  // entropy >= 0: nobody leaves at exit 0
    branchy::Plan plan = tiny_plan(threshold);
    auto context = plan.make_context(1);
    FakeKernel kernel;
    PerfCounters counters(kernel);
    counters.open();
    branchy::CounterProbe probe(counters, plan);
    for (int round = 0; round < 2; ++round) {  // reset() starts each sample from zero
      probe.reset();
      counters.reset();
      counters.enable();
      const long allocations_before = allocations;
      const branchy::Result r = plan.run_instrumented(*context, x.data(), probe);
      CHECK(allocations == allocations_before);
      counters.disable();
      CHECK(r.exit == (all_run ? 1 : 0));
      // Each part is one read at begin and one at end: every delta is one step, k + 1.
      for (int e = 0; e < branchy::kPerfEvents; ++e) {
        const uint64_t step = uint64_t(e + 1);
        CHECK(probe.counts(Part::Stage, 0)[e] == step && probe.counts(Part::Exit, 0)[e] == step);
        CHECK(probe.counts(Part::Stage, 1)[e] == (all_run ? step : 0));
        CHECK(probe.counts(Part::Exit, 1)[e] == (all_run ? step : 0));
      }
    }
    const size_t n = kernel.ioctls.size();
    CHECK(n == 6 && kernel.ioctls[n - 2].request == PERF_EVENT_IOC_ENABLE &&
          kernel.ioctls[n - 1].request == PERF_EVENT_IOC_DISABLE);
    CHECK(kernel.reads == (all_run ? 2 * 8 : 2 * 4));
  }
}

TEST(nested_probes_time_and_count_the_same_parts) {
  const std::vector<float> x = sample();
  branchy::Plan plan = tiny_plan(model_builder::kInf);
  auto context = plan.make_context(1);
  FakeKernel kernel;
  PerfCounters counters(kernel);
  counters.open();
  branchy::TimerProbe timer(plan);
  branchy::CounterProbe probe(counters, plan);
  branchy::NestedProbes both(probe, timer);
  counters.enable();
  const long allocations_before = allocations;
  plan.run_instrumented(*context, x.data(), both);
  CHECK(allocations == allocations_before);
  CHECK(timer.nanoseconds(Part::Stage, 0) > 0 && timer.nanoseconds(Part::Exit, 0) > 0);
  CHECK(timer.nanoseconds(Part::Stage, 1) == 0 && timer.nanoseconds(Part::Exit, 1) == 0);
  CHECK(probe.counts(Part::Stage, 0)[0] == 1 && probe.counts(Part::Stage, 1)[0] == 0);
  timer.reset();
  CHECK(timer.nanoseconds(Part::Stage, 0) == 0);
}

TEST(refused_leader_makes_counters_unavailable_with_the_errno_and_paranoid_level) {
  struct Case {
    int err;
    const char* paranoid;
    std::vector<std::string> said;
  };
  const Case cases[] = {
      {ENOENT, "2", {"perf_event_open(cycles)", "ENOENT", "No such file or directory",
                     "not available on this machine", "perf_event_paranoid is 2"}},
      {EACCES, "3", {"EACCES", "Permission denied", "perf_event_paranoid is 3", "needs 2 or less"}},
      {EOPNOTSUPP, "", {"EOPNOTSUPP", "perf_event_paranoid cannot be read"}},
  };
  for (const Case& c : cases) {
    FakeKernel kernel;
    kernel.paranoid_level = c.paranoid;
    kernel.refuse = [&](const perf_event_attr&, int) { return -c.err; };
    PerfCounters counters(kernel);
    const auto& status = counters.open();
    CHECK(!status.available);
    for (const auto& part : c.said) {
      CHECK_MSG(contains(status.text(), part), "'%s' not in '%s'", part.c_str(), status.text().c_str());
    }
    PerfValues v{};
    v[0] = 7;
    CHECK(!counters.enable() && !counters.reset() && !counters.disable());
    CHECK(!counters.read(v) && v[0] == 7);
    CHECK(kernel.opened.empty() && kernel.ioctls.empty() && kernel.reads == 0);
    for (int e = 0; e < branchy::kPerfEvents; ++e) CHECK(!counters.counts(PerfEvent(e)));
  }
}

TEST(a_refused_event_is_left_out_and_named) {
  FakeKernel kernel;
  kernel.refuse = [](const perf_event_attr& a, int) {
    return is_event(a, PERF_TYPE_HW_CACHE, kDtlbReadMiss) ? -ENOENT : 0;
  };
  PerfCounters counters(kernel);
  const auto& status = counters.open();
  CHECK(status.available);
  CHECK(status.missing.size() == 1 && status.missing[0] == PerfEvent::DtlbReadMisses);
  CHECK(!counters.counts(PerfEvent::DtlbReadMisses) && counters.counts(PerfEvent::BranchMisses));
  CHECK_MSG(contains(status.text(), "available; dtlb_read_misses: missing (perf_event_open: No such file"),
            "%s", status.text().c_str());
  PerfValues v;
  CHECK(counters.read(v));
  CHECK(v[int(PerfEvent::DtlbReadMisses)] == 0);
  // Five events open, k = 0..4 in open order; branch misses was opened fifth.
  CHECK(v[int(PerfEvent::Cycles)] == 1 && v[int(PerfEvent::BranchMisses)] == 5);
}

TEST(an_event_that_opens_alone_but_not_in_the_group_is_named_as_such) {
  FakeKernel kernel;
  kernel.refuse = [](const perf_event_attr& a, int group_fd) {
    return is_event(a, PERF_TYPE_HARDWARE, PERF_COUNT_HW_BRANCH_MISSES) && group_fd >= 0 ? -EINVAL : 0;
  };
  {
    PerfCounters counters(kernel);
    const auto& status = counters.open();
    CHECK(status.available && status.missing.size() == 1 &&
          status.missing[0] == PerfEvent::BranchMisses);
    CHECK_MSG(contains(status.text(), "branch_misses: missing (opens alone but not in the group"),
              "%s", status.text().c_str());
    const int alone = kernel.opened.back().fd;  // the trial, opened alone and closed again
    CHECK(kernel.opened.back().group_fd == -1 && kernel.is_closed(alone));
  }
  CHECK(kernel.closed.size() == kernel.opened.size());
}

TEST(last_level_misses_fall_back_to_the_generic_cache_miss_event) {
  FakeKernel kernel;
  kernel.refuse = [](const perf_event_attr& a, int) {
    return is_event(a, PERF_TYPE_HW_CACHE, kLlReadMiss) ? -ENOENT : 0;
  };
  PerfCounters counters(kernel);
  const auto& status = counters.open();
  CHECK(status.available && status.missing.empty());
  CHECK(counters.counts(PerfEvent::LlReadMisses));
  CHECK_MSG(contains(status.text(), "ll_read_misses: counted as PERF_COUNT_HW_CACHE_MISSES"), "%s",
            status.text().c_str());
  CHECK(is_event(kernel.opened[3].attr, PERF_TYPE_HARDWARE, PERF_COUNT_HW_CACHE_MISSES));
}

TEST(the_real_kernel_answers_without_crashing) {
  PerfCounters counters;
  const auto& status = counters.open();
  std::printf("  this machine: %s\n", status.text().c_str());
  if (!status.available) {
    CHECK(contains(status.reason, "perf_event_open(cycles): "));
    PerfValues v;
    CHECK(!counters.read(v) && !counters.enable());
    return;
  }
  CHECK(counters.reset() && counters.enable());
  volatile double sink = 0;
  for (int i = 0; i < 1000000; ++i) sink = sink + i * 0.5;
  CHECK(counters.disable());
  PerfValues v;
  CHECK(counters.read(v));
  CHECK(v[int(PerfEvent::Cycles)] > 0);
  if (counters.counts(PerfEvent::Instructions)) CHECK(v[int(PerfEvent::Instructions)] > 1000000);
}

int main() { return check::run_all(); }
