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

#[tokio::test]
async fn the_page_forbids_framing_sniffing_and_referrers() {
    let server = TestServer::start().await;
    for path in ["/", "/app.js", "/chat-client.js", "/style.css"] {
        let (_, headers, _) = http_get(server.addr, path).await;
        let csp = header(&headers, "content-security-policy").unwrap_or("");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert_eq!(
            header(&headers, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            header(&headers, "referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(header(&headers, "x-frame-options"), Some("DENY"), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn in_dev_mode_another_sites_page_can_neither_mint_tokens_nor_open_sockets() {
    let server = TestServer::start_with_settings(Settings {
        dev_tokens: Some(Authenticator::dev()),
        ..Default::default()
    })
    .await;
    let host = server.addr.to_string();
    let with_origin = |o: &str| vec![("Origin".to_string(), o.to_string())];
    // Another site's page (any site a developer visits): refused.
    let (status, _, body) = http_request(
        &host,
        "GET",
        "/dev/token?user=admin",
        &with_origin("https://evil.example"),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("token\""), "{body}");
    // The server's own page, and no Origin at all (a CLI): allowed.
    let own = format!("http://{host}");
    let (status, _, _) = http_request(
        &host,
        "GET",
        "/dev/token?user=alice",
        &with_origin(&own),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let (status, _, _) = http_get(server.addr, "/dev/token?user=alice").await;
    assert_eq!(status, 200);
    // A WebSocket from another site's page, even with a valid token.
    let token = server.token("alice");
    let ws = |origin: &str| {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("{}?token={token}", server.url()),
            )
            .unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req
    };
    match tokio_tungstenite::connect_async(ws("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(tokio_tungstenite::connect_async(ws(&own)).await.is_ok());
    // DNS rebinding: another site's name pointed at 127.0.0.1 makes its
    // page "same origin"; a Host that is a name, not an address, is refused
    // (with its own Origin, or with none, as a same-origin GET sends).
    let port = server.addr.port();
    let rebound = format!("evil.example:{port}");
    for headers in [
        vec![
            ("Host".to_string(), rebound.clone()),
            ("Origin".to_string(), format!("http://{rebound}")),
        ],
        vec![("Host".to_string(), rebound.clone())],
    ] {
        let (status, _, body) = http_request(&host, "GET", "/dev/token?user=admin", &headers, b"")
            .await
            .unwrap();
        assert_eq!(status, 403, "{headers:?}: {body}");
    }
    let mut rebound_ws = ws(&format!("http://{rebound}"));
    rebound_ws
        .headers_mut()
        .insert("host", rebound.parse().unwrap());
    match tokio_tungstenite::connect_async(rebound_ws).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    // localhost is fine.
    let local = format!("localhost:{port}");
    let (status, _, _) = http_request(
        &host,
        "GET",
        "/dev/token?user=alice",
        &[("Host".to_string(), local)],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    server.stop().await;
}
