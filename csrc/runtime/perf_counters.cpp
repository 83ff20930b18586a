#include "perf_counters.h"

#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

namespace branchy {

namespace {

constexpr const char* kParanoidPath = "/proc/sys/kernel/perf_event_paranoid";

class SystemPerfSyscalls final : public PerfSyscalls {
 public:
  int open(const perf_event_attr& attr, int group_fd) override {
    const long fd = syscall(SYS_perf_event_open, &attr, 0, -1, group_fd, PERF_FLAG_FD_CLOEXEC);
    return fd < 0 ? -errno : int(fd);
  }
  int ioctl(int fd, unsigned long request, unsigned long arg) override {
    return ::ioctl(fd, request, arg) < 0 ? -errno : 0;
  }
  long read(int fd, void* buffer, size_t bytes) override {
    const ssize_t n = ::read(fd, buffer, bytes);
    return n < 0 ? -errno : long(n);
  }
  void close(int fd) override { ::close(fd); }
  std::string paranoid() override {
    std::ifstream file(kParanoidPath);
    std::string value;
    file >> value;
    return value;
  }
};

constexpr uint64_t cache_miss(uint64_t cache) {
  return cache | (uint64_t(PERF_COUNT_HW_CACHE_OP_READ) << 8) |
         (uint64_t(PERF_COUNT_HW_CACHE_RESULT_MISS) << 16);
}

perf_event_attr attr(uint32_t type, uint64_t config, bool leader) {
  perf_event_attr a;
  std::memset(&a, 0, sizeof a);
  a.size = sizeof a;
  a.type = type;
  a.config = config;
  a.disabled = leader;  // the others follow their leader
  a.exclude_kernel = 1;
  a.exclude_hv = 1;
  a.read_format = PERF_FORMAT_GROUP | PERF_FORMAT_ID;
  return a;
}

perf_event_attr event_attr(PerfEvent event) {
  const bool leader = event == PerfEvent::Cycles;
  switch (event) {
    case PerfEvent::Cycles: return attr(PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES, leader);
    case PerfEvent::Instructions: return attr(PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS, leader);
    case PerfEvent::L1dReadMisses: return attr(PERF_TYPE_HW_CACHE, cache_miss(PERF_COUNT_HW_CACHE_L1D), leader);
    case PerfEvent::LlReadMisses: return attr(PERF_TYPE_HW_CACHE, cache_miss(PERF_COUNT_HW_CACHE_LL), leader);
    case PerfEvent::DtlbReadMisses: return attr(PERF_TYPE_HW_CACHE, cache_miss(PERF_COUNT_HW_CACHE_DTLB), leader);
    case PerfEvent::BranchMisses: return attr(PERF_TYPE_HARDWARE, PERF_COUNT_HW_BRANCH_MISSES, leader);
  }
  return attr(PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES, leader);
}

const char* errno_name(int err) {
  switch (err) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENODEV: return "ENODEV";
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case EBUSY: return "EBUSY";
    case E2BIG: return "E2BIG";
    default: return nullptr;
  }
}

// "No such file or directory (ENOENT)"
std::string errno_text(int err) {
  std::string text = std::generic_category().message(err);
  const char* name = errno_name(err);
  return name ? text + " (" + name + ")" : text + " (errno " + std::to_string(err) + ")";
}

// Why the leader did not open: the error, what it usually means, and the kernel's paranoia level
// (which decides what an unprivileged process may count).
std::string leader_refused(int err, const std::string& paranoid) {
  std::string text = std::string("perf_event_open(") + perf_event_name(PerfEvent::Cycles) +
                     "): " + errno_text(err);
  const bool not_permitted = err == EACCES || err == EPERM;
  if (err == ENOENT || err == EOPNOTSUPP || err == ENODEV) {
    text += " \u2014 hardware counters are not available on this machine (a virtual machine?)";
  } else if (err == ENOSYS) {
    text += " \u2014 this kernel (or a seccomp filter) does not offer perf_event_open";
  } else if (not_permitted) {
    text += " \u2014 not permitted";
  }
  if (paranoid.empty()) return text + "; " + kParanoidPath + " cannot be read";
  text += std::string("; ") + kParanoidPath + " is " + paranoid;
  if (not_permitted) text += " (counting one's own thread in user space needs 2 or less, or CAP_PERFMON)";
  return text;
}

}  // namespace

const char* perf_event_name(PerfEvent event) {
  switch (event) {
    case PerfEvent::Cycles: return "cycles";
    case PerfEvent::Instructions: return "instructions";
    case PerfEvent::L1dReadMisses: return "l1d_read_misses";
    case PerfEvent::LlReadMisses: return "ll_read_misses";
    case PerfEvent::DtlbReadMisses: return "dtlb_read_misses";
    case PerfEvent::BranchMisses: return "branch_misses";
  }
  return "?";
}

