//! The one catch-up path: what Graph never announced reaches the flow.
//!
//! The reconciliation sweep, a `missed` or `subscriptionRemoved` lifecycle
//! notification, a recreated subscription, a new sign-in and a resumed flow
//! all need the same thing: walk the folder's delta query from where the
//! flow stopped, look each item up in the flow's delivery ledger, and queue
//! what is new on the notification queue, in the connection's FIFO group, so
//! dispatch delivers it in order and at most once. [`step`] is that walk,
//! bounded: at most [`PAGES_PER_STEP`] pages and never past its deadline. A
//! walk that is not at its end queues its own continuation (a catch-up step
//! record carrying the `@odata.nextLink`) behind the items it found, so the
//! rest is done by a later record, never inside one record or one request
//! without end. The flow's stored delta link moves only once the walk has
//! reached the end and the queue took everything before it: an interrupted
//! walk repeats work, it never skips mail.
//!
//! A delta link Graph no longer honours (`410 Gone`, `syncStateNotFound`) is
//! replaced by a new baseline: mail received since the flow's watermark less
//! [`WATERMARK_MARGIN`], with the ledger deciding what was delivered. A
//! resumed flow starts from such a baseline too, so nothing that arrived
//! while it was paused, or that was refused when it was paused, is skipped.
//! Where message delta does not exist (the 21Vianet cloud), the same step
//! lists the folder by `receivedDateTime` from the flow's position instead.
//! While a resumed flow catches up, new notifications are left to the walk;
//! its last step looks once more from the end and finishes the catch-up only
//! when nothing new turned up, so the flow gets every item once and in order.

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::aws::queue::{CatchUpStep, ChangeType, Queue, QueueError, QueuedNotification};
use crate::aws::store::{DELIVERY_TTL_DAYS, StoreError, SubscriptionChange};
use crate::delta;
use crate::microsoft::graph::GraphError;
use crate::microsoft::paths;
use crate::model::connection::{Connection, Subscription};
use crate::model::scopes::Resource;
use crate::model::sensitive::Sensitive;
use crate::services::Services;

/// A flow swept more recently than this is left for a later scheduled run
/// (unless the run sweeps all).
pub const SWEEP_AGE: time::Duration = time::Duration::minutes(10);

/// A subscription expiring within this is renewed by the scheduled run.
pub const RENEW_WITHIN: time::Duration = time::Duration::days(1);

/// Delta pages one step reads at most.
pub const PAGES_PER_STEP: usize = 4;

/// Items a delta page holds at most (`Prefer: odata.maxpagesize`).
pub const PAGE_SIZE: u32 = 50;

/// What a page may take, retries included: a step starts a page only with
/// this much left before its deadline.
pub const PAGE_WORST: Duration = Duration::from_secs(8);

/// How far before the watermark (the newest mail a flow was sent) a new
/// baseline starts, and how much older than the watermark a mail the ledger
/// does not remember must be to count as old. It is longer than the sweep
/// takes to find a mail whose notification Graph dropped (a schedule
/// interval and the sweep's age), so such a mail is still delivered, and far
/// shorter than the ledger's 14 days, so a mail moved out and back in weeks
/// later is not sent again as new.
pub const WATERMARK_MARGIN: time::Duration = time::Duration::hours(2);

/// A catch-up step could not be done; it is repeated from where it started.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Graph refused or failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The queue did not take what was found.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The state table failed.
    #[error(transparent)]
    State(#[from] StoreError),
}

impl CatchUpError {
    /// True when trying again later may succeed; a refusal for a person to
    /// fix (a missing permission) is kept for retry too, so it ends in the
    /// dead-letter queue with its alarm.
    pub fn is_retryable(&self) -> bool {
        match self {
            CatchUpError::Graph(e) => e.is_retryable() || e.status() == Some(403),
            CatchUpError::Queue(_) => true,
            CatchUpError::State(e) => e.is_retryable(),
        }
    }
}

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stepped {
    /// Items queued for the flow (not in its ledger).
    pub queued: usize,
    /// The walk reached its end and the flow's link moved (no continuation).
    pub finished: bool,
    /// The stored link had expired and a new baseline was started.
    pub rebaselined: bool,
}

