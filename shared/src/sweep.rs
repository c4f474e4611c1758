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
//! The scheduled run ([`crate::schedule`]) sweeps each flow not swept for
//! [`SWEEP_AGE`], the longest-waiting first, within its time budget;
//! `{"detail": {"sweep": "all"}}` sweeps every one (after an outage). What a sweep had to recover is counted per subscription and
//! shown by `GET /connections/{id}`: a mailbox whose count grows is one for
//! which Graph is dropping notifications.

use std::time::Instant;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::aws::queue::{CatchUpStep, Queue, QueuedNotification};
use crate::catchup;
use crate::model::connection::{Connection, Subscription};
use crate::services::Services;

pub use crate::catchup::SWEEP_AGE;

/// A resumed flow whose catch-up has not finished after this long is
/// started again (its step records may have gone to the dead-letter queue).
pub const STALLED_CATCH_UP: time::Duration = time::Duration::minutes(30);

pub(crate) fn catching_up_since(sub: &Subscription) -> Option<OffsetDateTime> {
    sub.catching_up
        .as_deref()
        .map(|t| OffsetDateTime::parse(t, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH))
}

/// Queues a reminder for a connection that needs a new sign-in and whose flow
/// was not told yet (no `reauth#{generation}` in the ledger), whoever noticed:
/// dispatch answers any notification of such a connection with
/// `connection.reauth_required`, once. Returns 1 when one was queued.
pub(crate) async fn remind(s: &Services, queue: &dyn Queue, conn: &Connection) -> usize {
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

/// Sweeps one flow: the first step of its catch-up.
pub(crate) async fn sweep_one(
    s: &Services,
    queue: &dyn Queue,
    conn: &Connection,
    sub: &Subscription,
    deadline: Instant,
) -> Result<catchup::Stepped, String> {
    let token = s.tokens.access_token(conn).await.map_err(|e| e.to_string())?;
    // The first step here; a walk longer than one step goes on in dispatch
    // (the step queues its continuation behind what it found).
    let from = CatchUpStep {
        cursor: None,
        rebaseline: false,
    };
    let until = deadline.max(Instant::now() + catchup::PAGE_WORST);
    catchup::step(s, queue, conn, sub, &token, &from, until)
        .await
        .map_err(|e| e.to_string())
}
