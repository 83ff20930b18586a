#include "probes.h"

namespace branchy {

namespace {

int num_stages(const Plan& plan) { return int(plan.model().stages.size()); }

}  // namespace

TimerProbe::TimerProbe(int stages, int exits) : ns_{std::vector<int64_t>(stages), std::vector<int64_t>(exits)} {}

TimerProbe::TimerProbe(const Plan& plan) : TimerProbe(num_stages(plan), plan.num_exits()) {}

void TimerProbe::begin(Part, int) { start_ = std::chrono::steady_clock::now(); }

void TimerProbe::end(Part part, int index) {
  const auto elapsed = std::chrono::steady_clock::now() - start_;
  ns_[int(part)][index] += std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count();
}

void TimerProbe::reset() {
  for (auto& part : ns_) part.assign(part.size(), 0);
}

CounterProbe::CounterProbe(PerfCounters& counters, int stages, int exits)
    : counters_(counters), counts_{std::vector<PerfValues>(stages), std::vector<PerfValues>(exits)} {}

CounterProbe::CounterProbe(PerfCounters& counters, const Plan& plan)
    : CounterProbe(counters, num_stages(plan), plan.num_exits()) {}

void CounterProbe::begin(Part, int) { started_ = counters_.read(start_); }

void CounterProbe::end(Part part, int index) {
  PerfValues now;
  if (!started_ || !counters_.read(now)) return;
  PerfValues& sum = counts_[int(part)][index];
  for (int e = 0; e < kPerfEvents; ++e) sum[e] += now[e] - start_[e];
}

void CounterProbe::reset() {
  for (auto& part : counts_) part.assign(part.size(), PerfValues{});
}

}  // namespace branchy
