//! The `send-mail` Lambda function: API Gateway events and direct invocations
//! (Amazon Connect, JSON) through one handler.

#![recursion_limit = "256"]
use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use relay365::runtime::LazyClient;
use send_mail::Sender;
use send_mail::idempotency::{IdempotencyStore, StateKeys};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let services = relay365::runtime::Services::from_env().await?;
    // S3 and DynamoDB clients are built on first use, from the SDK
    // configuration the secret store shares: a cold start pays only for what
    // its first request needs.
    let s3 = services
        .config
        .attachments_bucket
        .as_ref()
        .map(|_| LazyClient::new(aws_sdk_s3::Client::new));
    let idempotency = Some(Arc::new(StateKeys::new(services.state.clone())) as Arc<dyn IdempotencyStore>);
    let sender = Sender {
        services: &services,
        s3,
        idempotency,
    };
    let sender = &sender;
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Error>(send_mail::handle_event(event.payload, sender).await)
        },
    ))
    .await
}
