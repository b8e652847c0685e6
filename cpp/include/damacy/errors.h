// damacy's errors: one status set shared with Rust (`damacy::Status`, rust/src/error.rs) and
// Python (`damacy.errors`).
//
// Every failure is a `damacy::Error` (a std::runtime_error) of the subclass named after its
// status. `what()` is `"[Token] message"`: the stable token stays in front so that torch,
// which turns a C++ exception into a Python RuntimeError carrying what(), lets Python map
// it back to the typed error. `message()` is the text after the token.
#pragma once

#include <array>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace damacy {

/// Why an operation failed. Same set and order as Rust's `Status`.
enum class Status {
  TryAgain,         ///< nothing ready yet (a pop timed out, nothing pushed); may succeed later
  InvalidArgument,  ///< a config value, sample or box is invalid
  NotFound,         ///< an array (its zarr.json) does not exist
  DtypeMismatch,    ///< the source dtype cannot be cast to the requested output
  RankMismatch,     ///< a box's rank differs from the array's rank
  Storage,          ///< reading failed, or stored bytes are malformed
  Decode,           ///< a compressed chunk could not be decoded
  Cuda,             ///< a CUDA call failed
  OutOfMemory,      ///< an allocation failed
  BudgetExceeded,   ///< a sample cannot fit the configured byte budgets
  Shutdown,         ///< the pipeline is closed
  PoolStarved,      ///< every output buffer is held by live batches
  Internal,         ///< a bug in damacy (a panic, a broken invariant); please report it
};

/// Every status, in declaration order (the library static_asserts each against the bridge's
/// `ffi::Status`, and a test compares the tokens with Rust's).
inline constexpr std::array<Status, 13> kAllStatuses = {
    Status::TryAgain,    Status::InvalidArgument, Status::NotFound,    Status::DtypeMismatch,
    Status::RankMismatch, Status::Storage,        Status::Decode,      Status::Cuda,
    Status::OutOfMemory, Status::BudgetExceeded,  Status::Shutdown,    Status::PoolStarved,
    Status::Internal,
};

/// The stable wire token of `status` ("TryAgain", ...), as in `"[TryAgain] message"`.
std::string_view token(Status status) noexcept;
/// The status named by `token` (without brackets), if any.
std::optional<Status> status_from_token(std::string_view token) noexcept;

/// Base of every damacy exception.
class Error : public std::runtime_error {
 public:
  /// what() becomes `"[Token] message"`.
  Error(Status status, std::string_view message);
  ~Error() override;
  Status status() const noexcept { return status_; }
  /// The message without the `"[Token] "` prefix.
  std::string_view message() const noexcept;

 private:
  Status status_;
};

// One subclass per status; names match Python's damacy.errors.
#define DAMACY_DECLARE_ERROR(Name, StatusValue)                                        \
  class Name final : public Error {                                                    \
   public:                                                                             \
    explicit Name(std::string_view message) : Error(Status::StatusValue, message) {}  \
    ~Name() override;                                                                  \
  };
DAMACY_DECLARE_ERROR(TryAgain, TryAgain)
DAMACY_DECLARE_ERROR(InvalidArgument, InvalidArgument)
DAMACY_DECLARE_ERROR(NotFound, NotFound)
DAMACY_DECLARE_ERROR(DtypeMismatch, DtypeMismatch)
DAMACY_DECLARE_ERROR(RankMismatch, RankMismatch)
DAMACY_DECLARE_ERROR(StorageError, Storage)
DAMACY_DECLARE_ERROR(DecodeError, Decode)
DAMACY_DECLARE_ERROR(CudaError, Cuda)
DAMACY_DECLARE_ERROR(OutOfMemory, OutOfMemory)
DAMACY_DECLARE_ERROR(BudgetExceeded, BudgetExceeded)
DAMACY_DECLARE_ERROR(ShutdownError, Shutdown)
DAMACY_DECLARE_ERROR(PoolStarved, PoolStarved)
DAMACY_DECLARE_ERROR(InternalError, Internal)
#undef DAMACY_DECLARE_ERROR

/// Throws the subclass of `Error` for `status`.
[[noreturn]] void throw_error(Status status, std::string_view message);

/// Throws the typed error for a wire message `"[Token] text"` (what a Rust error, or any
/// damacy error's what(), looks like). A message without a known token is a bug on the other
/// side of the bridge; it becomes InternalError with the message kept in full.
[[noreturn]] void throw_error_message(std::string_view what);

namespace detail {
/// Rust's status tokens in its order (for the test that C++'s set is the same).
std::vector<std::string> rust_status_tokens();
}  // namespace detail

}  // namespace damacy
