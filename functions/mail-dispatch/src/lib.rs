//! Dispatch: from a queued notification to one signed event at the flow.
//!
//! For each SQS record: get a token for the connection, fetch the message or
//! event (only the fields the event needs), normalise it into relay365's event
//! shape, and deliver it to the subscription's target: an HTTPS POST signed
//! with `Relay365-Signature`, EventBridge `PutEvents`, or an Amazon Connect
//! task per new mail ([`connect`]). A target that fails
//! with 5xx, 429 or a timeout leaves the record for SQS to redeliver (partial
//! batch response); after the queue's maximum receives it lands in the
//! dead-letter queue. A batch's FIFO groups (one per connection) run side
//! by side; inside a group the records run in order, and those after a
//! failure are failed too, so a mailbox's events keep their order.
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

mod batch;
pub mod connect;
pub mod deliver;
mod destination;
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
use futures_util::stream::{self, StreamExt};
use relay365::aws::queue::{LifecycleEvent, QueuedNotification};
use relay365::aws::store::SubscriptionChange;
use relay365::microsoft::tokens::TokenError;
use relay365::model::connection::{Connection, Status, Subscription};
use relay365::model::scopes::Resource;
use relay365::model::sensitive::Sensitive;
use relay365::model::target::Target;
use relay365::services::Services;
use relay365::{catchup, subscriptions};

use batch::{Fate, GROUPS_AT_ONCE, GroupRun, Record, record_waiting, run_group};
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

/// The time an invocation has when neither the runtime nor the settings say:
/// the template's `Timeout` for mail-dispatch.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

pub use relay365::lambda::invocation_deadline;

/// The first retry's wait: a target that failed once is tried again seconds
/// later, not after the queue's visibility timeout.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);

/// The longest wait between two tries of a record.
pub const LONGEST_RETRY: Duration = Duration::from_secs(3600);

/// How long a record that failed on its `receive_count`-th receive stays
/// invisible: 5 s, doubled each time, at most an hour. With the template's
/// `maxReceiveCount` of 36 the tries span more than 24 hours before the
/// dead-letter queue (`docs/notifications.md` has the sums).
pub fn retry_delay(receive_count: u32) -> Duration {
    retry_delay_from(FIRST_RETRY, receive_count)
}

/// [`retry_delay`] with another first wait (tests that fail a target on
/// purpose many times).
pub fn retry_delay_from(first: Duration, receive_count: u32) -> Duration {
    let doubled = first.saturating_mul(2u32.saturating_pow(receive_count.saturating_sub(1).min(20)));
    doubled.min(LONGEST_RETRY)
}

/// Processes a batch with no deadline (tests, tools); returns the records to retry.
pub async fn handle(event: SqsEvent, d: &Dispatcher) -> SqsBatchResponse {
    handle_until(event, d, None).await
}

/// Processes a batch, starting no record when less than [`STEP_BUDGET`] is
/// left before `deadline` (the invocation's): those are returned for retry
/// untouched, so an invocation never ends in the middle of a delivery, and
/// every delivery is in the ledger the moment the target took it.
pub async fn handle_until(event: SqsEvent, d: &Dispatcher, deadline: Option<Instant>) -> SqsBatchResponse {
    handle_traced(event, d, deadline, None).await
}

