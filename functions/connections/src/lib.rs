//! The admin API of relay365 (IAM-authorised by API Gateway):
//! create, list, read and delete connections; add, pause and resume flows.
//!
//! A connection is created `pending_consent` and answered with the link that
//! completes it: a signed connect link for delegated sign-in, or Microsoft's
//! admin-consent URL for app-only. Requests that could never work (an unknown
//! scope, app-only without a mailbox, a delegated subscription to someone
//! else's mailbox, another cloud than the deployment's) are refused here, with
//! the reason, before anything is stored.

pub mod validate;

use lambda_http::Request;

use relay365::aws::queue::{Queue, SqsQueue};
use relay365::aws::store::{StoreError, SubscriptionChange};
use relay365::microsoft::tokens::TokenError;
use relay365::model::connection::{self, AuthMode, Connection, Status, Subscription};
use relay365::model::scopes;

use relay365::services::Services;
use relay365::subscriptions;
use relay365::web::links;
use relay365::web::response::{self as api, HttpResponse};
use validate::{CreateBody, bad, validate_send_settings, validate_tenant};
pub use validate::{SubscriptionBody, subscription_from_body, validate_mailbox};

/// How long `POST /connections/{id}/resubscribe` starts new work.
pub const RESUBSCRIBE_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// The notification queue the settings name (`RELAY365_QUEUE_URL`), where
/// catch-ups are queued.
pub fn configured_queue(s: &Services) -> Option<SqsQueue> {
    s.config.queue_url.clone().map(SqsQueue::lazy)
}

/// Answers one API request, queueing catch-ups on the configured queue.
pub async fn handle(req: Request, s: &Services) -> HttpResponse {
    let queue = configured_queue(s);
    handle_with(req, s, queue.as_ref().map(|q| q as &dyn Queue)).await
}

