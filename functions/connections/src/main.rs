//! The `connections` Lambda function: the admin API (API Gateway events) and
//! the scheduled subscription renewal (EventBridge events), one binary.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let services = relay365::services::Services::from_env().await?;
    let services = &services;
    let queue = connections::configured_queue(services);
    let queue = queue.as_ref().map(|q| q as &dyn relay365::aws::queue::Queue);
    let timeout = services
        .config
        .function_timeout
        .unwrap_or(connections::DEFAULT_TIMEOUT);
    let metrics = relay365::metrics::init("connections");
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let deadline = relay365::lambda::invocation_deadline(
                event.context.deadline,
                std::time::SystemTime::now(),
                timeout,
            );
            let answer = connections::handle_event_until(event.payload, services, queue, deadline).await;
            relay365::metrics::flush(metrics, &event.context);
            Ok::<_, Error>(answer)
        },
    ))
    .await
}
