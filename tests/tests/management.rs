//! The `@connections` management API on its own listener, driven by the real
//! `aws-sdk-apigatewaymanagement` client (through the API Gateway delivery
//! adapter the Lambda functions use).

use chat_core::ports::{ConnectionRecord, Delivery, Outgoing, PostError};
use chat_dynamo::apigw::ApiGatewayDelivery;
use chat_tests::*;
use serde_json::json;

async fn delivery(server: &TestServer) -> ApiGatewayDelivery {
    // The SDK signs with the credential the test servers verify, passed
    // explicitly (no process environment changed under other tests).
    let cred = management_credential();
    ApiGatewayDelivery::signed_with(&cred.key_id, &cred.secret)
        .await
        .with_endpoint(format!("http://{}", server.management))
}

fn outgoing(json: &'static str) -> Outgoing {
    Outgoing::raw(json)
}

fn rec(id: &str) -> ConnectionRecord {
    ConnectionRecord {
        connection_id: id.into(),
        user_id: "x".into(),
        endpoint: "ignored".into(),
        connected_at_ms: 0,
        ..Default::default()
    }
}

#[tokio::test]
async fn posts_reach_the_connection_and_unknown_connections_are_gone() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let d = delivery(&server).await;
    assert_eq!(
        d.post(&rec("no-such-connection"), &outgoing("{}")).await,
        Err(PostError::Gone)
    );

    let id = server_connection_id(&server, "alice").await;
    d.post(&rec(&id), &outgoing(r#"{"type":"pong"}"#))
        .await
        .unwrap();
    assert_eq!(alice.recv().await, json!({"type":"pong"}));

    let host = server.management.to_string();
    let path = format!("/@connections/{id}");
    let (status, body) =
        signed_request("GET", &host, &path, b"", Some(&management_credential()), 0).await;
    assert_eq!(status, 200);
    assert!(body.contains("connectedAt"), "{body}");
    let staged = format!("/dev/@connections/{id}");
    let (status, _) = signed_request(
        "GET",
        &host,
        &staged,
        b"",
        Some(&management_credential()),
        0,
    )
    .await;
    assert_eq!(status, 200, "stage-prefixed path works too");
    let (status, _) = signed_request(
        "DELETE",
        &host,
        &path,
        b"",
        Some(&management_credential()),
        0,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(alice.expect_close().await, 1000);
    let (status, _) =
        signed_request("GET", &host, &path, b"", Some(&management_credential()), 0).await;
    assert_eq!(status, 410);
    server.stop().await;
}

#[tokio::test]
async fn unsigned_wrongly_signed_and_stale_requests_get_403_and_change_nothing() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let id = server_connection_id(&server, "alice").await;
    let host = server.management.to_string();
    let path = format!("/@connections/{id}");
    let (status, _) = raw("DELETE", &format!("http://{host}{path}")).await;
    assert_eq!(status, 403, "unsigned");
    let stranger = chat_management::sigv4::Credential {
        key_id: "test".into(),
        secret: "not the secret".into(),
    };
    assert_eq!(
        signed_request("DELETE", &host, &path, b"", Some(&stranger), 0)
            .await
            .0,
        403,
        "wrong secret"
    );
    let other_key = chat_management::sigv4::Credential {
        key_id: "someone-else".into(),
        ..management_credential()
    };
    assert_eq!(
        signed_request("DELETE", &host, &path, b"", Some(&other_key), 0)
            .await
            .0,
        403,
        "unknown key"
    );
    // A request signed six minutes ago (a replay) is refused.
    assert_eq!(
        signed_request(
            "DELETE",
            &host,
            &path,
            b"",
            Some(&management_credential()),
            360
        )
        .await
        .0,
        403,
        "stale"
    );
    // None of it touched alice's connection; a signed request does.
    alice.send(json!({"action":"ping"})).await;
    assert_eq!(alice.expect("pong").await, json!({"type":"pong"}));
    assert_eq!(
        signed_request(
            "DELETE",
            &host,
            &path,
            b"",
            Some(&management_credential()),
            0
        )
        .await
        .0,
        204
    );
    assert_eq!(alice.expect_close().await, 1000);
    server.stop().await;
}

#[tokio::test]
async fn the_client_facing_listener_does_not_serve_the_management_api() {
    let server = TestServer::start().await;
    let _alice = server.client("alice").await;
    let id = server_connection_id(&server, "alice").await;
    let (status, _) = raw("POST", &format!("http://{}/@connections/{id}", server.addr)).await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// The single open connection id of `user`, from the server's connection map.
async fn server_connection_id(server: &TestServer, user: &str) -> String {
    for _ in 0..50 {
        if let Some(c) = server.connections.for_user(user).await.unwrap().first() {
            return c.connection_id.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{user} has no connection");
}

/// A bare, unsigned HTTP/1.1 request; returns the status and body.
async fn raw(method: &str, url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    signed_request(method, host, path, b"", None, 0).await
}

#[tokio::test]
async fn an_unsigned_body_is_never_read_and_a_signed_one_is_capped_at_128_kb() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let host = server.management.to_string();
    // An unsigned POST announcing 255 KB and sending 1 KB: refused at its
    // headers, while the body is still on its way (nothing is buffered).
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    s.write_all(
        format!("POST /@connections/x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 262100\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(&[b'a'; 1024]).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("an answer before the body is complete")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 403"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Signed, but over API Gateway's 128 KB: 413. At it: accepted (410,
    // as the connection does not exist).
    let cred = management_credential();
    let big = vec![b'x'; 200 * 1024];
    let (status, _) = signed_request("POST", &host, "/@connections/x", &big, Some(&cred), 0).await;
    assert_eq!(status, 413);
    let fits = vec![b'x'; 128 * 1024];
    let (status, _) = signed_request("POST", &host, "/@connections/x", &fits, Some(&cred), 0).await;
    assert_eq!(status, 410);
    server.stop().await;
}
