//! `sync` route: runs the action and posts the answer to the caller.
use chat_lambdas::emf::metered;
use chat_lambdas::{init_tracing, message, serve, Deps};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    // Built once per cold start, borrowed by every invocation.
    let deps = Deps::from_env().await?;
    let deps = &deps;
    serve(|| service_fn(move |e: LambdaEvent<_>| metered("sync", message(deps, e.payload)))).await
}
