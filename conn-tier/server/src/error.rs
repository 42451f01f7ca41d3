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
    #[cfg(feature = "lambda")]
    #[error(transparent)]
    Gateway(#[from] chat_local_apigw::Error),
}

/// What the binary does with `run`'s result: a start-up or serving error
/// is a user's problem to fix (a taken port, a missing secret, a locked
/// data file), so it prints as one line with its causes, never as a
/// backtrace (those are for panics, even with `RUST_BACKTRACE=1`).
pub fn exit_code(result: Result<(), Error>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conn-tier: {}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and each cause the message does not already include.
pub fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

impl Error {
    /// An I/O failure, with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
