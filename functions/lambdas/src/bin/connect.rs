//! `$connect` route: records the connection (after the authorizer allowed it).
use chat_lambdas::emf::metered;
use chat_lambdas::{connect, init_tracing, Deps};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    // Built once per cold start, borrowed by every invocation.
    let deps = Deps::from_env().await?;
    let deps = &deps;
    run(service_fn(move |e: LambdaEvent<_>| {
        metered("connect", connect(deps, e.payload))
    }))
    .await
}
