// Probes for Plan::run_instrumented: what each stage and each exit head (with its decision) of a
// sample cost, in time or in hardware counts. Each keeps one slot per stage and per exit, sized
// when it is made, so a call allocates nothing; the figures add up until reset().
//
//   branchy::TimerProbe timer(plan);
//   timer.reset();
//   plan.run_instrumented(*context, pixels, timer);
//   timer.nanoseconds(branchy::Probe::Part::Stage, 0);   // 0 where stage 0 did not run
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "perf_counters.h"
#include "plan.h"

namespace branchy {

// Nanoseconds (steady_clock) per stage and per exit.
class TimerProbe final : public Probe {
 public:
  TimerProbe(int stages, int exits);
  explicit TimerProbe(const Plan& plan);

  void begin(Part part, int index) override;
  void end(Part part, int index) override;
  void reset();

  int64_t nanoseconds(Part part, int index) const { return ns_[int(part)].at(index); }

 private:
  std::vector<int64_t> ns_[2];  // [Part][index]
  std::chrono::steady_clock::time_point start_;
};

// Hardware counts per stage and per exit: the group is read at begin and at end, and the
// difference added. The counters must be enabled around the run; unavailable ones leave zeros.
class CounterProbe final : public Probe {
 public:
  CounterProbe(PerfCounters& counters, int stages, int exits);
  CounterProbe(PerfCounters& counters, const Plan& plan);

  void begin(Part part, int index) override;
  void end(Part part, int index) override;
  void reset();

  // Indexed by int(PerfEvent).
  const PerfValues& counts(Part part, int index) const { return counts_[int(part)].at(index); }

 private:
  PerfCounters& counters_;
  std::vector<PerfValues> counts_[2];  // [Part][index]
  PerfValues start_{};
  bool started_ = false;  // the read at begin succeeded
};

// Two probes around the same parts, `inner` nested inside `outer`, so that each sees as little as
// possible of the other's cost (timers inside counters: the timer leaves out the counter reads).
class NestedProbes final : public Probe {
 public:
  NestedProbes(Probe& outer, Probe& inner) : outer_(outer), inner_(inner) {}

  void begin(Part part, int index) override {
    outer_.begin(part, index);
    inner_.begin(part, index);
  }
  void end(Part part, int index) override {
    inner_.end(part, index);
    outer_.end(part, index);
  }

 private:
  Probe& outer_;
  Probe& inner_;
};

}  // namespace branchy
