// damacy's log: the library's own messages (a fallback taken, a warning) are kept in memory
// for the application to take; nothing is written to stderr. Python takes them after each
// damacy call and emits them on `logging.getLogger("damacy")` (python/damacy/_log.py); a C++
// program calls `take_log_records()` when it wants them.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace damacy {

/// Severity; the numbers are Python logging's levels.
enum class LogLevel : int { Debug = 10, Info = 20, Warning = 30, Error = 40 };

struct LogRecord {
  LogLevel level;
  std::string message;  // one line, no "damacy: " prefix
};

/// At most this many records are kept; when more arrive before they are taken, the oldest
/// are dropped and the next take starts with one Warning saying how many.
inline constexpr std::size_t kMaxLogRecords = 1024;

/// Records below `level` are dropped when logged (default: Info). Thread-safe.
void set_log_level(int level) noexcept;
int log_level() noexcept;

/// Takes (removes) the kept records, oldest first. Thread-safe.
std::vector<LogRecord> take_log_records();

/// How many records take_log_records() would return now (a cheap check before a take: one
/// atomic load). Thread-safe.
std::size_t log_records_waiting() noexcept;

}  // namespace damacy
