//! The API Gateway management API (`@connections`) for this node's
//! connections, so the unmodified Lambda functions deliver through it with
//! the real `aws-sdk-apigatewaymanagement` client:
//!
//! - `POST /@connections/{id}`: the body is sent to the connection as one
//!   text frame; 410 Gone if the connection is not open here.
//! - `GET /@connections/{id}`: `connectedAt` and `lastActiveAt`, or 410.
//! - `DELETE /@connections/{id}`: closes the connection, or 410.
//! - `POST /@broadcast` (not API Gateway's; node to node in a cluster): a
//!   [`BroadcastRequest`], sent to every connection here of its users;
//!   answers `{"posted": n}`.
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
/// Most body bytes all requests together may be reading at once (16 MiB:
/// 128 bodies of the largest size). The key id that passes the header
/// check is not secret (every signed request carries it), and the
/// signature covers the body, so it is checked only once the body is in:
/// without this budget, slow bodies could take memory without bound.
/// Past it a request gets 429 (`LimitExceededException`, which the AWS
/// SDK retries) at its headers.
pub const BODIES_IN_FLIGHT_BYTES: usize = 16 << 20;
/// The budget is counted in KiB.
const KIB: usize = 1024;

/// What every request is checked against.
struct Guard {
    credential: Credential,
    /// KiB of bodies being read now, out of the budget.
    in_flight: tokio::sync::Semaphore,
}

/// What the management API manages: the connections one node holds.
pub trait ConnectionHost: Send + Sync + 'static {
    /// Sends `text` to the connection as one text frame; `Gone` if it is
    /// not open here.
    fn post(&self, connection_id: &str, text: String) -> Result<(), PostError>;
    /// When the connection was opened (ms since the epoch), if it is open here.
    fn connected_at(&self, connection_id: &str) -> Option<u64>;
    /// Closes the connection; false if it is not open here.
    fn close(&self, connection_id: &str) -> bool;
    /// Sends `text` to every connection here of `users` except `except`;
    /// how many took it.
    fn broadcast(&self, users: &[String], except: Option<&str>, text: String) -> usize;
}

/// The body of `POST /@broadcast`: one frame for every connection of these
/// users on the node (docs/design.md, "Group look-ups").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BroadcastRequest {
    pub users: Vec<String>,
    /// The connection that caused it (it had its own answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<String>,
    /// The frame's JSON, as every connection gets it.
    pub frame: String,
}

/// The path of the broadcast route, under a node's management URL.
pub const BROADCAST_PATH: &str = "/@broadcast";

type Host = Arc<dyn ConnectionHost>;

/// The management routes over a host, each request verified against
/// `credential`, with [`BODIES_IN_FLIGHT_BYTES`] of bodies read at once.
pub fn router(hub: Host, credential: Credential) -> Router {
    router_with_budget(hub, credential, BODIES_IN_FLIGHT_BYTES)
}

/// [`router`] with another budget of body bytes read at once.
pub fn router_with_budget(hub: Host, credential: Credential, budget_bytes: usize) -> Router {
    let guard = Guard {
        credential,
        in_flight: tokio::sync::Semaphore::new((budget_bytes / KIB).max(MAX_BODY / KIB)),
    };
    Router::new()
        .route(
            "/@connections/{id}",
            post(post_to).get(get_info).delete(delete),
        )
        .route(BROADCAST_PATH, post(broadcast))
        .route("/{stage}/@broadcast", post(broadcast_staged))
        .route(
            "/{stage}/@connections/{id}",
            post(post_staged).get(get_staged).delete(delete_staged),
        )
        .with_state(hub)
        .layer(middleware::from_fn_with_state(
            Arc::new(guard),
            require_signature,
        ))
}

/// The body a request announces, in bytes: its `Content-Length`, none
/// without one, the most allowed if chunked.
fn announced_body(headers: &axum::http::HeaderMap) -> usize {
    use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    match headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()) {
        Some(n) => n.trim().parse().unwrap_or(usize::MAX),
        None if headers.contains_key(TRANSFER_ENCODING) => MAX_BODY,
        None => 0,
    }
}

fn too_large() -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(json!({"message": "the body is over 128 KB"})),
    )
        .into_response()
}

