//! The crate's one error type.

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("DynamoDB table {table} does not exist at {endpoint} (create it: localstack/start.sh, or deploy infra/)")]
    MissingTable { table: String, endpoint: String },
    #[error("DynamoDB at {endpoint} is unreachable: {detail}. {hint}")]
    Unreachable {
        endpoint: String,
        detail: String,
        /// What to run or set: the usual causes are a missing
        /// `source localstack/env.sh` or an emulator that is not running.
        hint: &'static str,
    },
    /// No endpoint and no region: the SDK would try the EC2 metadata
    /// service and fail with an error that names neither.
    #[error("DynamoDB is not configured: neither AWS_ENDPOINT_URL nor AWS_REGION is set. {hint}")]
    NotConfigured { hint: &'static str },
    #[error("table {table} has the wrong shape: {detail}")]
    Schema { table: String, detail: String },
    #[error("DynamoDB {op} on {table} failed: {detail}")]
    Call {
        op: &'static str,
        table: String,
        detail: String,
    },
    #[error("item in {table} is malformed: {detail}")]
    Corrupt { table: String, detail: String },
    /// An export or import that cannot go on, and why.
    #[error("{0}")]
    Transfer(String),
    #[error("could not build a request: {0}")]
    Build(String),
}

impl Error {
    pub fn call<E, R>(op: &'static str, table: &str, e: SdkError<E, R>) -> Self
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        Error::Call {
            op,
            table: table.to_string(),
            detail: DisplayErrorContext(&e).to_string(),
        }
    }

    pub fn corrupt(table: &str, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            table: table.to_string(),
            detail: detail.into(),
        }
    }
}

impl From<aws_sdk_dynamodb::error::BuildError> for Error {
    fn from(e: aws_sdk_dynamodb::error::BuildError) -> Self {
        Error::Build(e.to_string())
    }
}

/// Every adapter failure is a store failure to the services (`internal`).
impl From<Error> for chat_core::Error {
    fn from(e: Error) -> Self {
        chat_core::Error::Store(e.to_string())
    }
}
