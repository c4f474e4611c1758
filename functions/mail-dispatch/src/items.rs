//! From a notified item to an event at the flow: the ledger check, the
//! fetch from Graph, the delivery and the ledger entry, for mail and for
//! calendar events; and the resync that runs a delta query after `missed`.

use relay365::aws::queue::QueuedNotification;
use relay365::aws::store::SubscriptionChange;
use relay365::microsoft::paths;
use relay365::model::connection::{Connection, Subscription};
use relay365::model::scopes::Resource;
use relay365::{Sensitive, subscriptions};
use serde_json::Value;

use crate::deliver::{Delivery, Destination, deliver};
use crate::dispatcher::Dispatcher;
use crate::normalise;
use relay365::microsoft::graph::GraphError;

use crate::outcome::{Outcome, graph_outcome, retry};

/// The fields of a message an event needs.
pub const MESSAGE_SELECT: &str = "id,internetMessageId,conversationId,subject,from,toRecipients,ccRecipients,receivedDateTime,body,bodyPreview,hasAttachments,webLink";

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
        .last_notification_at(now)
        .clear_delivery_error();
    if let Err(e) = s
        .state
        .record_delivery(&conn.id, &sub.key, change, received)
        .await
    {
        tracing::warn!(connection = %conn.id, error = %e, "could not record the delivery time");
    }
}

/// `Some(outcome)` when the ledger has the item already (nothing to do) or
/// cannot be read (retry); `None` when it must be delivered.
pub(crate) async fn already_delivered(
    d: &Dispatcher,
    conn: &Connection,
    ledger_key: &str,
) -> Option<Outcome> {
    match d.services.state.is_delivered(&conn.id, ledger_key).await {
        Ok(true) => Some(Outcome::Done),
        Ok(false) => None,
        Err(e) => Some(retry(e)),
    }
}

/// Delivers an event and, once the target took it, records it.
async fn deliver_and_record(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    target: &Destination,
    ledger_key: &str,
    event: &Value,
    received: Option<&str>,
) -> Outcome {
    match deliver(d, target, event).await {
        Ok(()) => {
            delivered(d, conn, sub, ledger_key, event, received).await;
            Outcome::Delivered
        }
        Err(Delivery::Gone(why)) => target_gone(d, conn, sub, &why).await,
        Err(Delivery::Retry(why)) => retry(why),
    }
}

/// Whether a mail's `receivedDateTime` is older than the subscription's
/// baseline (its creation, less the minute the baseline looks back).
fn received_before_subscription(sub: &Subscription, received: Option<&str>) -> bool {
    use time::format_description::well_known::Rfc3339;
    let parse = |t: &str| time::OffsetDateTime::parse(t, &Rfc3339).ok();
    match (
        sub.created_at.as_deref().and_then(parse),
        received.and_then(parse),
    ) {
        (Some(created), Some(received)) => received < created - time::Duration::minutes(1),
        _ => false,
    }
}

/// The receiver asked for no more events: the subscription's target is
/// switched off and `GET /connections/{id}` says so and how to fix it.
pub(crate) async fn target_gone(d: &Dispatcher, conn: &Connection, sub: &Subscription, why: &str) -> Outcome {
    let now = time::OffsetDateTime::now_utc();
    let words = format!(
        "{why}: events for this subscription stopped; add a subscription with a working target (POST /connections/{}/subscriptions)",
        conn.id
    );
    tracing::error!(connection = %conn.id, subscription = %sub.id, "{words}");
    let change = SubscriptionChange::new()
        .target_gone_at(now)
        .last_error(Some(&words));
    match d
        .services
        .state
        .update_subscription(&conn.id, &sub.key, change)
        .await
    {
        Ok(()) => Outcome::TargetGone,
        Err(e) => retry(e),
    }
}

/// What a Graph failure means for the record. A 401 means the cached token
/// went bad before its time (revoked sessions, a changed password): it is
/// forgotten, so the retry uses a fresh one.
async fn graph_failure(d: &Dispatcher, conn: &Connection, e: GraphError) -> Outcome {
    if e.status() == Some(401) {
        d.services.tokens.invalidate(&conn.id).await;
        return retry(format!("{e}; retrying with a fresh token"));
    }
    graph_outcome(Err(e))
}

fn forged(conn: &Connection) -> Outcome {
    tracing::warn!(connection = %conn.id, "a notification named an item id that is not Graph's; dropped as forged");
    Outcome::Done
}

