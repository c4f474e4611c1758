//! Dispatch: from a queued notification to one signed event at the flow.
//!
//! For each SQS record: get a token for the connection, fetch the message or
//! event (only the fields the event needs), normalise it into relay365's event
//! shape, and deliver it to the subscription's target: an HTTPS POST signed
//! with `Relay365-Signature`, or EventBridge `PutEvents`. A target that fails
//! with 5xx, 429 or a timeout leaves the record for SQS to redeliver (partial
//! batch response); after the queue's maximum receives it lands in the
//! dead-letter queue. Records after a failure in the same FIFO group are
//! failed too, so a mailbox's events keep their order.
//!
//! Lifecycle notifications are acted on here: `reauthorizationRequired`
//! renews the subscription, `subscriptionRemoved` recreates it and resyncs,
//! `missed` resyncs with a delta query from the stored delta link. The
//! delivery ledger in the state table (one item per delivered mail, or per
//! version of a calendar event) is checked before fetching and written as
//! soon as the target took the event, so a duplicate notification, a
//! resync or a redelivered record never delivers the same item twice. A
//! revoked grant produces one `connection.reauth_required` event with the
//! link to reconnect.

pub mod normalise;

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use relay365::config::Target;
use relay365::connection::{Connection, Status, Subscription};
use relay365::graph::GraphError;
use relay365::queue::QueuedNotification;
use relay365::runtime::Services;
use relay365::scopes::Resource;
use relay365::store::SubscriptionChange;
use relay365::tokens::TokenError;
use relay365::{Sensitive, links, subscriptions};
use serde_json::Value;

/// The fields of a message an event needs.
pub const MESSAGE_SELECT: &str = "id,internetMessageId,conversationId,subject,from,toRecipients,ccRecipients,receivedDateTime,body,bodyPreview,hasAttachments,webLink";

/// The dispatcher's dependencies.
pub struct Dispatcher {
    /// Shared services.
    pub services: Services,
    eventbridge: Option<relay365::runtime::LazyClient<aws_sdk_eventbridge::Client>>,
}

impl Dispatcher {
    /// Wraps services; `eventbridge` is needed only for `eventbridge:` targets.
    pub fn new(
        services: Services,
        eventbridge: Option<relay365::runtime::LazyClient<aws_sdk_eventbridge::Client>>,
    ) -> Self {
        Self {
            services,
            eventbridge,
        }
    }
}

/// What became of one record.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Done (nothing to deliver, or delivered earlier): delete it.
    Done,
    /// Delivered now, and the notification time recorded with it: delete it.
    Delivered,
    /// Try again later: report it as a batch item failure.
    Retry(String),
}

fn retry(what: impl std::fmt::Display) -> Outcome {
    Outcome::Retry(what.to_string())
}

/// Processes a batch; returns the records to retry.
pub async fn handle(event: SqsEvent, d: &Dispatcher) -> SqsBatchResponse {
    let mut failures = Vec::new();
    let mut failed_groups: Vec<String> = Vec::new();
    // Each connection is read fresh once per batch (one invocation); nothing
    // outlives it.
    let mut connections: HashMap<String, Connection> = HashMap::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let group = record
            .attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_default();
        if !group.is_empty() && failed_groups.contains(&group) {
            failures.push(id);
            continue;
        }
        let outcome = match record
            .body
            .as_deref()
            .map(serde_json::from_str::<QueuedNotification>)
        {
            Some(Ok(n)) => process(d, &n, &mut connections).await,
            _ => {
                tracing::error!(message_id = %id, "dropping a queue record that is not a relay365 notification");
                Outcome::Done
            }
        };
        if let Outcome::Retry(why) = outcome {
            tracing::warn!(message_id = %id, reason = %why, "record left for retry");
            failures.push(id);
            if !group.is_empty() {
                failed_groups.push(group);
            }
        }
    }
    let mut resp = SqsBatchResponse::default();
    resp.batch_item_failures = failures
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    resp
}

