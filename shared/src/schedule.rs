//! The scheduled run: renew what is due, recreate what Graph lost or what
//! was made with another signing key, and sweep every flow for mail Graph
//! never announced, for a fleet of thousands of mailboxes inside one
//! invocation's time.
//!
//! A run does not read every connection. Each flow carries `due_at`, the
//! time the run next has work for it, filed in `due-index`; the run lists
//! the flows due by now (plus half a sweep age, so a flow swept late in the
//! last run is not left for two intervals), the longest-waiting first, and
//! reads only their connections. Whoever changes what is due (a new Graph
//! subscription, a pause, a resume) makes the flow due at once; only the run
//! moves `due_at` into the future, after it did the flow's work. Work the run
//! could not do (out of time, no write slot, a failure) keeps its old
//! `due_at`, so the next run takes it first. When the signing key is new (a
//! rotation), on the first run after an upgrade, or when asked (`renew` or
//! `sweep` `all`), the run looks at every connection instead, and records
//! the key once every flow was seen under it.
//!
//! Connections are served [`CONCURRENCY`] at a time; inside one connection
//! the subscription writes go one after another and the sweeps at most
//! [`PER_MAILBOX`] at a time, Graph's limit of concurrent requests per
//! mailbox. Subscription writes take a slot from the pacer
//! ([`crate::microsoft::pacing`]) that keeps each tenant and the app below
//! Graph's write limits; a slot that would come after the run's deadline
//! leaves the write for the next run. No connection is started after the
//! deadline, and no step runs past it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use time::OffsetDateTime;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::aws::queue::Queue;
use crate::aws::store::SubscriptionChange;
use crate::microsoft::graph::GraphError;
use crate::model::connection::{Connection, Status, Subscription};
use crate::model::sensitive::Sensitive;
use crate::services::Services;
use crate::subscriptions::{self, SubscriptionError};
use crate::sweep;

/// Connections served at once. Graph's limits are per mailbox (four
/// requests at a time), so many mailboxes may be served together; the
/// subscription writes among them are paced per tenant.
pub const CONCURRENCY: usize = 48;
/// Graph requests one mailbox gets at a time (Graph allows four).
pub const PER_MAILBOX: usize = 4;
pub use crate::subscriptions::RENEW_WITHIN;
/// How long before its deadline the run starts no more connections: enough
/// for one connection's work to finish.
pub const FINISH_MARGIN: Duration = Duration::from_secs(20);
/// A connection whose Graph calls fail is looked at again after this.
pub const RETRY_FAILED: time::Duration = time::Duration::minutes(5);
/// A connection that is not active (waiting for consent or a new sign-in)
/// is looked at again after this, unless its sign-in makes it due sooner.
pub const IDLE_RECHECK: time::Duration = time::Duration::hours(6);
/// At most this many due flows are listed per run.
pub const DUE_LIMIT: usize = 50_000;

/// What a run is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// When the invocation ends. The run starts no connection and waits for
    /// no write slot in its last stretch ([`FINISH_MARGIN`], or a quarter of
    /// a short budget), so what it started can finish.
    pub deadline: Instant,
    /// Renew every subscription, whatever its expiry (after an outage).
    pub renew_all: bool,
    /// Sweep every active flow, whenever it was last swept.
    pub sweep_all: bool,
}

/// What a run did. Every flow is in exactly one of the outcomes of its kind.
#[derive(Debug, Default, serde::Serialize)]
pub struct RunReport {
    /// Flows listed as due (or every flow, on a full run).
    pub due: usize,
    /// True when the run looked at every connection, not only the due ones.
    pub full: bool,
    /// Connections looked at.
    pub connections: usize,
    /// Subscriptions extended.
    pub renewed: usize,
    /// Subscriptions created again because Graph no longer had them (or never did).
    pub recreated: usize,
    /// Subscriptions recreated because their `clientState` was made with
    /// another signing key than the current one (after a rotation).
    pub rekeyed: usize,
    /// Subscriptions still on another signing key after this run (each also
    /// in `failed` or `left`): while this is not 0, the previous key must stay.
    pub on_previous_key: usize,
    /// Flows swept.
    pub swept: usize,
    /// Items Graph never announced (not in the ledger), queued for delivery.
    pub recovered: usize,
    /// Connections needing a new sign-in whose flow was not told yet: a
    /// reminder was queued, and dispatch sends `connection.reauth_required`.
    pub reminded: usize,
    /// Resumed flows whose catch-up had stalled and was started again.
    pub restarted: usize,
    /// Subscription writes left for the next run: Graph's write limit left
    /// no slot before the deadline (or Graph throttled them).
    pub paced: usize,
    /// Connections due but not started: the run's time ran out. The next run
    /// takes them first.
    pub left: usize,
    /// What could not be done, with the reason.
    pub failed: Vec<serde_json::Value>,
}

