//! The crate's one error type.

/// Failures of the stand-ins.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A function could not be invoked, or failed.
    #[error("{0}")]
    Invoke(String),
    /// A function answered something API Gateway would not accept.
    #[error("{function} answered {detail}")]
    BadAnswer { function: String, detail: String },
}
