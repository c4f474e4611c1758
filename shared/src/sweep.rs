//! The reconciliation sweep: mail that Graph never announced becomes an event
//! too.
//!
//! Graph's change notifications are best effort: in the field a fraction of
//! them never arrive, and nothing says so. Every scheduled run therefore
//! runs the first step of the catch-up ([`crate::catchup::step`]) for each
//! active flow that is due: what arrived since the flow's stored delta link
//! (for mail, the link's filter keeps it to mail received since the flow's
//! baseline, created ones only; for a calendar, every change of the events
//! in its window, one per version), looked up in the flow's delivery
//! ledger, and queued on the same FIFO queue and message group as the
//! webhook's, so dispatch delivers it in order and at most once. A longer
//! walk goes on in dispatch, one bounded step per queue record, and the new
//! link is stored only after the queue took every item, so an interrupted
//! sweep repeats work instead of skipping mail.
//!
//! A run sweeps the subscriptions not swept for [`SWEEP_AGE`] until its time
//! budget is spent, the longest-waiting first, so a large deployment is
//! covered over several runs instead of sending every mailbox to Graph in the
//! same minute; `{"detail": {"sweep": "all"}}` sweeps every one (after an
//! outage). What a sweep had to recover is counted per subscription and
//! shown by `GET /connections/{id}`: a mailbox whose count grows is one for
//! which Graph is dropping notifications.

use std::time::Instant;

use futures_util::stream::{self, StreamExt};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::aws::queue::{CatchUpStep, Queue, QueuedNotification};
use crate::catchup;
use crate::model::connection::{Connection, Status, Subscription};
use crate::services::Services;

/// A subscription swept more recently than this is left for a later run
/// (unless the run sweeps all).
pub const SWEEP_AGE: time::Duration = time::Duration::minutes(10);

/// One subscription's sweep: connection, subscription, mails recovered or why not.
type Swept = (String, String, Result<usize, String>);

/// A resumed flow whose catch-up has not finished after this long is
/// started again (its step records may have gone to the dead-letter queue).
pub const STALLED_CATCH_UP: time::Duration = time::Duration::minutes(30);

fn catching_up_since(sub: &Subscription) -> Option<OffsetDateTime> {
    sub.catching_up
        .as_deref()
        .map(|t| OffsetDateTime::parse(t, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH))
}

/// Subscriptions swept at once.
pub const CONCURRENCY: usize = 16;

/// What a sweep did.
#[derive(Debug, Default, serde::Serialize)]
pub struct SweepReport {
    /// Subscriptions swept.
    pub swept: usize,
    /// Items Graph never announced (not in the ledger), queued for delivery.
    pub recovered: usize,
    /// Subscriptions due but left for the next run (the time budget ran out).
    pub left: usize,
    /// Subscriptions that could not be swept, with the reason.
    pub failed: Vec<serde_json::Value>,
    /// Connections needing a new sign-in whose flow was not told yet: a
    /// reminder was queued, and dispatch sends `connection.reauth_required`.
    pub reminded: usize,
    /// Resumed flows whose catch-up had stalled and was started again.
    pub restarted: usize,
}

/// Sweeps the active mail subscriptions that are due (all of them when
/// `all`), starting none after `deadline`.
pub async fn sweep(s: &Services, queue: &dyn Queue, deadline: Instant, all: bool) -> SweepReport {
    let mut report = SweepReport::default();
    let ids = match s.state.connection_ids().await {
        Ok(ids) => ids,
        Err(e) => {
            report.failed.push(serde_json::json!({"reason": e.to_string()}));
            return report;
        }
    };
    let now = OffsetDateTime::now_utc();
    let mut due: Vec<(Connection, Subscription, Option<OffsetDateTime>)> = Vec::new();
    for id in ids {
        let Ok(Some(conn)) = s.state.connection(&id).await else {
            continue;
        };
        if conn.status == Status::ReauthRequired {
            report.reminded += remind(s, queue, &conn).await;
            continue;
        }
        if conn.status != Status::Active {
            continue;
        }
        // Mail and calendar flows alike, once their baseline is stored; a
        // paused flow is caught up when it is resumed, and a resumed one by
        // its own catch-up, unless that stalled.
        for sub in conn
            .subscriptions
            .iter()
            .filter(|x| !x.id.is_empty() && x.delta_link.is_some() && !x.is_paused())
        {
            if let Some(since) = catching_up_since(sub) {
                if now - since >= STALLED_CATCH_UP {
                    report.restarted += catchup::start(queue, &conn, &[sub], true).await.unwrap_or(0);
                }
                continue;
            }
            let last = sub
                .last_swept_at
                .as_deref()
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
            if all || last.is_none_or(|t| now - t >= SWEEP_AGE) {
                due.push((conn.clone(), sub.clone(), last));
            }
        }
    }
    // The longest-waiting first (never swept before all others). Mailboxes
    // are swept CONCURRENCY at a time (Graph's limits are per mailbox, and
    // one subscription makes one request at a time).
    due.sort_by_key(|(_, _, last)| *last);
    let results: Vec<Option<Swept>> = stream::iter(due)
        .map(|(conn, sub, _)| async move {
            if Instant::now() >= deadline {
                return None;
            }
            let r = sweep_one(s, queue, &conn, &sub, deadline).await;
            Some((conn.id, sub.id, r))
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for r in results {
        match r {
            None => report.left += 1,
            Some((_, _, Ok(n))) => {
                report.swept += 1;
                report.recovered += n;
            }
            Some((conn, sub, Err(reason))) => {
                tracing::warn!(connection = %conn, subscription = %sub, reason = %reason, "sweep failed");
                report
                    .failed
                    .push(serde_json::json!({"connection": conn, "subscription": sub, "reason": reason}));
            }
        }
    }
    report
}

/// Queues a reminder for a connection that needs a new sign-in and whose flow
/// was not told yet (no `reauth#{generation}` in the ledger), whoever noticed:
/// dispatch answers any notification of such a connection with
/// `connection.reauth_required`, once. Returns 1 when one was queued.
async fn remind(s: &Services, queue: &dyn Queue, conn: &Connection) -> usize {
    let Some(sub) = conn.subscriptions.iter().find(|x| !x.id.is_empty()) else {
        return 0;
    };
    match s
        .state
        .is_delivered(&conn.id, &format!("reauth#{}", conn.generation))
        .await
    {
        Ok(false) => {}
        _ => return 0,
    }
    let mut reminder = QueuedNotification::for_subscription(&conn.id, &sub.id);
    reminder.change_type = Some(crate::model::notification::ChangeType::ReauthReminder);
    reminder.version = Some(conn.generation.to_string());
    match queue.send(&[reminder]).await {
        Ok(()) => 1,
        Err(e) => {
            tracing::warn!(connection = %conn.id, error = %e, "could not queue the reauth reminder");
            0
        }
    }
}

async fn sweep_one(
    s: &Services,
    queue: &dyn Queue,
    conn: &Connection,
    sub: &Subscription,
    deadline: Instant,
) -> Result<usize, String> {
    let token = s.tokens.access_token(conn).await.map_err(|e| e.to_string())?;
    // The first step here; a walk longer than one step goes on in dispatch
    // (the step queues its continuation behind what it found).
    let from = CatchUpStep {
        cursor: None,
        rebaseline: false,
    };
    let until = deadline.max(Instant::now() + catchup::PAGE_WORST);
    let stepped = catchup::step(s, queue, conn, sub, &token, &from, until)
        .await
        .map_err(|e| e.to_string())?;
    Ok(stepped.queued)
}
