//! The admin API of relay365 (IAM-authorised by API Gateway):
//! create, list, read and delete connections.
//!
//! A connection is created `pending_consent` and answered with the link that
//! completes it: a signed connect link for delegated sign-in, or Microsoft's
//! admin-consent URL for app-only. Requests that could never work (an unknown
//! scope, app-only without a mailbox, a delegated subscription to someone
//! else's mailbox, another cloud than the deployment's) are refused here, with
//! the reason, before anything is stored.

use lambda_http::Request;
use relay365::Cloud;
use relay365::api::{self, HttpResponse};
use relay365::config::Target;
use relay365::connection::{self, AuthMode, Connection, Status, Subscription};
use relay365::links;
use relay365::runtime::Services;
use relay365::scopes::{self, Resource};
use relay365::store::StoreError;
use relay365::subscriptions;
use relay365::tokens::TokenError;
use serde::Deserialize;

/// Answers one API request.
pub async fn handle(req: Request, s: &Services) -> HttpResponse {
    let path = api::path(&req);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().as_str().to_string();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["connections"]) => create(&req, s).await,
        ("GET", ["connections"]) => list(s).await,
        ("GET", ["connections", id]) => read(s, id).await,
        ("DELETE", ["connections", id]) => delete(s, id).await,
        ("POST", ["connections", id, "subscriptions"]) => add_subscription(&req, s, id).await,
        ("POST", ["connections", id, "resubscribe"]) => resubscribe(s, id).await,
        (_, ["connections", _, "subscriptions"]) => api::error(
            405,
            "method_not_allowed",
            "use POST on /connections/{id}/subscriptions",
        ),
        (_, ["connections", _, "resubscribe"]) => api::error(
            405,
            "method_not_allowed",
            "use POST on /connections/{id}/resubscribe",
        ),
        (_, ["connections"]) => api::error(405, "method_not_allowed", "use GET or POST on /connections"),
        (_, ["connections", _]) => api::error(
            405,
            "method_not_allowed",
            "use GET or DELETE on /connections/{id}",
        ),
        _ => api::error(404, "not_found", format!("no route {method} {path}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    id: Option<String>,
    auth: AuthMode,
    mailbox: Option<String>,
    tenant_id: Option<String>,
    cloud: Option<Cloud>,
    scopes: Vec<String>,
    #[serde(default)]
    subscriptions: Vec<SubscriptionBody>,
}

/// A subscription request, at creation or later.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionBody {
    /// `mail` or `calendar`.
    pub resource: Resource,
    /// `inbox` or a folder id (mail only).
    pub folder: Option<String>,
    /// `https://…` or `eventbridge:BUS`.
    pub target: Option<String>,
    /// The mailbox to watch; only the connection's own is possible.
    pub mailbox: Option<String>,
}

fn bad(message: impl Into<String>) -> HttpResponse {
    api::error(400, "invalid_request", message)
}

/// Checks a mailbox address: what a UPN or SMTP address can look like.
pub fn validate_mailbox(m: &str) -> Result<(), String> {
    let ok = m.len() <= 320
        && m.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !m
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"(),;:[]\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("mailbox {m:?} is not an e-mail address (user@domain)"))
    }
}

fn validate_tenant(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 253
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant_id {t:?} is not a tenant id (a GUID), a domain, or organizations"
        ))
    }
}

fn validate_folder(f: &str) -> Result<(), String> {
    let ok = !f.is_empty()
        && f.len() <= 512
        && f.chars()
            .all(|c| c.is_ascii_alphanumeric() || "=+/_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("folder {f:?} is neither inbox nor a Graph folder id"))
    }
}