async fn process(d: &Dispatcher, n: &QueuedNotification, cache: &mut HashMap<String, Connection>) -> Outcome {
    let s = &d.services;
    if !cache.contains_key(&n.connection_id) {
        match s.state.connection(&n.connection_id).await {
            Ok(Some(c)) => {
                cache.insert(n.connection_id.clone(), c);
            }
            Ok(None) => {
                tracing::info!(connection = %n.connection_id, "notification for a deleted connection dropped");
                return Outcome::Done;
            }
            // A damaged record is for a person to fix: keep the notification
            // (it ends in the dead-letter queue), serve the other connections.
            Err(e) => return retry(e),
        }
    }
    let Some(conn) = cache.get(&n.connection_id).cloned() else {
        return Outcome::Done;
    };
    if conn.status != Status::Active {
        // Already reported when it stopped working; nothing can be fetched.
        return Outcome::Done;
    }
    let Some(sub) = conn
        .subscriptions
        .iter()
        .find(|x| x.id == n.subscription_id)
        .cloned()
    else {
        tracing::info!(connection = %conn.id, subscription = %n.subscription_id, "notification for an unknown subscription dropped");
        return Outcome::Done;
    };
    let Some(target) = target_of(s, &sub) else {
        tracing::error!(connection = %conn.id, "no target for events: set the subscription's target or RELAY365_DEFAULT_TARGET");
        return Outcome::Done;
    };
    let token = match s.tokens.access_token(&conn).await {
        Ok(t) => t,
        Err(TokenError::ReauthRequired { reason, .. }) => {
            // The token code has marked the connection; tell the flow once.
            cache.remove(&conn.id);
            let event = normalise::reauth_event(
                &conn,
                &reason,
                s.config
                    .public_url
                    .as_ref()
                    .map(|u| links::connect_url(u, &s.signer, &conn.id)),
            );
            return match deliver(d, &target, &event).await {
                Ok(()) | Err(Delivery::Drop(_)) => Outcome::Done,
                Err(Delivery::Retry(why)) => retry(why),
            };
        }
        Err(e) if e.is_retryable() => return retry(e),
        Err(e) => {
            tracing::error!(connection = %conn.id, error = %e, "no token; notification dropped");
            return Outcome::Done;
        }
    };
    let outcome = match n.lifecycle_event.as_deref() {
        Some("reauthorizationRequired") => {
            cache.remove(&conn.id);
            sub_outcome(
                subscriptions::renew_or_recreate(s, &conn, &sub, &token)
                    .await
                    .map(|_| ()),
            )
        }
        Some("subscriptionRemoved") => {
            cache.remove(&conn.id);
            // The item keeps the removed subscription's delta link, so the
            // resync starts where it left off, not at the new one's start.
            if let Err(e) = subscriptions::create(s, &conn, &sub, &token).await {
                return sub_outcome(Err(e));
            }
            resync(d, &conn, &sub, &token, &target).await
        }
        Some("missed") => resync(d, &conn, &sub, &token, &target).await,
        Some(other) => {
            tracing::warn!(event = other, "unknown lifecycle event ignored");
            Outcome::Done
        }
        None => {
            let Some(item) = n.resource_id.as_deref() else {
                return Outcome::Done;
            };
            match sub.resource {
                Resource::Mail => deliver_message(d, &conn, &sub, &token, &target, item).await,
                Resource::Calendar => {
                    deliver_calendar(
                        d,
                        &conn,
                        &sub,
                        &token,
                        &target,
                        item,
                        n.change_type.as_deref().unwrap_or("updated"),
                    )
                    .await
                }
            }
        }
    };
    if outcome != Outcome::Delivered {
        let seen = SubscriptionChange::new().last_notification_at(time::OffsetDateTime::now_utc());
        if let Err(e) = s.state.update_subscription(&conn.id, &sub.key, seen).await {
            tracing::warn!(connection = %conn.id, error = %e, "could not record the notification time");
        }
    }
    outcome
}

fn target_of(s: &Services, sub: &Subscription) -> Option<Target> {
    match &sub.target {
        Some(t) => Target::parse(t).ok(),
        None => s.config.default_target.clone(),
    }
}

fn graph_outcome(r: Result<(), GraphError>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(e) if e.is_retryable() => retry(e),
        Err(e) => {
            tracing::error!(error = %e, "Graph refused; not retrying");
            Outcome::Done
        }
    }
}

fn sub_outcome(r: Result<(), subscriptions::SubscriptionError>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(e) if e.is_retryable() => retry(e),
        Err(e) => {
            tracing::error!(error = %subscriptions::explain(&e), "subscription could not be fixed; not retrying");
            Outcome::Done
        }
    }
}

/// After the target took an event: the ledger entry (so nothing is
/// delivered twice, whoever sees the item next) and the subscription's
/// delivery time and watermark. A failure here is logged, not retried: the
/// event is delivered, and a retry would deliver it again.
async fn delivered(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    item: &str,
    event: &Value,
    received: Option<&str>,
) {
    let s = &d.services;
    let event_id = event["id"].as_str().unwrap_or_default();
    if let Err(e) = s.state.mark_delivered(&conn.id, item, event_id).await {
        tracing::error!(connection = %conn.id, event = event_id, error = %e, "delivered, but the ledger could not record it");
    }
    let now = time::OffsetDateTime::now_utc();
    let change = SubscriptionChange::new()
        .last_delivery_at(now)
        .last_notification_at(now);
    if let Err(e) = s
        .state
        .record_delivery(&conn.id, &sub.key, change, received)
        .await
    {
        tracing::warn!(connection = %conn.id, error = %e, "could not record the delivery time");
    }
}

