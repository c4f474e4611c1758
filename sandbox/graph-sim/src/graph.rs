//! Microsoft Graph v1.0: the endpoints relay365 calls, with Graph's
//! throttling (429 with `Retry-After`, four concurrent requests per mailbox),
//! error shapes, subscription rules (the validation handshake on create,
//! lifetime limits, `clientState` at most 128 characters) and change
//! notifications delivered over HTTP with retries, as Graph does.

use std::sync::MutexGuard;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::identity::bearer;
use crate::reply::{event_json, graph_error, item_not_found, ok_json, select};
use crate::state::{Access, Lifecycle, Mailbox, Message, Shared, SimSubscription, State, Subject, lock};

/// Graph's maximum lifetime for Outlook subscriptions without resource data.
const MAX_LIFETIME_MINUTES: i64 = 10_080;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1.0/{*rest}", axum::routing::any(dispatch))
        .route("/upload/{session}", axum::routing::put(upload))
        // Graph answers 413 itself above 4 MB; let bodies reach the handlers to see it.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
}

fn mailbox_key(path: &str, headers: &HeaderMap) -> Option<String> {
    let rest = path.strip_prefix("/v1.0/")?;
    let mut seg = rest.split('/');
    match seg.next()? {
        "users" => seg.next().map(|u| u.to_ascii_lowercase()),
        "me" => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|t| format!("me:{t}")),
        _ => None,
    }
}

/// Graph's `429`, with `Retry-After` when it names a wait.
fn too_many_requests(code: &str, message: &str, retry_after: Option<&str>) -> Response {
    let mut resp = graph_error(StatusCode::TOO_MANY_REQUESTS, code, message);
    if let Some(ra) = retry_after
        && let Ok(v) = header::HeaderValue::from_str(ra)
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Counts Graph requests, answers 429 while a throttle is set, and enforces
/// Outlook's four concurrent requests per app and mailbox.
pub(crate) async fn count_and_throttle(
    AxState(state): AxState<Shared>,
    req: Request,
    next: Next,
) -> Response {
    if !req.uri().path().starts_with("/v1.0/") {
        return next.run(req).await;
    }
    let key = mailbox_key(req.uri().path(), req.headers());
    let latency;
    {
        let mut st = lock(&state);
        st.stats.graph_requests += 1;
        if let Some((left, retry_after)) = st.throttle.take() {
            if left > 1 {
                st.throttle = Some((left - 1, retry_after.clone()));
            }
            st.stats.throttled += 1;
            drop(st);
            return too_many_requests(
                "TooManyRequests",
                "Please retry again later.",
                retry_after.as_deref(),
            );
        }
        if let Some(k) = &key {
            let n = st.in_flight.entry(k.clone()).or_default();
            if *n >= 4 {
                st.stats.throttled += 1;
                drop(st);
                return too_many_requests(
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    Some("1"),
                );
            }
            *n += 1;
            let busy = st.in_flight.values().filter(|n| **n > 0).count() as u32;
            st.stats.peak_mailboxes_busy = st.stats.peak_mailboxes_busy.max(busy);
        }
        latency = st.latency;
    }
    // Counted out when the request ends, also when its client gave up and
    // the handler was dropped halfway (a stalled answer).
    let _in_flight = key.map(|k| InFlight {
        state: state.clone(),
        key: k,
    });
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    next.run(req).await
}

/// One request counted in a mailbox's concurrent requests until dropped.
struct InFlight {
    state: Shared,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        if let Some(n) = st.in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

pub(crate) fn with_middleware(router: Router<Shared>, state: Shared) -> Router<Shared> {
    router.layer(middleware::from_fn_with_state(state, count_and_throttle))
}

fn decode(seg: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", seg.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The bytes of a message's `index`-th attachment: those it was given, else
/// its size in bytes made from its name.
fn attachment_bytes(m: &Message, index: usize) -> Vec<u8> {
    if let Some(b) = m.attachment_bytes.get(index) {
        return b.clone();
    }
    let (name, _, size) = &m.attachments[index];
    name.bytes()
        .chain(std::iter::once(b'\n'))
        .cycle()
        .take(*size as usize)
        .collect()
}

/// Which mailbox a request addresses, checked against the token.
#[allow(clippy::result_large_err)]
fn resolve_mailbox(st: &State, access: &Access, user: Option<&str>) -> Result<String, Response> {
    match (user, &access.subject) {
        (None, Subject::User(upn)) => Ok(upn.clone()),
        (None, Subject::App(_)) => Err(graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        )),
        (Some(u), subject) => {
            let Some(found) = st
                .users
                .iter()
                .find(|x| x.id.eq_ignore_ascii_case(u) || x.upn.eq_ignore_ascii_case(u))
            else {
                return Err(graph_error(
                    StatusCode::NOT_FOUND,
                    "ErrorInvalidUser",
                    &format!("The requested user '{u}' is invalid."),
                ));
            };
            match subject {
                Subject::User(own) if !own.eq_ignore_ascii_case(&found.upn) => Err(graph_error(
                    StatusCode::FORBIDDEN,
                    "ErrorAccessDenied",
                    "Access is denied. Check credentials and try again.",
                )),
                _ => Ok(found.upn.clone()),
            }
        }
    }
}

async fn dispatch(
    AxState(state): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_start_matches("/v1.0/").to_string();
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let access = {
        let st = lock(&state);
        match bearer(&st, &headers) {
            Ok(a) => a,
            Err(r) => return r,
        }
    };
    match (method.as_str(), segs.as_slice()) {
        ("POST", ["subscriptions"]) => create_subscription(&state, &access, &body).await,
        ("GET", ["subscriptions"]) => list_subscriptions(&state, &access, &query),
        ("PATCH", ["subscriptions", id]) => renew_subscription(&state, &access, id, &body),
        ("DELETE", ["subscriptions", id]) => delete_subscription(&state, &access, id),
        ("POST", ["subscriptions", id, "reauthorize"]) => reauthorize(&state, &access, id),
        ("GET", ["subscriptions", id]) => get_subscription(&state, &access, id),
        _ => mailbox_route(&state, &access, method.as_str(), &segs, &query, &headers, &body).await,
    }
}

async fn upload(
    AxState(state): AxState<Shared>,
    axum::extract::Path(session): axum::extract::Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    crate::mail::upload(&state, &session, &query, &headers, &body)
}

/// A mailbox path's owner (`me` is `None`) and what follows it.
fn mailbox_segments<'a, 'b>(segs: &'a [&'b str]) -> Option<(Option<&'b str>, &'a [&'b str])> {
    match segs {
        ["me", rest @ ..] => Some((None, rest)),
        ["users", u, rest @ ..] => Some((Some(*u), rest)),
        _ => None,
    }
}

/// The folder named in `mailFolders('Name')` form, without case.
fn quoted_folder(seg: &str) -> String {
    seg.trim_start_matches("mailFolders('")
        .trim_end_matches("')")
        .to_ascii_lowercase()
}

/// The folder a path is scoped to (without case) and what follows it.
fn folder_scope<'a, 'b>(rest: &'a [&'b str]) -> (Option<String>, &'a [&'b str]) {
    match rest {
        [f, rest @ ..] if f.starts_with("mailFolders('") => (Some(quoted_folder(f)), rest),
        ["mailFolders", f, rest @ ..] => (Some(f.to_ascii_lowercase()), rest),
        rest => (None, rest),
    }
}

