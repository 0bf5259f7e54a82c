//! The error an extension returns from its callbacks, and receives from host calls.

use std::fmt;

use crate::protocol::{ErrorBody, ErrorKind};

/// A failure with a [`ErrorKind`] saying whose fault it is (the host maps it to an HTTP status)
/// and a message for the caller: lowercase, with context, no trailing period, e.g.
/// `session 42 not found`.
///
/// It crosses the boundary as [`ErrorBody`] (`{"error": message, "kind": kind}`), so it carries no
/// `source()` chain: put the context into the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error of any kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// The caller's input is wrong (400); retrying the same request fails again.
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadRequest, message)
    }

    /// The caller may not do this (403).
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Forbidden, message)
    }

    /// The thing asked for does not exist (404).
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    /// The request conflicts with the current state (409); it may succeed once the state changes.
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Conflict, message)
    }

    /// Well-formed but out of range (422).
    pub fn unprocessable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unprocessable, message)
    }

    /// Temporarily impossible (503): retrying later makes sense.
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }

    /// The extension's own failure (500): a bug, not the caller's fault.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// Whose fault it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with context: `Error::not_found("thing x not found").context("reading
    /// properties")` reads `reading properties: thing x not found`.
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<ErrorBody> for Error {
    fn from(body: ErrorBody) -> Error {
        Error::new(body.kind, body.error)
    }
}

impl From<Error> for ErrorBody {
    fn from(error: Error) -> ErrorBody {
        ErrorBody {
            error: error.message,
            kind: error.kind,
        }
    }
}
