//! The `mail-webhook` Lambda function.
//!
//! Start-up does no network I/O: settings come from the environment and the
//! AWS clients connect lazily, so the validation handshake is answered on a
//! cold start without touching Secrets Manager or SQS.

use std::sync::Arc;

use lambda_http::{Error, run, service_fn};
use mail_webhook::Webhook;
use relay365::queue::SqsQueue;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = relay365::Config::from_env()?;
    let queue_url = config
        .queue_url
        .clone()
        .ok_or("RELAY365_QUEUE_URL is required by mail-webhook")?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let queue = Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), queue_url));
    let store = relay365::runtime::secret_store(&config).await?;
    let webhook = Webhook::new(store, config.signing_key_secret_id.clone(), queue);
    let webhook = &webhook;
    run(service_fn(move |req| async move {
        Ok::<_, Error>(mail_webhook::handle(req, webhook).await)
    }))
    .await
}
