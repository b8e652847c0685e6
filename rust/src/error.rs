//! One status set across Rust, C++ and Python, and the crate's error type.
//!
//! The status set itself is defined once, as a cxx shared enum (`ffi::records`), so C++ sees
//! the same definition. Every error crossing the bridge is rendered as `"[Status] message"`;
//! C++ and Python turn the bracketed token back into a typed error. The token set is stable;
//! `Status::ALL` is the one list, and tests check that C++ and Python agree with it.

use std::fmt;

pub use crate::ffi::records::Status;

impl Status {
    /// Every status, in the shared order, with its stable wire token (`"[Token] message"`).
    pub const ALL: [(Status, &'static str); 13] = [
        (Status::TryAgain, "TryAgain"),
        (Status::InvalidArgument, "InvalidArgument"),
        (Status::NotFound, "NotFound"),
        (Status::DtypeMismatch, "DtypeMismatch"),
        (Status::RankMismatch, "RankMismatch"),
        (Status::Storage, "Storage"),
        (Status::Decode, "Decode"),
        (Status::Cuda, "Cuda"),
        (Status::OutOfMemory, "OutOfMemory"),
        (Status::BudgetExceeded, "BudgetExceeded"),
        (Status::Shutdown, "Shutdown"),
        (Status::PoolStarved, "PoolStarved"),
        (Status::Internal, "Internal"),
    ];

    /// The stable token used on the wire (`"[Token] message"`).
    pub fn token(self) -> &'static str {
        Self::ALL.iter().find(|(s, _)| *s == self).map_or("Internal", |(_, t)| t)
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
    use super::Status;

    #[test]
    fn every_status_has_its_own_token_in_the_shared_order() {
        for (i, (s, t)) in Status::ALL.iter().enumerate() {
            assert_eq!(usize::from(s.repr), i, "{t}");
            assert_eq!(s.token(), *t);
            assert_eq!(format!("{s:?}"), *t, "the token is the variant's name");
        }
    }

    #[test]
    fn display_starts_with_the_status_token() {
        let e = err!(Storage, "shard {} truncated", "c/0/0");
        assert_eq!(e.to_string(), "[Storage] shard c/0/0 truncated");
        assert_eq!(e.context("uri /a").message(), "uri /a: shard c/0/0 truncated");
    }
}
