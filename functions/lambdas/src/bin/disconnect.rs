//! `$disconnect` route: forgets the connection.
use chat_lambdas::emf::metered;
use chat_lambdas::{disconnect, init_tracing, serve, Deps};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    // Built once per cold start, borrowed by every invocation.
    let deps = Deps::from_env().await?;
    let deps = &deps;
    serve(|| {
        service_fn(move |e: LambdaEvent<_>| metered("disconnect", disconnect(deps, e.payload)))
    })
    .await
}
