//! One SQS batch, split by mailbox: the records of each FIFO message group
//! (one per connection) run in order, the groups side by side, and what
//! comes back for retry is counted on its subscription.

use std::collections::HashMap;
use std::time::Instant;

use aws_lambda_events::sqs::SqsMessage;
use relay365::aws::queue::QueuedNotification;
use relay365::aws::store::SubscriptionChange;
use relay365::catchup;
use relay365::model::connection::Connection;
use tracing::Instrument;

use crate::outcome::Outcome;
use crate::{Dispatcher, STEP_BUDGET, process, retry_delay_from};

/// How many mailboxes of one batch are worked on at once. A batch holds at
/// most ten records (the template's `BatchSize`), so every group of it runs
/// at once; the bound keeps a larger batch from opening more Graph requests
/// than a container should.
pub(crate) const GROUPS_AT_ONCE: usize = 10;

/// One SQS record, as dispatch reads it.
pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) handle: String,
    pub(crate) attempt: u32,
    pub(crate) group: String,
    pub(crate) notification: Option<QueuedNotification>,
}

impl From<SqsMessage> for Record {
    fn from(record: SqsMessage) -> Self {
        let attempt = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let group = record
            .attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_default();
        let notification = record
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<QueuedNotification>(b).ok());
        Self {
            id: record.message_id.unwrap_or_default(),
            handle: record.receipt_handle.unwrap_or_default(),
            attempt,
            group,
            notification,
        }
    }
}

impl Record {
    /// The (connection, Graph subscription id) the record is for; empty for
    /// a record that is not a relay365 notification.
    pub(crate) fn sub_of(&self) -> (String, String) {
        self.notification
            .as_ref()
            .map(|n| (n.connection_id.clone(), n.subscription_id.clone()))
            .unwrap_or_default()
    }
}

/// What became of one record.
pub(crate) enum Fate {
    /// Done: delivered, or nothing to deliver.
    Done,
    /// Failed: seen again after this many seconds.
    Retry(u32),
    /// Not started, the invocation's time being nearly up.
    HeldBack,
    /// Not started because an earlier record of its mailbox came back.
    Behind,
}

/// One message group's records and the connections it read.
pub(crate) struct GroupRun {
    pub(crate) fates: Vec<(Record, Fate)>,
    pub(crate) connections: HashMap<String, Connection>,
}

/// Runs one mailbox's records in order. Once one comes back (failed, or
/// not started for time), the rest of its group come back behind it, so a
/// mailbox's events keep their order.
pub(crate) async fn run_group(
    d: &Dispatcher,
    records: Vec<Record>,
    deadline: Option<Instant>,
    trace: Option<&str>,
) -> GroupRun {
    // Each connection is read fresh once per batch (one invocation); nothing
    // outlives it.
    let mut connections: HashMap<String, Connection> = HashMap::new();
    let mut fates = Vec::with_capacity(records.len());
    let mut stopped = false;
    for record in records {
        if stopped {
            fates.push((record, Fate::Behind));
            continue;
        }
        if let Some(deadline) = deadline
            && deadline.saturating_duration_since(Instant::now()) < STEP_BUDGET
        {
            // Not started: retried as it is. Later records of its mailbox
            // wait behind it, so the order holds.
            stopped = !record.group.is_empty();
            fates.push((record, Fate::HeldBack));
            continue;
        }
        let outcome = match &record.notification {
            Some(n) => {
                // A catch-up step gets what is left of the record's budget.
                let until = deadline
                    .map(|d| {
                        d.checked_sub(STEP_BUDGET - catchup::PAGE_WORST * 2)
                            .unwrap_or_else(Instant::now)
                    })
                    .unwrap_or_else(|| Instant::now() + catchup::PAGE_WORST * 3);
                // Every log line of the record names it and its connection
                // (and, through the runtime's span, the Lambda request id).
                let span = tracing::info_span!(
                    "record",
                    message_id = %record.id,
                    connection = %n.connection_id,
                    event = tracing::field::Empty
                );
                process(d, n, record.attempt, &mut connections, until, trace)
                    .instrument(span)
                    .await
            }
            None => {
                tracing::error!(message_id = %record.id, "dropping a queue record that is not a relay365 notification");
                Outcome::Done
            }
        };
        match outcome {
            Outcome::Retry(why) => {
                let delay = retry_delay_from(d.first_retry, record.attempt);
                tracing::warn!(message_id = %record.id, reason = %why, attempt = record.attempt, retry_in_secs = delay.as_secs(), "record left for retry");
                stopped = !record.group.is_empty();
                fates.push((record, Fate::Retry(delay.as_secs() as u32)));
            }
            _ => fates.push((record, Fate::Done)),
        }
    }
    GroupRun { fates, connections }
}

/// Records on each subscription of the batch how many of its records came
/// back for retry (`waiting`, shown by `GET /connections/{id}`), writing only
/// where the number changed.
pub(crate) async fn record_waiting(
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
