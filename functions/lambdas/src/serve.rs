//! The functions' runtime loop, kept alive: `lambda_runtime::run` ends on
//! any failed call to the runtime API (a connection dropped while fetching
//! the next event or posting an answer), and with it the process. Under
//! `cargo lambda watch` such drops happen under load (CI saw several in
//! one run, each ending a function process; the one invocation whose
//! answer was lost is failed by the invoker's timeout). Here the loop
//! starts again after 100 ms, with a fresh runtime client.

use bytes::Bytes;
use futures_util::Stream;
use lambda_runtime::{Diagnostic, Error, IntoFunctionResponse, LambdaEvent, Service};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// Runs `make()`'s service for every event, as `lambda_runtime::run`
/// does, starting it again when the runtime API fails.
pub async fn serve<M, F, A, R, B, S, D, E>(make: M) -> Result<(), Error>
where
    M: Fn() -> F,
    F: Service<LambdaEvent<A>, Response = R>,
    F::Future: Future<Output = Result<R, F::Error>>,
    F::Error: Into<Diagnostic> + Debug,
    A: for<'de> Deserialize<'de>,
    R: IntoFunctionResponse<B, S>,
    B: Serialize,
    S: Stream<Item = Result<D, E>> + Unpin + Send + 'static,
    D: Into<Bytes> + Send,
    E: Into<Error> + Send + Debug,
{
    loop {
        match lambda_runtime::run(make()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "the Lambda runtime API failed; polling for the next event again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
