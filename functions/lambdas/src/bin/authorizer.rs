//! REQUEST authorizer on `$connect`: verifies the `?token=` JWT.
use chat_lambdas::authorizer::authenticator_from_env;
use chat_lambdas::emf::metered;
use chat_lambdas::{authorize, init_tracing, serve};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let auth = authenticator_from_env()?;
    let auth = &auth;
    serve(|| {
        service_fn(move |e: LambdaEvent<_>| async move {
            let allowed = metered("authorizer", async { authorize(auth, &e.payload) }).await;
            Ok::<_, Error>(allowed)
        })
    })
    .await
}