/// Validates a subscription request for a connection and turns it into a record.
///
/// # Errors
/// A 400 response that says what to change.
#[allow(clippy::result_large_err)]
pub fn subscription_from_body(
    s: &Services,
    conn: &Connection,
    b: SubscriptionBody,
) -> Result<Subscription, HttpResponse> {
    let own = match (&b.mailbox, &conn.mailbox) {
        (None, _) => true,
        (Some(m), Some(own)) => m.eq_ignore_ascii_case(own),
        (Some(_), None) => false,
    };
    if conn.auth.is_app_only() && !own {
        return Err(bad(format!(
            "this connection is for {}; create another app-only connection for {}",
            conn.mailbox.as_deref().unwrap_or("its mailbox"),
            b.mailbox.as_deref().unwrap_or("that mailbox")
        )));
    }
    scopes::check_subscription(conn.auth, &conn.scopes, b.resource, b.mailbox.as_deref(), own)
        .map_err(|e| bad(e.to_string()))?;
    if let Some(f) = &b.folder {
        if b.resource == Resource::Calendar {
            return Err(bad(
                "folder applies to mail subscriptions only; calendar subscriptions watch the primary calendar",
            ));
        }
        validate_folder(f).map_err(bad)?;
    }
    let target = match (&b.target, &s.config.default_target) {
        (Some(t), _) => Some(Target::parse(t).map_err(bad)?.to_string_form()),
        (None, Some(_)) => None,
        (None, None) => {
            return Err(bad(
                "name a target (https://… or eventbridge:BUS): this deployment has no RELAY365_DEFAULT_TARGET",
            ));
        }
    };
    Ok(Subscription::new(
        b.resource,
        b.folder
            .or_else(|| (b.resource == Resource::Mail).then(|| "inbox".to_string())),
        target,
    ))
}

fn store_error(e: &StoreError) -> HttpResponse {
    match e {
        StoreError::NotFound { what } => api::error(404, "not_found", format!("{what} does not exist")),
        StoreError::AlreadyExists { what } => api::error(409, "conflict", format!("{what} already exists")),
        StoreError::Conflict { .. } => api::error(409, "conflict", e.to_string()),
        StoreError::Damaged { .. } => {
            tracing::error!(error = %e, "damaged item in the state table");
            api::error(500, "damaged_record", e.to_string())
        }
        StoreError::AccessDenied { .. } | StoreError::Misconfigured { .. } => {
            tracing::error!(error = %e, "state table unusable");
            api::error(500, "misconfigured", e.to_string())
        }
        StoreError::Unavailable { .. } => {
            tracing::warn!(error = %e, "state table unavailable");
            api::error(
                503,
                "store_unavailable",
                "the state table is unavailable: retry shortly",
            )
        }
    }
}

fn token_error(e: &TokenError) -> HttpResponse {
    if e.is_retryable() {
        api::error(503, "unavailable", e.to_string())
    } else {
        api::error(409, "reauth_required", e.to_string())
    }
}

/// The API view of a connection, with the link that completes or renews it.
pub fn view(s: &Services, conn: &Connection) -> serde_json::Value {
    let mut v = conn.public_view();
    if let Some(public) = &s.config.public_url {
        if conn.auth == AuthMode::Delegated {
            v["connect_url"] = links::connect_url(public, &s.signer, &conn.id).into();
        } else if conn.status != Status::Active {
            v["admin_consent_url"] =
                links::admin_consent_url(public, &s.signer, s.tokens.client(), conn).into();
        }
    }
    v
}

