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

pub mod deliver;
mod dispatcher;
mod fetch;
pub mod fit;
mod items;
pub mod normalise;
mod outcome;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
pub use deliver::{Delivery, Destination, deliver};
use relay365::aws::queue::QueuedNotification;
use relay365::aws::store::SubscriptionChange;
use relay365::microsoft::tokens::TokenError;
use relay365::model::connection::{Connection, Status, Subscription};
use relay365::model::scopes::Resource;
use relay365::model::target::Target;
use relay365::services::Services;
use relay365::subscriptions;

pub use dispatcher::Dispatcher;
pub use items::MESSAGE_SELECT;
use outcome::{Outcome, retry, sub_outcome};

/// The worst case of one record, which a record needs left before it is
/// started: a token refresh (the HTTPS client's 15 s), two Graph reads (the
/// message and its attachment list, [`GRAPH_DEADLINE`] each, retries
/// included) and the delivery ([`deliver::TARGET_TIMEOUT`]). The arithmetic
/// with the function timeout and the queue is in `docs/notifications.md`.
pub const STEP_BUDGET: Duration = Duration::from_secs(15 + 2 * 8 + 10);

/// How long dispatch's Graph reads may take, retries included.
pub const GRAPH_DEADLINE: Duration = Duration::from_secs(8);

/// Processes a batch with no deadline (tests, tools); returns the records to retry.
pub async fn handle(event: SqsEvent, d: &Dispatcher) -> SqsBatchResponse {
    handle_until(event, d, None).await
}