/// The requests that write to a mailbox (sending, drafts, attachments),
/// with the scripted refusal of a send first; `None` for any other.
async fn mail_write(
    state: &Shared,
    upn: &str,
    method: &str,
    rest: &[&str],
    body: &Bytes,
) -> Option<Response> {
    if crate::mail::is_send(method, rest)
        && let Some(r) = crate::mail::refusal(state)
    {
        return Some(r);
    }
    let answer = match (method, rest) {
        ("POST", ["sendMail"]) => crate::mail::answer(state, crate::mail::send_mail(state, upn, body)).await,
        ("DELETE", ["messages", id]) => crate::mail::delete_message(state, upn, id),
        ("POST", ["messages"]) => crate::mail::create_draft(state, upn, body),
        ("POST", ["mailFolders", folder, "messages"]) => {
            crate::mail::create_in_folder(state, upn, &folder.to_ascii_lowercase(), body)
        }
        ("PATCH", ["messages", id]) => crate::mail::update_draft(state, upn, id, body),
        ("POST", ["messages", id, "attachments"]) => crate::mail::add_attachment(state, upn, id, body),
        ("POST", ["messages", id, "attachments", "createUploadSession"]) => {
            crate::mail::create_upload_session(state, upn, id, body)
        }
        ("POST", ["messages", id, "send"]) => {
            crate::mail::answer(state, crate::mail::send_draft(state, upn, id)).await
        }
        ("POST", ["messages", id, "reply"]) => {
            crate::mail::answer(state, crate::mail::reply(state, upn, id, body)).await
        }
        ("POST", ["messages", id, "createReply"]) => crate::mail::create_reply(state, upn, id, body),
        _ => return None,
    };
    Some(answer)
}

