//! Graph change-notification subscriptions of a connection: create them (with
//! the validation handshake Graph performs against our webhook), renew them
//! before Graph deletes them, recreate the ones Graph lost, and keep a delta
//! link per mail subscription so a `missed` notification can be made good.
//!
//! Subscriptions are created for the longest lifetime Graph allows Outlook
//! resources (10,080 minutes; we ask for 10,070 to stay clear of the edge) and
//! renewed by the scheduled run when less than a day is left, not every few
//! minutes (pitfall 3). The reconcile step compares our records with
//! `GET /subscriptions`, because lifecycle events alone cannot be relied on
//! (pitfall 5).

use std::collections::HashSet;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::connection::{AuthMode, Connection, Status, Subscription, secret_name};
use crate::graph::GraphError;
use crate::runtime::Services;
use crate::scopes::Resource;
use crate::secrets::new_request_token;
use crate::sensitive::Sensitive;

/// The lifetime asked for, just under Graph's 10,080-minute maximum for Outlook resources.
pub const LIFETIME_MINUTES: i64 = 10_070;

/// The Graph resource path a subscription watches.
pub fn graph_resource(conn: &Connection, sub: &Subscription) -> String {
    let owner = match (conn.auth, &conn.mailbox) {
        (AuthMode::Delegated, _) | (_, None) => "/me".to_string(),
        (_, Some(m)) => format!("/users/{m}"),
    };
    match sub.resource {
        Resource::Mail => format!(
            "{owner}/mailFolders('{}')/messages",
            sub.folder.as_deref().unwrap_or("inbox")
        ),
        Resource::Calendar => format!("{owner}/events"),
    }
}

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

#[derive(Deserialize)]
struct DeltaPage {
    #[serde(default)]
    value: Vec<serde_json::Value>,
    #[serde(rename = "@odata.nextLink")]
    next: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta: Option<String>,
}

/// Runs a delta query to its end from `start` (a path or a stored delta link):
/// the ids of the messages that appeared, and the new delta link.
///
/// # Errors
/// [`GraphError`] from any page.
pub async fn delta(
    s: &Services,
    token: &Sensitive,
    start: &str,
) -> Result<(Vec<String>, String), GraphError> {
    let mut ids = Vec::new();
    let mut next = start.to_string();
    for _ in 0..1000 {
        let page: DeltaPage = s.graph.get_json(&next, token).await?;
        ids.extend(
            page.value
                .iter()
                .filter(|v| v.get("@removed").is_none())
                .filter_map(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string)),
        );
        match (page.next, page.delta) {
            (Some(n), _) => next = n,
            (None, Some(d)) => return Ok((ids, d)),
            (None, None) => {
                return Err(GraphError::Decode(
                    "a delta page had neither nextLink nor deltaLink".into(),
                ));
            }
        }
    }
    Err(GraphError::Decode("the delta query did not end".into()))
}

/// Creates one subscription at Graph and records its id and expiry; for mail,
/// also records the delta link from which a resync starts.
///
/// # Errors
/// [`GraphError`]; a failed validation handshake comes back as a 400.
pub async fn create(
    s: &Services,
    conn: &mut Connection,
    index: usize,
    token: &Sensitive,
) -> Result<(), GraphError> {
    let Some(public) = &s.config.public_url else {
        return Err(GraphError::Decode("RELAY365_PUBLIC_URL is not set".into()));
    };
    let base = public.as_str().trim_end_matches('/');
    let sub = conn.subscriptions[index].clone();
    let expires = OffsetDateTime::now_utc() + time::Duration::minutes(LIFETIME_MINUTES);
    let body = serde_json::json!({
        "changeType": change_types(sub.resource),
        "notificationUrl": format!("{base}/notifications"),
        "lifecycleNotificationUrl": format!("{base}/notifications/lifecycle"),
        "resource": graph_resource(conn, &sub),
        "expirationDateTime": expires.format(&Rfc3339).unwrap_or_default(),
        "clientState": s.signer.client_state(&conn.id).expose(),
        "latestSupportedTlsVersion": "v1_2",
    });
    let created: GraphSubscription = s
        .graph
        .send(reqwest::Method::POST, "/subscriptions", token, Some(&body), &[])
        .await?
        .json()?;
    let delta_link = if sub.resource == Resource::Mail {
        let start = format!("{}/delta", graph_resource(conn, &sub));
        Some(delta(s, token, &start).await?.1)
    } else {
        None
    };
    let entry = &mut conn.subscriptions[index];
    if !entry.id.is_empty() {
        conn.delta_links.remove(&entry.id);
    }
    entry.id = created.id.clone();
    entry.expires_at = OffsetDateTime::parse(&created.expiration, &Rfc3339).ok();
    entry.last_error = None;
    if let Some(link) = delta_link {
        conn.delta_links.insert(created.id.clone(), link);
    }
    tracing::info!(connection = %conn.id, subscription = %created.id, "subscription created");
    Ok(())
}

/// Extends a subscription to the full lifetime (this also reauthorizes it).
///
/// # Errors
/// [`GraphError`]; 404 when Graph no longer has it.
pub async fn renew(
    s: &Services,
    conn: &mut Connection,
    index: usize,
    token: &Sensitive,
) -> Result<(), GraphError> {
    let id = conn.subscriptions[index].id.clone();
    let expires = OffsetDateTime::now_utc() + time::Duration::minutes(LIFETIME_MINUTES);
    let body = serde_json::json!({"expirationDateTime": expires.format(&Rfc3339).unwrap_or_default()});
    let renewed: GraphSubscription = s
        .graph
        .send(
            reqwest::Method::PATCH,
            &format!("/subscriptions/{id}"),
            token,
            Some(&body),
            &[],
        )
        .await?
        .json()?;
    let entry = &mut conn.subscriptions[index];
    entry.expires_at = OffsetDateTime::parse(&renewed.expiration, &Rfc3339).ok();
    entry.last_error = None;
    Ok(())
}