/// Lets a request through only if it is signed by the credential.
async fn require_signature(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let credential = &guard.credential;
    let (parts, body) = request.into_parts();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let signed = sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &headers,
        body: &[],
    };
    // The headers first: an unsigned, stale or unknown-key request is
    // refused before a byte of its body is read.
    let checked = match sigv4::precheck(&signed, credential) {
        Ok(checked) => checked,
        Err(why) => return forbidden(&why),
    };
    let announced = announced_body(&parts.headers);
    if announced > MAX_BODY {
        return too_large();
    }
    // Held until the body is read and its signature checked.
    let kib = announced.div_ceil(KIB).max(1) as u32;
    let Ok(_reading) = guard.in_flight.try_acquire_many(kib) else {
        tracing::info!(kib, "@connections: too many bodies being read at once; 429");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(
                HeaderName::from_static("x-amzn-errortype"),
                "LimitExceededException",
            )],
            Json(json!({"message": "too many requests being read at once"})),
        )
            .into_response();
    };
    let bytes =
        match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => return too_large(),
            Err(_) => {
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    Json(json!({"message": "the body did not arrive in time"})),
                )
                    .into_response()
            }
        };
    let with_body = sigv4::Request {
        body: &bytes,
        ..signed
    };
    if let Err(why) = sigv4::verify_prechecked(&with_body, credential, checked) {
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

async fn broadcast(State(hub): State<Host>, body: Bytes) -> Response {
    match serde_json::from_slice::<BroadcastRequest>(&body) {
        Ok(b) => {
            let posted = hub.broadcast(&b.users, b.except.as_deref(), b.frame);
            Json(json!({ "posted": posted })).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": format!("not a broadcast request: {e}")})),
        )
            .into_response(),
    }
}

async fn broadcast_staged(s: State<Host>, _stage: Path<String>, body: Bytes) -> Response {
    broadcast(s, body).await
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

#[cfg(test)]
mod tests {
    //! The body budget, over a real listener on 127.0.0.1.
    use super::*;
    use crate::sigv4::{amz_date, now_secs, sign_headers};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A host with no connections: every post is 410.
    struct Nobody;
    impl ConnectionHost for Nobody {
        fn post(&self, _: &str, _: String) -> Result<(), PostError> {
            Err(PostError::Gone)
        }
        fn connected_at(&self, _: &str) -> Option<u64> {
            None
        }
        fn close(&self, _: &str) -> bool {
            false
        }
        fn broadcast(&self, _: &[String], _: Option<&str>, _: String) -> usize {
            0
        }
    }

    /// Sends a POST's signed headers and `sent` bytes of its `body`; the
    /// socket, to finish or drop.
    async fn start_post(host: &str, cred: &Credential, body: &[u8], sent: usize) -> TcpStream {
        start_post_to(host, "/@connections/x", cred, body, sent).await
    }

    async fn start_post_to(
        host: &str,
        path: &str,
        cred: &Credential,
        body: &[u8],
        sent: usize,
    ) -> TcpStream {
        let headers = sign_headers(
            cred,
            "POST",
            host,
            path,
            body,
            &amz_date(now_secs()),
            "us-east-1",
        );
        let extra: String = headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let mut s = TcpStream::connect(host).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body[..sent]).await.unwrap();
        s
    }

    async fn status(s: &mut TcpStream) -> String {
        answer(s).await.lines().next().unwrap_or("").to_string()
    }

    async fn answer(s: &mut TcpStream) -> String {
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    }

    /// Records broadcasts; user `u<k>` has k connections here.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<BroadcastRequest>>);
    impl ConnectionHost for Recorder {
        fn post(&self, _: &str, _: String) -> Result<(), PostError> {
            Err(PostError::Gone)
        }
        fn connected_at(&self, _: &str) -> Option<u64> {
            None
        }
        fn close(&self, _: &str) -> bool {
            false
        }
        fn broadcast(&self, users: &[String], except: Option<&str>, text: String) -> usize {
            self.0.lock().unwrap().push(BroadcastRequest {
                users: users.to_vec(),
                except: except.map(str::to_string),
                frame: text,
            });
            users
                .iter()
                .filter_map(|u| u.strip_prefix('u')?.parse::<usize>().ok())
                .sum()
        }
    }

    #[tokio::test]
    async fn a_signed_broadcast_reaches_the_host_and_answers_how_many_took_it() {
        let cred = Credential {
            key_id: "k".into(),
            secret: "s".repeat(32),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let recorder = Arc::new(Recorder::default());
        let app = router(recorder.clone(), cred.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let request = BroadcastRequest {
            users: vec!["u1".into(), "u2".into()],
            except: Some("c9".into()),
            frame: r#"{"type":"message"}"#.into(),
        };
        let body = serde_json::to_vec(&request).unwrap();
        let mut ok = start_post_to(&host, BROADCAST_PATH, &cred, &body, body.len()).await;
        let a = answer(&mut ok).await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        assert!(a.ends_with(r#"{"posted":3}"#), "{a}");
        assert_eq!(*recorder.0.lock().unwrap(), vec![request]);
        // Signed with another secret: refused, and the host sees nothing.
        let other = Credential {
            key_id: "k".into(),
            secret: "t".repeat(32),
        };
        let mut forged = start_post_to(&host, BROADCAST_PATH, &other, &body, body.len()).await;
        assert!(status(&mut forged).await.contains(" 403 "));
        // Signed, but not a broadcast request: 400, nothing delivered.
        let junk = br#"{"users":"everyone"}"#;
        let mut bad = start_post_to(&host, BROADCAST_PATH, &cred, junk, junk.len()).await;
        assert!(status(&mut bad).await.contains(" 400 "));
        assert_eq!(recorder.0.lock().unwrap().len(), 1);
        server.abort();
    }

    #[tokio::test]
    async fn past_the_budget_of_bodies_in_flight_a_request_gets_429_until_one_ends() {
        let cred = Credential {
            key_id: "k".into(),
            secret: "s".repeat(32),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let app = router_with_budget(Arc::new(Nobody), cred.clone(), 2 * MAX_BODY);
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let body = vec![b'x'; MAX_BODY];
        // Two slow 128 KB bodies take the whole budget...
        let slow = [
            start_post(&host, &cred, &body, 10).await,
            start_post(&host, &cred, &body, 10).await,
        ];
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // ...so a third is refused at its headers, without being read.
        let mut third = start_post(&host, &cred, &body, 0).await;
        assert!(status(&mut third).await.contains(" 429 "));
        // Once they go, a whole signed post is read and answered.
        drop(slow);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut whole = start_post(&host, &cred, &body, body.len()).await;
        assert!(
            status(&mut whole).await.contains(" 410 "),
            "the connection x is gone"
        );
        server.abort();
    }
}