async fn deliver_message(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
    target: &Target,
    id: &str,
) -> Outcome {
    let s = &d.services;
    match s.state.is_delivered(&conn.id, id).await {
        Ok(true) => return Outcome::Done,
        Ok(false) => {}
        Err(e) => return retry(e),
    }
    let base = format!("{}/messages/{id}", subscriptions::owner(conn));
    let message: Value = match s
        .graph
        .get_json(&format!("{base}?$select={MESSAGE_SELECT}"), token)
        .await
    {
        Ok(m) => m,
        Err(e) if e.status() == Some(404) => return Outcome::Done,
        Err(e) => return graph_outcome(Err(e)),
    };
    let attachments = if message["hasAttachments"].as_bool() == Some(true) {
        match s
            .graph
            .get_json::<Value>(
                &format!("{base}/attachments?$select=name,contentType,size"),
                token,
            )
            .await
        {
            Ok(v) => v["value"].as_array().cloned().unwrap_or_default(),
            Err(e) => return graph_outcome(Err(e)),
        }
    } else {
        Vec::new()
    };
    let event = normalise::mail_event(conn, &message, &attachments);
    match deliver(d, target, &event).await {
        Ok(()) | Err(Delivery::Drop(_)) => {
            delivered(d, conn, sub, id, &event, message["receivedDateTime"].as_str()).await;
            Outcome::Delivered
        }
        Err(Delivery::Retry(why)) => retry(why),
    }
}

async fn deliver_calendar(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
    target: &Target,
    id: &str,
    change: &str,
) -> Outcome {
    let s = &d.services;
    let item = if change == "deleted" {
        None
    } else {
        match s
            .graph
            .get_json::<Value>(&format!("{}/events/{id}", subscriptions::owner(conn)), token)
            .await
        {
            Ok(v) => Some(v),
            // Deleted since the notification: nothing current to report.
            Err(e) if e.status() == Some(404) => return Outcome::Done,
            Err(e) => return graph_outcome(Err(e)),
        }
    };
    // One ledger entry per version of the event: two edits are two events,
    // the same edit announced twice is one.
    let version = item
        .as_ref()
        .and_then(|v| v["changeKey"].as_str().or_else(|| v["@odata.etag"].as_str()))
        .unwrap_or(change);
    let ledger_key = format!("{id}#{version}");
    match s.state.is_delivered(&conn.id, &ledger_key).await {
        Ok(true) => return Outcome::Done,
        Ok(false) => {}
        Err(e) => return retry(e),
    }
    let event = normalise::calendar_event(conn, change, id, item.as_ref());
    match deliver(d, target, &event).await {
        Ok(()) | Err(Delivery::Drop(_)) => {
            delivered(d, conn, sub, &ledger_key, &event, None).await;
            Outcome::Delivered
        }
        Err(Delivery::Retry(why)) => retry(why),
    }
}

async fn resync(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
    target: &Target,
) -> Outcome {
    if sub.resource != Resource::Mail {
        tracing::info!(connection = %conn.id, "calendar resync is not supported; the next change will be delivered");
        return Outcome::Done;
    }
    let start = sub
        .delta_link
        .clone()
        .unwrap_or_else(|| format!("{}/delta", subscriptions::graph_resource(conn, sub)));
    let (ids, link) = match subscriptions::delta(&d.services, token, &start).await {
        Ok(x) => x,
        Err(e) => return graph_outcome(Err(e)),
    };
    tracing::info!(connection = %conn.id, changes = ids.len(), "resync");
    for id in ids {
        if let Outcome::Retry(why) = deliver_message(d, conn, sub, token, target, &id).await {
            return Outcome::Retry(why);
        }
    }
    if let Err(e) = d
        .services
        .state
        .update_subscription(&conn.id, &sub.key, SubscriptionChange::new().delta_link(&link))
        .await
    {
        return retry(e);
    }
    Outcome::Done
}

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
                .header("relay365-signature", s.signer.event_signature(now, &body))
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
            let Some(eb) = &d.eventbridge else {
                return Err(Delivery::Drop("no EventBridge client".into()));
            };
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
