//! The `oauth-callback` Lambda function: reads settings and secrets once, then serves sign-in.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let services = relay365::services::Services::from_env().await?;
    let services = &services;
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Error>(oauth_callback::handle_event(event.payload, services).await)
        },
    ))
    .await
}
