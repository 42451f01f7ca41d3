//! conn-tier's one error type.

/// Failures of the embedded store and of server start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("embedded store: {0}")]
    Db(#[from] redb::Error),
    #[error("embedded store record is corrupt: {0}")]
    Corrupt(String),
    #[error("the embedded store's writer thread has stopped")]
    WriterStopped,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    pub fn db(e: impl Into<redb::Error>) -> Self {
        Error::Db(e.into())
    }
}

/// The services see every embedded-store failure as a store failure
/// (`internal` on the wire).
impl From<Error> for chat_core::Error {
    fn from(e: Error) -> Self {
        chat_core::Error::Store(e.to_string())
    }
}
