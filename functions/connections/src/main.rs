//! The `connections` Lambda function: the admin API (API Gateway events) and
//! the scheduled subscription renewal (EventBridge events), one binary.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let services = relay365::services::Services::from_env().await?;
    let services = &services;
    let metrics = relay365::metrics::init("connections");
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let answer = connections::handle_event(event.payload, services).await;
            relay365::metrics::flush(
                metrics,
                &event.context.request_id,
                event.context.xray_trace_id.as_deref(),
            );
            Ok::<_, Error>(answer)
        },
    ))
    .await
}