/// Answers one API request; catch-ups (after a resubscribe or a resume) go
/// to `queue`, or are left to the next scheduled sweep without one.
pub async fn handle_with(req: Request, s: &Services, queue: Option<&dyn Queue>) -> HttpResponse {
    // The views below sign links and name keys with the signer in use: bring
    // it up to date first (a re-read at most once per secret TTL).
    s.signer().await;
    let path = api::path(&req);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().as_str().to_string();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["connections"]) => create(&req, s).await,
        ("GET", ["connections"]) => list(s).await,
        ("GET", ["connections", id]) => read(s, id).await,
        ("DELETE", ["connections", id]) => delete(s, id).await,
        ("POST", ["connections", id, "subscriptions"]) => add_subscription(&req, s, id).await,
        ("POST", ["connections", id, "resubscribe"]) => resubscribe(s, id, queue).await,
        ("POST", ["connections", id, "subscriptions", key, "pause"]) => pause(s, id, key).await,
        ("POST", ["connections", id, "subscriptions", key, "resume"]) => resume(s, id, key, queue).await,
        (_, ["connections", _, "subscriptions", _, "pause" | "resume"]) => api::error(
            405,
            "method_not_allowed",
            "use POST on /connections/{id}/subscriptions/{key}/pause or /resume",
        ),
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
    // Which key each subscription's clientState is made with: after a key
    // rotation, "previous" until the renewal run (or resubscribe) replaced it.
    let key_id = s.signing.now().key_id();
    if let Some(subs) = v["subscriptions"].as_array_mut() {
        for (view, sub) in subs.iter_mut().zip(&conn.subscriptions) {
            if !sub.id.is_empty() {
                view["signing_key"] = match sub.key_id.as_deref() {
                    Some(k) if k == key_id => "current",
                    Some(subscriptions::RESUBSCRIBE_PENDING) => "pending",
                    _ => "previous",
                }
                .into();
            }
        }
    }
    if let Some(public) = &s.config.public_url {
        if conn.auth == AuthMode::Delegated {
            v["connect_url"] = s.connect_url(conn).into();
        } else if conn.status != Status::Active {
            v["admin_consent_url"] = links::admin_consent_url(public, &s.signing.now(), conn).into();
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
    if let Err(m) = validate_send_settings(&body.allowed_callers, body.connect_max_recipients) {
        return bad(m);
    }
    let mut conn = Connection::new(id, body.auth, cloud, tenant, body.mailbox, features);
    conn.allowed_callers = body.allowed_callers;
    conn.connect_max_recipients = body.connect_max_recipients;
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

/// The flow `key` of a connection, or the 404 that says how to find it.
async fn flow(s: &Services, id: &str, key: &str) -> Result<(Connection, Subscription), HttpResponse> {
    let conn = load(s, id).await?;
    match conn.subscriptions.iter().find(|x| x.key == key).cloned() {
        Some(sub) => Ok((conn, sub)),
        None => Err(api::error(
            404,
            "not_found",
            format!("connection {id} has no subscription {key:?}: GET /connections/{id} lists their keys"),
        )),
    }
}

async fn pause(s: &Services, id: &str, key: &str) -> HttpResponse {
    let (_, sub) = match flow(s, id, key).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !sub.is_paused() {
        let now = time::OffsetDateTime::now_utc();
        let change = SubscriptionChange::new().paused(
            now,
            "paused by an operator: nothing is sent to this flow until it is resumed, and nothing is lost",
        );
        if let Err(e) = s.state.update_subscription(id, key, change).await {
            return store_error(&e);
        }
        relay365::metrics::paused("operator");
    }
    match flow(s, id, key).await {
        Ok((_, sub)) => api::json(200, &sub.public_view()),
        Err(r) => r,
    }
}

async fn resume(s: &Services, id: &str, key: &str, queue: Option<&dyn Queue>) -> HttpResponse {
    let (conn, sub) = match flow(s, id, key).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if sub.is_paused() {
        let now = time::OffsetDateTime::now_utc();
        if let Err(e) = s
            .state
            .update_subscription(id, key, SubscriptionChange::new().resumed(now))
            .await
        {
            return store_error(&e);
        }
        // Everything since the watermark, through the catch-up; new mail
        // waits for it, so the flow gets all of it once and in order.
        let resumed = match flow(s, id, key).await {
            Ok((_, sub)) => sub,
            Err(r) => return r,
        };
        match queue {
            Some(q) => {
                if let Err(e) = relay365::catchup::start(q, &conn, &[&resumed], true).await {
                    // The flow stays in catch-up; the sweep starts it again.
                    return api::error(
                        503,
                        "queue_unavailable",
                        format!(
                            "the flow is resumed but its catch-up could not be queued ({e}); the scheduled run starts it within half an hour, or POST resume again"
                        ),
                    );
                }
            }
            None => {
                tracing::warn!(connection = %id, flow = %key, "no notification queue: the scheduled run starts the catch-up")
            }
        }
    }
    match flow(s, id, key).await {
        Ok((_, sub)) => api::json(200, &sub.public_view()),
        Err(r) => r,
    }
}

async fn resubscribe(s: &Services, id: &str, queue: Option<&dyn Queue>) -> HttpResponse {
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
    // API Gateway cuts a request at 29 s: no new subscription is started
    // after 20 (one takes a few seconds, the validation handshake included).
    let deadline = std::time::Instant::now() + RESUBSCRIBE_BUDGET;
    let done = match subscriptions::resubscribe(s, &conn, &token, deadline, queue).await {
        Ok(d) => d,
        Err(e) => {
            let status = if e.is_retryable() { 503 } else { 502 };
            return api::error(status, "graph_refused", subscriptions::explain(&e));
        }
    };
    match load(s, id).await {
        Ok(c) if done.remaining == 0 => api::json(200, &view(s, &c)),
        Ok(c) => {
            let mut v = view(s, &c);
            v["resubscribe"] = serde_json::json!({
                "recreated": done.recreated,
                "remaining": done.remaining,
                "message": "time ran out: POST again to finish, or the renewal run does it; the remaining subscriptions show signing_key \"pending\"",
            });
            api::json(202, &v)
        }
        Err(r) => r,
    }
}

/// The time a scheduled run has when neither the runtime nor the settings
/// say: the template's `Timeout` for connections.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// Handles any invocation: an API Gateway HTTP event, or the schedule. The
/// sweep queues what it recovers on the notification queue
/// (`RELAY365_QUEUE_URL`; without it the run renews only).
pub async fn handle_event(payload: serde_json::Value, s: &Services) -> serde_json::Value {
    let queue = configured_queue(s);
    handle_event_with(payload, s, queue.as_ref().map(|q| q as &dyn Queue)).await
}

/// [`handle_event`] with the queue the sweep uses given; the invocation has
/// the configured timeout (`RELAY365_FUNCTION_TIMEOUT_SECONDS`) from now.
pub async fn handle_event_with(
    payload: serde_json::Value,
    s: &Services,
    queue: Option<&dyn Queue>,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + s.config.function_timeout.unwrap_or(DEFAULT_TIMEOUT);
    handle_event_until(payload, s, queue, deadline).await
}

/// [`handle_event_with`] with the invocation's deadline given (the Lambda
/// runtime's, see [`relay365::lambda::invocation_deadline`]).
pub async fn handle_event_until(
    payload: serde_json::Value,
    s: &Services,
    queue: Option<&dyn Queue>,
    deadline: std::time::Instant,
) -> serde_json::Value {
    if payload.get("requestContext").is_some() {
        return api::to_apigw_v2(match api::http_event(&payload) {
            Ok(req) => handle_with(req, s, queue).await,
            Err(r) => r,
        });
    }
    let all = |what: &str| {
        payload
            .pointer(&format!("/detail/{what}"))
            .and_then(serde_json::Value::as_str)
            == Some("all")
    };
    let opts = relay365::schedule::RunOptions {
        deadline: tokio::time::Instant::from_std(deadline),
        renew_all: all("renew"),
        sweep_all: all("sweep"),
    };
    let report = relay365::schedule::run(s, queue, opts).await;
    tracing::info!(
        due = report.due,
        full = report.full,
        connections = report.connections,
        renewed = report.renewed,
        recreated = report.recreated,
        rekeyed = report.rekeyed,
        swept = report.swept,
        recovered = report.recovered,
        paced = report.paced,
        left = report.left,
        failed = report.failed.len(),
        "scheduled run"
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
                    subscriptions::delete_at_graph(s, &conn, &token, &sub.id).await;
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

#[cfg(test)]
mod tests {
    //! The admin API on API Gateway's own event shape (fixtures in
    //! `tests/fixtures/aws`), with secrets and state in memory.
    use super::*;

    const APP: &str = r#"{"client_id":"11111111-2222-3333-4444-555555555555","tenant_id":"contoso.onmicrosoft.com","client_secret":"unit-secret"}"#;
    const KEY: &str = "unit-test-signing-key-0123456789abcdef0123456789";

    async fn services() -> Services {
        Services::in_memory(
            &[
                ("RELAY365_PUBLIC_URL", "https://relay.example"),
                ("RELAY365_DEFAULT_TARGET", "https://flow.example/hook"),
            ],
            APP,
            KEY,
        )
        .await
        .unwrap()
    }

    fn fixture() -> serde_json::Value {
        serde_json::from_str(include_str!(
            "../../../tests/fixtures/aws/apigw-v2-iam-post-connections.json"
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn an_iam_post_creates_a_pending_connection_with_its_link() {
        let s = services().await;
        let answer = handle_event(fixture(), &s).await;
        assert_eq!(answer["statusCode"], 201, "{answer}");
        let body: serde_json::Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["status"], "pending_consent");
        assert!(
            body["connect_url"]
                .as_str()
                .unwrap()
                .starts_with("https://relay.example/oauth/start?link=")
        );
        assert_eq!(
            s.state.require("support").await.unwrap().auth,
            AuthMode::Delegated
        );
        // The same body again is a conflict, in the contract's error shape.
        let again = handle_event(fixture(), &s).await;
        assert_eq!(again["statusCode"], 409, "{again}");
        let err: serde_json::Value = serde_json::from_str(again["body"].as_str().unwrap()).unwrap();
        assert_eq!(err["error"]["code"], "conflict");
    }

    #[tokio::test]
    async fn malformed_bodies_get_a_400_naming_what_is_wrong() {
        let s = services().await;
        for (body, words) in [
            ("{", "JSON"),
            (r#"{"auth":"delegated","scopes":["Mail.Fly"]}"#, "Mail.Fly"),
            (r#"{"auth":"app_secret","scopes":["Mail.Send"]}"#, "mailbox"),
            (
                r#"{"auth":"delegated","scopes":["Mail.Send"],"mailbox":"not an address"}"#,
                "mailbox",
            ),
            (
                r#"{"id":"Bad Id","auth":"delegated","scopes":["Mail.Send"]}"#,
                "connection id",
            ),
        ] {
            let mut event = fixture();
            event["body"] = body.into();
            let answer = handle_event(event, &s).await;
            assert_eq!(answer["statusCode"], 400, "{body}: {answer}");
            let text = answer["body"].as_str().unwrap();
            assert!(text.contains(words), "{body}: {text}");
        }
    }
}
