//! `serve`'s loop ends once the runtime API is gone, instead of polling an
//! address nobody serves (docs/functions.md). Its own test binary: it sets
//! the runtime's environment variables.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_function_whose_runtime_api_is_gone_ends_instead_of_polling_forever() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (k, v) in [
        ("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}")),
        ("AWS_LAMBDA_FUNCTION_NAME", "gone".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1".into()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "s".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "g".into()),
    ] {
        // Set before anything else in this test binary reads them.
        std::env::set_var(k, v);
    }
    let started = Instant::now();
    let served = tokio::time::timeout(
        Duration::from_secs(30),
        chat_lambdas::serve_until(
            || service_fn(|e: LambdaEvent<Value>| async move { Ok::<_, Error>(e.payload) }),
            Duration::from_secs(1),
        ),
    )
    .await
    .expect("serve gave up on a runtime API that is gone");
    assert!(served.is_err(), "it ends with the runtime API's error");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it tried for the whole window first"
    );
}
