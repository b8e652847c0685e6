// Status tokens and the typed exceptions (no torch, no bridge).
#include "damacy/errors.h"

namespace damacy {

std::string_view token(Status status) noexcept {
  switch (status) {
    case Status::TryAgain: return "TryAgain";
    case Status::InvalidArgument: return "InvalidArgument";
    case Status::NotFound: return "NotFound";
    case Status::DtypeMismatch: return "DtypeMismatch";
    case Status::RankMismatch: return "RankMismatch";
    case Status::Storage: return "Storage";
    case Status::Decode: return "Decode";
    case Status::Cuda: return "Cuda";
    case Status::OutOfMemory: return "OutOfMemory";
    case Status::BudgetExceeded: return "BudgetExceeded";
    case Status::Shutdown: return "Shutdown";
    case Status::PoolStarved: return "PoolStarved";
    case Status::Internal: return "Internal";
  }
  return "Internal";
}

std::optional<Status> status_from_token(std::string_view t) noexcept {
  for (Status s : kAllStatuses) {
    if (token(s) == t) return s;
  }
  return std::nullopt;
}

namespace {
std::string wire(Status status, std::string_view message) {
  std::string out;
  out.reserve(message.size() + 20);
  out += '[';
  out += token(status);
  out += "] ";
  out += message;
  return out;
}
}  // namespace

Error::Error(Status status, std::string_view message)
    : std::runtime_error(wire(status, message)), status_(status) {}
Error::~Error() = default;

std::string_view Error::message() const noexcept {
  std::string_view w = what();
  return w.substr(token(status_).size() + 3);  // "[" token "] "
}

// Out-of-line destructors: the key functions that pin each class's typeinfo to this .so, so
// that a downstream `catch (damacy::TryAgain&)` matches what the library throws.
TryAgain::~TryAgain() = default;
InvalidArgument::~InvalidArgument() = default;
NotFound::~NotFound() = default;
DtypeMismatch::~DtypeMismatch() = default;
RankMismatch::~RankMismatch() = default;
StorageError::~StorageError() = default;
DecodeError::~DecodeError() = default;
CudaError::~CudaError() = default;
OutOfMemory::~OutOfMemory() = default;
BudgetExceeded::~BudgetExceeded() = default;
ShutdownError::~ShutdownError() = default;
PoolStarved::~PoolStarved() = default;
InternalError::~InternalError() = default;

void throw_error(Status status, std::string_view message) {
  switch (status) {
    case Status::TryAgain: throw TryAgain(message);
    case Status::InvalidArgument: throw InvalidArgument(message);
    case Status::NotFound: throw NotFound(message);
    case Status::DtypeMismatch: throw DtypeMismatch(message);
    case Status::RankMismatch: throw RankMismatch(message);
    case Status::Storage: throw StorageError(message);
    case Status::Decode: throw DecodeError(message);
    case Status::Cuda: throw CudaError(message);
    case Status::OutOfMemory: throw OutOfMemory(message);
    case Status::BudgetExceeded: throw BudgetExceeded(message);
    case Status::Shutdown: throw ShutdownError(message);
    case Status::PoolStarved: throw PoolStarved(message);
    case Status::Internal: throw InternalError(message);
  }
  throw InternalError(message);
}

void throw_error_message(std::string_view what) {
  if (what.size() > 3 && what.front() == '[') {
    const auto close = what.find("] ");
    if (close != std::string_view::npos) {
      if (auto status = status_from_token(what.substr(1, close - 1))) {
        throw_error(*status, what.substr(close + 2));
      }
    }
  }
  std::string message = "no status token (please report): ";
  message += what;
  throw InternalError(message);
}

}  // namespace damacy