/// `GET messages/{id}`: the message with its body as Graph serves it.
fn get_message(mut st: MutexGuard<'_, State>, upn: &str, id: &str, query: &[(String, String)]) -> Response {
    let mut pieces = crate::body::Pieces::default();
    let found = st.mailboxes.get_mut(&upn.to_ascii_lowercase()).and_then(|mbox| {
        let at = mbox.messages.iter().position(|x| x.id == id)?;
        let served = crate::body::served(mbox, at)?;
        pieces.message(&mbox.messages[at], upn, &served, query);
        Some(())
    });
    drop(st);
    match found {
        Some(()) => pieces.respond(),
        None => item_not_found(),
    }
}

/// The reads of one item of a mailbox: a message's attachments, an
/// attachment's bytes, an event; any other request is Graph's 400.
fn get_item(mbox: Option<&Mailbox>, method: &str, rest: &[&str], query: &[(String, String)]) -> Response {
    match (method, rest) {
        ("GET", ["messages", id, "attachments"]) => {
            match mbox.and_then(|m| m.messages.iter().find(|x| x.id == *id)) {
                Some(m) => ok_json(
                    StatusCode::OK,
                    json!({"value": m.attachments.iter().enumerate().map(|(i, a)| json!({"@odata.type": "#microsoft.graph.fileAttachment", "id": format!("att{i}"), "name": a.0, "contentType": a.1, "size": a.2, "isInline": false})).collect::<Vec<_>>()}),
                ),
                None => item_not_found(),
            }
        }
        ("GET", ["messages", id, "attachments", aid, "$value"]) => {
            let found = mbox
                .and_then(|m| m.messages.iter().find(|x| x.id == *id))
                .and_then(|m| {
                    let at: usize = aid.strip_prefix("att")?.parse().ok()?;
                    (at < m.attachments.len()).then(|| (m.attachments[at].1.clone(), attachment_bytes(m, at)))
                });
            match found {
                Some((content_type, bytes)) => axum::response::IntoResponse::into_response((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, content_type)],
                    bytes,
                )),
                None => item_not_found(),
            }
        }
        ("GET", ["events", id]) => match mbox.and_then(|m| m.events.iter().find(|x| x.id == *id)) {
            Some(e) => ok_json(StatusCode::OK, select(event_json(e), query)),
            None => item_not_found(),
        },
        _ => graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Unsupported request {method} /{}", rest.join("/")),
        ),
    }
}

#[allow(clippy::too_many_arguments)]
async fn mailbox_route(
    state: &Shared,
    access: &Access,
    method: &str,
    segs: &[&str],
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let Some((user, rest)) = mailbox_segments(segs) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Resource not found for the segment.",
        );
    };
    let upn = {
        let st = lock(state);
        match resolve_mailbox(&st, access, user) {
            Ok(u) => u,
            Err(r) => return r,
        }
    };
    if let Some(answer) = mail_write(state, &upn, method, rest, body).await {
        return answer;
    }
    let (folder, rest) = folder_scope(rest);
    let folder = folder.as_deref();
    let mut st = lock(state);
    if method == "GET"
        && let ["messages", id] = rest
        && let Some(r) = crate::mail::get_draft(&st, &upn, id)
    {
        return r;
    }
    match (method, rest) {
        ("GET", ["messages", "delta"]) => {
            crate::delta::messages(&mut st, &upn, folder.unwrap_or("inbox"), user, query, headers)
        }
        ("GET", ["calendarView", "delta"]) => crate::delta::calendar(&mut st, &upn, user, query, headers),
        ("GET", ["messages"]) => match crate::mail::list_by_property(&st, &upn, folder, query) {
            Some(r) => r,
            None => crate::list::messages(&mut st, &upn, folder, user, query),
        },
        ("GET", ["messages", id]) => get_message(st, &upn, id, query),
        _ => get_item(st.mailboxes.get(&upn.to_ascii_lowercase()), method, rest, query),
    }
}

fn app_of(access: &Access, st: &State) -> String {
    match &access.subject {
        Subject::App(a) => a.clone(),
        Subject::User(_) => st.apps.first().map(|a| a.client_id.clone()).unwrap_or_default(),
    }
}

