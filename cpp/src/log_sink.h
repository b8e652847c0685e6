// Private: how the library logs (into the sink of damacy/log.h; never to stderr).
#pragma once

#include <cstdint>
#include <string>

#include "damacy/log.h"

namespace damacy::detail {

bool log_enabled(LogLevel level) noexcept;

/// The word that holds log_records_waiting(), for a view that reads it without a call (the
/// `log_records_waiting` op's tensor). Never written through this pointer; never freed.
std::int64_t* log_records_waiting_word() noexcept;

/// Keeps `message` (one line) when `level` is enabled. Never throws.
void log(LogLevel level, std::string message) noexcept;

}  // namespace damacy::detail
