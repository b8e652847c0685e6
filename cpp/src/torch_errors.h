// Private: torch's exceptions from device work, as damacy's typed errors naming what failed.
//
// The device path calls torch (allocations on the device, streams, guards, record_stream,
// `Tensor::to(device)`); a CUDA failure inside those is a c10::AcceleratorError (Python:
// torch.AcceleratorError), a failed device allocation a c10::OutOfMemoryError, an invalid
// device a c10::Error. `on_device(what, f)` runs f and rethrows those as damacy::CudaError
// (OutOfMemory for the allocation) with `what` in front, so every CUDA failure reaches the
// caller as `[Cuda] <what>: <torch's message>`. damacy's own errors pass unchanged.
// Header-only and CUDA-free: the CPU build and the C++ tests use it too.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <c10/util/Exception.h>

#include "damacy/errors.h"

namespace damacy::detail {

/// The first line of torch's message (damacy messages are one line; torch adds hints below).
inline std::string first_line(const char* message) {
  std::string_view m(message);
  return std::string(m.substr(0, m.find('\n')));
}

/// Inside a catch block: rethrows the exception in flight as the damacy error for `what`.
[[noreturn]] inline void rethrow_torch_as_damacy(std::string_view what) {
  const std::string head = std::string(what) + ": ";
  try {
    throw;
  } catch (const Error&) {
    throw;
  } catch (const c10::OutOfMemoryError& e) {
    throw OutOfMemory(head + first_line(e.what_without_backtrace()));
  } catch (const c10::AcceleratorError& e) {
    throw CudaError(head + first_line(e.what_without_backtrace()) + " (CUDA error " +
                    std::to_string(e.get_error_code()) + ")");
  } catch (const c10::Error& e) {
    throw CudaError(head + first_line(e.what_without_backtrace()));
  }
}

/// `f()`, with torch's device failures as damacy errors naming `what`.
template <class F>
decltype(auto) on_device(std::string_view what, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error&) {
    rethrow_torch_as_damacy(what);
  }
}

}  // namespace damacy::detail
