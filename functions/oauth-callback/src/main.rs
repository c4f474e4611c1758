//! The `oauth-callback` Lambda function: reads settings and secrets once, then serves sign-in.

use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let services = relay365::services::Services::from_env().await?;
    let services = &services;
    run(service_fn(move |req| async move {
        Ok::<_, Error>(oauth_callback::handle(req, services).await)
    }))
    .await
}