/// [`handle_until`], passing the invocation's X-Ray trace header on to the
/// targets (`X-Amzn-Trace-Id`), so one mail can be followed from the
/// webhook to the flow.
pub async fn handle_traced(
    event: SqsEvent,
    d: &Dispatcher,
    deadline: Option<Instant>,
    trace: Option<&str>,
) -> SqsBatchResponse {
    // A FIFO batch holds records of several mailboxes (message groups, one
    // per connection). Each group runs in order; the groups run side by
    // side, so a batch takes as long as its busiest mailbox, not the sum of
    // all of them. A standard queue's records (no group) are each their own.
    let mut groups: Vec<Vec<Record>> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for record in event.records {
        let record = Record::from(record);
        match group_of.get(&record.group) {
            Some(&i) if !record.group.is_empty() => groups[i].push(record),
            _ => {
                if !record.group.is_empty() {
                    group_of.insert(record.group.clone(), groups.len());
                }
                groups.push(vec![record]);
            }
        }
    }
    let ran: Vec<GroupRun> = stream::iter(groups)
        .map(|records| run_group(d, records, deadline, trace))
        .buffer_unordered(GROUPS_AT_ONCE)
        .collect()
        .await;

    let mut failures = Vec::new();
    let mut held_back = 0usize;
    let mut connections: HashMap<String, Connection> = HashMap::new();
    // Per (connection, Graph subscription id): records of this batch that
    // come back, and whether the subscription was seen at all.
    let mut waiting: HashMap<(String, String), usize> = HashMap::new();
    // When each record that comes back is to be seen again: a failed one
    // after its backoff, one held back behind it (or for time) at once, so
    // it follows as soon as its turn comes.
    let mut visibility: Vec<(String, u32)> = Vec::new();
    for run in ran {
        connections.extend(run.connections);
        for (record, fate) in run.fates {
            let seen = waiting.entry(record.sub_of()).or_insert(0);
            let delay = match fate {
                Fate::Done => continue,
                Fate::HeldBack => {
                    held_back += 1;
                    0
                }
                Fate::Behind => 0,
                Fate::Retry(delay) => delay,
            };
            *seen += 1;
            failures.push(record.id);
            visibility.push((record.handle, delay));
        }
    }
    waiting.remove(&(String::new(), String::new()));
    record_waiting(d, &connections, &waiting).await;
    visibility.retain(|(h, _)| !h.is_empty());
    if let (Some(queue), false) = (&d.queue, visibility.is_empty())
        && let Err(e) = queue.retry_after(&visibility).await
    {
        // The queue's own visibility timeout still brings them back.
        tracing::warn!(error = %e, "could not set the records' retry times");
    }
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
    until: Instant,
    trace: Option<&str>,
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
    // The flows this record is for: one flow (what its catch-up found), or
    // every flow on the Graph subscription that takes new notifications.
    let on_graph_sub: Vec<&Subscription> = conn
        .subscriptions
        .iter()
        .filter(|x| x.id == n.subscription_id && !x.id.is_empty())
        .collect();
    let flows: Vec<Subscription> = match (&n.flow, n.lifecycle_event.is_some()) {
        (Some(key), _) => conn
            .subscriptions
            .iter()
            .filter(|x| &x.key == key && !x.is_paused())
            .cloned()
            .collect(),
        (None, true) => on_graph_sub.iter().map(|x| (*x).clone()).collect(),
        (None, false) => on_graph_sub
            .iter()
            .filter(|x| x.takes_live())
            .map(|x| (*x).clone())
            .collect(),
    };
    let Some(first) = flows.first().cloned() else {
        if on_graph_sub.is_empty() && n.flow.is_none() {
            tracing::info!(connection = %conn.id, subscription = %n.subscription_id, "notification for an unknown subscription dropped");
        }
        // Paused flows: a resume catches up from the watermark.
        return Outcome::Done;
    };
    let mut destinations = Vec::with_capacity(flows.len());
    for sub in &flows {
        let Some(target) = target_of(s, sub) else {
            // A person can fix this: keep the record (it ends in the dead-letter queue).
            tracing::error!(connection = %conn.id, flow = %sub.key, "no target for events: set the subscription's target or RELAY365_DEFAULT_TARGET");
            return retry("no target for events");
        };
        destinations.push((
            sub.clone(),
            Destination {
                target,
                flow: sub.key.clone(),
                attempt,
                trace: trace.map(str::to_string),
            },
        ));
    }
    if conn.status == Status::ReauthRequired {
        // Nothing can be fetched; whoever noticed first (send-mail, the
        // renewal run, a sign-in), the flow is told, once.
        let reason = conn
            .last_error
            .clone()
            .unwrap_or_else(|| "the connection needs a new sign-in".into());
        return report_reauth(d, &conn, &first, &destinations[0].1, &reason).await;
    }
    let token = match s.tokens.access_token(&conn).await {
        Ok(t) => t,
        Err(TokenError::ReauthRequired { reason, .. }) => {
            // The token code has marked the connection; tell the flow once.
            cache.remove(&conn.id);
            return report_reauth(d, &conn, &first, &destinations[0].1, &reason).await;
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
    let outcome = act(d, n, &conn, &flows, &destinations, &token, until).await;
    // The record read for this batch is stale once a catch-up step, a
    // renewal or a recreation moved it, or its target is gone.
    let moved = matches!(
        n.lifecycle_event,
        Some(LifecycleEvent::ReauthorizationRequired | LifecycleEvent::SubscriptionRemoved)
    );
    if n.catch_up.is_some() || moved || outcome == Outcome::TargetGone {
        cache.remove(&conn.id);
    }
    outcome
}

/// Does what the notification asks for the connection's `flows` (a
/// catch-up step, a lifecycle event, or new items), with a token already
/// obtained; a record that is not delivered notes the time, and why, on
/// each flow.
async fn act(
    d: &Dispatcher,
    n: &QueuedNotification,
    conn: &Connection,
    flows: &[Subscription],
    destinations: &[(Subscription, Destination)],
    token: &Sensitive,
    until: Instant,
) -> Outcome {
    let s = &d.services;
    // The caller has flows to act for; none is nothing to do.
    let Some(first) = flows.first() else {
        return Outcome::Done;
    };
    let outcome = if let Some(step) = &n.catch_up {
        catch_up(d, conn, first, token, step, until).await
    } else {
        match n.lifecycle_event {
            Some(LifecycleEvent::ReauthorizationRequired) => {
                match subscriptions::renew_or_recreate(s, conn, first, token).await {
                    // Recreated: what came in the gap is caught up.
                    Ok(true) => start_catch_up(d, conn, flows).await,
                    r => sub_outcome(r.map(|_| ())),
                }
            }
            Some(LifecycleEvent::SubscriptionRemoved) => {
                // The flows keep their delta links, so the catch-up starts
                // where each left off, not at the new subscription's start.
                if let Err(e) = subscriptions::create(s, conn, first, token).await {
                    return sub_outcome(Err(e));
                }
                start_catch_up(d, conn, flows).await
            }
            Some(LifecycleEvent::Missed) => start_catch_up(d, conn, flows).await,
            Some(LifecycleEvent::Unknown) => {
                tracing::warn!("unknown lifecycle event ignored");
                Outcome::Done
            }
            None => {
                let Some(item) = n.resource_id.as_deref() else {
                    return Outcome::Done;
                };
                match first.resource {
                    Resource::Mail => items::deliver_message(d, conn, destinations, token, item).await,
                    Resource::Calendar => {
                        items::deliver_calendar(d, conn, destinations, token, item, n).await
                    }
                }
            }
        }
    };
    if outcome != Outcome::Delivered {
        let now = time::OffsetDateTime::now_utc();
        let mut seen = SubscriptionChange::new().last_notification_at(now);
        // What an operator sees in GET /connections/{id} while records wait.
        if let Outcome::Retry(why) = &outcome {
            seen = seen.last_delivery_error(Some(why), now);
        }
        for sub in flows {
            if let Err(e) = s
                .state
                .update_subscription(&conn.id, &sub.key, seen.clone())
                .await
            {
                tracing::warn!(connection = %conn.id, error = %e, "could not record the notification time");
            }
        }
    }
    outcome
}

/// Queues a catch-up for each of the flows (after `missed`, a lost or a
/// recreated subscription): bounded steps in later records.
async fn start_catch_up(d: &Dispatcher, conn: &Connection, flows: &[Subscription]) -> Outcome {
    let Some(queue) = &d.queue else {
        return retry(
            "RELAY365_QUEUE_URL is not set for mail-dispatch: it cannot queue a catch-up (the template sets it)",
        );
    };
    let refs: Vec<&Subscription> = flows.iter().collect();
    match catchup::start(queue.as_ref(), conn, &refs, false).await {
        Ok(n) => {
            tracing::info!(connection = %conn.id, flows = n, "catch-up queued");
            Outcome::Done
        }
        Err(e) => retry(e),
    }
}

/// One step of a flow's catch-up, within the invocation's time.
async fn catch_up(
    d: &Dispatcher,
    conn: &Connection,
    sub: &Subscription,
    token: &relay365::Sensitive,
    step: &relay365::aws::queue::CatchUpStep,
    until: Instant,
) -> Outcome {
    let Some(queue) = &d.queue else {
        return retry(
            "RELAY365_QUEUE_URL is not set for mail-dispatch: it cannot queue what a catch-up finds (the template sets it)",
        );
    };
    match catchup::step(&d.services, queue.as_ref(), conn, sub, token, step, until).await {
        Ok(_) => Outcome::Done,
        Err(relay365::catchup::CatchUpError::Graph(e)) if e.status() == Some(401) => {
            d.services.tokens.invalidate(&conn.id).await;
            retry(format!("{e}; retrying with a fresh token"))
        }
        Err(e) if e.is_retryable() => retry(e),
        Err(e) => {
            tracing::error!(connection = %conn.id, flow = %sub.key, error = %e, "a catch-up step failed for good; the next sweep starts again from the stored link");
            Outcome::Done
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
            relay365::metrics::reauth_sent();
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

    #[test]
    fn a_deadline_in_the_past_is_no_deadline_and_the_configured_timeout_counts() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let timeout = Duration::from_secs(90);
        // cargo lambda watch: 600000 ms after 1970.
        let left = invocation_deadline(600_000, now, timeout).saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(85) && left <= timeout, "{left:?}");
        // A real deadline 30 s ahead is kept as it is.
        let real = 1_800_000_000_000 + 30_000;
        let left = invocation_deadline(real, now, timeout).saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(25) && left <= Duration::from_secs(30),
            "{left:?}"
        );
        // Exactly now is no time at all: also a runtime that gave none.
        let left =
            invocation_deadline(1_800_000_000_000, now, timeout).saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(85), "{left:?}");
    }

    #[test]
    fn retries_start_in_seconds_grow_to_an_hour_and_span_more_than_a_day_before_the_dead_letter_queue() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(10));
        assert_eq!(retry_delay(11), LONGEST_RETRY);
        assert_eq!(retry_delay(u32::MAX), LONGEST_RETRY);
        // The template's maxReceiveCount: the record's 36th receive goes to
        // the dead-letter queue if it fails, after 35 waits.
        let template = include_str!("../../../template.yaml");
        let max: u32 = template
            .split("NotificationQueue:")
            .nth(1)
            .and_then(|q| q.split("maxReceiveCount:").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("the notification queue's maxReceiveCount");
        let span: Duration = (1..max).map(retry_delay).sum();
        assert!(
            span >= Duration::from_secs(24 * 3600),
            "{span:?} with maxReceiveCount {max}"
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
