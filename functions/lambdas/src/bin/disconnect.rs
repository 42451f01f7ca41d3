//! `$disconnect` route: forgets the connection.
use chat_lambdas::{disconnect, init_tracing, Deps};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let deps = &*Box::leak(Box::new(Deps::from_env().await?));
    run(service_fn(move |e: LambdaEvent<_>| {
        disconnect(deps, e.payload)
    }))
    .await
}
