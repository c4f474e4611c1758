//! Graph change-notification subscriptions of a connection: create them (with
//! the validation handshake Graph performs against our webhook), renew them
//! before Graph deletes them, recreate the ones Graph lost, and keep a delta
//! link per mail subscription so a `missed` notification can be made good.
//!
//! Subscriptions are created for the longest lifetime Graph allows Outlook
//! resources (10,080 minutes; we ask for 10,070 to stay clear of the edge) and
//! renewed by the scheduled run when less than a day is left, not every few
//! minutes. The reconcile step compares our records with `GET /subscriptions`,
//! because lifecycle events alone cannot be relied on.
//!
//! Each subscription is its own item in the state table, and these functions
//! write only the attributes the renewal owns (Graph's id, the expiry, the
//! last error, and the delta link when there is none yet).

use std::collections::HashSet;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::aws::queue::Queue;
use crate::aws::store::{StoreError, SubscriptionChange};
use crate::catchup;
use crate::delta::{calendar_delta_start, delta_start, end_link, list_start, lists_instead_of_delta};
use crate::microsoft::graph::GraphError;
use crate::microsoft::pacing::Paced;
use crate::microsoft::paths::graph_resource;
use crate::model::connection::{Connection, Status, Subscription};
use crate::model::scopes::Resource;
use crate::model::sensitive::Sensitive;
use crate::services::Services;

pub use crate::catchup::RENEW_WITHIN;

/// The lifetime asked for, just under Graph's 10,080-minute maximum for Outlook resources.
pub const LIFETIME_MINUTES: i64 = 10_070;

/// The change types a subscription asks for: new mail only; every calendar change.
pub fn change_types(resource: Resource) -> &'static str {
    match resource {
        Resource::Mail => "created",
        Resource::Calendar => "created,updated,deleted",
    }
}

#[derive(Deserialize)]
struct GraphSubscription {
    id: String,
    #[serde(rename = "expirationDateTime")]
    expiration: String,
}

/// A subscription could not be created or renewed.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// Graph refused or failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The state table failed.
    #[error(transparent)]
    State(#[from] StoreError),
    /// The deployment cannot create subscriptions.
    #[error("{0}")]
    Misconfigured(String),
    /// Graph's write limit for the tenant leaves no slot in time: the next
    /// scheduled run tries again.
    #[error(transparent)]
    Paced(#[from] Paced),
}

tokio::task_local! {
    /// Until when a subscription write of this task may wait for its slot.
    static WRITE_DEADLINE: tokio::time::Instant;
}

/// How long a write outside a scheduled run (the admin API, a sign-in,
/// dispatch) waits for its slot at most.
pub const WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `work` with its subscription writes waiting for a slot until `deadline` at most.
pub async fn with_write_deadline<F: std::future::Future>(
    deadline: tokio::time::Instant,
    work: F,
) -> F::Output {
    WRITE_DEADLINE.scope(deadline, work).await
}

/// The tenant Graph counts a connection's subscription writes against.
pub(crate) fn tenant_of(conn: &Connection) -> &str {
    conn.tid.as_deref().unwrap_or(&conn.tenant_id)
}

/// Waits for a slot for one subscription write of `conn`, then makes it;
/// a `429` holds the tenant's later writes for its `Retry-After`.
async fn paced_write(
    s: &Services,
    conn: &Connection,
    method: reqwest::Method,
    path: &str,
    token: &Sensitive,
    body: Option<&serde_json::Value>,
) -> Result<crate::microsoft::graph::GraphResponse, SubscriptionError> {
    let deadline = WRITE_DEADLINE
        .try_with(|d| *d)
        .unwrap_or_else(|_| tokio::time::Instant::now() + WRITE_WAIT);
    s.pacer.acquire(tenant_of(conn), deadline).await?;
    match s.graph.send(method, path, token, body, &[]).await {
        Err(
            e @ GraphError::Throttled {
                status: 429,
                retry_after,
                ..
            },
        ) => {
            s.pacer.hold(
                tenant_of(conn),
                retry_after.unwrap_or(std::time::Duration::from_secs(20)),
                false,
            );
            Err(e.into())
        }
        other => Ok(other?),
    }
}

impl SubscriptionError {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SubscriptionError::Graph(e) => e.is_retryable(),
            SubscriptionError::State(e) => e.is_retryable(),
            SubscriptionError::Misconfigured(_) => false,
            SubscriptionError::Paced(_) => true,
        }
    }

    /// Graph's HTTP status, when Graph answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            SubscriptionError::Graph(e) => e.status(),
            _ => None,
        }
    }
}

