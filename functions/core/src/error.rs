//! The crate's one error type. Its wire form (an `error` frame) is built in
//! one place: [`crate::protocol::ServerFrame::error`].

/// Every way a chat operation can fail.
///
/// The variants that start with a wire code (`BadRequest` … `RateLimited`)
/// are the client's fault or a policy decision; `Contended` is an optimistic
/// concurrency clash the services retry; `Store` is an infrastructure fault
/// and reaches the client only as `internal`, without details.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Deliberately carries no detail: a stranger learns nothing about a
    /// conversation or group, not even whether it exists.
    #[error("not allowed")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("a group holds at most {limit} members")]
    GroupFull { limit: usize },
    #[error("too many frames; slow down")]
    RateLimited,
    /// A `client_msg_id` already used for another recipient or text.
    #[error("client_msg_id {0:?} was already used for a different message; use a new one")]
    IdReused(String),
    /// A per-user quota is used up (groups created per day).
    #[error("{0}")]
    Quota(String),
    /// A conditional write lost a race (group version, existing id).
    #[error("conflicting concurrent update")]
    Contended,
    /// The store or another backend failed; the message is for logs only.
    #[error("store failure: {0}")]
    Store(String),
    /// The store cannot take writes for now (its disk is full or nearly,
    /// an I/O error it is recovering from): nothing was stored; the same
    /// request may be sent again (docs/protocol.md, "Errors").
    #[error("{0}; nothing was stored, retry in a few seconds")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The wire code (docs/protocol.md, "Errors").
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::TooLarge(_) => "too_large",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::GroupFull { .. } => "group_full",
            Error::RateLimited | Error::Quota(_) => "rate_limited",
            Error::IdReused(_) => "conflict",
            Error::Contended | Error::Store(_) => "internal",
            Error::Unavailable(_) => "unavailable",
        }
    }

    /// Whether this failure is ours rather than the client's (worth an
    /// error-level log line).
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::Contended | Error::Store(_))
    }
}
