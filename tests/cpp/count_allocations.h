// Counts every allocation of the test program that includes this header, so a test can assert
// that none happens (`allocations` before and after). Include it in one source file per program:
// it replaces the global operator new and delete.
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

static std::atomic<long> allocations{0};

void* operator new(size_t n) {
  ++allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