/// Flows of the connection other than `sub` that watch the same resource
/// and folder, and so share its Graph subscription.
fn siblings<'a>(conn: &'a Connection, sub: &Subscription) -> Vec<&'a Subscription> {
    conn.subscriptions
        .iter()
        .filter(|x| x.key != sub.key && x.same_resource(sub))
        .collect()
}

/// The id Graph names in its 409 for a subscription that exists already
/// ("Subscription Id … already exists for the requested combination").
pub fn conflicting_id(message: &str) -> Option<&str> {
    let rest = &message[message.find("Subscription Id ")? + "Subscription Id ".len()..];
    let id = rest
        .split_whitespace()
        .next()?
        .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-');
    (!id.is_empty() && id.len() <= 64).then_some(id)
}

/// The other connection that owns the Graph subscription `graph_id`, if
/// any. Graph gives a subscription's `clientState` back, and ours starts
/// with the connection id (`{id}.{HMAC}`), so one read at Graph and one in
/// the state table say whose it is, whatever the size of the fleet. A
/// connection that no longer exists owns nothing: its subscription is an
/// orphan, free to be replaced.
///
/// # Errors
/// [`SubscriptionError`] when Graph or the table cannot be read: then
/// nothing is replaced.
async fn owner_elsewhere(
    s: &Services,
    conn: &Connection,
    token: &Sensitive,
    graph_id: &str,
) -> Result<Option<String>, SubscriptionError> {
    let existing: serde_json::Value = match s
        .graph
        .get_json(&format!("/subscriptions/{graph_id}"), token)
        .await
    {
        Ok(v) => v,
        // Gone meanwhile: nobody owns it.
        Err(e) if e.status() == Some(404) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let owner = existing["clientState"]
        .as_str()
        .and_then(|c| c.split_once('.'))
        .map(|(id, _)| id.to_string());
    match owner {
        Some(id) if id != conn.id && s.state.connection(&id).await?.is_some() => Ok(Some(id)),
        _ => Ok(None),
    }
}

/// Creates the Graph subscription of a flow and records its id and expiry
/// on the flow and on every flow sharing it (same resource and folder) the
/// moment Graph returns them; then, for a flow without a delta link yet,
/// runs the baseline delta query and records the link a catch-up starts
/// from. A flow added beside one that has a Graph subscription shares that
/// one instead (Graph allows one per resource and app). A `409 Conflict`
/// (the subscription exists already: an answer lost on the way, or made by
/// another container) deletes the existing one and creates it again, so it
/// carries the current `clientState`. A flow recreated after Graph lost its
/// subscription keeps its old link, so a catch-up covers the gap.
///
/// # Errors
/// [`SubscriptionError`]; a failed validation handshake comes back as a 400.
pub async fn create(
    s: &Services,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
) -> Result<String, SubscriptionError> {
    create_with(s, conn, sub, token, true).await
}

/// [`create`]; with `adopt` false it never takes a sibling's subscription
/// (a recreate: the siblings' id is the one being replaced).
async fn create_with(
    s: &Services,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
    adopt: bool,
) -> Result<String, SubscriptionError> {
    let Some(public) = &s.config.public_url else {
        return Err(SubscriptionError::Misconfigured(
            "RELAY365_PUBLIC_URL is not set".into(),
        ));
    };
    let siblings = siblings(conn, sub);
    let shared = siblings
        .iter()
        .find(|x| adopt && !x.id.is_empty() && sub.id.is_empty());
    let (id, key_id, expires) = if let Some(live) = shared {
        tracing::info!(connection = %conn.id, flow = %sub.key, subscription = %live.id, "the flow shares the Graph subscription of its resource");
        (
            live.id.clone(),
            live.key_id.clone().unwrap_or_default(),
            live.expires_at,
        )
    } else {
        let base = public.as_str().trim_end_matches('/');
        let expires = OffsetDateTime::now_utc() + time::Duration::minutes(LIFETIME_MINUTES);
        let signer = s.signer().await;
        let body = serde_json::json!({
            "changeType": change_types(sub.resource),
            "notificationUrl": format!("{base}/notifications"),
            "lifecycleNotificationUrl": format!("{base}/notifications/lifecycle"),
            "resource": graph_resource(conn, sub),
            "expirationDateTime": expires.format(&Rfc3339).unwrap_or_default(),
            "clientState": signer.client_state(&conn.id).expose(),
            "latestSupportedTlsVersion": "v1_2",
        });
        let post = || {
            paced_write(
                s,
                conn,
                reqwest::Method::POST,
                "/subscriptions",
                token,
                Some(&body),
            )
        };
        let created: GraphSubscription = match post().await {
            Ok(r) => r.json()?,
            Err(SubscriptionError::Graph(GraphError::Api {
                status: 409, message, ..
            })) if conflicting_id(&message).is_some() => {
                let existing = conflicting_id(&message).unwrap_or_default().to_string();
                // Another connection's subscription is never taken over: it
                // would stop receiving without a word.
                if let Some(owner) = owner_elsewhere(s, conn, token, &existing).await? {
                    return Err(SubscriptionError::Misconfigured(format!(
                        "connection {owner} already watches this mailbox's {} at Graph, which allows one subscription per mailbox and resource for an app: add this subscription to connection {owner} (POST /connections/{owner}/subscriptions) instead, or disconnect one of the two",
                        if sub.resource == Resource::Calendar {
                            "calendar".to_string()
                        } else {
                            format!("folder {}", sub.folder_or_inbox())
                        }
                    )));
                }
                tracing::warn!(connection = %conn.id, subscription = %existing, "Graph has this subscription already; replacing it with one of the current key");
                delete_at_graph(s, conn, token, &existing).await;
                post().await?.json()?
            }
            Err(e) => return Err(e),
        };
        (
            created.id,
            signer.key_id(),
            OffsetDateTime::parse(&created.expiration, &Rfc3339).ok(),
        )
    };
    let record = |change: SubscriptionChange| {
        change
            .graph_id(&id)
            .key_id(&key_id)
            .expires_at(expires)
            .last_error(None)
    };
    s.state
        .update_subscription(&conn.id, &sub.key, record(SubscriptionChange::new()))
        .await?;
    if shared.is_none() {
        for sibling in &siblings {
            s.state
                .update_subscription(&conn.id, &sibling.key, record(SubscriptionChange::new()))
                .await?;
        }
        tracing::info!(connection = %conn.id, subscription = %id, flows = siblings.len() + 1, "subscription created");
    }
    // Each flow without a link gets the baseline: this one, and those made
    // beside it that share the subscription just created.
    let mut lacking: Vec<&Subscription> = vec![sub];
    if shared.is_none() {
        lacking.extend(siblings.iter().copied());
    }
    lacking.retain(|f| f.delta_link.is_none());
    if !lacking.is_empty() {
        let link = baseline_link(s, conn, sub, token).await?;
        for flow in lacking {
            s.state
                .update_subscription(
                    &conn.id,
                    &flow.key,
                    SubscriptionChange::new().delta_link_if_missing(&link),
                )
                .await?;
        }
    }
    Ok(id)
}

/// The link a new flow's catch-up starts from. For mail, the baseline asks
/// only for mail received from a minute ago on, so it is one short page
/// whatever the folder holds, and no later catch-up can return older mail;
/// a calendar's baseline walks the window's events once (a year of a
/// calendar is a few pages), so later rounds report changes only.
async fn baseline_link(
    s: &Services,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
) -> Result<String, SubscriptionError> {
    let now = OffsetDateTime::now_utc();
    Ok(match sub.resource {
        Resource::Mail if lists_instead_of_delta(conn, sub) => {
            list_start(conn, sub, now - time::Duration::minutes(1))
        }
        Resource::Mail => {
            end_link(
                s,
                token,
                &delta_start(conn, sub, now - time::Duration::minutes(1)),
            )
            .await?
        }
        Resource::Calendar => {
            end_link(
                s,
                token,
                &calendar_delta_start(conn, now - time::Duration::days(1)),
            )
            .await?
        }
    })
}

/// Replaces a flow's Graph subscription (a new `clientState`): the old one
/// is deleted first, then the new one created (Graph allows one per
/// resource), then every flow sharing it catches up from its stored link,
/// so what arrived in the gap is delivered too.
///
/// # Errors
/// [`SubscriptionError`] from the create.
pub async fn recreate(
    s: &Services,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
    queue: Option<&dyn Queue>,
) -> Result<String, SubscriptionError> {
    if !sub.id.is_empty() {
        delete_at_graph(s, conn, token, &sub.id).await;
    }
    let id = create_with(s, conn, sub, token, false).await?;
    if let Some(queue) = queue {
        let mut flows = siblings(conn, sub);
        flows.push(sub);
        if let Err(e) = catchup::start(queue, conn, &flows, false).await {
            // The next sweep covers the gap from the same stored links.
            tracing::warn!(connection = %conn.id, error = %e, "could not queue the catch-up after a recreate; the sweep will");
        }
    }
    Ok(id)
}

/// Records what Graph answered for a subscription (its expiry, no error),
/// with `change`, on the flow and on the flows sharing it.
async fn recorded(
    s: &Services,
    conn: &Connection,
    sub: &Subscription,
    change: SubscriptionChange,
    answer: &GraphSubscription,
) -> Result<(), StoreError> {
    let change = change
        .expires_at(OffsetDateTime::parse(&answer.expiration, &Rfc3339).ok())
        .last_error(None);
    // Every flow on the same Graph subscription shows the same expiry.
    for sibling in siblings(conn, sub).into_iter().filter(|x| x.id == sub.id) {
        s.state
            .update_subscription(&conn.id, &sibling.key, change.clone())
            .await?;
    }
    s.state.update_subscription(&conn.id, &sub.key, change).await
}

/// Extends a subscription to the full lifetime (this also reauthorizes it).
///
/// # Errors
/// [`SubscriptionError`]; Graph's 404 when it no longer has it.
pub async fn renew(
    s: &Services,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
) -> Result<(), SubscriptionError> {
    let expires = OffsetDateTime::now_utc() + time::Duration::minutes(LIFETIME_MINUTES);
    let body = serde_json::json!({"expirationDateTime": expires.format(&Rfc3339).unwrap_or_default()});
    let renewed: GraphSubscription = paced_write(
        s,
        conn,
        reqwest::Method::PATCH,
        &format!("/subscriptions/{}", sub.id),
        token,
        Some(&body),
    )
    .await?
    .json()?;
    recorded(s, conn, sub, SubscriptionChange::new(), &renewed).await?;
    Ok(())
}

/// Renews a subscription, or creates it again when Graph no longer has it.
/// Returns true when it was recreated.
///
/// # Errors
/// [`SubscriptionError`].
pub async fn renew_or_recreate(
    s: &Services,
    conn: &Connection,
    sub: &Subscription,
    token: &Sensitive,
) -> Result<bool, SubscriptionError> {
    match renew(s, conn, sub, token).await {
        Ok(()) => Ok(false),
        Err(e) if e.status() == Some(404) => create(s, conn, sub, token).await.map(|_| true),
        Err(e) => Err(e),
    }
}

/// Deletes one Graph subscription of `conn`; a missing one counts as deleted.
pub async fn delete_at_graph(s: &Services, conn: &Connection, token: &Sensitive, id: &str) {
    let path = format!("/subscriptions/{id}");
    match paced_write(s, conn, reqwest::Method::DELETE, &path, token, None).await {
        Ok(_) => {}
        Err(e) if e.status() == Some(404) => {}
        Err(e) => tracing::warn!(subscription = id, error = %e, "could not delete a subscription at Graph"),
    }
}

/// Words for a person about a failed subscription call.
pub fn explain(e: &SubscriptionError) -> String {
    match e {
        SubscriptionError::Graph(GraphError::Api {
            status: 400,
            code,
            message,
            ..
        }) if code == "ValidationError" || message.contains("validation") => format!(
            "Graph could not validate the notification URL (it must answer within 10 seconds): {message}. Check that RELAY365_PUBLIC_URL is this deployment's API URL and reachable from the internet."
        ),
        SubscriptionError::Graph(GraphError::Api {
            status: 403, message, ..
        }) => format!(
            "Graph refused the subscription ({message}): the connection lacks the read permission, or the mailbox has reached 1,000 subscriptions."
        ),
        other => other.to_string(),
    }
}

/// Records a subscription's last error; a failure to record is logged, as
/// the error itself is already being reported to the caller.
pub(crate) async fn record_error(s: &Services, conn: &Connection, sub: &Subscription, reason: &str) {
    if let Err(e) = s
        .state
        .update_subscription(
            &conn.id,
            &sub.key,
            SubscriptionChange::new().last_error(Some(reason)),
        )
        .await
    {
        tracing::warn!(connection = %conn.id, subscription = %sub.key, error = %e, "could not record a subscription error");
    }
}

/// Creates every subscription of an active connection that has no Graph id
/// yet. Returns the problems met, in words, one per subscription that failed.
pub async fn ensure(s: &Services, conn: &Connection) -> Vec<String> {
    let pending: Vec<&Subscription> = conn.subscriptions.iter().filter(|x| x.id.is_empty()).collect();
    if pending.is_empty() || conn.status != Status::Active {
        return Vec::new();
    }
    let token = match s.tokens.access_token(conn).await {
        Ok(t) => t,
        Err(e) => {
            let reason = e.to_string();
            for sub in &pending {
                record_error(s, conn, sub, &reason).await;
            }
            return vec![reason];
        }
    };
    let mut problems = Vec::new();
    let mut made: Vec<&Subscription> = Vec::new();
    for sub in pending {
        // A flow beside one made just now already shares its subscription
        // and has its baseline (`create` records both on every such flow).
        if made.iter().any(|m| m.same_resource(sub)) {
            continue;
        }
        made.push(sub);
        if let Err(e) = create(s, conn, sub, &token).await {
            tracing::warn!(connection = %conn.id, error = %e, "could not create a subscription");
            let reason = explain(&e);
            record_error(s, conn, sub, &reason).await;
            problems.push(reason);
        }
    }
    problems
}

/// The `key_id` a subscription waits under for a resubscribe that ran out
/// of time; the renewal run (or the next resubscribe) recreates it.
pub const RESUBSCRIBE_PENDING: &str = "resubscribe";

/// What a resubscribe did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Resubscribed {
    /// Subscriptions recreated now.
    pub recreated: usize,
    /// Subscriptions left for the next call or the renewal run.
    pub remaining: usize,
}

