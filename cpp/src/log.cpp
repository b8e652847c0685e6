// The one log sink of the C++ library (cpp/include/damacy/log.h): a bounded buffer of records.
#include "log_sink.h"

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <utility>

namespace damacy {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::Info)};

// How many records the sink holds (written under Sink::mu, read without it): Python checks it
// through a tensor viewing it (log_sink.h) before each take, so a call that logged nothing
// costs no take.
std::atomic<std::int64_t> g_waiting{0};
static_assert(std::atomic<std::int64_t>::is_always_lock_free && sizeof(g_waiting) == sizeof(std::int64_t),
              "the count is viewed from Python as one plain int64");

struct Sink {
  std::mutex mu;
  std::deque<LogRecord> records;
  std::size_t dropped = 0;
};

Sink& sink() {
  static Sink* s = new Sink();  // never destroyed: logging from static destructors stays safe
  return *s;
}

}  // namespace

void set_log_level(int level) noexcept { g_level.store(level, std::memory_order_relaxed); }

int log_level() noexcept { return g_level.load(std::memory_order_relaxed); }

std::vector<LogRecord> take_log_records() {
  Sink& s = sink();
  std::lock_guard<std::mutex> lock(s.mu);
  std::vector<LogRecord> out;
  out.reserve(s.records.size() + 1);
  if (s.dropped != 0) {
    out.push_back({LogLevel::Warning, std::to_string(s.dropped) + " older log records were dropped (at most " +
                                          std::to_string(kMaxLogRecords) + " are kept between takes)"});
    s.dropped = 0;
  }
  for (auto& r : s.records) out.push_back(std::move(r));
  s.records.clear();
  g_waiting.store(0, std::memory_order_release);
  return out;
}

std::size_t log_records_waiting() noexcept {
  return static_cast<std::size_t>(g_waiting.load(std::memory_order_acquire));
}

namespace detail {

std::int64_t* log_records_waiting_word() noexcept {
  // A lock-free atomic of the same size as int64 holds its value as one plain int64 (the
  // static_assert above); readers through this pointer only ever load it.
  return reinterpret_cast<std::int64_t*>(&g_waiting);
}

bool log_enabled(LogLevel level) noexcept { return static_cast<int>(level) >= log_level(); }

void log(LogLevel level, std::string message) noexcept {
  if (!log_enabled(level)) return;
  try {
    Sink& s = sink();
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.records.size() >= kMaxLogRecords) {
      s.records.pop_front();
      ++s.dropped;
    }
    s.records.push_back({level, std::move(message)});
    g_waiting.store(static_cast<std::int64_t>(s.records.size()), std::memory_order_release);
  } catch (...) {
    // Logging never throws (an allocation failure loses the record).
  }
}

}  // namespace detail
}  // namespace damacy