async fn create(req: &Request, s: &Services) -> HttpResponse {
    let body: CreateBody = match api::json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let id = body
        .id
        .unwrap_or_else(|| format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..10]));
    if let Err(m) = connection::validate_id(&id) {
        return bad(m);
    }
    let cloud = body.cloud.unwrap_or(s.config.cloud);
    if cloud != s.config.cloud {
        return bad(format!(
            "this deployment talks to {} ({}); an app registration works in one cloud only, so a {} connection needs a deployment with RELAY365_CLOUD={}",
            s.config.cloud.display_name(),
            s.config.cloud,
            cloud.display_name(),
            cloud
        ));
    }
    let features = match scopes::parse_scopes(&body.scopes) {
        Ok(f) => f,
        Err(e) => return bad(e.to_string()),
    };
    if let Err(e) = scopes::check_scopes_for_auth(body.auth, &features) {
        return bad(e.to_string());
    }
    if let Some(m) = &body.mailbox
        && let Err(msg) = validate_mailbox(m)
    {
        return bad(msg);
    }
    let tenant = body
        .tenant_id
        .unwrap_or_else(|| s.tokens.client().app().tenant_id.clone());
    if let Err(m) = validate_tenant(&tenant) {
        return bad(m);
    }
    if body.auth.is_app_only() {
        if body.mailbox.is_none() {
            return bad("app-only connections have no signed-in user: give the mailbox (its UPN) to act on");
        }
        if matches!(
            tenant.to_ascii_lowercase().as_str(),
            "common" | "organizations" | "consumers"
        ) {
            return bad(format!(
                "app-only connections need the tenant id or domain of the mailbox's organisation, not {tenant:?}"
            ));
        }
    }
    let mut conn = Connection::new(id, body.auth, cloud, tenant, body.mailbox, features);
    for sb in body.subscriptions {
        match subscription_from_body(s, &conn, sb) {
            Ok(sub) => conn.subscriptions.push(sub),
            Err(r) => return r,
        }
    }
    match s.state.create_connection(&conn).await {
        Ok(()) => {}
        Err(e) => return store_error(&e),
    }
    tracing::info!(connection = %conn.id, auth = conn.auth.name(), "connection created");
    api::json(201, &view(s, &conn))
}

/// Loads a connection for the API, fresh from the state table.
///
/// # Errors
/// 400 for an invalid id, 404 when missing, 5xx when the store fails.
#[allow(clippy::result_large_err)]
pub async fn load(s: &Services, id: &str) -> Result<Connection, HttpResponse> {
    connection::validate_id(id).map_err(bad)?;
    match s.state.connection(id).await {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(api::error(
            404,
            "not_found",
            format!("connection {id} does not exist"),
        )),
        Err(e) => Err(store_error(&e)),
    }
}