fn sub_json(s: &SimSubscription) -> Value {
    json!({
        "id": s.id, "resource": s.resource, "changeType": s.change_types.join(","),
        "notificationUrl": s.notification_url, "lifecycleNotificationUrl": s.lifecycle_url,
        "expirationDateTime": s.expires.format(&Rfc3339).unwrap_or_default(),
        "clientState": s.client_state, "applicationId": s.app_id, "latestSupportedTlsVersion": "v1_2",
    })
}

fn url_ok(u: &str) -> bool {
    match url::Url::parse(u) {
        Ok(url) => {
            url.scheme() == "https"
                || (url.scheme() == "http" && matches!(url.host_str(), Some("127.0.0.1") | Some("localhost")))
        }
        Err(_) => false,
    }
}

/// Graph's subscription write limits (throttling-limits: 500 creates or
/// renewals per 20 s per app and tenant, 2,000 per app across tenants): a
/// write past them is answered `429` with the seconds until a slot frees;
/// an accepted one is recorded.
fn subscription_write_refused(state: &Shared, access: &Access) -> Option<Response> {
    let mut st = lock(state);
    let (per_tenant, per_app, window) = st.write_limits;
    let now = st.started.elapsed();
    let recent: Vec<&(Duration, String)> = st
        .stats
        .subscription_writes
        .iter()
        .filter(|(t, _)| now.saturating_sub(*t) < window)
        .collect();
    let tenant: Vec<&&(Duration, String)> = recent
        .iter()
        .filter(|(_, t)| t.eq_ignore_ascii_case(&access.tenant))
        .collect();
    let full = if tenant.len() >= per_tenant {
        tenant.first().map(|(t, _)| *t)
    } else if recent.len() >= per_app {
        recent.first().map(|(t, _)| *t)
    } else {
        None
    };
    if let Some(oldest) = full {
        let wait = (oldest + window).saturating_sub(now).as_secs().max(1);
        st.stats.subscription_writes_refused += 1;
        st.stats.throttled += 1;
        drop(st);
        return Some(too_many_requests(
            "TooManyRequests",
            "The application has exceeded the subscription write limit. Please retry again later.",
            Some(&wait.to_string()),
        ));
    }
    let tenant = access.tenant.clone();
    st.stats.subscription_writes.push((now, tenant));
    None
}

/// A subscription's lifetime as Graph allows it: a future time at most
/// [`MAX_LIFETIME_MINUTES`] away. `unreadable` is the message for a missing
/// or unparsable `expirationDateTime`.
#[allow(clippy::result_large_err)]
fn subscription_expiry(exp: Option<&str>, unreadable: &str) -> Result<OffsetDateTime, Response> {
    let Some(expires) = exp.and_then(|e| OffsetDateTime::parse(e, &Rfc3339).ok()) else {
        return Err(graph_error(StatusCode::BAD_REQUEST, "InvalidRequest", unreadable));
    };
    let now = OffsetDateTime::now_utc();
    if expires <= now || expires > now + time::Duration::minutes(MAX_LIFETIME_MINUTES) {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            &format!("Subscription expiration can only be {MAX_LIFETIME_MINUTES} minutes in the future."),
        ));
    }
    Ok(expires)
}

/// A subscription's resource: whose mailbox (`None` for `/me`), events or
/// messages, and the folder of the messages (empty for all).
#[allow(clippy::result_large_err)]
fn subscription_resource(resource: &str) -> Result<(Option<String>, bool, String), Response> {
    let segs: Vec<String> = resource
        .trim_start_matches('/')
        .split('/')
        .map(|s| canonical_segment(&decode(s)))
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let Some((user, rest)) = mailbox_segments(&segs) else {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "Unsupported resource.",
        ));
    };
    let (events, folder) = match rest {
        ["messages"] => (false, String::new()),
        [f, "messages"] if f.starts_with("mailFolders('") => (false, quoted_folder(f)),
        ["mailFolders", f, "messages"] => (false, f.to_ascii_lowercase()),
        ["events"] => (true, String::new()),
        _ => {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "Unsupported resource for change notifications.",
            ));
        }
    };
    Ok((user.map(str::to_string), events, folder))
}

/// A subscription create's body, checked as Graph checks it.
struct NewSubscription {
    change_types: Vec<String>,
    url: String,
    lifecycle: Option<String>,
    client_state: Option<String>,
    resource: String,
    expires: OffsetDateTime,
    /// Whose mailbox: `None` for `/me`.
    user: Option<String>,
    events: bool,
    folder: String,
}

