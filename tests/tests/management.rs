//! The `@connections` management API on its own listener, driven by the real
//! `aws-sdk-apigatewaymanagement` client (through the API Gateway delivery
//! adapter the Lambda functions use).

use chat_core::ports::{ConnectionRecord, Delivery, Outgoing, PostError};
use chat_dynamo::apigw::ApiGatewayDelivery;
use chat_tests::*;
use serde_json::json;

async fn delivery(server: &TestServer) -> ApiGatewayDelivery {
    // SigV4 needs some credentials; the management API does not check them.
    std::env::set_var(
        "AWS_ACCESS_KEY_ID",
        std::env::var("AWS_ACCESS_KEY_ID").unwrap_or("test".into()),
    );
    std::env::set_var(
        "AWS_SECRET_ACCESS_KEY",
        std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or("test".into()),
    );
    std::env::set_var(
        "AWS_REGION",
        std::env::var("AWS_REGION").unwrap_or("us-east-1".into()),
    );
    let conf = chat_dynamo::config::sdk_config(None).await;
    ApiGatewayDelivery::new(conf, Some(format!("http://{}", server.management)))
}

fn outgoing(json: &'static str) -> Outgoing {
    Outgoing {
        json: json.as_bytes().to_vec().into(),
        seq: None,
    }
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

    let http = format!("http://{}/@connections/{id}", server.management);
    let (status, body) = raw("GET", &http).await;
    assert_eq!(status, 200);
    assert!(body.contains("connectedAt"), "{body}");
    let (status, _) = raw(
        "GET",
        &format!("http://{}/dev/@connections/{id}", server.management),
    )
    .await;
    assert_eq!(status, 200, "stage-prefixed path works too");
    let (status, _) = raw("DELETE", &http).await;
    assert_eq!(status, 204);
    assert_eq!(alice.expect_close().await, 1000);
    let (status, _) = raw("GET", &http).await;
    assert_eq!(status, 410);
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

/// A bare HTTP/1.1 request; returns the status and body.
async fn raw(method: &str, url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}
