//! One status set across Rust, C++ and Python, and the crate's error type.
//!
//! Every error crossing the bridge is rendered as `"[Status] message"`; C++ and Python parse
//! the bracketed token back into a typed error. The token set is stable.

use std::fmt;

/// The status of a failed operation; identical in Rust, C++ (`damacy::Status`) and Python
/// (`damacy.errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Nothing is ready yet (a pop timed out, or nothing was pushed); calling again may succeed.
    TryAgain,
    /// A config value, sample or box is invalid.
    InvalidArgument,
    /// An array (its `zarr.json`) does not exist.
    NotFound,
    /// The source data type cannot be cast to the requested output.
    DtypeMismatch,
    /// A box's rank differs from the array's rank.
    RankMismatch,
    /// Reading from storage failed, or stored bytes are malformed (truncated shard, bad index).
    Storage,
    /// A compressed chunk could not be decoded.
    Decode,
    /// A CUDA call failed.
    Cuda,
    /// An allocation failed.
    OutOfMemory,
    /// A sample cannot fit the configured byte budgets.
    BudgetExceeded,
    /// The pipeline is closed.
    Shutdown,
    /// Every output buffer is held by live batches.
    PoolStarved,
}

impl Status {
    /// The stable token used on the wire (`"[Token] message"`).
    pub fn token(self) -> &'static str {
        match self {
            Status::TryAgain => "TryAgain",
            Status::InvalidArgument => "InvalidArgument",
            Status::NotFound => "NotFound",
            Status::DtypeMismatch => "DtypeMismatch",
            Status::RankMismatch => "RankMismatch",
            Status::Storage => "Storage",
            Status::Decode => "Decode",
            Status::Cuda => "Cuda",
            Status::OutOfMemory => "OutOfMemory",
            Status::BudgetExceeded => "BudgetExceeded",
            Status::Shutdown => "Shutdown",
            Status::PoolStarved => "PoolStarved",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// The crate's error: a status and a message naming the uri, chunk or shard, and what was
/// expected versus found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    /// An error with `status` and `message`.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }
    /// The message, without the status token.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The same error with `context` prepended to the message (`"context: message"`).
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.status, self.message)
    }
}

impl std::error::Error for Error {}

/// Shorthands: `invalid!("...")` etc. build an [`Error`] with a formatted message.
macro_rules! err {
    ($status:ident, $($arg:tt)*) => {
        $crate::error::Error::new($crate::error::Status::$status, format!($($arg)*))
    };
}
pub(crate) use err;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {


    #[test]
    fn display_starts_with_the_status_token() {
        let e = err!(Storage, "shard {} truncated", "c/0/0");
        assert_eq!(e.to_string(), "[Storage] shard c/0/0 truncated");
        assert_eq!(e.context("uri /a").message(), "uri /a: shard c/0/0 truncated");
    }
}
