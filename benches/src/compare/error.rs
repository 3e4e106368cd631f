//! The one error type of the comparison: a message naming what failed.

use std::fmt;

/// What went wrong in a setup or a measurement, as text for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchError(String);

impl BenchError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

/// Adds the step that failed to any displayable error.
pub trait Context<T> {
    /// Turns the error into a [`BenchError`] reading `what: error`.
    fn ctx(self, what: &str) -> Result<T, BenchError>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, BenchError> {
        self.map_err(|e| BenchError(format!("{what}: {e}")))
    }
}

impl<T> Context<T> for Option<T> {
    fn ctx(self, what: &str) -> Result<T, BenchError> {
        self.ok_or_else(|| BenchError(what.to_owned()))
    }
}