PerfSyscalls& system_perf_syscalls() {
  static SystemPerfSyscalls syscalls;
  return syscalls;
}

std::string PerfStatus::text() const {
  if (!available) return reason;
  std::string text = "available";
  for (const auto& note : notes) text += "; " + note;
  return text;
}

PerfCounters::PerfCounters(PerfSyscalls& syscalls) : sys_(syscalls) {
  fds_.fill(-1);
  ids_.fill(0);
  status_.reason = "not open";
}

PerfCounters::~PerfCounters() { close(); }

void PerfCounters::close() {
  for (int& fd : fds_) {
    if (fd >= 0) sys_.close(fd);
    fd = -1;
  }
  status_ = PerfStatus();
  status_.reason = "not open";
}

const PerfStatus& PerfCounters::open() {
  close();
  // An event in the group, or -1 with `why` saying why not: refused outright, or refused only
  // in the group (typically more events than the CPU has counters).
  auto open_member = [&](const perf_event_attr& a, std::string& why) {
    const int fd = sys_.open(a, fds_[0]);
    if (fd >= 0) return fd;
    const int alone = sys_.open(a, -1);
    if (alone >= 0) {
      sys_.close(alone);
      why = "opens alone but not in the group: " + errno_text(-fd) +
            " (more events than the CPU has counters?)";
    } else {
      why = "perf_event_open: " + errno_text(-alone);
    }
    return -1;
  };
  // The id the group read tags each count with; false (fd closed) if the kernel gives none.
  auto take = [&](int e, int fd, std::string& why) {
    uint64_t id = 0;
    const int err = sys_.ioctl(fd, PERF_EVENT_IOC_ID, reinterpret_cast<unsigned long>(&id));
    if (err < 0) {
      sys_.close(fd);
      why = "PERF_EVENT_IOC_ID: " + errno_text(-err);
      return false;
    }
    fds_[e] = fd;
    ids_[e] = id;
    return true;
  };

  std::string why;
  const int leader = sys_.open(event_attr(PerfEvent::Cycles), -1);
  if (leader < 0) {
    status_.reason = leader_refused(-leader, sys_.paranoid());
    return status_;
  }
  if (!take(0, leader, why)) {
    status_.reason = std::string("perf_event_open(") + perf_event_name(PerfEvent::Cycles) + "): " + why;
    return status_;
  }
  for (int e = 1; e < kPerfEvents; ++e) {
    const PerfEvent event = PerfEvent(e);
    const std::string name = perf_event_name(event);
    std::string fallback;
    int fd = open_member(event_attr(event), why);
    if (fd < 0 && event == PerfEvent::LlReadMisses) {
      std::string fallback_why;
      fd = open_member(attr(PERF_TYPE_HARDWARE, PERF_COUNT_HW_CACHE_MISSES, false), fallback_why);
      if (fd >= 0) {
        fallback = name + ": counted as PERF_COUNT_HW_CACHE_MISSES (the LL read-miss event: " + why + ")";
      } else {
        why += "; PERF_COUNT_HW_CACHE_MISSES " + fallback_why;
      }
    }
    if (fd >= 0 && take(e, fd, why)) {
      if (!fallback.empty()) status_.notes.push_back(fallback);
    } else {
      status_.missing.push_back(event);
      status_.notes.push_back(name + ": missing (" + why + ")");
    }
  }
  status_.available = true;
  status_.reason.clear();
  return status_;
}

bool PerfCounters::group_ioctl(unsigned long request) {
  return fds_[0] >= 0 && sys_.ioctl(fds_[0], request, PERF_IOC_FLAG_GROUP) == 0;
}

bool PerfCounters::enable() { return group_ioctl(PERF_EVENT_IOC_ENABLE); }
bool PerfCounters::disable() { return group_ioctl(PERF_EVENT_IOC_DISABLE); }
bool PerfCounters::reset() { return group_ioctl(PERF_EVENT_IOC_RESET); }

bool PerfCounters::read(PerfValues& values) {
  if (fds_[0] < 0) return false;
  // PERF_FORMAT_GROUP | PERF_FORMAT_ID: the number of events, then (value, id) for each.
  struct {
    uint64_t nr;
    struct {
      uint64_t value, id;
    } counts[kPerfEvents];
  } group;
  const long n = sys_.read(fds_[0], &group, sizeof group);
  if (n < long(sizeof group.nr) || group.nr > uint64_t(kPerfEvents) ||
      n < long(sizeof group.nr + group.nr * sizeof group.counts[0])) {
    return false;
  }
  values.fill(0);
  for (uint64_t k = 0; k < group.nr; ++k) {
    for (int e = 0; e < kPerfEvents; ++e) {
      if (fds_[e] >= 0 && ids_[e] == group.counts[k].id) values[e] = group.counts[k].value;
    }
  }
  return true;
}

}  // namespace branchy
