// Hardware counters of the calling thread through Linux perf_event_open, for the profiler: one
// group (cycles, instructions, L1D read misses, last-level read misses, dTLB read misses, branch
// misses) counting user space only, switched on around the engine's calls and read with one read()
// of the whole group.
//
//   branchy::PerfCounters counters;
//   if (counters.open().available) {
//     counters.reset(); counters.enable(); /* inference */ counters.disable();
//     branchy::PerfValues v; counters.read(v);   // v[int(PerfEvent::Cycles)], ...
//   }
//
// Virtual machines and strict kernels refuse counters: open() then says why, and the rest does
// nothing. The system calls go through PerfSyscalls, so tests can stand a fake in for the kernel.
#pragma once

#include <linux/perf_event.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace branchy {

// The group's events; the first (cycles) leads the group.
enum class PerfEvent { Cycles, Instructions, L1dReadMisses, LlReadMisses, DtlbReadMisses, BranchMisses };
constexpr int kPerfEvents = 6;

// "cycles", "instructions", "l1d_read_misses", "ll_read_misses", "dtlb_read_misses",
// "branch_misses": the names the profiler reports them under.
const char* perf_event_name(PerfEvent event);

// Counts per event, indexed by int(PerfEvent); an event not counted stays 0.
using PerfValues = std::array<uint64_t, kPerfEvents>;

// The kernel interface the counters use. Errors come back as -errno (the raw system-call
// convention), so that a fake needs no errno.
class PerfSyscalls {
 public:
  virtual ~PerfSyscalls() = default;
  // perf_event_open(&attr, pid 0 (this thread), cpu -1 (any), group_fd, PERF_FLAG_FD_CLOEXEC):
  // a file descriptor, or -errno.
  virtual int open(const perf_event_attr& attr, int group_fd) = 0;
  // ioctl(fd, request, arg): 0 or -errno. PERF_EVENT_IOC_ID writes the id to (uint64_t*) arg.
  virtual int ioctl(int fd, unsigned long request, unsigned long arg) = 0;
  // read(fd, buffer, bytes): bytes read, or -errno.
  virtual long read(int fd, void* buffer, size_t bytes) = 0;
  virtual void close(int fd) = 0;
  // The value in /proc/sys/kernel/perf_event_paranoid, or "" when it cannot be read.
  virtual std::string paranoid() = 0;
};

// The real system calls.
PerfSyscalls& system_perf_syscalls();

struct PerfStatus {
  bool available = false;
  std::string reason;              // when unavailable: why (errno, perf_event_paranoid)
  std::vector<PerfEvent> missing;  // when available: events that are not counted
  std::vector<std::string> notes;  // when available: why each missing one is missing; fallbacks

  // "available", "available; " + the notes joined by "; ", or the reason.
  std::string text() const;
};

// One group of counters on the thread that called open(). Only that thread's work is counted, not
// that of threads it hands work to (oneDNN with threads > 1). Not copyable: it owns the fds.
class PerfCounters {
 public:
  explicit PerfCounters(PerfSyscalls& syscalls = system_perf_syscalls());
  ~PerfCounters();
  PerfCounters(const PerfCounters&) = delete;
  PerfCounters& operator=(const PerfCounters&) = delete;

  // Opens the group, disabled, for the calling thread (closing any group opened before). The
  // leader (cycles) must open; another event that the kernel refuses, alone or in the group, is
  // left out and named in the status. Last-level read misses fall back to the generic
  // PERF_COUNT_HW_CACHE_MISSES where the cache event is refused.
  const PerfStatus& open();
  const PerfStatus& status() const { return status_; }
  bool counts(PerfEvent event) const { return fds_[int(event)] >= 0; }

  // The whole group at once; false where unavailable or the kernel refused.
  bool enable();
  bool disable();
  bool reset();

  // Every counted event's count since the last reset(), with one read() of the group; events not
  // counted read 0. False (values untouched) where unavailable or the read failed.
  bool read(PerfValues& values);

  void close();

 private:
  bool group_ioctl(unsigned long request);

  PerfSyscalls& sys_;
  PerfStatus status_;
  std::array<int, kPerfEvents> fds_;        // -1 where not open
  std::array<uint64_t, kPerfEvents> ids_;   // the kernel's id of each open event
};

}  // namespace branchy
