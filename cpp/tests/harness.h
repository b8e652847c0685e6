// A minimal test harness: TEST(name) registers a case; CHECK/CHECK_THROWS report file:line.
// main() runs one named case, all cases, or checks that ctest's list names every case.
#pragma once

#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

namespace harness {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline std::map<std::string, std::function<void()>>& cases() {
  static std::map<std::string, std::function<void()>> all;
  return all;
}

struct Register {
  Register(const char* name, std::function<void()> fn) { cases().emplace(name, std::move(fn)); }
};

[[noreturn]] inline void fail(const char* file, int line, const std::string& what) {
  std::ostringstream os;
  os << file << ":" << line << ": " << what;
  throw Failure(os.str());
}

inline int run(const std::string& name, const std::function<void()>& fn) {
  try {
    fn();
    std::printf("ok    %s\n", name.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::printf("FAIL  %s\n      %s\n", name.c_str(), e.what());
    return 1;
  }
}

inline int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--check-list") == 0) {
    std::set<std::string> listed(argv + 2, argv + argc);
    int missing = 0;
    for (const auto& [name, fn] : cases()) {
      if (!listed.count(name)) {
        std::printf("case %s is not registered with ctest (cpp/tests/CMakeLists.txt)\n", name.c_str());
        ++missing;
      }
    }
    for (const auto& name : listed) {
      if (!cases().count(name)) {
        std::printf("ctest names %s, which is no case\n", name.c_str());
        ++missing;
      }
    }
    return missing ? 1 : 0;
  }
  int failed = 0;
  if (argc >= 2) {
    for (int i = 1; i < argc; ++i) {
      auto it = cases().find(argv[i]);
      if (it == cases().end()) {
        std::printf("no case %s\n", argv[i]);
        return 2;
      }
      failed += run(it->first, it->second);
    }
  } else {
    for (const auto& [name, fn] : cases()) failed += run(name, fn);
  }
  return failed ? 1 : 0;
}

}  // namespace harness

#define HARNESS_CAT2(a, b) a##b
#define HARNESS_CAT(a, b) HARNESS_CAT2(a, b)
#define TEST(name)                                                         \
  static void test_##name();                                               \
  static harness::Register HARNESS_CAT(register_, name)(#name, test_##name); \
  static void test_##name()

#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) harness::fail(__FILE__, __LINE__, "CHECK(" #cond ") failed"); \
  } while (0)

#define CHECK_EQ(a, b)                                                              \
  do {                                                                              \
    const auto& va_ = (a);                                                          \
    const auto& vb_ = (b);                                                          \
    if (!(va_ == vb_)) {                                                            \
      std::ostringstream os_;                                                       \
      os_ << "CHECK_EQ(" #a ", " #b ") failed: " << va_ << " != " << vb_;           \
      harness::fail(__FILE__, __LINE__, os_.str());                                 \
    }                                                                               \
  } while (0)

// Runs `stmt`, expects it to throw `Exc`; the caught exception is visible as `e` in `then`.
#define CHECK_THROWS(Exc, stmt, then)                                                  \
  do {                                                                                 \
    bool thrown_ = false;                                                              \
    try {                                                                              \
      stmt;                                                                            \
    } catch (const Exc& e) {                                                           \
      thrown_ = true;                                                                  \
      then;                                                                            \
    }                                                                                  \
    if (!thrown_) harness::fail(__FILE__, __LINE__, "expected " #Exc " from " #stmt); \
  } while (0)
