// A minimal test harness for the libtorch-free C++ tests (ctest runs each executable).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace check {

inline int& failures() {
  static int n = 0;
  return n;
}

inline std::vector<std::pair<std::string, std::function<void()>>>& registry() {
  static std::vector<std::pair<std::string, std::function<void()>>> tests;
  return tests;
}

struct Register {
  Register(const char* name, std::function<void()> fn) { registry().emplace_back(name, fn); }
};

inline int run_all() {
  for (auto& [name, fn] : registry()) {
    const int before = failures();
    fn();
    std::printf("%s %s\n", failures() == before ? "PASS" : "FAIL", name.c_str());
  }
  std::printf("%d failure(s)\n", failures());
  return failures() ? EXIT_FAILURE : EXIT_SUCCESS;
}

}  // namespace check

#define TEST(name)                                            \
  static void name();                                         \
  static check::Register name##_registered(#name, name);      \
  static void name()

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);    \
      ++check::failures();                                                      \
    }                                                                           \
  } while (0)

#define CHECK_MSG(cond, ...)                                                    \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::printf("  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);    \
      std::printf(__VA_ARGS__);                                                 \
      std::printf("\n");                                                        \
      ++check::failures();                                                      \
    }                                                                           \
  } while (0)
