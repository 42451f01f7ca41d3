//! The web client, embedded in the binary (no build step at run time):
//! `GET /` is the page (clients/web), `/chat-client.js` the client library
//! (clients/js). With `--dev`, `GET /dev/token?user=<id>` mints a token with
//! the public development secret, so the page can sign anyone in; without
//! `--dev` that route does not exist, and in `--dev` a request from another
//! site's page (its `Origin`) is refused there and on `/ws`. Every file
//! goes with a Content-Security-Policy that forbids framing.

use axum::extract::Query;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chat_core::auth::Authenticator;
use chat_core::ids::UserId;
use serde::Deserialize;

const INDEX: &str = include_str!("../../../clients/web/index.html");
const APP_JS: &str = include_str!("../../../clients/web/app.js");
const STYLE: &str = include_str!("../../../clients/web/style.css");
const CLIENT_JS: &str = include_str!("../../../clients/js/chat-client.js");

/// How long a token minted by `/dev/token` lives.
const DEV_TOKEN_SECS: i64 = 12 * 3600;

/// The page may load only its own files and talk only to its own
/// server, and no other site may frame it (clickjacking).
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

/// In `--dev`, a browser request from another site's page is refused: any
/// page a developer visits could otherwise mint tokens from `/dev/token`
/// or open `/ws` to their local server. A request with no `Origin` (not
/// from a browser page) or one from this server's own page passes, and
/// only when `Host` is an IP address or `localhost`: another site's name
/// rebound to 127.0.0.1 (DNS rebinding) would otherwise make its page
/// "this server's own".
pub fn dev_request_allowed(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_is_literal(host) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let bare = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    bare.is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// Whether a `Host` header names an IP address or `localhost` (with or
/// without a port): no DNS name another site could point here.
fn host_is_literal(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6] or [v6]:port
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(n, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                host
            }
        }),
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn cross_origin() -> Response {
    (
        StatusCode::FORBIDDEN,
        "--dev refuses requests from another site's page (Origin is not this server, or Host is not an IP address or localhost)\n",
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    user: String,
}

/// The page, its assets, and (with a dev authenticator) `/dev/token`.
pub fn router<S: Clone + Send + Sync + 'static>(dev: Option<Authenticator>) -> Router<S> {
    let mut r = Router::new()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { file("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { file("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/chat-client.js",
            get(|| async { file("text/javascript; charset=utf-8", CLIENT_JS) }),
        );
    if let Some(auth) = dev {
        r = r.route(
            "/dev/token",
            get(
                move |headers: HeaderMap, Query(q): Query<TokenQuery>| async move {
                    if !dev_request_allowed(&headers) {
                        return cross_origin();
                    }
                    match UserId::parse(&q.user).and_then(|u| auth.mint(u.as_str(), DEV_TOKEN_SECS))
                    {
                        Ok(token) => Json(serde_json::json!({ "token": token })).into_response(),
                        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
                    }
                },
            ),
        );
    }
    r
}
