//! The web client the server embeds, and `/dev/token` (only with `--dev`).

use chat_core::auth::Authenticator;
use chat_tests::*;
use conn_tier::config::Settings;

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn the_page_and_the_client_library_are_served_with_their_types() {
    let server = TestServer::start().await;
    let (status, headers, body) = http_get(server.addr, "/").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(body.contains("<html") && body.contains("app.js"), "{body}");
    for (path, kind) in [
        ("/chat-client.js", "text/javascript"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let (status, headers, body) = http_get(server.addr, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            header(&headers, "content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(!body.is_empty(), "{path}");
    }
    // Without --dev there is no token endpoint.
    let (status, _, _) = http_get(server.addr, "/dev/token?user=alice").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn with_dev_tokens_the_page_can_sign_anyone_in() {
    let server = TestServer::start_with_settings(Settings {
        dev_tokens: Some(Authenticator::dev()),
        ..Default::default()
    })
    .await;
    let (status, _, body) = http_get(server.addr, "/dev/token?user=alice").await;
    assert_eq!(status, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = token["token"].as_str().unwrap();
    assert_eq!(server.auth.verify(token).unwrap().as_str(), "alice");
    let mut alice = TestClient::connect(&server.url(), token).await.unwrap();
    alice.send(serde_json::json!({"action":"ping"})).await;
    alice.expect("pong").await;
    let (status, _, _) = http_get(server.addr, "/dev/token?user=not%20valid").await;
    assert_eq!(status, 400);
    server.stop().await;
}
