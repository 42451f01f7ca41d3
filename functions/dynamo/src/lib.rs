//! chat-dynamo: the AWS adapters of chat-core's ports: the
//! [`DynamoStore`] (messages, users, groups) and [`DynamoConnections`] (the
//! connection map), over `aws-sdk-dynamodb` with lean features, and the
//! API Gateway delivery adapter.
//!
//! # Layout
//! - [`apigw`]: the API Gateway `Delivery` (PostToConnection, 410 → Gone).
//! - [`config`]: the SDK client (rustls+ring HTTPS, retries with backoff and
//!   jitter, per-call timeouts) and the start-up check of the tables.
//! - [`schema`]: table names, keys, indexes and TTL attributes the adapters
//!   expect; `infra/template.yaml` declares the same and a test compares them.
//! - [`codec`]: the one attribute codec (serde structs through
//!   `serde_dynamo`), shared by the store, the connection map and the
//!   stream-fed fan-out.
//! - [`request`]: the one request helper: run, meter, failed conditions.
//! - [`store`]: the [`chat_core::ports::Store`] adapter, one module per entity.
//! - [`connections`]: the [`chat_core::ports::Connections`] adapter.
//! - `conn_table`: the connections table's writes and reads, shared by the
//!   connection map and the node registry.
//! - [`nodes`]: the [`chat_core::ports::Nodes`] registry of a conn-tier
//!   cluster, in the connections table.
//! - [`transfer`]: export and import of the tables as the portable
//!   stream (`chat_core::export`).
//! - [`meter`]: capacity accounting (read/write units per operation).
//! - [`error`]: the crate's error enum.
//! - `testing` (feature `testing`): fresh tables on the emulator for tests.
//!
//! The endpoint comes from the standard AWS configuration
//! (`AWS_ENDPOINT_URL`, region, credentials), table names from a prefix.

pub mod apigw;
pub mod codec;
pub mod config;
mod conn_table;
pub mod connections;
pub mod error;
pub mod meter;
pub mod nodes;
pub mod request;
pub mod schema;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transfer;

pub use config::{connect, connect_to, Tables};
pub use connections::DynamoConnections;
pub use error::Error;
pub use nodes::DynamoNodes;
pub use store::DynamoStore;
