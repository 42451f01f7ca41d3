//! `fanout`: delivers new messages to every member's connections; triggered
//! by the messages table's stream (in order per conversation).
use chat_lambdas::{fanout, init_tracing, Deps};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let deps = &*Box::leak(Box::new(Deps::from_env().await?));
    run(service_fn(move |e: LambdaEvent<_>| fanout(deps, e.payload))).await
}
