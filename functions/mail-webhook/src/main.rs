//! The `mail-webhook` Lambda function.
//!
//! Start-up does no network I/O and builds no AWS client: settings come from
//! the environment, and the SQS client and the secret store are built when
//! the first real notification arrives. A cold start that only answers Graph's
//! validation handshake touches nothing but the request.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use mail_webhook::Webhook;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let webhook = Webhook::from_env()?;
    let webhook = &webhook;
    let metrics = relay365::metrics::init("mail-webhook");
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let answer = mail_webhook::handle_event(event.payload, webhook).await;
            relay365::metrics::flush(metrics, &event.context);
            Ok::<_, Error>(answer)
        },
    ))
    .await
}
