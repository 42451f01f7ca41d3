//! The functions' runtime loop, kept alive: `lambda_runtime::run` ends on
//! any failed call to the runtime API (a connection dropped while fetching
//! the next event or posting an answer), and with it the process. Under
//! `cargo lambda watch` such drops happen under load (CI saw several in
//! one run, each ending a function process; the one invocation whose
//! answer was lost is failed by the invoker's timeout). Here the loop
//! starts again after 100 ms, with a fresh runtime client, until the
//! runtime API has failed every attempt for [`GIVE_UP_AFTER`]: then it is
//! gone (the `cargo lambda watch` that started the process has ended) and
//! so does the process, instead of polling an address nobody serves.

use bytes::Bytes;
use futures_util::Stream;
use lambda_runtime::{Diagnostic, Error, IntoFunctionResponse, LambdaEvent, Service};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long the runtime API may fail every attempt before [`serve`] ends.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// A run of the loop that lasted this long reached the runtime API: the
/// failures before it do not count towards giving up.
const LIVED: Duration = Duration::from_secs(1);

/// Runs `make()`'s service for every event, as `lambda_runtime::run`
/// does, starting it again when the runtime API fails (and ending once it
/// has failed every attempt for [`GIVE_UP_AFTER`]).
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
    serve_until(make, GIVE_UP_AFTER).await
}

/// [`serve`], giving up after `give_up_after` of failures.
pub async fn serve_until<M, F, A, R, B, S, D, E>(
    make: M,
    give_up_after: Duration,
) -> Result<(), Error>
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
    let mut failing_since: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let e = match lambda_runtime::run(make()).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if started.elapsed() >= LIVED {
            failing_since = None;
        }
        let since = *failing_since.get_or_insert(started);
        if since.elapsed() >= give_up_after {
            tracing::error!(error = %e, failing_for = ?since.elapsed(), "the Lambda runtime API is gone; ending");
            return Err(e);
        }
        tracing::error!(error = %e, "the Lambda runtime API failed; polling for the next event again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
