//! ffi: the cxx bridge, the only door between the Rust staticlib and the C++ extension, in
//! two modules (one folder, one staticlib, one header prefix `damacy/src/ffi/`):
//! - `records`: the ground-layer vocabulary (statuses, dtypes, op codes and records, stats),
//!   shared types only, importing nothing: any stage may use it;
//! - `api`: the opaque handles (`Config`, `Pipeline`, `Batch`) and functions, on top; calls
//!   `pipeline` (and `example`) only.
//!
//! Contract: nothing here panics (cxx aborts the process on a panic): every fallible
//! function returns `Result` and runs under [`guard`]; the error's message starts with the
//! stable status token `"[Status] "` that C++ and Python turn back into a typed error.

// A panic here aborts the host process (cxx), so the contract is enforced where clippy can:
// no `unwrap`/`expect` anywhere in the bridge (clippy runs with -D warnings in CI).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod api;
pub(crate) mod records;

use crate::error::{Error, Result, Status};

/// Runs `f`, turning a panic into an Internal error so that no panic unwinds into C++ (a
/// panic is a bug; the message says so).
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::new(Status::Internal, format!("internal error (a bug; please report it): {what}")))
        }
    }
}