/// Recreates a connection's subscriptions (new clientState from the current
/// key): each old one is deleted at Graph first, then the new one created,
/// then its flows catch up (see [`recreate`]). Work
/// stops starting at `deadline`: what is left is marked, and the renewal run
/// or the next call finishes it. A call while some are marked does only
/// those.
///
/// # Errors
/// [`SubscriptionError`] of the first subscription that could not be recreated.
pub async fn resubscribe(
    s: &Services,
    conn: &Connection,
    token: &Sensitive,
    deadline: std::time::Instant,
    queue: Option<&dyn Queue>,
) -> Result<Resubscribed, SubscriptionError> {
    let pending: Vec<&Subscription> = conn
        .subscriptions
        .iter()
        .filter(|sub| sub.key_id.as_deref() == Some(RESUBSCRIBE_PENDING))
        .collect();
    let todo: Vec<&Subscription> = if pending.is_empty() {
        conn.subscriptions.iter().collect()
    } else {
        pending
    };
    let mut done = Resubscribed::default();
    // Flows sharing a Graph subscription are recreated once, together.
    let mut handled: HashSet<String> = HashSet::new();
    for (i, sub) in todo.iter().enumerate() {
        if !sub.id.is_empty() && handled.contains(&sub.id) {
            done.recreated += 1;
            continue;
        }
        if std::time::Instant::now() >= deadline {
            for left in &todo[i..] {
                s.state
                    .update_subscription(
                        &conn.id,
                        &left.key,
                        SubscriptionChange::new().key_id(RESUBSCRIBE_PENDING),
                    )
                    .await?;
            }
            done.remaining = todo.len() - i;
            tracing::info!(connection = %conn.id, remaining = done.remaining, "resubscribe ran out of time; the rest is marked");
            return Ok(done);
        }
        match recreate(s, conn, sub, token, queue).await {
            Ok(_) => {
                handled.insert(sub.id.clone());
                done.recreated += 1;
            }
            Err(e) => {
                record_error(s, conn, sub, &explain(&e)).await;
                return Err(e);
            }
        }
    }
    Ok(done)
}
