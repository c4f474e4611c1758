//! The `mail-dispatch` Lambda function: SQS batches in, partial batch
//! failures out; and Amazon Connect's contact events for agents' email
//! replies (from an EventBridge rule), whose copies it files in Sent Items
//! ([`mail_dispatch::connect::reply`]).

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use mail_dispatch::Dispatcher;
use serde_json::Value;

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
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let trace = event.context.xray_trace_id.clone();
        if event.payload.get("Records").is_none() && event.payload.get("detail-type").is_some() {
            // An EventBridge event: an error makes Lambda's asynchronous
            // retries bring it back.
            let filed = mail_dispatch::connect::reply::file_reply(dispatcher, &event.payload).await;
            relay365::metrics::flush(metrics, &event.context);
            return match filed {
                Ok(outcome) => {
                    tracing::info!(?outcome, "contact event handled");
                    Ok(Value::Null)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the agent's reply could not be filed yet");
                    Err(Error::from(e.to_string()))
                }
            };
        }
        let batch: SqsEvent = serde_json::from_value(event.payload)?;
        let deadline =
            mail_dispatch::invocation_deadline(event.context.deadline, std::time::SystemTime::now(), timeout);
        let answer = mail_dispatch::handle_traced(batch, dispatcher, Some(deadline), trace.as_deref()).await;
        relay365::metrics::flush(metrics, &event.context);
        Ok::<_, Error>(serde_json::to_value(answer)?)
    }))
    .await
}
