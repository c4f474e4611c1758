//! The `mail-webhook` Lambda function.
//!
//! Start-up does no network I/O and builds no AWS client: settings come from
//! the environment, and the SQS client and the secret store are built when
//! the first real notification arrives. A cold start that only answers Graph's
//! validation handshake touches nothing but the request.

use std::sync::Arc;

use lambda_http::{Error, run, service_fn};
use mail_webhook::{LazySqs, Webhook};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = relay365::Config::from_env()?;
    let queue_url = config
        .queue_url
        .clone()
        .ok_or("RELAY365_QUEUE_URL is required by mail-webhook")?;
    let webhook = Webhook::lazy(config, Arc::new(LazySqs::new(queue_url)));
    let webhook = &webhook;
    run(service_fn(move |req| async move {
        Ok::<_, Error>(mail_webhook::handle(req, webhook).await)
    }))
    .await
}