#[allow(clippy::result_large_err)]
fn new_subscription(body: &Bytes) -> Result<NewSubscription, Response> {
    let invalid = |message: &str| Err(graph_error(StatusCode::BAD_REQUEST, "InvalidRequest", message));
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid JSON in the request body.",
        ));
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let (Some(change), Some(url), Some(resource), Some(exp)) = (
        s("changeType"),
        s("notificationUrl"),
        s("resource"),
        s("expirationDateTime"),
    ) else {
        return invalid("changeType, notificationUrl, resource and expirationDateTime are required.");
    };
    let lifecycle = s("lifecycleNotificationUrl");
    if !url_ok(&url) || lifecycle.as_deref().is_some_and(|l| !url_ok(l)) {
        return invalid(
            "The notification URL must be HTTPS (the simulator also delivers to http://127.0.0.1 and localhost).",
        );
    }
    let client_state = s("clientState");
    if client_state.as_deref().is_some_and(|c| c.len() > 128) {
        return invalid("clientState can be at most 128 characters.");
    }
    let change_types: Vec<String> = change.split(',').map(|c| c.trim().to_string()).collect();
    if change_types
        .iter()
        .any(|c| !matches!(c.as_str(), "created" | "updated" | "deleted"))
    {
        return invalid("changeType must be created, updated, deleted or a comma-separated list of them.");
    }
    let expires = subscription_expiry(Some(&exp), "expirationDateTime is not a valid date.")?;
    let (user, events, folder) = subscription_resource(&resource)?;
    Ok(NewSubscription {
        change_types,
        url,
        lifecycle,
        client_state,
        resource,
        expires,
        user,
        events,
        folder,
    })
}

/// The validation handshake, on each URL in turn; the first that fails is
/// Graph's `ValidationError`.
async fn validate_urls(state: &Shared, urls: &[&String]) -> Option<Response> {
    for u in urls {
        let token = format!(
            "Validation: Testing client application reachability for subscription Request-Id: {} +&%=",
            uuid::Uuid::new_v4()
        );
        let ok = handshake(u, &token).await;
        let mut st = lock(state);
        st.stats.handshakes.0 += 1;
        if ok {
            st.stats.handshakes.1 += 1;
        } else {
            return Some(graph_error(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
            ));
        }
    }
    None
}

async fn create_subscription(state: &Shared, access: &Access, body: &Bytes) -> Response {
    let new = match new_subscription(body) {
        Ok(new) => new,
        Err(answer) => return answer,
    };
    let (mailbox, app_id) = {
        let mut st = lock(state);
        let found = match resolve_mailbox(&st, access, new.user.as_deref()) {
            Ok(m) => (m, app_of(access, &st)),
            Err(r) => return r,
        };
        let combination = (found.0.as_str(), new.events, new.folder.as_str());
        if let Some(r) = refuse_duplicate(&mut st, &found.1, &new.change_types, combination) {
            return r;
        }
        found
    };
    if let Some(refused) = subscription_write_refused(state, access) {
        return refused;
    }
    // The validation handshake, on both URLs, before the subscription exists.
    let urls: Vec<&String> = std::iter::once(&new.url).chain(&new.lifecycle).collect();
    if let Some(failed) = validate_urls(state, &urls).await {
        return failed;
    }
    let mut st = lock(state);
    // Checked again: another create of the same combination may have
    // finished during the handshake.
    let combination = (mailbox.as_str(), new.events, new.folder.as_str());
    if let Some(r) = refuse_duplicate(&mut st, &app_id, &new.change_types, combination) {
        return r;
    }
    *st.stats.subscription_calls.entry("create".into()).or_default() += 1;
    record_write(&mut st, "create", &mailbox, &app_id);
    let sub = SimSubscription {
        id: uuid::Uuid::new_v4().to_string(),
        app_id,
        tenant: access.tenant.clone(),
        mailbox,
        events: new.events,
        folder: new.folder,
        change_types: new.change_types,
        notification_url: new.url,
        lifecycle_url: new.lifecycle,
        client_state: new.client_state,
        resource: new.resource,
        expires: new.expires,
    };
    let body = sub_json(&sub);
    st.subscriptions.insert(sub.id.clone(), sub);
    ok_json(StatusCode::CREATED, body)
}

