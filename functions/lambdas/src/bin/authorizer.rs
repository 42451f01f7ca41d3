//! REQUEST authorizer on `$connect`: verifies the `?token=` JWT.
use chat_core::auth::Authenticator;
use chat_lambdas::{authorize, init_tracing};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let secret = std::env::var("CHAT_JWT_SECRET").map_err(|_| "CHAT_JWT_SECRET is not set")?;
    let auth = Authenticator::new(secret.as_bytes())?;
    let auth = &auth;
    run(service_fn(move |e: LambdaEvent<_>| async move {
        Ok::<_, Error>(authorize(auth, &e.payload))
    }))
    .await
}
