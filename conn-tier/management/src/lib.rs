//! chat-management: the `@connections` management API that every
//! conn-tier node serves, and the AWS Signature Version 4 verification
//! that guards it.
//!
//! It is API Gateway's own management API, reimplemented for the nodes
//! that hold WebSockets themselves: a cluster node posts to a peer's
//! connections through it (with the same `aws-sdk-apigatewaymanagement`
//! client the Lambda functions use), and the Lambda functions deliver
//! through it when conn-tier stands in for API Gateway. So it runs in every
//! production cluster, not only locally.
//!
//! # Layout
//! - [`api`]: the routes (POST, GET, DELETE `/@connections/{id}`) over any
//!   [`api::ConnectionHost`] (conn-tier's hub), every request verified
//!   against the configured credential before its body is read.
//! - [`sigv4`]: AWS Signature Version 4, signing and verification; its
//!   [`sigv4::Rejected`] is the crate's one error type.

pub mod api;
pub mod sigv4;

pub use sigv4::{Credential, Rejected};