impl RunReport {
    fn add(&mut self, o: ConnectionOutcome) {
        self.connections += usize::from(o.read);
        self.renewed += o.renewed;
        self.recreated += o.recreated;
        self.rekeyed += o.rekeyed;
        self.on_previous_key += o.on_previous_key;
        self.swept += o.swept;
        self.recovered += o.recovered;
        self.reminded += o.reminded;
        self.restarted += o.restarted;
        self.paced += o.paced;
        self.failed.extend(o.failed);
    }
}

#[derive(Debug, Default)]
struct ConnectionOutcome {
    /// The connection could be read.
    read: bool,
    renewed: usize,
    recreated: usize,
    rekeyed: usize,
    on_previous_key: usize,
    swept: usize,
    recovered: usize,
    reminded: usize,
    restarted: usize,
    paced: usize,
    failed: Vec<serde_json::Value>,
}

/// The connections to look at, in order: every connection on a full run,
/// else those with a flow due by `until`, the longest-waiting first.
async fn listed_connections(
    s: &Services,
    full: bool,
    until: OffsetDateTime,
) -> Result<(Vec<String>, usize), crate::aws::store::StoreError> {
    if full {
        let ids = s.state.connection_ids().await?;
        let n = ids.len();
        return Ok((ids, n));
    }
    let due = s.state.due_flows(Some(until), DUE_LIMIT).await?;
    let n = due.len();
    let mut seen = HashSet::new();
    let ids = due
        .into_iter()
        .filter_map(|(id, _)| seen.insert(id.clone()).then_some(id))
        .collect();
    Ok((ids, n))
}