/// Graph reads the names in a resource path without case (`Users`,
/// `MailFolders('Inbox')`): spells them as the simulator matches them.
fn canonical_segment(seg: &str) -> String {
    const NAMES: [&str; 5] = ["me", "users", "messages", "mailFolders", "events"];
    if let Some(name) = NAMES.iter().find(|n| n.eq_ignore_ascii_case(seg)) {
        return (*name).to_string();
    }
    match seg.get(..13) {
        Some(head) if head.eq_ignore_ascii_case("mailFolders('") => format!("mailFolders('{}", &seg[13..]),
        _ => seg.to_string(),
    }
}

/// Graph's rule for duplicates (subscription-post-subscriptions): a second
/// subscription of the same app with the same `changeType` and `resource`
/// fails with `409 Conflict`, "Subscription Id <id> already exists for the
/// requested combination". Resources compare as Graph resolves them: the
/// mailbox (`/me` is the signed-in user's, `/users/{id}` that user's), the
/// folder without case, messages or events; change types as a set. Only
/// live subscriptions count: an expired or silently removed one no longer
/// exists at Graph. The code is the one Graph answers on the wire
/// (`ObjectIdentifierInUse`, as clients that parse this error see it).
fn refuse_duplicate(
    st: &mut State,
    app_id: &str,
    change_types: &[String],
    (mailbox, events, folder): (&str, bool, &str),
) -> Option<Response> {
    let now = OffsetDateTime::now_utc();
    let wanted = change_set(change_types);
    let existing = st
        .subscriptions
        .values()
        .find(|s| {
            s.app_id == app_id
                && s.expires > now
                && change_set(&s.change_types) == wanted
                && s.mailbox.eq_ignore_ascii_case(mailbox)
                && s.events == events
                && s.folder.eq_ignore_ascii_case(folder)
        })?
        .id
        .clone();
    st.stats.subscription_conflicts += 1;
    Some(graph_error(
        StatusCode::CONFLICT,
        "ObjectIdentifierInUse",
        &format!("Subscription Id {existing} already exists for the requested combination"),
    ))
}

fn change_set(change_types: &[String]) -> std::collections::BTreeSet<String> {
    change_types.iter().map(|c| c.to_ascii_lowercase()).collect()
}

fn owned<'a>(st: &'a mut State, access: &Access, id: &str) -> Result<&'a mut SimSubscription, Response> {
    let app = app_of(access, st);
    match st.subscriptions.get_mut(id) {
        Some(s) if s.app_id == app => Ok(s),
        _ => Err(graph_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The object was not found. Subscription '{id}'"),
        )),
    }
}

/// Subscriptions listed per page (Graph pages `GET /subscriptions`).
const SUBSCRIPTIONS_PAGE: usize = 100;

/// `GET /subscriptions` as Graph scopes it: a delegated token sees the
/// app's subscriptions of the signed-in user, an app token every
/// subscription of the app in its tenant, a page at a time.
fn list_subscriptions(state: &Shared, access: &Access, query: &[(String, String)]) -> Response {
    let mut st = lock(state);
    *st.stats.subscription_calls.entry("list".into()).or_default() += 1;
    let app = app_of(access, &st);
    let mut mine: Vec<&SimSubscription> = st
        .subscriptions
        .values()
        .filter(|s| s.app_id == app)
        .filter(|s| match &access.subject {
            Subject::User(upn) => s.mailbox.eq_ignore_ascii_case(upn),
            Subject::App(_) => s.tenant.eq_ignore_ascii_case(&access.tenant),
        })
        .collect();
    mine.sort_by(|a, b| a.id.cmp(&b.id));
    let from: usize = query
        .iter()
        .find(|(k, _)| k == "$skiptoken")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let value: Vec<Value> = mine
        .iter()
        .skip(from)
        .take(SUBSCRIPTIONS_PAGE)
        .map(|s| sub_json(s))
        .collect();
    let mut body = json!({"value": value});
    if mine.len() > from + SUBSCRIPTIONS_PAGE {
        body["@odata.nextLink"] = format!(
            "{}/v1.0/subscriptions?$skiptoken={}",
            st.base_url,
            from + SUBSCRIPTIONS_PAGE
        )
        .into();
    }
    ok_json(StatusCode::OK, body)
}

fn get_subscription(state: &Shared, access: &Access, id: &str) -> Response {
    let mut st = lock(state);
    match owned(&mut st, access, id) {
        Ok(s) => ok_json(StatusCode::OK, sub_json(s)),
        Err(r) => r,
    }
}

