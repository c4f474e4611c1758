//! The reconciliation sweep: mail that Graph never announced becomes an event
//! too.
//!
//! Graph's change notifications are best effort: in the field a fraction of
//! them never arrive, and nothing says so. Every scheduled run therefore
//! asks Graph, per active subscription, what arrived since the stored delta
//! link (for mail, the link's filter keeps it to mail received since the
//! subscription's baseline, created ones only; for a calendar, every change
//! of the events in its window, one per version), looks each item up in the
//! delivery ledger, and queues a notification for every item that was
//! never delivered, on the same FIFO queue and message group as the webhook's,
//! so dispatch delivers it in order and at most once (the ledger again). The
//! new link is stored only after the queue took every item, so an
//! interrupted sweep repeats work instead of skipping mail.
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

use crate::aws::queue::{Queue, QueuedNotification};
use crate::aws::store::SubscriptionChange;
use crate::microsoft::paths;
use crate::model::connection::{Connection, Status, Subscription};
use crate::model::scopes::Resource;
use crate::services::Services;
use crate::subscriptions;

/// A subscription swept more recently than this is left for a later run
/// (unless the run sweeps all).
pub const SWEEP_AGE: time::Duration = time::Duration::minutes(10);

/// One subscription's sweep: connection, subscription, mails recovered or why not.
type Swept = (String, String, Result<usize, String>);

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
        // Mail and calendar subscriptions alike, once their baseline is stored.
        for sub in conn
            .subscriptions
            .iter()
            .filter(|x| !x.id.is_empty() && x.delta_link.is_some() && x.target_gone_at.is_none())
        {
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
            let r = sweep_one(s, queue, &conn, &sub).await;
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
    let reminder = QueuedNotification {
        connection_id: conn.id.clone(),
        subscription_id: sub.id.clone(),
        change_type: Some("reauth_reminder".into()),
        resource: None,
        resource_id: None,
        version: Some(conn.generation.to_string()),
        lifecycle_event: None,
        received_at: OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
    };
    match queue.send(&[reminder]).await {
        Ok(()) => 1,
        Err(e) => {
            tracing::warn!(connection = %conn.id, error = %e, "could not queue the reauth reminder");
            0
        }
    }
}

/// One item a sweep found, as dispatch would record it.
struct Found {
    id: String,
    change_type: &'static str,
    version: Option<String>,
    /// The delivery ledger's key for it: the message id, or a calendar
    /// event's id and version.
    ledger_key: String,
}

/// What Graph reports since `link`: new mail, or every calendar change.
async fn changes_since(
    s: &Services,
    token: &crate::Sensitive,
    sub: &Subscription,
    link: &str,
) -> Result<(Vec<Found>, String), String> {
    match sub.resource {
        Resource::Mail => {
            let (ids, next) = subscriptions::delta(s, token, link)
                .await
                .map_err(|e| e.to_string())?;
            let found = ids
                .into_iter()
                .map(|id| Found {
                    ledger_key: id.clone(),
                    id,
                    change_type: "created",
                    version: None,
                })
                .collect();
            Ok((found, next))
        }
        Resource::Calendar => {
            let (changes, next) = subscriptions::calendar_delta(s, token, link)
                .await
                .map_err(|e| e.to_string())?;
            let found = changes
                .into_iter()
                .map(|c| Found {
                    ledger_key: c.ledger_key(),
                    change_type: c.change_type(),
                    version: c.change_key.clone(),
                    id: c.id,
                })
                .collect();
            Ok((found, next))
        }
    }
}

async fn sweep_one(
    s: &Services,
    queue: &dyn Queue,
    conn: &Connection,
    sub: &Subscription,
) -> Result<usize, String> {
    let Some(link) = &sub.delta_link else {
        return Ok(0);
    };
    let token = s.tokens.access_token(conn).await.map_err(|e| e.to_string())?;
    let (changes, next) = changes_since(s, &token, sub, link).await?;
    let received_at = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
    let mut missing = Vec::new();
    for change in changes {
        if paths::item_id(&change.id).is_err() {
            continue;
        }
        if !s
            .state
            .is_delivered(&conn.id, &change.ledger_key)
            .await
            .map_err(|e| e.to_string())?
        {
            missing.push(QueuedNotification {
                connection_id: conn.id.clone(),
                subscription_id: sub.id.clone(),
                change_type: Some(change.change_type.into()),
                resource: None,
                resource_id: Some(change.id),
                version: change.version,
                lifecycle_event: None,
                received_at: received_at.clone(),
            });
        }
    }
    if !missing.is_empty() {
        queue.send(&missing).await.map_err(|e| e.to_string())?;
        tracing::warn!(
            connection = %conn.id,
            subscription = %sub.id,
            recovered = missing.len(),
            "the sweep found mail Graph never announced; queued for delivery"
        );
    }
    let change = SubscriptionChange::new()
        .delta_link(&next)
        .last_swept_at(OffsetDateTime::now_utc())
        .recovered(sub.recovered.unwrap_or(0) + missing.len() as u64);
    s.state
        .update_subscription(&conn.id, &sub.key, change)
        .await
        .map_err(|e| e.to_string())?;
    Ok(missing.len())
}
