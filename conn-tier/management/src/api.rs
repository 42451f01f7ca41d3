//! The API Gateway management API (`@connections`) for this node's
//! connections, so the unmodified Lambda functions deliver through it with
//! the real `aws-sdk-apigatewaymanagement` client:
//!
//! - `POST /@connections/{id}`: the body is sent to the connection as one
//!   text frame; 410 Gone if the connection is not open here.
//! - `GET /@connections/{id}`: `connectedAt` and `lastActiveAt`, or 410.
//! - `DELETE /@connections/{id}`: closes the connection, or 410.
//!
//! The same routes answer under a stage prefix (`/{stage}/@connections/{id}`).
//! It is served on its own listener, never on the client-facing one, and
//! every request must be signed with AWS Signature Version 4 by the
//! configured credential ([`crate::sigv4`]), as API Gateway's own requires
//! IAM-signed calls: anything else is 403.

use crate::sigv4::{self, Credential};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chat_core::ports::PostError;
use serde_json::json;
use std::sync::Arc;

/// Largest request body: API Gateway's post limit (128 KB).
const MAX_BODY: usize = 128 * 1024;
/// A signed request's body must arrive within this.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// What the management API manages: the connections one node holds.
pub trait ConnectionHost: Send + Sync + 'static {
    /// Sends `text` to the connection as one text frame; `Gone` if it is
    /// not open here.
    fn post(&self, connection_id: &str, text: String) -> Result<(), PostError>;
    /// When the connection was opened (ms since the epoch), if it is open here.
    fn connected_at(&self, connection_id: &str) -> Option<u64>;
    /// Closes the connection; false if it is not open here.
    fn close(&self, connection_id: &str) -> bool;
}

type Host = Arc<dyn ConnectionHost>;

/// The management routes over a host, each request verified against `credential`.
pub fn router(hub: Host, credential: Credential) -> Router {
    Router::new()
        .route(
            "/@connections/{id}",
            post(post_to).get(get_info).delete(delete),
        )
        .route(
            "/{stage}/@connections/{id}",
            post(post_staged).get(get_staged).delete(delete_staged),
        )
        .with_state(hub)
        .layer(middleware::from_fn_with_state(
            Arc::new(credential),
            require_signature,
        ))
}

/// Lets a request through only if it is signed by the credential.
async fn require_signature(
    State(credential): State<Arc<Credential>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let mut signed = sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &headers,
        body: &[],
    };
    // The headers first: an unsigned, stale or unknown-key request is
    // refused before a byte of its body is read.
    if let Err(why) = sigv4::precheck(&signed, &credential) {
        return forbidden(&why);
    }
    let bytes =
        match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Json(json!({"message": "the body is over 128 KB"})),
                )
                    .into_response()
            }
            Err(_) => {
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    Json(json!({"message": "the body did not arrive in time"})),
                )
                    .into_response()
            }
        };
    signed.body = &bytes;
    if let Err(why) = sigv4::verify(&signed, &credential) {
        return forbidden(&why);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn forbidden(why: &sigv4::Rejected) -> Response {
    tracing::debug!(reason = %why, "@connections request refused");
    (
        StatusCode::FORBIDDEN,
        [(
            HeaderName::from_static("x-amzn-errortype"),
            "ForbiddenException",
        )],
        Json(json!({"message": "Forbidden"})),
    )
        .into_response()
}

fn gone() -> Response {
    (
        StatusCode::GONE,
        [(HeaderName::from_static("x-amzn-errortype"), "GoneException")],
        Json(json!({"message": "the connection is gone"})),
    )
        .into_response()
}

fn iso(ms: u64) -> String {
    chat_core::time::format_ms(ms)
}

async fn post_to(State(hub): State<Host>, Path(id): Path<String>, body: Bytes) -> Response {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "data must be UTF-8 text"})),
        )
            .into_response();
    };
    match hub.post(&id, text) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(PostError::Gone) | Err(PostError::Failed(_)) => gone(),
    }
}

async fn get_info(State(hub): State<Host>, Path(id): Path<String>) -> Response {
    match hub.connected_at(&id) {
        Some(at) => Json(json!({
            "connectedAt": iso(at),
            "lastActiveAt": iso(chat_core::time::now_ms()),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "conn-tier"}
        }))
        .into_response(),
        None => gone(),
    }
}

async fn delete(State(hub): State<Host>, Path(id): Path<String>) -> Response {
    if hub.close(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        gone()
    }
}

async fn post_staged(
    s: State<Host>,
    Path((_stage, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    post_to(s, Path(id), body).await
}
async fn get_staged(s: State<Host>, Path((_stage, id)): Path<(String, String)>) -> Response {
    get_info(s, Path(id)).await
}
async fn delete_staged(s: State<Host>, Path((_stage, id)): Path<(String, String)>) -> Response {
    delete(s, Path(id)).await
}
