//! chat-dynamo: the AWS adapters of chat-core's ports: the
//! [`DynamoStore`] (messages, users, groups) and [`DynamoConnections`] (the
//! connection map), over `aws-sdk-dynamodb` with lean features.
//!
//! # Layout
//! - [`apigw`]: the API Gateway `Delivery` (PostToConnection, 410 → Gone).
//! - [`config`]: the SDK client (rustls+ring HTTPS, retries with backoff and
//!   jitter, per-call timeouts) and the start-up check of the tables.
//! - [`schema`]: table names, keys, indexes and TTL attributes the adapters
//!   expect; `infra/template.yaml` declares the same and a test compares them.
//! - [`store`]: the [`chat_core::ports::Store`] adapter and its item conversions.
//! - [`connections`]: the [`chat_core::ports::Connections`] adapter.
//! - [`meter`]: capacity accounting (read/write units per operation).
//! - [`error`]: the crate's error enum.
//!
//! The endpoint comes from the standard AWS configuration
//! (`AWS_ENDPOINT_URL`, region, credentials), table names from a prefix.

pub mod apigw;
pub mod config;
pub mod connections;
pub mod error;
pub mod meter;
pub mod schema;
pub mod store;

pub use config::{connect, connect_to, Tables};
pub use connections::DynamoConnections;
pub use error::Error;
pub use store::DynamoStore;