fn renew_subscription(state: &Shared, access: &Access, id: &str, body: &Bytes) -> Response {
    if let Some(refused) = subscription_write_refused(state, access) {
        return refused;
    }
    let exp = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.get("expirationDateTime")
            .and_then(|x| x.as_str())
            .map(str::to_string)
    });
    let expires = match subscription_expiry(exp.as_deref(), "expirationDateTime is required.") {
        Ok(expires) => expires,
        Err(answer) => return answer,
    };
    let mut st = lock(state);
    *st.stats.subscription_calls.entry("renew".into()).or_default() += 1;
    record_write_of(&mut st, "renew", access, id);
    match owned(&mut st, access, id) {
        Ok(s) => {
            s.expires = expires;
            let body = sub_json(s);
            ok_json(StatusCode::OK, body)
        }
        Err(r) => r,
    }
}

fn delete_subscription(state: &Shared, access: &Access, id: &str) -> Response {
    let mut st = lock(state);
    *st.stats.subscription_calls.entry("delete".into()).or_default() += 1;
    record_write_of(&mut st, "delete", access, id);
    if let Err(r) = owned(&mut st, access, id) {
        return r;
    }
    st.subscriptions.remove(id);
    StatusCode::NO_CONTENT.into_response()
}

/// Logs a subscription write when recording.
fn record_write(st: &mut State, kind: &'static str, mailbox: &str, app_id: &str) {
    if st.recording.is_none() {
        return;
    }
    let tenant = st.user(mailbox).map(|u| u.tenant.clone()).unwrap_or_default();
    if let Some(r) = st.recording.as_mut() {
        r.subscription_writes.push(crate::state::SubscriptionWrite {
            at: std::time::SystemTime::now(),
            kind,
            tenant,
            app_id: app_id.to_string(),
        });
    }
}

/// [`record_write`] for a write naming a subscription by id.
fn record_write_of(st: &mut State, kind: &'static str, access: &Access, id: &str) {
    let mailbox = st
        .subscriptions
        .get(id)
        .map(|s| s.mailbox.clone())
        .unwrap_or_default();
    let app = app_of(access, st);
    record_write(st, kind, &mailbox, &app);
}

fn reauthorize(state: &Shared, access: &Access, id: &str) -> Response {
    let mut st = lock(state);
    *st.stats
        .subscription_calls
        .entry("reauthorize".into())
        .or_default() += 1;
    match owned(&mut st, access, id) {
        Ok(_) => StatusCode::OK.into_response(),
        Err(r) => r,
    }
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

fn client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Graph's handshake: POST `url?validationToken=…` (text/plain), expect 200
/// `text/plain` with exactly the decoded token, within 10 seconds.
async fn handshake(url: &str, token: &str) -> bool {
    let Ok(mut u) = url::Url::parse(url) else {
        return false;
    };
    u.query_pairs_mut().append_pair("validationToken", token);
    let Ok(req) = hyper::Request::post(u.as_str())
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(http_body_util::Full::new(Bytes::new()))
    else {
        return false;
    };
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(10), client().request(req)).await else {
        return false;
    };
    let ct_ok = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let status_ok = resp.status() == StatusCode::OK;
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    status_ok && ct_ok && body.as_ref() == token.as_bytes()
}

/// How long Graph keeps resending a notification that got no 2xx within
/// 3 s before it discards it ("for up to 4 hours").
const RESEND_FOR: Duration = Duration::from_secs(4 * 3600);

/// The wait before resend `attempt` (0-based). Graph documents that it
/// resends, not how often: the simulator starts quickly (so a test sees a
/// retry at once) and backs off exponentially to a minute, so a receiver
/// that is down or slow is not kept busy by the resends themselves.
fn resend_after(attempt: u32) -> Duration {
    Duration::from_millis(150u64.saturating_mul(1u64 << attempt.min(16))).min(Duration::from_secs(60))
}

/// POSTs a notification collection, resending like Graph until it gets a
/// 2xx, [`RESEND_FOR`] has passed or the simulator is dropped.
pub(crate) fn send_notifications(state: Shared, url: String, payload: Value, copies: u32) {
    tokio::spawn(async move {
        let body = Bytes::from(payload.to_string());
        for _ in 0..copies {
            let first = std::time::Instant::now();
            for attempt in 0.. {
                if lock(&state).stopped {
                    return;
                }
                let Ok(req) = hyper::Request::post(url.as_str())
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(http_body_util::Full::new(body.clone()))
                else {
                    return;
                };
                let sent_at = std::time::SystemTime::now();
                let started = std::time::Instant::now();
                let status = match tokio::time::timeout(Duration::from_secs(3), client().request(req)).await {
                    Ok(Ok(r)) => r.status().as_u16(),
                    _ => 0,
                };
                {
                    let mut st = lock(&state);
                    st.stats.notification_statuses.push(status);
                    if let Some(r) = st.recording.as_mut() {
                        r.notification_posts.push(crate::state::NotificationPost {
                            item_id: payload
                                .pointer("/value/0/resourceData/id")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            sent_at,
                            answered_after: started.elapsed(),
                            status,
                        });
                    }
                }
                if (200..300).contains(&status) || first.elapsed() >= RESEND_FOR {
                    break;
                }
                tokio::time::sleep(resend_after(attempt)).await;
            }
        }
    });
}