/// Processes a batch, starting no record when less than [`STEP_BUDGET`] is
/// left before `deadline` (the invocation's): those are returned for retry
/// untouched, so an invocation never ends in the middle of a delivery, and
/// every delivery is in the ledger the moment the target took it.
pub async fn handle_until(event: SqsEvent, d: &Dispatcher, deadline: Option<Instant>) -> SqsBatchResponse {
    let mut failures = Vec::new();
    let mut held_back = 0usize;
    let mut failed_groups: Vec<String> = Vec::new();
    // Each connection is read fresh once per batch (one invocation); nothing
    // outlives it.
    let mut connections: HashMap<String, Connection> = HashMap::new();
    // Per (connection, Graph subscription id): records of this batch that
    // come back, and whether the subscription was seen at all.
    let mut waiting: HashMap<(String, String), usize> = HashMap::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let parsed = record
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<QueuedNotification>(b).ok());
        let sub_of = parsed
            .as_ref()
            .map(|n| (n.connection_id.clone(), n.subscription_id.clone()));
        if let Some(k) = &sub_of {
            waiting.entry(k.clone()).or_insert(0);
        }
        let mut wait = |k: &Option<(String, String)>| {
            if let Some(k) = k {
                *waiting.entry(k.clone()).or_insert(0) += 1;
            }
        };
        let group = record
            .attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_default();
        if !group.is_empty() && failed_groups.contains(&group) {
            wait(&sub_of);
            failures.push(id);
            continue;
        }
        if let Some(deadline) = deadline
            && deadline.saturating_duration_since(Instant::now()) < STEP_BUDGET
        {
            // Not started: retried as it is. Later records of its mailbox
            // wait behind it, so the order holds.
            held_back += 1;
            wait(&sub_of);
            failures.push(id);
            if !group.is_empty() {
                failed_groups.push(group);
            }
            continue;
        }
        let outcome = match &parsed {
            Some(n) => {
                let attempt = record
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                process(d, n, attempt, &mut connections).await
            }
            _ => {
                tracing::error!(message_id = %id, "dropping a queue record that is not a relay365 notification");
                Outcome::Done
            }
        };
        if let Outcome::Retry(why) = outcome {
            tracing::warn!(message_id = %id, reason = %why, "record left for retry");
            wait(&sub_of);
            failures.push(id);
            if !group.is_empty() {
                failed_groups.push(group);
            }
        }
    }
    record_waiting(d, &connections, &waiting).await;
    if held_back > 0 {
        tracing::info!(
            held_back,
            budget_secs = STEP_BUDGET.as_secs(),
            "the invocation's time is nearly up: records not started are left for the next receive"
        );
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
    attempt: u32,
    cache: &mut HashMap<String, Connection>,
) -> Outcome {
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
    if conn.status == Status::PendingConsent {
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
    if sub.target_gone_at.is_some() {
        tracing::info!(connection = %conn.id, subscription = %sub.id, "the target answered 410 Gone earlier; notification dropped");
        return Outcome::Done;
    }
    let Some(target) = target_of(s, &sub) else {
        // A person can fix this: keep the record (it ends in the dead-letter queue).
        tracing::error!(connection = %conn.id, "no target for events: set the subscription's target or RELAY365_DEFAULT_TARGET");
        return retry("no target for events");
    };
    let target = Destination { target, attempt };
    if conn.status == Status::ReauthRequired {
        // Nothing can be fetched; whoever noticed first (send-mail, the
        // renewal run, a sign-in), the flow is told, once.
        let reason = conn
            .last_error
            .clone()
            .unwrap_or_else(|| "the connection needs a new sign-in".into());
        return report_reauth(d, &conn, &sub, &target, &reason).await;
    }
    let token = match s.tokens.access_token(&conn).await {
        Ok(t) => t,
        Err(TokenError::ReauthRequired { reason, .. }) => {
            // The token code has marked the connection; tell the flow once.
            cache.remove(&conn.id);
            return report_reauth(d, &conn, &sub, &target, &reason).await;
        }
        // Every other token failure is for a person to fix (an expired client
        // secret, a missing consent) or passes by itself: the record is kept,
        // retried, and ends in the dead-letter queue with its alarm. The app
        // secret is re-read within a TTL, so a fixed secret works at once.
        Err(e) => {
            if !e.is_retryable() {
                tracing::error!(connection = %conn.id, error = %e, "no token; the notification is kept for retry");
            }
            return retry(e);
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
            items::resync(d, &conn, &sub, &token, &target).await
        }
        Some("missed") => items::resync(d, &conn, &sub, &token, &target).await,
        Some(other) => {
            tracing::warn!(event = other, "unknown lifecycle event ignored");
            Outcome::Done
        }
        None => {
            let Some(item) = n.resource_id.as_deref() else {
                return Outcome::Done;
            };
            match sub.resource {
                Resource::Mail => items::deliver_message(d, &conn, &sub, &token, &target, item).await,
                Resource::Calendar => items::deliver_calendar(d, &conn, &sub, &token, &target, item, n).await,
            }
        }
    };
    if outcome == Outcome::TargetGone {
        cache.remove(&conn.id);
    }
    if outcome != Outcome::Delivered {
        let now = time::OffsetDateTime::now_utc();
        let mut seen = SubscriptionChange::new().last_notification_at(now);
        // What an operator sees in GET /connections/{id} while records wait.
        if let Outcome::Retry(why) = &outcome {
            seen = seen.last_delivery_error(Some(why), now);
        }
        if let Err(e) = s.state.update_subscription(&conn.id, &sub.key, seen).await {
            tracing::warn!(connection = %conn.id, error = %e, "could not record the notification time");
        }
    }
    outcome
}

/// Records on each subscription of the batch how many of its records came
/// back for retry (`waiting`, shown by `GET /connections/{id}`), writing only
/// where the number changed.
async fn record_waiting(
    d: &Dispatcher,
    connections: &HashMap<String, Connection>,
    waiting: &HashMap<(String, String), usize>,
) {
    for ((conn_id, sub_id), n) in waiting {
        let Some(sub) = connections
            .get(conn_id)
            .and_then(|c| c.subscriptions.iter().find(|s| &s.id == sub_id))
        else {
            continue;
        };
        if sub.waiting.unwrap_or(0) == *n as u64 {
            continue;
        }
        let change = SubscriptionChange::new().waiting(*n as u64);
        if let Err(e) = d
            .services
            .state
            .update_subscription(conn_id, &sub.key, change)
            .await
        {
            tracing::warn!(connection = %conn_id, error = %e, "could not record the records waiting");
        }
    }
}

/// Sends `connection.reauth_required` once per loss of access: the ledger
/// holds `reauth#{generation}` from the moment a target took it, so the
/// notifications that keep coming, the sweep's reminders and other
/// containers find it sent. A new sign-in is a new generation.
async fn report_reauth(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    target: &Destination,
    reason: &str,
) -> Outcome {
    let key = format!("reauth#{}", conn.generation);
    if let Some(outcome) = items::already_delivered(d, conn, &key).await {
        return outcome;
    }
    let event = normalise::reauth_event(conn, reason, d.services.connect_url(conn));
    match deliver(d, target, &event).await {
        Ok(()) => {
            let event_id = event["id"].as_str().unwrap_or_default();
            if let Err(e) = d.services.state.mark_delivered(&conn.id, &key, event_id).await {
                tracing::error!(connection = %conn.id, error = %e, "reported, but the ledger could not record it");
            }
            Outcome::Done
        }
        Err(Delivery::Gone(why)) => items::target_gone(d, conn, sub, &why).await,
        Err(Delivery::Retry(why)) => retry(why),
    }
}

fn target_of(s: &Services, sub: &Subscription) -> Option<Target> {
    match &sub.target {
        // Checked again at delivery: settings and DNS may have changed since.
        Some(t) => Target::parse(t, s.config.local).ok(),
        None => s.config.default_target.clone(),
    }
}

#[cfg(test)]
mod tests {
    //! A batch as the SQS event source hands it over (fixture in
    //! `tests/fixtures/aws`), with secrets and state in memory.
    use super::*;

    /// In-memory services with a default target, and the SQS event fixture.
    async fn fixture() -> (Dispatcher, SqsEvent) {
        let services = Services::in_memory(
            &[("RELAY365_DEFAULT_TARGET", "https://flow.example/hook")],
            r#"{"client_id":"c","tenant_id":"t","client_secret":"s"}"#,
            "unit-test-signing-key-0123456789abcdef0123456789",
        )
        .await
        .unwrap();
        let events =
            relay365::web::signing::EventSigner::from_secret(&relay365::Sensitive::new("e".repeat(40)))
                .unwrap();
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../tests/fixtures/aws/sqs-event.json")).unwrap();
        (Dispatcher::new(services, events), event)
    }

    #[tokio::test]
    async fn records_that_can_never_succeed_are_done_and_say_why() {
        let (d, event) = fixture().await;
        assert_eq!(event.records.len(), 2);
        // One notification for a connection that no longer exists, one record that is not ours:
        // neither can ever be delivered, so neither comes back.
        let resp = handle(event, &d).await;
        assert!(
            resp.batch_item_failures.is_empty(),
            "{:?}",
            resp.batch_item_failures
        );
    }

    #[tokio::test]
    async fn near_the_deadline_no_record_is_started_and_all_come_back() {
        let (d, event) = fixture().await;
        let ids: Vec<String> = event
            .records
            .iter()
            .filter_map(|r| r.message_id.clone())
            .collect();
        // Less than one record's worst case is left: nothing is tried (the
        // same records are dropped at once when there is time, see above).
        let deadline = Instant::now() + STEP_BUDGET - Duration::from_secs(1);
        let resp = handle_until(event, &d, Some(deadline)).await;
        let back: Vec<String> = resp
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        assert_eq!(back, ids);
    }
}
