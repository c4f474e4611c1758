//! The `send-mail` Lambda function: API Gateway events and direct invocations
//! (Amazon Connect, JSON) through one handler.

#![recursion_limit = "256"]
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use send_mail::Sender;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let services = relay365::services::Services::from_env().await?;
    let sender = Sender::new(&services);
    let sender = &sender;
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Error>(send_mail::handle_event(event.payload, sender).await)
        },
    ))
    .await
}
