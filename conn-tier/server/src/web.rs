//! The web client, embedded in the binary (no build step at run time):
//! `GET /` is the page (clients/web), `/chat-client.js` the client library
//! (clients/js). With `--dev`, `GET /dev/token?user=<id>` mints a token with
//! the public development secret, so the page can sign anyone in; without
//! `--dev` that route does not exist.

use axum::extract::Query;
use axum::http::{header, StatusCode};
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

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
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
            get(move |Query(q): Query<TokenQuery>| async move {
                match UserId::parse(&q.user).and_then(|u| auth.mint(u.as_str(), DEV_TOKEN_SECS)) {
                    Ok(token) => Json(serde_json::json!({ "token": token })).into_response(),
                    Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
                }
            }),
        );
    }
    r
}
