//! The `mail-dispatch` Lambda function: SQS batches in, partial batch failures out.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use mail_dispatch::Dispatcher;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let services = relay365::runtime::Services::from_env().await?;
    // Built on the first event for an `eventbridge:` target, from the SDK
    // configuration the secret store shares; HTTPS targets never pay for it.
    let eventbridge = relay365::runtime::LazyClient::new(aws_sdk_eventbridge::Client::new);
    let dispatcher = Dispatcher::new(services, Some(eventbridge));
    let dispatcher = &dispatcher;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(mail_dispatch::handle(event.payload, dispatcher).await)
    }))
    .await
}
