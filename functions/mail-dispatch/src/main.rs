//! The `mail-dispatch` Lambda function: SQS batches in, partial batch failures out.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use mail_dispatch::Dispatcher;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let dispatcher = Dispatcher::from_env().await?;
    let dispatcher = &dispatcher;
    let timeout = dispatcher
        .services
        .config
        .function_timeout
        .unwrap_or(mail_dispatch::DEFAULT_TIMEOUT);
    let metrics = relay365::metrics::init("mail-dispatch");
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline =
            mail_dispatch::invocation_deadline(event.context.deadline, std::time::SystemTime::now(), timeout);
        let trace = event.context.xray_trace_id.clone();
        let answer =
            mail_dispatch::handle_traced(event.payload, dispatcher, Some(deadline), trace.as_deref()).await;
        relay365::metrics::flush(metrics, &event.context.request_id, trace.as_deref());
        Ok::<_, Error>(answer)
    }))
    .await
}
