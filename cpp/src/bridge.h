// Private: the cxx bridge (rust/src/ffi/{records,api}.rs) and the one way to call it.
//
// Every bridge call goes through `call`, which turns the `rust::Error` of a failed Rust
// `Result` (what() = "[Token] message") into the typed damacy::Error, and every string goes
// through `str`, which checks UTF-8 (rust::Str would otherwise throw a plain
// std::invalid_argument).
#pragma once

#include <string_view>
#include <type_traits>
#include <utility>

#include "damacy/errors.h"
#include "rust/cxx.h"                // rust::Error (the generated header omits it)
#include "damacy/src/ffi/records.rs.h"  // shared records and enums (cxx)
#include "damacy/src/ffi/api.rs.h"      // the handles and functions; both from cargo

#include <memory>

namespace damacy::detail {

/// Throws the typed damacy::Error for a failed bridge call.
[[noreturn]] inline void rethrow(const rust::Error& e) { throw_error_message(e.what()); }

/// Runs `f` (a bridge call); a rust::Error becomes the typed damacy::Error.
template <class F>
decltype(auto) call(F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const rust::Error& e) {
    rethrow(e);
  }
}

/// A Rust-owned config shared by C++ copies (freed by Rust when the last copy goes).
std::shared_ptr<const ffi::Config> share(rust::Box<ffi::Config> box);

/// `s` as a rust::Str. @throws InvalidArgument when `s` is not UTF-8 (`what` names it).
rust::Str str(std::string_view s, std::string_view what);

}  // namespace damacy::detail