/// Words for a person about a failed subscription call.
pub fn explain(e: &GraphError) -> String {
    match e {
        GraphError::Api {
            status: 400,
            code,
            message,
            ..
        } if code == "ValidationError" || message.contains("validation") => format!(
            "Graph could not validate the notification URL (it must answer within 10 seconds): {message}. Check that RELAY365_PUBLIC_URL is this deployment's API URL and reachable from the internet."
        ),
        GraphError::Api {
            status: 403, message, ..
        } => format!(
            "Graph refused the subscription ({message}): the connection lacks the read permission, or the mailbox has reached 1,000 subscriptions."
        ),
        other => other.to_string(),
    }
}

/// Creates every subscription of the connection that has no Graph id yet.
/// Returns true when the record changed (the caller saves it).
pub async fn ensure(s: &Services, conn: &mut Connection) -> bool {
    let pending: Vec<usize> = (0..conn.subscriptions.len())
        .filter(|i| conn.subscriptions[*i].id.is_empty())
        .collect();
    if pending.is_empty() || conn.status != Status::Active {
        return false;
    }
    let token = match s.tokens.access_token(&conn.id).await {
        Ok(t) => t,
        Err(e) => {
            for i in &pending {
                conn.subscriptions[*i].last_error = Some(e.to_string());
            }
            return true;
        }
    };
    for i in pending {
        if let Err(e) = create(s, conn, i, &token).await {
            tracing::warn!(connection = %conn.id, error = %e, "could not create a subscription");
            conn.subscriptions[i].last_error = Some(explain(&e));
        }
    }
    true
}

/// Saves a connection record.
///
/// # Errors
/// The store's error.
pub async fn save(s: &Services, conn: &Connection) -> Result<(), crate::secrets::SecretError> {
    s.store
        .put(
            &secret_name(&s.config.secret_prefix, &conn.id),
            &conn.to_json(),
            &new_request_token(),
        )
        .await
}

/// What the scheduled run did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RenewReport {
    /// Connections looked at.
    pub connections: usize,
    /// Subscriptions extended.
    pub renewed: usize,
    /// Subscriptions created again because Graph no longer had them (or never did).
    pub recreated: usize,
    /// Subscriptions that could not be fixed, with the reason.
    pub failed: Vec<serde_json::Value>,
}

/// Renews every subscription expiring within `within`, recreates the ones
/// Graph does not list, and reports what it could not fix.
pub async fn renew_due(s: &Services, within: time::Duration) -> RenewReport {
    let mut report = RenewReport::default();
    let prefix = format!("{}connections/", s.config.secret_prefix);
    let names = match s.store.list(&prefix).await {
        Ok(n) => n,
        Err(e) => {
            report.failed.push(serde_json::json!({"reason": e.to_string()}));
            return report;
        }
    };
    let horizon = OffsetDateTime::now_utc() + within;
    for name in names {
        let id = name.trim_start_matches(&prefix).to_string();
        let Ok(mut conn) = s.tokens.load(&id).await else {
            continue;
        };
        report.connections += 1;
        if conn.status != Status::Active || conn.subscriptions.is_empty() {
            continue;
        }
        let token = match s.tokens.access_token(&id).await {
            Ok(t) => t,
            Err(e) => {
                report
                    .failed
                    .push(serde_json::json!({"connection": id, "reason": e.to_string()}));
                continue;
            }
        };
        let listed: Option<HashSet<String>> = match s
            .graph
            .get_json::<serde_json::Value>("/subscriptions", &token)
            .await
        {
            Ok(v) => Some(
                v["value"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x["id"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Err(e) => {
                tracing::warn!(connection = %id, error = %e, "could not list subscriptions; renewing by our records");
                None
            }
        };
        let mut changed = false;
        for i in 0..conn.subscriptions.len() {
            let sub = conn.subscriptions[i].clone();
            let missing = sub.id.is_empty() || listed.as_ref().is_some_and(|l| !l.contains(&sub.id));
            let result = if missing {
                let r = create(s, &mut conn, i, &token).await;
                if r.is_ok() {
                    report.recreated += 1;
                }
                r
            } else if sub.expires_at.is_none_or(|e| e <= horizon) {
                match renew(s, &mut conn, i, &token).await {
                    Ok(()) => {
                        report.renewed += 1;
                        Ok(())
                    }
                    Err(e) if e.status() == Some(404) => {
                        let r = create(s, &mut conn, i, &token).await;
                        if r.is_ok() {
                            report.recreated += 1;
                        }
                        r
                    }
                    Err(e) => Err(e),
                }
            } else {
                continue;
            };
            changed = true;
            if let Err(e) = result {
                let reason = explain(&e);
                tracing::error!(connection = %id, subscription = %sub.id, reason = %reason, "subscription could not be renewed or recreated");
                conn.subscriptions[i].last_error = Some(reason.clone());
                report
                    .failed
                    .push(serde_json::json!({"connection": id, "subscription": sub.id, "reason": reason}));
            }
        }
        if changed && let Err(e) = save(s, &conn).await {
            report
                .failed
                .push(serde_json::json!({"connection": id, "reason": e.to_string()}));
        }
    }
    report
}