/// Notifies every matching subscription of a change.
pub(crate) fn notify_change(
    state: &Shared,
    upn: &str,
    events: bool,
    folder: &str,
    change: &str,
    item_id: &str,
) {
    let mut st = lock(state);
    if st.drop_notifications {
        return;
    }
    if st.drop_per_mille > 0 {
        // Evenly spread: the n-th change is forgotten when n × fraction
        // crosses a whole number, so the count dropped is exact.
        st.drop_counter += 1;
        let n = st.drop_counter;
        let f = u64::from(st.drop_per_mille);
        if n * f / 1000 != (n - 1) * f / 1000 {
            st.stats.forgotten.push(item_id.to_string());
            return;
        }
    }
    let copies = if st.duplicate_notifications { 2 } else { 1 };
    let user_id = st.user(upn).map(|u| u.id.clone()).unwrap_or_default();
    let tenant = st.user(upn).map(|u| u.tenant.clone()).unwrap_or_default();
    // Graph's etag names the item's version: an event's changes each get their own.
    let etag = st
        .mailboxes
        .get(&upn.to_ascii_lowercase())
        .and_then(|m| m.events.iter().find(|e| e.id == item_id))
        .filter(|_| events)
        .map(|e| format!("W/\"{}\"", e.change_key))
        .unwrap_or_else(|| "W/\"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf\"".into());
    let targets: Vec<(String, Value)> = st
        .subscriptions
        .values()
        .filter(|s| s.mailbox.eq_ignore_ascii_case(upn) && s.events == events && (events || s.folder.is_empty() || s.folder == folder) && s.change_types.iter().any(|c| c == change))
        .map(|s| {
            let kind = if events { "Events" } else { "Messages" };
            let odata = if events { "#Microsoft.Graph.Event" } else { "#Microsoft.Graph.Message" };
            let item = json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "subscriptionId": s.id,
                "subscriptionExpirationDateTime": s.expires.format(&Rfc3339).unwrap_or_default(),
                "clientState": s.client_state,
                "changeType": change,
                "resource": format!("Users/{user_id}/{kind}/{item_id}"),
                "tenantId": tenant,
                "resourceData": {"@odata.type": odata, "@odata.id": format!("Users/{user_id}/{kind}/{item_id}"), "@odata.etag": etag, "id": item_id},
            });
            (s.notification_url.clone(), json!({"value": [item]}))
        })
        .collect();
    st.stats.subscription_calls.entry("notified".into()).or_default();
    if let Some(held) = st.held_notifications.as_mut() {
        held.extend(targets);
        return;
    }
    drop(st);
    for (url, payload) in targets {
        send_notifications(state.clone(), url, payload, copies);
    }
}

/// Sends a lifecycle notification for a subscription.
pub(crate) fn lifecycle(state: &Shared, id: &str, event: Lifecycle) -> bool {
    let mut st = lock(state);
    let Some(sub) = st.subscriptions.get(id).cloned() else {
        return false;
    };
    let Some(url) = sub.lifecycle_url.clone() else {
        return false;
    };
    let name = match event {
        Lifecycle::ReauthorizationRequired => "reauthorizationRequired",
        Lifecycle::SubscriptionRemoved => "subscriptionRemoved",
        Lifecycle::Missed => "missed",
    };
    if event == Lifecycle::SubscriptionRemoved {
        st.subscriptions.remove(id);
    }
    let tenant = st
        .user(&sub.mailbox)
        .map(|u| u.tenant.clone())
        .unwrap_or_default();
    drop(st);
    let item = json!({
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": sub.expires.format(&Rfc3339).unwrap_or_default(),
        "tenantId": tenant,
        "clientState": sub.client_state,
        "lifecycleEvent": name,
    });
    send_notifications(state.clone(), url, json!({"value": [item]}), 1);
    true
}
