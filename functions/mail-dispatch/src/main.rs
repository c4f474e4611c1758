//! The `mail-dispatch` Lambda function: SQS batches in, partial batch failures out.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use mail_dispatch::Dispatcher;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let dispatcher = Dispatcher::from_env().await?;
    let dispatcher = &dispatcher;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        // The invocation's deadline (unix milliseconds) as an instant.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let left = std::time::Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        let deadline = std::time::Instant::now() + left;
        Ok::<_, Error>(mail_dispatch::handle_until(event.payload, dispatcher, Some(deadline)).await)
    }))
    .await
}