/// Runs the scheduled work that is due; the sweep queues what it recovers on
/// `queue` (without one, the run renews only).
pub async fn run(s: &Services, queue: Option<&dyn Queue>, opts: RunOptions) -> RunReport {
    let mut report = RunReport::default();
    let key_id = s.signer().await.key_id();
    let recorded_key = match s.state.fleet_key().await {
        Ok(k) => k,
        Err(e) => {
            report.failed.push(serde_json::json!({"reason": e.to_string()}));
            return report;
        }
    };
    let full = opts.renew_all || opts.sweep_all || recorded_key.as_deref() != Some(key_id.as_str());
    let now = OffsetDateTime::now_utc();
    let (ids, due) = match listed_connections(s, full, now + sweep::SWEEP_AGE / 2).await {
        Ok(x) => x,
        Err(e) => {
            report.failed.push(serde_json::json!({"reason": e.to_string()}));
            return report;
        }
    };
    report.full = full;
    report.due = due;
    // The last stretch is kept for the connections already started: a
    // quarter of a short budget, FINISH_MARGIN of a long one.
    let budget = opts.deadline.saturating_duration_since(Instant::now());
    let work_until = opts.deadline - FINISH_MARGIN.min(budget / 4);
    let opts = RunOptions {
        deadline: work_until,
        ..opts
    };
    let run = &Run {
        key_id: &key_id,
        opts,
        listings: Listings::default(),
    };
    let outcomes: Vec<Option<ConnectionOutcome>> = stream::iter(ids)
        .map(|id| async move {
            if Instant::now() >= work_until {
                return None;
            }
            Some(subscriptions::with_write_deadline(opts.deadline, one_connection(s, queue, &id, run)).await)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for o in outcomes {
        match o {
            Some(o) => report.add(o),
            None => report.left += 1,
        }
    }
    if full
        && report.left == 0
        && report.paced == 0
        && report.on_previous_key == 0
        && report.failed.is_empty()
        && let Err(e) = s.state.set_fleet_key(&key_id).await
    {
        tracing::warn!(error = %e, "could not record the completed full run; the next run looks at every connection again");
    }
    crate::metrics::renewals(
        report.renewed + report.recreated + report.rekeyed,
        report.failed.len(),
    );
    report
}

/// What happened to one flow's work in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// Nothing was due or everything due was done.
    Yes,
    /// The subscription was renewed or created: its new expiry is read at
    /// the next look.
    Renewed,
    /// Left undone (no write slot, a failure): due again at once.
    No,
}

async fn one_connection(
    s: &Services,
    queue: Option<&dyn Queue>,
    id: &str,
    run: &Run<'_>,
) -> ConnectionOutcome {
    let mut out = ConnectionOutcome::default();
    let conn = match s.state.connection(id).await {
        Ok(Some(c)) => c,
        Ok(None) => return out,
        Err(e) => {
            // A damaged item is reported and skipped; the others are served.
            tracing::error!(connection = %id, error = %e, "connection unreadable");
            out.failed
                .push(serde_json::json!({"connection": id, "reason": e.to_string()}));
            return out;
        }
    };
    out.read = true;
    let now = OffsetDateTime::now_utc();
    if conn.status != Status::Active || conn.subscriptions.is_empty() {
        if conn.status == Status::ReauthRequired
            && let Some(queue) = queue
        {
            out.reminded += sweep::remind(s, queue, &conn).await;
        }
        // A sign-in makes its flows due again (a new Graph subscription).
        set_due(s, &conn, &conn.subscriptions, now + IDLE_RECHECK).await;
        return out;
    }
    let token = match s.tokens.access_token(&conn).await {
        Ok(t) => t,
        Err(e) => {
            out.on_previous_key += on_other_key(&conn, run.key_id);
            out.failed
                .push(serde_json::json!({"connection": id, "reason": e.to_string()}));
            let again = if e.is_retryable() {
                RETRY_FAILED
            } else {
                // The grant is gone: the connection now needs a new sign-in,
                // and its flow is told (once per sign-in generation).
                if let Some(queue) = queue {
                    out.reminded += sweep::remind(s, queue, &conn).await;
                }
                IDLE_RECHECK
            };
            set_due(s, &conn, &conn.subscriptions, now + again).await;
            return out;
        }
    };
    let done = renew_connection(s, queue, &conn, &token, run, &mut out).await;
    // The sweep reads the flows as the renewals left them (a recreated
    // subscription has a new id; the delta links are kept).
    let conn = if done.iter().any(|d| *d != Done::Yes) {
        match s.state.connection(id).await {
            Ok(Some(c)) => c,
            _ => conn,
        }
    } else {
        conn
    };
    let swept = match queue {
        Some(queue) => sweep_connection(s, queue, &conn, &run.opts, &mut out).await,
        None => vec![None; conn.subscriptions.len()],
    };
    // When each flow is next due: failures at once; otherwise its next sweep
    // or its renewal, whichever comes first. A sweep that stored its link
    // wrote that time itself, in the same write.
    for (i, sub) in conn.subscriptions.iter().enumerate() {
        let renewal = sub.expires_at.map_or(now, |e| e - RENEW_WITHIN);
        let stepped = swept.get(i).copied().flatten();
        let finished = stepped.is_some_and(|st| st.finished);
        let next = match done.get(i).copied().unwrap_or(Done::Yes) {
            // The renewal is still to do: due at once again.
            Done::No if finished => OffsetDateTime::UNIX_EPOCH,
            Done::No => continue,
            _ if finished => continue,
            Done::Renewed => now + sweep::SWEEP_AGE,
            Done::Yes if sub.is_paused() || sub.delta_link.is_none() || queue.is_none() => {
                renewal.min(now + IDLE_RECHECK)
            }
            Done::Yes => match stepped.map(|_| now).or_else(|| swept_at(sub)) {
                Some(at) => crate::catchup::next_due(sub, at),
                // Not swept: failed or left; look again next run.
                None => continue,
            },
        };
        set_due(s, &conn, std::slice::from_ref(sub), next).await;
    }
    out
}

/// When the flow was last swept, if it was.
fn swept_at(sub: &Subscription) -> Option<OffsetDateTime> {
    sub.last_swept_at
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
}

/// How many of the connection's Graph subscriptions carry another key.
fn on_other_key(conn: &Connection, key_id: &str) -> usize {
    let mut ids = HashSet::new();
    conn.subscriptions
        .iter()
        .filter(|sub| !sub.id.is_empty() && sub.key_id.as_deref() != Some(key_id))
        .filter(|sub| ids.insert(sub.id.clone()))
        .count()
}

async fn set_due(s: &Services, conn: &Connection, flows: &[Subscription], at: OffsetDateTime) {
    for sub in flows {
        if let Err(e) = s
            .state
            .update_subscription(&conn.id, &sub.key, SubscriptionChange::new().due_at(at))
            .await
        {
            tracing::warn!(connection = %conn.id, flow = %sub.key, error = %e, "could not record when the flow is next due; it stays due");
        }
    }
}

/// Pages of `GET /subscriptions` read at most (100 subscriptions each).
const LISTING_PAGES: usize = 1_000;

/// The ids of the subscriptions Graph lists for this token, following every
/// page; `None` when there are more than [`LISTING_PAGES`] pages (then
/// nothing can be called missing).
async fn graph_has(s: &Services, token: &Sensitive) -> Result<Option<HashSet<String>>, GraphError> {
    let mut ids = HashSet::new();
    let mut next = "/subscriptions".to_string();
    for _ in 0..LISTING_PAGES {
        let page: serde_json::Value = s.graph.get_json(&next, token).await?;
        ids.extend(
            page["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x["id"].as_str().map(str::to_string)),
        );
        match page["@odata.nextLink"].as_str() {
            Some(n) => next = n.to_string(),
            None => return Ok(Some(ids)),
        }
    }
    Ok(None)
}

/// What Graph lists for an app token is every subscription of the app in
/// the tenant, the same for each of the tenant's app-only connections: it
/// is read once per run and tenant, not once per connection (which would
/// read the whole tenant's list for every mailbox).
#[derive(Default)]
struct Listings(Mutex<HashMap<String, Arc<OnceCell<Listed>>>>);

/// The ids Graph listed, or `None` when they could not be listed.
type Listed = Option<Arc<HashSet<String>>>;

/// What every connection of one run shares.
struct Run<'a> {
    /// The current signing key's id.
    key_id: &'a str,
    opts: RunOptions,
    listings: Listings,
}

impl Listings {
    /// The subscriptions Graph has that `conn`'s token can see; `None`
    /// when they could not be listed (renewals then go by our records).
    async fn of(&self, s: &Services, conn: &Connection, token: &Sensitive) -> Listed {
        let list = || async {
            match graph_has(s, token).await {
                Ok(l) => l.map(Arc::new),
                Err(e) => {
                    tracing::warn!(connection = %conn.id, error = %e, "could not list subscriptions; renewing by our records");
                    None
                }
            }
        };
        if !conn.auth.is_app_only() {
            return list().await;
        }
        let cell = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(subscriptions::tenant_of(conn).to_ascii_lowercase())
            .or_default()
            .clone();
        cell.get_or_init(list).await.clone()
    }
}

/// Renews, recreates or rekeys what is due of one connection; returns, per
/// flow, whether its work is done.
async fn renew_connection(
    s: &Services,
    queue: Option<&dyn Queue>,
    conn: &Connection,
    token: &Sensitive,
    run: &Run<'_>,
    out: &mut ConnectionOutcome,
) -> Vec<Done> {
    let (key_id, opts) = (run.key_id, &run.opts);
    let mut done = vec![Done::Yes; conn.subscriptions.len()];
    let horizon = OffsetDateTime::now_utc() + RENEW_WITHIN;
    let listed = run.listings.of(s, conn, token).await;
    // Flows sharing a Graph subscription: the first of them renews or
    // recreates it, and the change is recorded on all.
    let mut handled: HashSet<String> = HashSet::new();
    for (i, sub) in conn.subscriptions.iter().enumerate() {
        if !sub.id.is_empty() && !handled.insert(sub.id.clone()) {
            continue;
        }
        let missing = sub.id.is_empty() || listed.as_ref().is_some_and(|l| !l.contains(&sub.id));
        let old_key = sub.key_id.as_deref() != Some(key_id);
        let result = if missing {
            // Graph lost it (or never had it): a new one, and the gap
            // caught up. A flow never created shares its siblings' one.
            if sub.id.is_empty() {
                subscriptions::create(s, conn, sub, token)
                    .await
                    .map(|_| &mut out.recreated)
            } else {
                subscriptions::recreate(s, conn, sub, token, queue)
                    .await
                    .map(|_| &mut out.recreated)
            }
        } else if old_key {
            // Graph cannot change a clientState: a new subscription with the
            // current key replaces the old one (deleted first: Graph allows
            // one per resource), and the gap is caught up from the stored links.
            subscriptions::recreate(s, conn, sub, token, queue)
                .await
                .map(|_| &mut out.rekeyed)
        } else if opts.renew_all || sub.expires_at.is_none_or(|e| e <= horizon) {
            match subscriptions::renew_or_recreate(s, conn, sub, token).await {
                Ok(true) => Ok(&mut out.recreated),
                Ok(false) => Ok(&mut out.renewed),
                Err(e) => Err(e),
            }
        } else {
            continue;
        };
        let flows_on_it = conn
            .subscriptions
            .iter()
            .enumerate()
            .filter(|(j, x)| *j == i || (!sub.id.is_empty() && x.id == sub.id));
        match result {
            Ok(count) => {
                *count += 1;
                for (j, _) in flows_on_it {
                    done[j] = Done::Renewed;
                }
            }
            Err(e) => {
                if old_key {
                    out.on_previous_key += 1;
                }
                for (j, _) in flows_on_it {
                    done[j] = Done::No;
                }
                if matches!(e, SubscriptionError::Paced(_))
                    || matches!(
                        e,
                        SubscriptionError::Graph(GraphError::Throttled { status: 429, .. })
                    )
                {
                    // Left for the next run, which takes it first.
                    out.paced += 1;
                    continue;
                }
                let reason = subscriptions::explain(&e);
                tracing::error!(connection = %conn.id, subscription = %sub.id, reason = %reason, "subscription could not be renewed or recreated");
                subscriptions::record_error(s, conn, sub, &reason).await;
                out.failed.push(
                    serde_json::json!({"connection": conn.id, "subscription": sub.id, "reason": reason}),
                );
            }
        }
    }
    done
}

/// Sweeps the connection's flows that are due, [`PER_MAILBOX`] at a time;
/// returns, per flow, its sweep's step if it was swept.
async fn sweep_connection(
    s: &Services,
    queue: &dyn Queue,
    conn: &Connection,
    opts: &RunOptions,
    out: &mut ConnectionOutcome,
) -> Vec<Option<crate::catchup::Stepped>> {
    let now = OffsetDateTime::now_utc();
    let mut due = Vec::new();
    for (i, sub) in conn.subscriptions.iter().enumerate() {
        // Mail and calendar flows alike, once their baseline is stored; a
        // paused flow is caught up when it is resumed, and a resumed one by
        // its own catch-up, unless that stalled.
        if sub.id.is_empty() || sub.delta_link.is_none() || sub.is_paused() {
            continue;
        }
        if let Some(since) = sweep::catching_up_since(sub) {
            if now - since >= sweep::STALLED_CATCH_UP {
                out.restarted += crate::catchup::start(queue, conn, &[sub], true)
                    .await
                    .unwrap_or(0);
            }
            continue;
        }
        let last = swept_at(sub);
        if opts.sweep_all || last.is_none_or(|t| now - t >= sweep::SWEEP_AGE / 2) {
            due.push(i);
        }
    }
    let deadline = opts.deadline.into_std();
    let results: Vec<(usize, Result<crate::catchup::Stepped, String>)> = stream::iter(due)
        .map(|i| async move {
            let sub = &conn.subscriptions[i];
            (i, sweep::sweep_one(s, queue, conn, sub, deadline).await)
        })
        .buffer_unordered(PER_MAILBOX)
        .collect()
        .await;
    let mut swept = vec![None; conn.subscriptions.len()];
    for (i, r) in results {
        let sub = &conn.subscriptions[i];
        match r {
            Ok(stepped) => {
                out.swept += 1;
                out.recovered += stepped.queued;
                swept[i] = Some(stepped);
            }
            Err(reason) => {
                tracing::warn!(connection = %conn.id, subscription = %sub.id, reason = %reason, "sweep failed");
                out.failed.push(
                    serde_json::json!({"connection": conn.id, "subscription": sub.id, "reason": reason}),
                );
            }
        }
    }
    swept
}
