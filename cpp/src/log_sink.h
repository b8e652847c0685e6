// Private: how the library logs (into the sink of damacy/log.h; never to stderr).
#pragma once

#include <string>

#include "damacy/log.h"

namespace damacy::detail {

bool log_enabled(LogLevel level) noexcept;

/// Keeps `message` (one line) when `level` is enabled. Never throws.
void log(LogLevel level, std::string message) noexcept;

}  // namespace damacy::detail
