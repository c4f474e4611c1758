//! The `mail-dispatch` Lambda function: SQS batches in, partial batch failures out.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use mail_dispatch::Dispatcher;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let services = relay365::runtime::Services::from_env().await?;
    // The same SDK configuration (and HTTPS client) the secret store uses.
    let sdk = relay365::runtime::aws_sdk_config().await;
    let dispatcher = Dispatcher::new(services, Some(aws_sdk_eventbridge::Client::new(sdk)));
    let dispatcher = &dispatcher;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(mail_dispatch::handle(event.payload, dispatcher).await)
    }))
    .await
}
