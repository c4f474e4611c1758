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
//! `missed` resyncs with a delta query from the stored delta link, skipping
//! messages already delivered. A revoked grant produces one
//! `connection.reauth_required` event with the link to reconnect.

pub mod normalise;

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use relay365::config::Target;
use relay365::connection::{AuthMode, Connection, Status};
use relay365::graph::GraphError;
use relay365::queue::QueuedNotification;
use relay365::runtime::Services;
use relay365::scopes::Resource;
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
    /// Done (delivered, or nothing to deliver): delete it.
    Done,
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
    let mut connections: HashMap<String, (Connection, bool)> = HashMap::new();
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
    for (conn, dirty) in connections.values() {
        if !*dirty {
            continue;
        }
        // Merge only what dispatch owns into the newest record, so a token
        // write-back or a sign-in that happened meanwhile is never undone.
        let mut fresh = match d.services.tokens.load(&conn.id).await {
            Ok(f) => f,
            Err(_) => continue,
        };
        fresh.recent_deliveries = conn.recent_deliveries.clone();
        fresh.delta_links = conn.delta_links.clone();
        fresh.subscriptions = conn.subscriptions.clone();
        if let Err(e) = subscriptions::save(&d.services, &fresh).await {
            tracing::error!(connection = %conn.id, error = %e, "could not save the connection after dispatch");
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

async fn process(
    d: &Dispatcher,
    n: &QueuedNotification,
    cache: &mut HashMap<String, (Connection, bool)>,
) -> Outcome {
    let s = &d.services;
    let stored_status = match cache.get(&n.connection_id) {
        Some((c, _)) => c.status,
        None => match s.tokens.load(&n.connection_id).await {
            Ok(c) => c.status,
            Err(TokenError::UnknownConnection(_)) => {
                tracing::info!(connection = %n.connection_id, "notification for a deleted connection dropped");
                return Outcome::Done;
            }
            Err(e) if e.is_retryable() => return retry(e),
            Err(e) => {
                tracing::error!(connection = %n.connection_id, error = %e, "connection unreadable");
                return Outcome::Done;
            }
        },
    };
    if stored_status != Status::Active {
        // Already reported when it stopped working; nothing can be fetched.
        return Outcome::Done;
    }
    let token = s.tokens.access_token(&n.connection_id).await;
    // Load after the token: a refresh may have rewritten the record.
    if !cache.contains_key(&n.connection_id) {
        match s.tokens.load(&n.connection_id).await {
            Ok(c) => {
                cache.insert(n.connection_id.clone(), (c, false));
            }
            Err(e) => return retry(e),
        }
    }
    let Some((conn, dirty)) = cache.get_mut(&n.connection_id) else {
        return Outcome::Done;
    };
    let Some(index) = conn.subscriptions.iter().position(|x| x.id == n.subscription_id) else {
        tracing::info!(connection = %conn.id, subscription = %n.subscription_id, "notification for an unknown subscription dropped");
        return Outcome::Done;
    };
    let Some(target) = target_of(s, conn, index) else {
        tracing::error!(connection = %conn.id, "no target for events: set the subscription's target or RELAY365_DEFAULT_TARGET");
        return Outcome::Done;
    };
    let token = match token {
        Ok(t) => t,
        Err(TokenError::ReauthRequired { reason, .. }) => {
            conn.mark_reauth_required(&reason);
            let event = normalise::reauth_event(
                conn,
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
    match n.lifecycle_event.as_deref() {
        Some("reauthorizationRequired") => {
            let r = match subscriptions::renew(s, conn, index, &token).await {
                Err(e) if e.status() == Some(404) => subscriptions::create(s, conn, index, &token).await,
                other => other,
            };
            *dirty = true;
            graph_outcome(r)
        }
        Some("subscriptionRemoved") => {
            // Resync from where the removed subscription left off, not from the new one's start.
            let old_link = conn.delta_links.get(&n.subscription_id).cloned();
            if let Err(e) = subscriptions::create(s, conn, index, &token).await {
                conn.subscriptions[index].last_error = Some(subscriptions::explain(&e));
                *dirty = true;
                return graph_outcome(Err(e));
            }
            if let Some(link) = old_link {
                conn.delta_links
                    .insert(conn.subscriptions[index].id.clone(), link);
            }
            *dirty = true;
            resync(d, conn, dirty, index, &token, &target).await
        }
        Some("missed") => resync(d, conn, dirty, index, &token, &target).await,
        Some(other) => {
            tracing::warn!(event = other, "unknown lifecycle event ignored");
            Outcome::Done
        }
        None => {
            let Some(item) = n.resource_id.as_deref() else {
                return Outcome::Done;
            };
            match conn.subscriptions[index].resource {
                Resource::Mail => deliver_message(d, conn, dirty, &token, &target, item).await,
                Resource::Calendar => {
                    deliver_calendar(
                        d,
                        conn,
                        &token,
                        &target,
                        item,
                        n.change_type.as_deref().unwrap_or("updated"),
                    )
                    .await
                }
            }
        }
    }
}

fn target_of(s: &Services, conn: &Connection, index: usize) -> Option<Target> {
    match &conn.subscriptions[index].target {
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

fn owner(conn: &Connection) -> String {
    match (conn.auth, &conn.mailbox) {
        (AuthMode::Delegated, _) | (_, None) => "/me".into(),
        (_, Some(m)) => format!("/users/{m}"),
    }
}

async fn deliver_message(
    d: &Dispatcher,
    conn: &mut Connection,
    dirty: &mut bool,
    token: &Sensitive,
    target: &Target,
    id: &str,
) -> Outcome {
    if conn.was_delivered(id) {
        return Outcome::Done;
    }
    let s = &d.services;
    let base = format!("{}/messages/{id}", owner(conn));
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
            conn.remember_delivery(id);
            *dirty = true;
            Outcome::Done
        }
        Err(Delivery::Retry(why)) => retry(why),
    }
}

async fn deliver_calendar(
    d: &Dispatcher,
    conn: &Connection,
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
            .get_json::<Value>(&format!("{}/events/{id}", owner(conn)), token)
            .await
        {
            Ok(v) => Some(v),
            // Deleted since the notification: nothing current to report.
            Err(e) if e.status() == Some(404) => return Outcome::Done,
            Err(e) => return graph_outcome(Err(e)),
        }
    };
    let event = normalise::calendar_event(conn, change, id, item.as_ref());
    match deliver(d, target, &event).await {
        Ok(()) | Err(Delivery::Drop(_)) => Outcome::Done,
        Err(Delivery::Retry(why)) => retry(why),
    }
}

async fn resync(
    d: &Dispatcher,
    conn: &mut Connection,
    dirty: &mut bool,
    index: usize,
    token: &Sensitive,
    target: &Target,
) -> Outcome {
    let sub = conn.subscriptions[index].clone();
    if sub.resource != Resource::Mail {
        tracing::info!(connection = %conn.id, "calendar resync is not supported; the next change will be delivered");
        return Outcome::Done;
    }
    let start = conn
        .delta_links
        .get(&sub.id)
        .cloned()
        .unwrap_or_else(|| format!("{}/delta", subscriptions::graph_resource(conn, &sub)));
    let (ids, link) = match subscriptions::delta(&d.services, token, &start).await {
        Ok(x) => x,
        Err(e) => return graph_outcome(Err(e)),
    };
    tracing::info!(connection = %conn.id, changes = ids.len(), "resync");
    for id in ids {
        if let Outcome::Retry(why) = deliver_message(d, conn, dirty, token, target, &id).await {
            return Outcome::Retry(why);
        }
    }
    conn.delta_links.insert(sub.id, link);
    *dirty = true;
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