fn parse(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

/// Where a new baseline of a flow starts: the mail received since its
/// watermark less [`WATERMARK_MARGIN`] (and not before the flow existed);
/// without a watermark, since the flow was made. A watermark so old that
/// the ledger may have forgotten what was delivered around it starts just
/// after it instead, so nothing delivered is sent again.
pub fn baseline_since(sub: &Subscription, now: OffsetDateTime) -> OffsetDateTime {
    let created = sub
        .created_at
        .as_deref()
        .and_then(parse)
        .map(|c| c - time::Duration::minutes(1));
    match sub.watermark.as_deref().and_then(parse) {
        Some(w) if now - w > time::Duration::days(DELIVERY_TTL_DAYS) - WATERMARK_MARGIN => {
            w + time::Duration::seconds(1)
        }
        Some(w) => created.map_or(w - WATERMARK_MARGIN, |c| (w - WATERMARK_MARGIN).max(c)),
        None => created.unwrap_or(now - time::Duration::minutes(1)),
    }
}

/// The first request of a new baseline for the flow.
pub fn baseline(conn: &Connection, sub: &Subscription) -> String {
    let now = OffsetDateTime::now_utc();
    match sub.resource {
        Resource::Mail if delta::lists_instead_of_delta(conn, sub) => {
            delta::list_start(conn, sub, baseline_since(sub, now))
        }
        Resource::Mail => delta::delta_start(conn, sub, baseline_since(sub, now)),
        Resource::Calendar => delta::calendar_delta_start(conn, now - time::Duration::days(1)),
    }
}

/// Whether a mail received at `received` is older than the flow's watermark
/// by more than [`WATERMARK_MARGIN`]: one the ledger does not remember was
/// delivered long ago (or moved back in), not a new one.
pub fn older_than_watermark(sub: &Subscription, received: Option<&str>) -> bool {
    match (sub.watermark.as_deref().and_then(parse), received.and_then(parse)) {
        (Some(w), Some(r)) => r < w - WATERMARK_MARGIN,
        _ => false,
    }
}

/// An item a delta page reported.
struct Found {
    id: String,
    change_type: ChangeType,
    version: Option<String>,
    ledger_key: String,
    received: Option<String>,
}

fn found_on_page(resource: Resource, items: Vec<serde_json::Value>) -> Vec<Found> {
    items
        .into_iter()
        .filter_map(|v| {
            let id = v.get("id")?.as_str()?.to_string();
            let removed = v.get("@removed").is_some();
            match resource {
                // New mail only: a removal is nothing to deliver.
                Resource::Mail if removed => None,
                Resource::Mail => Some(Found {
                    ledger_key: id.clone(),
                    received: v["receivedDateTime"].as_str().map(str::to_string),
                    id,
                    change_type: ChangeType::Created,
                    version: None,
                }),
                Resource::Calendar => {
                    let change = delta::CalendarChange {
                        change_key: v.get("changeKey").and_then(|c| c.as_str()).map(str::to_string),
                        removed,
                        id,
                    };
                    Some(Found {
                        ledger_key: change.ledger_key(),
                        change_type: change.change_type(),
                        version: change.change_key.clone(),
                        received: None,
                        id: change.id,
                    })
                }
            }
        })
        .collect()
}

/// A step record for `sub` (queued behind what a step found, or by whoever
/// starts a catch-up).
pub fn step_record(conn: &Connection, sub: &Subscription, from: CatchUpStep) -> QueuedNotification {
    let mut n = QueuedNotification::for_subscription(&conn.id, &sub.id);
    n.flow = Some(sub.key.clone());
    n.catch_up = Some(from);
    n
}

/// Queues the start of a catch-up for every flow of the connection on the
/// Graph subscription `graph_id` that is not paused (after `missed`, a
/// recreate, a new sign-in), or for one flow (a resume).
///
/// # Errors
/// [`QueueError`] when the queue did not take them.
pub async fn start(
    queue: &dyn Queue,
    conn: &Connection,
    flows: &[&Subscription],
    rebaseline: bool,
) -> Result<usize, QueueError> {
    let records: Vec<QueuedNotification> = flows
        .iter()
        .filter(|f| !f.is_paused() && !f.id.is_empty())
        .map(|f| {
            step_record(
                conn,
                f,
                CatchUpStep {
                    cursor: None,
                    rebaseline,
                },
            )
        })
        .collect();
    if !records.is_empty() {
        queue.send(&records).await?;
    }
    Ok(records.len())
}

/// One bounded step of a flow's catch-up from `from`: reads delta pages
/// (at most [`PAGES_PER_STEP`], none started within [`PAGE_WORST`] of
/// `until`, at least one), queues every item the flow's ledger does not
/// have, and either queues the continuation behind them or, at the end,
/// stores the new link.
///
/// # Errors
/// [`CatchUpError`]; nothing was stored, and the step may be repeated.
pub async fn step(
    s: &Services,
    queue: &dyn Queue,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
    from: &CatchUpStep,
    until: Instant,
) -> Result<Stepped, CatchUpError> {
    let mut out = Stepped::default();
    let mut link = match (&from.cursor, &sub.delta_link) {
        (Some(cursor), _) => cursor.clone(),
        // A calendar's new baseline is its whole window, which would send
        // again every event whose ledger entry expired: a calendar flow goes
        // on from its stored link (a paused flow's link has not moved).
        (None, Some(stored)) if !from.rebaseline || sub.resource == Resource::Calendar => stored.clone(),
        _ => {
            out.rebaselined = true;
            baseline(conn, sub)
        }
    };
    let prefer = [("Prefer", format!("odata.maxpagesize={PAGE_SIZE}"))];
    let listing = delta::lists_instead_of_delta(conn, sub);
    let mut newest: Option<OffsetDateTime> = None;
    let mut found = Vec::new();
    let mut end = None;
    let mut pages = 0;
    while pages < PAGES_PER_STEP && (pages == 0 || Instant::now() + PAGE_WORST < until) {
        let page: delta::DeltaPage = match s
            .graph
            .send(reqwest::Method::GET, &link, token, None, &prefer)
            .await
        {
            Ok(r) => r.json()?,
            Err(e) if e.status() == Some(410) && !out.rebaselined => {
                // Graph forgot the delta state: a new baseline, with the
                // ledger and the watermark deciding what is new.
                tracing::warn!(connection = %conn.id, flow = %sub.key, error = %e, "the delta link expired; starting a new baseline from the watermark");
                out.rebaselined = true;
                link = baseline(conn, sub);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        pages += 1;
        let items = found_on_page(sub.resource, page.value);
        newest = items
            .iter()
            .filter_map(|f| f.received.as_deref().and_then(parse))
            .chain(newest)
            .max();
        found.extend(items);
        match (page.next, page.delta) {
            (Some(next), _) => link = next,
            (None, Some(delta)) => {
                end = Some(delta);
                break;
            }
            // A listing (no message delta in this cloud) ends without a
            // delta link: the next round lists from the newest mail seen.
            (None, None) if listing => {
                let since = newest.unwrap_or_else(|| baseline_since(sub, OffsetDateTime::now_utc()));
                end = Some(delta::list_start(conn, sub, since));
                break;
            }
            (None, None) => {
                return Err(
                    GraphError::Decode("a delta page had neither nextLink nor deltaLink".into()).into(),
                );
            }
        }
    }
    let mut records = unsent(s, conn, sub, found).await?;
    out.queued = records.len();
    crate::metrics::recovered(out.queued);
    let catching_up = sub.catching_up.is_some();
    match &end {
        None => records.push(step_record(
            conn,
            sub,
            CatchUpStep {
                cursor: Some(link.clone()),
                rebaseline: false,
            },
        )),
        // A resume finishes only after a look from the end finds nothing:
        // what arrived during the walk is found by that look.
        Some(_) if catching_up && out.queued > 0 => records.push(step_record(
            conn,
            sub,
            CatchUpStep {
                cursor: None,
                rebaseline: false,
            },
        )),
        Some(_) => {}
    }
    if !records.is_empty() {
        queue.send(&records).await?;
    }
    record_step(s, conn, sub, end, &mut out).await?;
    Ok(out)
}

/// The flow's records for the `found` items it was never sent: those with
/// a Graph id, newer than the watermark and missing from the flow's ledger.
///
/// # Errors
/// [`CatchUpError`] when the ledger cannot be read.
async fn unsent(
    s: &Services,
    conn: &Connection,
    sub: &Subscription,
    found: Vec<Found>,
) -> Result<Vec<QueuedNotification>, CatchUpError> {
    let mut records = Vec::new();
    for item in found {
        if paths::item_id(&item.id).is_err() {
            continue;
        }
        if older_than_watermark(sub, item.received.as_deref()) {
            continue;
        }
        if s.state
            .is_delivered(&conn.id, &sub.ledger_key(&item.ledger_key))
            .await?
        {
            continue;
        }
        let mut n = QueuedNotification::for_subscription(&conn.id, &sub.id);
        n.flow = Some(sub.key.clone());
        n.change_type = Some(item.change_type);
        n.resource_id = Some(item.id);
        n.version = item.version;
        records.push(n);
    }
    Ok(records)
}

/// Records a step in the flow once its items are queued: at the end, the
/// new link (`end`), the next sweep and the count recovered; before the
/// end, the count only.
///
/// # Errors
/// [`CatchUpError`] when the state table fails.
async fn record_step(
    s: &Services,
    conn: &Connection,
    sub: &Subscription,
    end: Option<String>,
    out: &mut Stepped,
) -> Result<(), CatchUpError> {
    let catching_up = sub.catching_up.is_some();
    if let Some(delta) = end {
        let mut change = SubscriptionChange::new()
            .delta_link(&delta)
            .last_swept_at(OffsetDateTime::now_utc())
            .due_at(next_due(sub, OffsetDateTime::now_utc()))
            .recovered(sub.recovered.unwrap_or(0) + out.queued as u64);
        if catching_up && out.queued == 0 {
            change = change.caught_up();
            tracing::info!(connection = %conn.id, flow = %sub.key, "the resumed flow has caught up; new mail goes to it again");
        }
        s.state.update_subscription(&conn.id, &sub.key, change).await?;
        out.finished = true;
    }
    if out.queued > 0 {
        tracing::warn!(connection = %conn.id, flow = %sub.key, queued = out.queued, "catch-up found items the flow was never sent; queued for delivery");
        if !out.finished {
            // Counted now: the continuation reads the flow afresh.
            let change = SubscriptionChange::new().recovered(sub.recovered.unwrap_or(0) + out.queued as u64);
            s.state.update_subscription(&conn.id, &sub.key, change).await?;
        }
    }
    Ok(())
}

/// A flow swept at `swept` is next due for the scheduled run at its next
/// sweep or its renewal, whichever comes first.
pub fn next_due(sub: &Subscription, swept: OffsetDateTime) -> OffsetDateTime {
    let renewal = sub.expires_at.map_or(swept, |e| e - RENEW_WITHIN);
    renewal.min(swept + SWEEP_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(created: &str, watermark: Option<&str>) -> Subscription {
        let mut s = Subscription::new(Resource::Mail, None, None);
        s.created_at = Some(created.into());
        s.watermark = watermark.map(str::to_string);
        s
    }

    fn at(t: &str) -> OffsetDateTime {
        OffsetDateTime::parse(t, &Rfc3339).unwrap()
    }

    #[test]
    fn a_swept_flow_is_next_due_at_its_next_sweep_or_its_renewal_whichever_first() {
        let swept = at("2026-12-05T10:00:00Z");
        let mut flow = sub("2026-12-01T00:00:00Z", None);
        flow.expires_at = Some(at("2026-12-08T10:00:00Z"));
        assert_eq!(next_due(&flow, swept), at("2026-12-05T10:10:00Z"));
        flow.expires_at = Some(at("2026-12-06T10:05:00Z"));
        assert_eq!(next_due(&flow, swept), at("2026-12-05T10:05:00Z"));
        flow.expires_at = None;
        assert_eq!(next_due(&flow, swept), swept, "no expiry known: due at once");
    }

    #[test]
    fn a_baseline_starts_before_the_watermark_but_never_before_the_flow() {
        let now = at("2026-12-04T12:00:00Z");
        let s = sub("2026-11-01T00:00:00Z", Some("2026-12-04T10:00:00Z"));
        assert_eq!(baseline_since(&s, now), at("2026-12-04T08:00:00Z"));
        let young = sub("2026-12-04T09:00:00Z", Some("2026-12-04T10:00:00Z"));
        assert_eq!(baseline_since(&young, now), at("2026-12-04T08:59:00Z"));
        let none = sub("2026-12-01T00:00:00Z", None);
        assert_eq!(baseline_since(&none, now), at("2026-11-30T23:59:00Z"));
        // The ledger may have forgotten mail around a watermark this old.
        let old = sub("2026-10-01T00:00:00Z", Some("2026-11-10T10:00:00Z"));
        assert_eq!(baseline_since(&old, now), at("2026-11-10T10:00:01Z"));
    }

    #[test]
    fn only_mail_well_before_the_watermark_is_old() {
        let s = sub("2026-11-01T00:00:00Z", Some("2026-12-04T10:00:00Z"));
        assert!(older_than_watermark(&s, Some("2026-11-14T10:00:00Z")));
        assert!(!older_than_watermark(&s, Some("2026-12-04T09:00:00Z")));
        assert!(!older_than_watermark(&s, Some("2026-12-04T11:00:00Z")));
        assert!(!older_than_watermark(&s, None));
        assert!(!older_than_watermark(
            &sub("2026-11-01T00:00:00Z", None),
            Some("2020-01-01T00:00:00Z")
        ));
    }

    #[test]
    fn pages_become_items_with_their_ledger_keys() {
        let mail = found_on_page(
            Resource::Mail,
            vec![
                serde_json::json!({"id": "m1", "receivedDateTime": "2026-12-04T10:00:00Z"}),
                serde_json::json!({"id": "m2", "@removed": {"reason": "deleted"}}),
            ],
        );
        assert_eq!(mail.len(), 1);
        assert_eq!((mail[0].id.as_str(), mail[0].ledger_key.as_str()), ("m1", "m1"));
        let cal = found_on_page(
            Resource::Calendar,
            vec![
                serde_json::json!({"id": "e1", "changeKey": "k1"}),
                serde_json::json!({"id": "e2", "@removed": {"reason": "deleted"}}),
            ],
        );
        assert_eq!(cal[0].ledger_key, "e1#k1");
        assert_eq!(
            (cal[1].change_type, cal[1].ledger_key.as_str()),
            (ChangeType::Deleted, "e2#deleted")
        );
    }
}