async fn add_subscription(req: &Request, s: &Services, id: &str) -> HttpResponse {
    let body: SubscriptionBody = match api::json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let conn = match load(s, id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let sub = match subscription_from_body(s, &conn, body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(e) = s.state.add_subscription(id, &sub).await {
        return store_error(&e);
    }
    // Active connections subscribe now; others when consent completes.
    if conn.status == Status::Active {
        let token = match s.tokens.access_token(&conn).await {
            Ok(t) => t,
            Err(e) => {
                let _ = s.state.remove_subscription(id, &sub.key).await;
                return token_error(&e);
            }
        };
        if let Err(e) = subscriptions::create(s, &conn, &sub, &token).await {
            // Nothing half-made stays behind: the caller sees the error and may try again.
            let _ = s.state.remove_subscription(id, &sub.key).await;
            let status = if e.is_retryable() { 503 } else { 502 };
            return api::error(status, "graph_refused", subscriptions::explain(&e));
        }
    }
    let stored = match s.state.connection(id).await {
        Ok(Some(c)) => c
            .subscriptions
            .into_iter()
            .find(|x| x.key == sub.key)
            .unwrap_or(sub),
        _ => sub,
    };
    api::json(201, &stored.public_view())
}

async fn resubscribe(s: &Services, id: &str) -> HttpResponse {
    let conn = match load(s, id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if conn.status != Status::Active {
        return api::error(
            409,
            "not_active",
            format!("connection {id} is not active: connect it first, then resubscribe"),
        );
    }
    let token = match s.tokens.access_token(&conn).await {
        Ok(t) => t,
        Err(e) => return token_error(&e),
    };
    if let Err(e) = subscriptions::resubscribe(s, &conn, &token).await {
        let status = if e.is_retryable() { 503 } else { 502 };
        return api::error(status, "graph_refused", subscriptions::explain(&e));
    }
    match load(s, id).await {
        Ok(c) => api::json(200, &view(s, &c)),
        Err(r) => r,
    }
}

/// Handles any invocation: an API Gateway HTTP event, or the renewal schedule.
pub async fn handle_event(payload: serde_json::Value, s: &Services) -> serde_json::Value {
    if payload.get("requestContext").is_some() {
        return match lambda_http::request::from_str(&payload.to_string()) {
            Ok(req) => api::to_apigw_v2(handle(req, s).await),
            Err(_) => api::to_apigw_v2(api::error(400, "invalid_request", "unreadable HTTP event")),
        };
    }
    let report = subscriptions::renew_due(s, time::Duration::days(1)).await;
    tracing::info!(
        connections = report.connections,
        renewed = report.renewed,
        recreated = report.recreated,
        failed = report.failed.len(),
        "subscription renewal run"
    );
    serde_json::to_value(&report).unwrap_or_default()
}

async fn read(s: &Services, id: &str) -> HttpResponse {
    match load(s, id).await {
        Ok(conn) => api::json(200, &view(s, &conn)),
        Err(r) => r,
    }
}

async fn list(s: &Services) -> HttpResponse {
    let ids = match s.state.connection_ids().await {
        Ok(n) => n,
        Err(e) => return store_error(&e),
    };
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for id in ids {
        match s.state.connection(&id).await {
            Ok(Some(conn)) => out.push(view(s, &conn)),
            Ok(None) => {}
            // One damaged item does not hide the others: it is listed with what to do.
            Err(e @ StoreError::Damaged { .. }) => {
                tracing::error!(connection = %id, error = %e, "damaged connection item");
                unreadable.push(serde_json::json!({"id": id, "error": {"code": "damaged_record", "message": e.to_string()}}));
            }
            Err(e) => return store_error(&e),
        }
    }
    let mut body = serde_json::json!({ "connections": out });
    if !unreadable.is_empty() {
        body["unreadable"] = unreadable.into();
    }
    api::json(200, &body)
}

async fn delete(s: &Services, id: &str) -> HttpResponse {
    if let Err(m) = connection::validate_id(id) {
        return bad(m);
    }
    let conn = match s.state.connection(id).await {
        Ok(Some(c)) => c,
        Ok(None) => return api::error(404, "not_found", format!("connection {id} does not exist")),
        // A damaged record can still be deleted: that is the fix its error names.
        // Its Graph subscriptions expire by themselves within three days.
        Err(StoreError::Damaged { .. }) => {
            tracing::warn!(connection = id, "deleting a damaged connection record");
            if let Err(e) = s.state.delete_connection(id).await {
                return store_error(&e);
            }
            if let Err(e) = s.tokens.delete_tokens(id).await {
                tracing::error!(connection = id, error = %e, "the token secret could not be scheduled for deletion");
            }
            return api::empty(204);
        }
        Err(e) => return store_error(&e),
    };
    let with_ids: Vec<&Subscription> = conn.subscriptions.iter().filter(|x| !x.id.is_empty()).collect();
    if !with_ids.is_empty() {
        match s.tokens.access_token(&conn).await {
            Ok(token) => {
                for sub in with_ids {
                    subscriptions::delete_at_graph(s, &token, &sub.id).await;
                }
            }
            // Without a token the subscriptions cannot be removed; Graph drops them when they expire.
            Err(e) => tracing::warn!(connection = id, error = %e, "could not delete subscriptions at Graph"),
        }
    }
    if let Err(e) = s.state.delete_connection(id).await {
        return store_error(&e);
    }
    if conn.auth == AuthMode::Delegated
        && let Err(e) = s.tokens.delete_tokens(id).await
    {
        tracing::error!(connection = id, error = %e, "the connection is deleted, but its token secret could not be scheduled for deletion");
    }
    api::empty(204)
}
