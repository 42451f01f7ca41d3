//! conn-tier's one error type: why the server cannot start or serve.

/// Failures of server start-up and of a connection's set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Embedded(#[from] chat_embedded::Error),
    #[error(transparent)]
    Chat(#[from] chat_core::Error),
    #[cfg(feature = "dynamodb")]
    #[error(transparent)]
    Dynamo(#[from] chat_dynamo::Error),
    #[error(transparent)]
    Gateway(#[from] chat_local_apigw::Error),
}

impl Error {
    /// An I/O failure, with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
