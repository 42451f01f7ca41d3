//! The embedded store's one error type.

use std::path::PathBuf;

/// Failures of the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("embedded store: {0}")]
    Db(#[from] redb::Error),
    #[error("embedded store (fjall): {0}")]
    Fjall(#[from] fjall::Error),
    /// Another process (or another store in this one) has the data open.
    #[error("the data {path} is in use by another chat server ({detail}); stop it, or give this one its own --data-dir")]
    Locked { path: PathBuf, detail: String },
    /// The data directory holds the other engine's data.
    #[error("the data directory {dir} holds {found} data ({file}), and this server was started with --engine {asked}: start it with --engine {found}, or move the data to {asked} with conn-tier admin export and import (docs/operations.md, \"Engines\")", file = found.data_name(), found = found.name(), asked = asked.name())]
    OtherEngine {
        dir: PathBuf,
        found: crate::EngineKind,
        asked: crate::EngineKind,
    },
    /// The file was written by a newer build (docs/operations.md, "Upgrading").
    #[error("the data file {path} has format version {found}, written by a newer build of the chat server; this build reads format version {supported} and older. Run the newer build, or restore a backup taken by this one (conn-tier admin restore)", supported = crate::FORMAT_VERSION)]
    NewerFormat { path: PathBuf, found: u64 },
    /// `conn-tier admin`: a command that cannot do what it was asked, and why.
    #[error("{0}")]
    Admin(String),
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
