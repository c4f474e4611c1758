//! Handing one event to a flow's target: an HTTPS POST signed with
//! `Relay365-Signature`, EventBridge `PutEvents`, or an Amazon Connect task
//! or email contact ([`crate::connect`]); and what the answer
//! means for the queue record. Every refusal a person can fix (a 401 or 403
//! from a receiver whose key or route is wrong, a 404 from a moved endpoint,
//! any 5xx or timeout) is retried, so the record ends in the dead-letter
//! queue with its alarm rather than being lost; only 410 Gone, the
//! receiver's own way of saying "stop", ends delivery to that target.

use relay365::model::target::Target;
use serde_json::Value;

use crate::connect::deliver_task;
use crate::connect::email::{EmailTarget, deliver_email};
use crate::destination::MailSource;
use crate::dispatcher::Dispatcher;
use crate::fit::{AFTER_413_LIMIT, EVENTBRIDGE_DETAIL_LIMIT, WEBHOOK_LIMIT, fit};

pub use crate::destination::{Delivery, Destination, TARGET_TIMEOUT};

/// Delivers one event to a target.
///
/// # Errors
/// [`Delivery`] saying whether to retry.
pub async fn deliver(d: &Dispatcher, to: &Destination, event: &Value) -> Result<(), Delivery> {
    deliver_from(d, to, event, None).await
}

/// [`deliver`], with where the event's mail can be read again (`source`).
pub(crate) async fn deliver_from(
    d: &Dispatcher,
    to: &Destination,
    event: &Value,
    source: Option<MailSource<'_>>,
) -> Result<(), Delivery> {
    let event_id = event["id"].as_str().unwrap_or_default().to_string();
    match &to.target {
        Target::Webhook(url) => {
            match post(d, to, url.as_str(), &fit(event, WEBHOOK_LIMIT), &event_id).await {
                // Too large for this receiver: the event again, cut small.
                Err((Some(413), _)) => {
                    tracing::warn!(event = %event_id, "the target refused the event as too large; sending it truncated");
                    post(d, to, url.as_str(), &fit(event, AFTER_413_LIMIT), &event_id)
                        .await
                        .map_err(|(_, e)| e)
                }
                r => r.map_err(|(_, e)| e),
            }
        }
        Target::EventBridge(bus) => {
            let body = serde_json::to_vec(&*fit(event, EVENTBRIDGE_DETAIL_LIMIT)).unwrap_or_default();
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
        Target::ConnectTask { instance_id, flow_id } => {
            deliver_task(d, to, instance_id, flow_id, event).await
        }
        Target::ConnectEmail {
            instance_id,
            flow_id,
            address,
        } => {
            let target = EmailTarget {
                instance_id,
                flow_id,
                address,
            };
            deliver_email(d, to, &target, event, source).await
        }
    }
}

/// One signed POST of an event; a refusal comes with the target's status.
async fn post(
    d: &Dispatcher,
    to: &Destination,
    url: &str,
    event: &Value,
    event_id: &str,
) -> Result<(), (Option<u16>, Delivery)> {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut req = d
        .services
        .http
        .post(url)
        .timeout(TARGET_TIMEOUT)
        .header("content-type", "application/json")
        .header("relay365-signature", d.events.get().await.signature(now, &body))
        .header("relay365-event-id", event_id)
        .header("relay365-delivery-attempt", to.attempt.to_string());
    if let Some(trace) = &to.trace {
        req = req.header("x-amzn-trace-id", trace);
    }
    let resp = req.body(body).send().await;
    match resp {
        Ok(r) if r.status().is_success() => {
            tracing::info!(event = %event_id, "event delivered");
            Ok(())
        }
        Ok(r) => {
            let status = r.status().as_u16();
            Err((Some(status), refusal(status)))
        }
        Err(e) if e.is_timeout() => Err((None, Delivery::Retry("target timed out".into()))),
        Err(_) => Err((None, Delivery::Retry("target unreachable".into()))),
    }
}

/// What a target's non-2xx answer means.
fn refusal(status: u16) -> Delivery {
    match status {
        410 => Delivery::Gone("the target answered 410 Gone".into()),
        401 | 403 => Delivery::Retry(format!(
            "the target answered {status}: check that it verifies Relay365-Signature with the current event signing secret and lets relay365 in"
        )),
        404 | 405 => Delivery::Retry(format!(
            "the target answered {status}: check the subscription's target URL"
        )),
        s if (400..500).contains(&s) && s != 408 && s != 429 => Delivery::Retry(format!(
            "the target refused the event ({s}): see the receiver's log"
        )),
        s => Delivery::Retry(format!("target answered {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gone_stops_delivery_and_every_other_refusal_is_retried_with_a_hint() {
        assert!(matches!(refusal(410), Delivery::Gone(_)));
        for status in [400, 401, 403, 404, 408, 413, 429, 500, 502, 503] {
            assert!(matches!(refusal(status), Delivery::Retry(_)), "{status}");
        }
        let Delivery::Retry(why) = refusal(401) else {
            unreachable!()
        };
        assert!(why.contains("event signing secret"), "{why}");
        let Delivery::Retry(why) = refusal(404) else {
            unreachable!()
        };
        assert!(why.contains("target URL"), "{why}");
    }
}
