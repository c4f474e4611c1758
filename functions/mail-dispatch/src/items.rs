//! From a notified item to an event at each flow that should have it: the
//! flows' ledger checks, one fetch from Graph, the deliveries and the ledger
//! entries, for mail and for calendar events. Several flows on one Graph
//! subscription each get the item once, in the order they were added.

use relay365::Sensitive;
use relay365::aws::queue::{ChangeType, QueuedNotification};
use relay365::aws::store::SubscriptionChange;
use relay365::catchup;
use relay365::microsoft::paths;
use relay365::model::connection::{Connection, Subscription};
use serde_json::Value;

use crate::deliver::deliver_from;
use crate::destination::{Delivery, Destination, MailSource};
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

/// One item's event, ready for its flows: the item's key (each flow's ledger
/// key is made from it), the event, when the mail arrived, and where a target
/// that needs the mail itself reads it.
#[derive(Clone, Copy)]
struct Ready<'a> {
    item_key: &'a str,
    event: &'a Value,
    received: Option<&'a str>,
    source: Option<MailSource<'a>>,
}

/// Delivers the event to every flow that has not had it. A flow that failed
/// is retried with the record; those that took the event are in their
/// ledgers and are not sent it again.
async fn deliver_to_flows(
    d: &Dispatcher,
    conn: &Connection,
    pending: Vec<&Flow>,
    ready: Ready<'_>,
) -> Outcome {
    let mut outcome = Outcome::Done;
    for (sub, target) in pending {
        let one = deliver_and_record(d, conn, sub, target, ready).await;
        if matches!(one, Outcome::Retry(_)) {
            return one;
        }
        outcome = worse(outcome, one);
    }
    outcome
}

/// Delivers an event to one flow and, once the target took it, records it.
async fn deliver_and_record(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    target: &Destination,
    ready: Ready<'_>,
) -> Outcome {
    let Ready {
        item_key,
        event,
        received,
        source,
    } = ready;
    match deliver_from(d, target, event, source).await {
        Ok(()) => {
            let since_arrival = received
                .and_then(|r| {
                    time::OffsetDateTime::parse(r, &time::format_description::well_known::Rfc3339).ok()
                })
                .and_then(|r| (time::OffsetDateTime::now_utc() - r).try_into().ok());
            relay365::metrics::delivered(target.kind(), since_arrival);
            delivered(d, conn, sub, &sub.ledger_key(item_key), event, received).await;
            Outcome::Delivered
        }
        Err(Delivery::Gone(why)) => {
            relay365::metrics::paused("target");
            target_gone(d, conn, sub, &why).await
        }
        Err(Delivery::Retry(why)) => {
            relay365::metrics::retried(target.kind());
            retry(why)
        }
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

/// The receiver asked for no more events: the flow is paused (nothing is
/// sent to it, nothing is lost) and `GET /connections/{id}` says so and how
/// to resume it.
pub(crate) async fn target_gone(d: &Dispatcher, conn: &Connection, sub: &Subscription, why: &str) -> Outcome {
    let now = time::OffsetDateTime::now_utc();
    let words = format!(
        "{why}: the flow is paused and nothing is sent to it; fix the receiver, then resume it (POST /connections/{}/subscriptions/{}/resume) and everything that arrived meanwhile is delivered",
        conn.id, sub.key
    );
    tracing::error!(connection = %conn.id, flow = %sub.key, "{words}");
    let change = SubscriptionChange::new().paused(now, &words);
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

/// One flow an item goes to, and where its events go.
pub(crate) type Flow = (Subscription, Destination);

/// The worst of two outcomes of one record: a retry wins, then a pause,
/// then a delivery.
fn worse(a: Outcome, b: Outcome) -> Outcome {
    let rank = |o: &Outcome| match o {
        Outcome::Retry(_) => 3,
        Outcome::TargetGone => 2,
        Outcome::Delivered => 1,
        Outcome::Done => 0,
    };
    if rank(&b) > rank(&a) { b } else { a }
}

/// The flows whose ledger does not have `key(flow)` yet.
async fn undelivered<'a>(
    d: &Dispatcher,
    conn: &Connection,
    flows: &'a [Flow],
    key: impl Fn(&Subscription) -> String,
) -> Result<Vec<&'a Flow>, Outcome> {
    let mut out = Vec::new();
    for flow in flows {
        match already_delivered(d, conn, &key(&flow.0)).await {
            None => out.push(flow),
            Some(Outcome::Done) => {}
            Some(other) => return Err(other),
        }
    }
    Ok(out)
}

pub(crate) async fn deliver_message(
    d: &Dispatcher,
    conn: &Connection,
    flows: &[Flow],
    token: &Sensitive,
    id: &str,
) -> Outcome {
    let s = &d.services;
    // A forged id reaches neither the ledger nor Graph.
    let Ok(base) = paths::message(conn, id) else {
        return forged(conn);
    };
    let pending = match undelivered(d, conn, flows, |f| f.ledger_key(id)).await {
        Ok(p) if p.is_empty() => return Outcome::Done,
        Ok(p) => p,
        Err(outcome) => return outcome,
    };
    let message: Value = match crate::fetch::fetch_message(&s.graph, &base, token, MESSAGE_SELECT).await {
        Ok(m) => m,
        Err(e) if e.status() == Some(404) => return Outcome::Done,
        Err(e) => return graph_failure(d, conn, e).await,
    };
    let received = message["receivedDateTime"].as_str();
    // Each flow decides whether this is new mail for it: a mail received
    // before the flow existed was moved in (or restored), and one well
    // before what the flow was last sent is old mail its ledger forgot.
    let pending: Vec<&Flow> = pending
        .into_iter()
        .filter(|(sub, _)| {
            let old = received_before_subscription(sub, received) || catchup::older_than_watermark(sub, received);
            if old {
                tracing::info!(connection = %conn.id, flow = %sub.key, "a mail received before the flow's subscription or watermark (moved in, or delivered long ago) is not sent as new");
            }
            !old
        })
        .collect();
    if pending.is_empty() {
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
    // From here on every log line of the record names its event.
    tracing::Span::current().record("event", event["id"].as_str().unwrap_or_default());
    let source = MailSource {
        conn,
        token,
        base: &base,
    };
    let ready = Ready {
        item_key: id,
        event: &event,
        received,
        source: Some(source),
    };
    deliver_to_flows(d, conn, pending, ready).await
}

pub(crate) async fn deliver_calendar(
    d: &Dispatcher,
    conn: &Connection,
    flows: &[Flow],
    token: &Sensitive,
    id: &str,
    n: &QueuedNotification,
) -> Outcome {
    let s = &d.services;
    let change = n.change_type.map_or("updated", ChangeType::as_str);
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
    let item_key = format!("{id}#{version}");
    let pending = match undelivered(d, conn, flows, |f| f.ledger_key(&item_key)).await {
        Ok(p) => p,
        Err(outcome) => return outcome,
    };
    let event = normalise::calendar_event(conn, change, id, item.as_ref(), version);
    tracing::Span::current().record("event", event["id"].as_str().unwrap_or_default());
    let ready = Ready {
        item_key: &item_key,
        event: &event,
        received: None,
        source: None,
    };
    deliver_to_flows(d, conn, pending, ready).await
}
