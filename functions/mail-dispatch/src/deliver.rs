//! Handing one event to a flow's target: an HTTPS POST signed with
//! `Relay365-Signature`, or EventBridge `PutEvents`; and what the answer
//! means for the queue record (delivered, retry, or refused for good).

use std::time::Duration;

use relay365::model::target::Target;
use serde_json::Value;

use crate::dispatcher::Dispatcher;

/// Why an event was not delivered.
#[derive(Debug)]
pub enum Delivery {
    /// Try again later (5xx, 429, timeout, network).
    Retry(String),
    /// The target refused it for good (other 4xx): logged and dropped.
    Drop(String),
}

/// Delivers one event to a target.
///
/// # Errors
/// [`Delivery`] saying whether to retry.
pub async fn deliver(d: &Dispatcher, target: &Target, event: &Value) -> Result<(), Delivery> {
    let s = &d.services;
    let body = serde_json::to_vec(event).unwrap_or_default();
    let event_id = event["id"].as_str().unwrap_or_default().to_string();
    match target {
        Target::Webhook(url) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let resp = s
                .http
                .post(url.as_str())
                .timeout(Duration::from_secs(10))
                .header("content-type", "application/json")
                .header("relay365-signature", d.events.get().await.signature(now, &body))
                .header("relay365-event-id", &event_id)
                .body(body)
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(event = %event_id, "event delivered");
                    Ok(())
                }
                Ok(r)
                    if r.status().as_u16() == 408
                        || r.status().as_u16() == 429
                        || r.status().is_server_error() =>
                {
                    Err(Delivery::Retry(format!(
                        "target answered {}",
                        r.status().as_u16()
                    )))
                }
                Ok(r) => {
                    tracing::error!(event = %event_id, status = r.status().as_u16(), "target refused the event; dropped");
                    Err(Delivery::Drop(format!("target answered {}", r.status().as_u16())))
                }
                Err(e) if e.is_timeout() => Err(Delivery::Retry("target timed out".into())),
                Err(_) => Err(Delivery::Retry("target unreachable".into())),
            }
        }
        Target::EventBridge(bus) => {
            let eb = &d.eventbridge;
            let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .event_bus_name(bus)
                .source("relay365")
                .detail_type(event["type"].as_str().unwrap_or("relay365.event"))
                .detail(String::from_utf8_lossy(&body))
                .build();
            match eb.get().await.put_events().entries(entry).send().await {
                Ok(out) if out.failed_entry_count() == 0 => Ok(()),
                Ok(_) => Err(Delivery::Retry("EventBridge refused the entry".into())),
                Err(_) => Err(Delivery::Retry("EventBridge unreachable".into())),
            }
        }
    }
}