pub(crate) async fn deliver_message(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
    target: &Destination,
    id: &str,
) -> Outcome {
    let s = &d.services;
    // A forged id reaches neither the ledger nor Graph.
    let Ok(base) = paths::message(conn, id) else {
        return forged(conn);
    };
    if let Some(outcome) = already_delivered(d, conn, id).await {
        return outcome;
    }
    let message: Value = match crate::fetch::fetch_message(&s.graph, &base, token, MESSAGE_SELECT).await {
        Ok(m) => m,
        Err(e) if e.status() == Some(404) => return Outcome::Done,
        Err(e) => return graph_failure(d, conn, e).await,
    };
    // A mail received before the subscription existed was moved in (or
    // restored), not received: it is no new mail.
    if received_before_subscription(sub, message["receivedDateTime"].as_str()) {
        tracing::info!(connection = %conn.id, "a mail received before the subscription (moved in) is not sent as new");
        return Outcome::Done;
    }
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
            Err(e) => return graph_failure(d, conn, e).await,
        }
    } else {
        Vec::new()
    };
    let event = normalise::mail_event(conn, &message, &attachments);
    deliver_and_record(
        d,
        conn,
        sub,
        target,
        id,
        &event,
        message["receivedDateTime"].as_str(),
    )
    .await
}

pub(crate) async fn deliver_calendar(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
    target: &Destination,
    id: &str,
    n: &QueuedNotification,
) -> Outcome {
    let s = &d.services;
    let change = n.change_type.as_deref().unwrap_or("updated");
    // A notification names the version as an etag (`W/"<changeKey>"`), a
    // delta round as the bare changeKey: both are the same version.
    let announced = n.version.as_deref().map(|v| {
        v.strip_prefix("W/\"")
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v)
    });
    let Ok(event_path) = paths::event(conn, id) else {
        return forged(conn);
    };
    let item = if change == "deleted" {
        None
    } else {
        match s.graph.get_json::<Value>(&event_path, token).await {
            Ok(v) => Some(v),
            // Deleted since the notification: nothing current to report.
            Err(e) if e.status() == Some(404) => return Outcome::Done,
            Err(e) => return graph_failure(d, conn, e).await,
        }
    };
    // One ledger entry (and one event id) per announced version of the event:
    // two edits are two events, each with the state current when it is
    // fetched; the same edit announced twice is one.
    let version = announced
        .or_else(|| {
            item.as_ref()
                .and_then(|v| v["changeKey"].as_str().or_else(|| v["@odata.etag"].as_str()))
        })
        .unwrap_or(change);
    let ledger_key = format!("{id}#{version}");
    if let Some(outcome) = already_delivered(d, conn, &ledger_key).await {
        return outcome;
    }
    let event = normalise::calendar_event(conn, change, id, item.as_ref(), version);
    deliver_and_record(d, conn, sub, target, &ledger_key, &event, None).await
}

/// A calendar's resync: every change since the stored link, each delivered
/// once per version (the ledger), then the new link. An event the resync
/// finds is reported as updated with its current state (delta does not say
/// whether it is new), a removed one as deleted.
async fn resync_calendar(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
    target: &Destination,
) -> Outcome {
    let start = sub.delta_link.clone().unwrap_or_else(|| {
        subscriptions::calendar_delta_start(conn, time::OffsetDateTime::now_utc() - time::Duration::days(1))
    });
    let (changes, link) = match subscriptions::calendar_delta(&d.services, token, &start).await {
        Ok(x) => x,
        Err(e) => return graph_failure(d, conn, e).await,
    };
    tracing::info!(connection = %conn.id, changes = changes.len(), "calendar resync");
    for change in changes {
        let n = QueuedNotification {
            connection_id: conn.id.clone(),
            subscription_id: sub.id.clone(),
            change_type: Some(change.change_type().into()),
            resource: None,
            resource_id: Some(change.id.clone()),
            version: change.change_key.clone(),
            lifecycle_event: None,
            received_at: String::new(),
        };
        if let Outcome::Retry(why) = deliver_calendar(d, conn, sub, token, target, &change.id, &n).await {
            return Outcome::Retry(why);
        }
    }
    moved_on(d, conn, sub, &link).await
}

/// Stores the link a resync ends at, once everything it reported is delivered.
async fn moved_on(d: &Dispatcher, conn: &Connection, sub: &Subscription, link: &str) -> Outcome {
    match d
        .services
        .state
        .update_subscription(&conn.id, &sub.key, SubscriptionChange::new().delta_link(link))
        .await
    {
        Ok(()) => Outcome::Done,
        Err(e) => retry(e),
    }
}

pub(crate) async fn resync(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
    target: &Destination,
) -> Outcome {
    if sub.resource == Resource::Calendar {
        return resync_calendar(d, conn, sub, token, target).await;
    }
    // Without a stored link (its baseline never completed), the resync covers
    // the mail received since the subscription was made, never the folder's past.
    let start = sub.delta_link.clone().unwrap_or_else(|| {
        let since = sub
            .created_at
            .as_deref()
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(time::OffsetDateTime::now_utc);
        subscriptions::delta_start(conn, sub, since)
    });
    let (ids, link) = match subscriptions::delta(&d.services, token, &start).await {
        Ok(x) => x,
        Err(e) => return graph_failure(d, conn, e).await,
    };
    tracing::info!(connection = %conn.id, changes = ids.len(), "resync");
    for id in ids {
        if let Outcome::Retry(why) = deliver_message(d, conn, sub, token, target, &id).await {
            return Outcome::Retry(why);
        }
    }
    moved_on(d, conn, sub, &link).await
}
