//! Send mail through Microsoft Graph for HTTP callers (`POST /mail/send`,
//! IAM-authorised) and Amazon Connect contact flows (direct invocation).
//!
//! A request is checked completely before anything is sent. Then the cheapest
//! Graph call that can carry it is used: one `sendMail` (or `reply`) when the
//! whole request fits under Graph's practical 4 MB limit; otherwise a draft,
//! small attachments added directly, large ones through upload sessions in
//! ranges of at most 4 MiB (streamed from S3 range by range, so a 150 MB file
//! never sits in memory), and `send`. Microsoft's refusals become errors a
//! caller can act on: which permission, which Exchange right, retry when.

pub mod idempotency;
pub mod request;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use lambda_http::Request;
use relay365::api::{self, HttpResponse};
use relay365::connection::{AuthMode, Connection};
use relay365::graph::GraphError;
use relay365::runtime::Services;
use relay365::scopes::FeatureScope;
use relay365::tokens::TokenError;
use relay365::{Sensitive, links};
use serde_json::{Value, json};

use idempotency::{Claim, IdempotencyStore};
use request::{Attachment, MailBody, Recipient, SendRequest, Source};

/// The largest Graph request we build (its practical limit is about 4 MB).
pub const MAX_GRAPH_REQUEST: usize = 3_900_000;
/// Attachments at least this big go through an upload session (Graph: 3 MB).
pub const UPLOAD_SESSION_FROM: u64 = 3 * 1024 * 1024;
/// Largest request accepted: Lambda's synchronous invocation payload limit.
pub const MAX_REQUEST_BODY: usize = 6 * 1024 * 1024;
/// Upload range size (Graph: at most 4 MB per PUT).
pub const CHUNK: u64 = 4 * 1024 * 1024;

/// What send-mail needs.
pub struct Sender<'a> {
    /// Shared services.
    pub services: &'a Services,
    /// For attachments by reference (built on first use).
    pub s3: Option<relay365::runtime::LazyClient<aws_sdk_s3::Client>>,
    /// For idempotency keys.
    pub idempotency: Option<Arc<dyn IdempotencyStore>>,
}

/// Why a send failed; each maps to an HTTP status and a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// HTTP status.
    pub status: u16,
    /// Snake-case code.
    pub code: &'static str,
    /// For a person: what happened and what to do.
    pub message: String,
    /// For 429: seconds to wait.
    pub retry_after: Option<u64>,
}

impl SendError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The JSON error response.
    pub fn response(&self) -> HttpResponse {
        let mut r = api::error(self.status, self.code, &self.message);
        if let Some(s) = self.retry_after
            && let Ok(v) = lambda_http::http::HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(lambda_http::http::header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<request::Invalid> for SendError {
    fn from(i: request::Invalid) -> Self {
        Self::new(i.status, i.code, i.message)
    }
}

/// How the Graph side will go.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// One `sendMail` or `reply` with everything inline.
    Single,
    /// Draft, attachments (upload sessions for large ones), send.
    Draft,
}

fn recipients_json(list: &[Recipient]) -> Vec<Value> {
    list.iter()
        .map(|r| match &r.name {
            Some(n) => json!({"emailAddress": {"name": n, "address": r.address}}),
            None => json!({"emailAddress": {"address": r.address}}),
        })
        .collect()
}

fn file_attachment(a: &Attachment, bytes: &[u8]) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": a.name,
        "contentType": a.content_type,
        "contentBytes": base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// The Graph `message` for a request; inline attachments are included when `with_inline` is set.
/// `from` is set only for delegated send-as (app-only sends through the `from` mailbox itself).
pub fn graph_message(req: &SendRequest, set_from: bool, with_inline: bool) -> Value {
    let (content_type, content) = match &req.body {
        MailBody::Text(t) => ("Text", t),
        MailBody::Html(h) => ("HTML", h),
    };
    let mut m = json!({"body": {"contentType": content_type, "content": content}});
    // An empty subject is left out, so a reply keeps Graph's "RE: …".
    if !req.subject.is_empty() {
        m["subject"] = req.subject.clone().into();
    }
    if !req.to.is_empty() {
        m["toRecipients"] = recipients_json(&req.to).into();
    }
    if !req.cc.is_empty() {
        m["ccRecipients"] = recipients_json(&req.cc).into();
    }
    if !req.bcc.is_empty() {
        m["bccRecipients"] = recipients_json(&req.bcc).into();
    }
    if !req.reply_to.is_empty() {
        m["replyTo"] = recipients_json(&req.reply_to).into();
    }
    if set_from && let Some(f) = &req.from {
        m["from"] = json!({"emailAddress": {"address": f}});
    }
    if with_inline {
        let atts: Vec<Value> = req
            .attachments
            .iter()
            .filter_map(|a| {
                if let Source::Inline(b) = &a.source {
                    Some(file_attachment(a, b))
                } else {
                    None
                }
            })
            .collect();
        if !atts.is_empty() {
            m["attachments"] = atts.into();
        }
    }
    m
}

/// Chooses how to send: everything inline when it is all inline and the
/// Graph request stays under the limit.
pub fn plan(req: &SendRequest) -> Plan {
    let all_inline = req
        .attachments
        .iter()
        .all(|a| matches!(a.source, Source::Inline(_)));
    // base64 grows bytes by 4/3; leave room for the rest of the JSON.
    let estimate = req.inline_bytes() * 4 / 3
        + match &req.body {
            MailBody::Text(t) | MailBody::Html(t) => t.len(),
        }
        + 16 * 1024;
    if all_inline && estimate <= MAX_GRAPH_REQUEST {
        Plan::Single
    } else {
        Plan::Draft
    }
}

fn token_error(e: TokenError, s: &Services, conn_id: &str) -> SendError {
    match e {
        TokenError::UnknownConnection(id) => {
            SendError::new(404, "not_found", format!("connection {id} does not exist"))
        }
        TokenError::NotConnected(id) => SendError::new(
            409,
            "connection_pending",
            format!(
                "connection {id} is waiting for sign-in or admin consent: complete its connect link (GET /connections/{id})"
            ),
        ),
        TokenError::ReauthRequired { reason, .. } => {
            let link = s
                .config
                .public_url
                .as_ref()
                .map(|u| links::connect_url(u, &s.signer, conn_id));
            SendError::new(
                409,
                "reauth_required",
                match link {
                    Some(l) => format!("{reason} Reconnect: {l}"),
                    None => reason,
                },
            )
        }
        e if e.is_retryable() => SendError::new(503, "unavailable", format!("{e}")),
        e => SendError::new(502, "graph_auth_failed", format!("{e}")),
    }
}

fn graph_error(e: GraphError, conn: &Connection, from: Option<&str>) -> SendError {
    let delegated = conn.auth == AuthMode::Delegated;
    match &e {
        GraphError::Api {
            status: 403, code, ..
        } if code == "ErrorSendAsDenied" => SendError::new(
            403,
            "send_as_denied",
            format!(
                "Microsoft refused to send as {}: {} needs Send As or Send on Behalf rights on that mailbox (an Exchange admin grants them){}",
                from.unwrap_or("that address"),
                conn.mailbox.as_deref().unwrap_or("the signed-in user"),
                if delegated {
                    ", and the connection needs the Mail.Send.Shared scope"
                } else {
                    ""
                }
            ),
        ),
        GraphError::Api {
            status: 401 | 403,
            code,
            message,
            ..
        } => SendError::new(
            403,
            "permission_denied",
            format!(
                "Microsoft refused ({code}: {message}). The connection needs {}.",
                if delegated {
                    "the delegated permission Mail.Send (scope Mail.Send), consented at sign-in"
                } else {
                    "the application permission Mail.Send with admin consent on the app registration"
                }
            ),
        ),
        GraphError::Api { status: 413, .. } => SendError::new(
            413,
            "too_large",
            "Microsoft refused the message as too large: send big files as s3 attachments",
        ),
        GraphError::Api { status: 404, .. } => SendError::new(
            404,
            "message_not_found",
            "reply_to_message_id was not found in the connection's mailbox (or the mailbox does not exist)",
        ),
        GraphError::Api {
            status: 400,
            code,
            message,
            ..
        } => SendError::new(
            400,
            "invalid_request",
            format!("Microsoft refused the message ({code}): {message}"),
        ),
        GraphError::Throttled { retry_after, .. } => SendError {
            status: 429,
            code: "throttled",
            message: "Microsoft is throttling this mailbox: retry after the time in Retry-After".into(),
            retry_after: Some(retry_after.map_or(30, |d| d.as_secs_f64().ceil() as u64)),
        },
        other => SendError::new(502, "graph_failed", format!("{other}")),
    }
}

/// Checks what only the connection can tell: may it send, and as whom.
fn check_connection(req: &SendRequest, conn: &Connection) -> Result<(), SendError> {
    let can_send = conn
        .scopes
        .iter()
        .any(|s| matches!(s, FeatureScope::MailSend | FeatureScope::MailSendShared));
    if !can_send {
        return Err(SendError::new(
            403,
            "permission_denied",
            format!(
                "connection {} was not given the Mail.Send scope: add it and connect again",
                conn.id
            ),
        ));
    }
    let other = req
        .from
        .as_deref()
        .is_some_and(|f| !conn.mailbox.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(f)));
    if other && conn.auth == AuthMode::Delegated && !conn.scopes.contains(&FeatureScope::MailSendShared) {
        return Err(SendError::new(
            403,
            "permission_denied",
            format!(
                "sending as {} from a delegated connection needs the Mail.Send.Shared scope (and Send As rights in Exchange): add it to connection {} and connect again",
                req.from.as_deref().unwrap_or(""),
                conn.id
            ),
        ));
    }
    if !req.attachments.is_empty() && plan(req) == Plan::Draft {
        let rw = conn
            .scopes
            .iter()
            .any(|s| matches!(s, FeatureScope::MailReadWrite | FeatureScope::MailDraft));
        if !rw && conn.auth == AuthMode::Delegated {
            return Err(SendError::new(
                403,
                "permission_denied",
                "large attachments go through a draft, which needs the Mail.Draft (Graph Mail.ReadWrite) scope: add it and connect again",
            ));
        }
    }
    Ok(())
}

/// Sends a checked request. Returns `true` when it was a repeat of a request already sent.
///
/// # Errors
/// [`SendError`] with the status and words for the caller.
pub async fn send(sender: &Sender<'_>, req: &SendRequest) -> Result<bool, SendError> {
    let s = sender.services;
    // Attachments by reference are checked before anything else: they are input.
    for a in &req.attachments {
        if let Source::S3 { bucket, key } = &a.source {
            let size = s3_size(sender, bucket, key).await?;
            if size > request::MAX_ATTACHMENT_BYTES {
                return Err(SendError::new(
                    413,
                    "too_large",
                    format!(
                        "attachment {} is {size} bytes; Microsoft accepts at most 150 MB",
                        a.name
                    ),
                ));
            }
        }
    }
    let conn = s
        .tokens
        .load(&req.connection_id)
        .await
        .map_err(|e| token_error(e, s, &req.connection_id))?;
    check_connection(req, &conn)?;
    let key = match (&req.idempotency_key, &sender.idempotency) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(SendError::new(
                500,
                "misconfigured",
                "idempotency keys need RELAY365_STATE_TABLE on this deployment",
            ));
        }
        (Some(k), Some(store)) => {
            let id = request::hex(
                aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    format!("{}\n{k}", req.connection_id).as_bytes(),
                )
                .as_ref(),
            );
            match store.claim(&id, &req.fingerprint()).await {
                Ok(Claim::New) => Some((id, store.clone())),
                Ok(Claim::AlreadySent) => return Ok(true),
                Ok(Claim::InProgress) => {
                    return Err(SendError {
                        retry_after: Some(5),
                        ..SendError::new(
                            409,
                            "in_progress",
                            "a send with this idempotency key is in progress: retry shortly",
                        )
                    });
                }
                Ok(Claim::Mismatch) => {
                    return Err(SendError::new(
                        422,
                        "idempotency_key_reused",
                        "this idempotency key was used for a different message in the last 24 hours: use a new key",
                    ));
                }
                Err(e) => {
                    return Err(SendError::new(
                        503,
                        "unavailable",
                        format!("the idempotency store is unavailable: {e}"),
                    ));
                }
            }
        }
    };
    let token = s
        .tokens
        .access_token(&conn)
        .await
        .map_err(|e| token_error(e, s, &req.connection_id));
    let result = match token {
        Ok(t) => send_with(sender, req, &conn, &t).await,
        Err(e) => Err(e),
    };
    if let Some((id, store)) = key {
        let r = if result.is_ok() {
            store.sent(&id).await
        } else {
            store.release(&id).await
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "idempotency store update failed");
        }
    }
    result.map(|()| false)
}

async fn send_with(
    sender: &Sender<'_>,
    req: &SendRequest,
    conn: &Connection,
    token: &Sensitive,
) -> Result<(), SendError> {
    let s = sender.services;
    let delegated = conn.auth == AuthMode::Delegated;
    let owner = if delegated {
        "/me".to_string()
    } else {
        format!(
            "/users/{}",
            req.from.as_deref().or(conn.mailbox.as_deref()).unwrap_or("")
        )
    };
    let g = |e| graph_error(e, conn, req.from.as_deref());
    match plan(req) {
        Plan::Single => {
            let message = graph_message(req, delegated, true);
            let (path, body) = match &req.reply_to_message_id {
                Some(id) => (
                    format!("{owner}/messages/{id}/reply"),
                    json!({"message": message}),
                ),
                None => (
                    format!("{owner}/sendMail"),
                    json!({"message": message, "saveToSentItems": req.save_to_sent_items}),
                ),
            };
            s.graph
                .send(reqwest::Method::POST, &path, token, Some(&body), &[])
                .await
                .map_err(g)?;
        }
        Plan::Draft => {
            let draft: Value = match &req.reply_to_message_id {
                Some(id) => {
                    let d: Value = s
                        .graph
                        .send(
                            reqwest::Method::POST,
                            &format!("{owner}/messages/{id}/createReply"),
                            token,
                            None,
                            &[],
                        )
                        .await
                        .map_err(g)?
                        .json()
                        .map_err(g)?;
                    let id = d["id"].as_str().unwrap_or("").to_string();
                    let patch = graph_message(req, delegated, false);
                    s.graph
                        .send(
                            reqwest::Method::PATCH,
                            &format!("{owner}/messages/{id}"),
                            token,
                            Some(&patch),
                            &[],
                        )
                        .await
                        .map_err(g)?;
                    d
                }
                None => s
                    .graph
                    .send(
                        reqwest::Method::POST,
                        &format!("{owner}/messages"),
                        token,
                        Some(&graph_message(req, delegated, false)),
                        &[],
                    )
                    .await
                    .map_err(g)?
                    .json()
                    .map_err(g)?,
            };
            let id = draft["id"].as_str().unwrap_or("").to_string();
            let base = format!("{owner}/messages/{id}");
            for a in &req.attachments {
                add_attachment(sender, token, &base, a)
                    .await
                    .map_err(|e| match e {
                        Upload::Graph(e) => g(e),
                        Upload::Other(err) => err,
                    })?;
            }
            s.graph
                .send(reqwest::Method::POST, &format!("{base}/send"), token, None, &[])
                .await
                .map_err(g)?;
        }
    }
    tracing::info!(connection = %conn.id, attachments = req.attachments.len(), "mail sent");
    Ok(())
}

enum Upload {
    Graph(GraphError),
    Other(SendError),
}

async fn s3_size(sender: &Sender<'_>, bucket: &str, key: &str) -> Result<u64, SendError> {
    let s3 = sender
        .s3
        .as_ref()
        .ok_or_else(|| SendError::new(500, "misconfigured", "no S3 client"))?;
    let head = s3
        .get()
        .await
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            if e.as_service_error().is_some_and(|x| x.is_not_found()) {
                SendError::new(
                    400,
                    "invalid_request",
                    format!("attachment s3://{bucket}/{key} does not exist"),
                )
            } else {
                SendError::new(
                    503,
                    "unavailable",
                    format!("could not read s3://{bucket}/{key}: retry later"),
                )
            }
        })?;
    Ok(head.content_length().unwrap_or(0).max(0) as u64)
}

async fn s3_range(
    sender: &Sender<'_>,
    bucket: &str,
    key: &str,
    start: u64,
    end: u64,
) -> Result<Vec<u8>, SendError> {
    let s3 = sender
        .s3
        .as_ref()
        .ok_or_else(|| SendError::new(500, "misconfigured", "no S3 client"))?;
    let obj = s3
        .get()
        .await
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes={start}-{end}"))
        .send()
        .await
        .map_err(|_| {
            SendError::new(
                503,
                "unavailable",
                format!("could not read s3://{bucket}/{key}: retry later"),
            )
        })?;
    let bytes = obj
        .body
        .collect()
        .await
        .map_err(|_| SendError::new(503, "unavailable", "reading an S3 attachment was cut off: retry"))?;
    Ok(bytes.into_bytes().to_vec())
}

async fn add_attachment(
    sender: &Sender<'_>,
    token: &Sensitive,
    base: &str,
    a: &Attachment,
) -> Result<(), Upload> {
    let s = sender.services;
    let size = match &a.source {
        Source::Inline(b) => b.len() as u64,
        Source::S3 { bucket, key } => s3_size(sender, bucket, key).await.map_err(Upload::Other)?,
    };
    if size > request::MAX_ATTACHMENT_BYTES {
        return Err(Upload::Other(SendError::new(
            413,
            "too_large",
            format!(
                "attachment {} is {size} bytes; Microsoft accepts at most 150 MB",
                a.name
            ),
        )));
    }
    if size < UPLOAD_SESSION_FROM {
        let bytes = match &a.source {
            Source::Inline(b) => b.clone(),
            Source::S3 { bucket, key } if size > 0 => s3_range(sender, bucket, key, 0, size - 1)
                .await
                .map_err(Upload::Other)?,
            Source::S3 { .. } => Vec::new(),
        };
        s.graph
            .send(
                reqwest::Method::POST,
                &format!("{base}/attachments"),
                token,
                Some(&file_attachment(a, &bytes)),
                &[],
            )
            .await
            .map_err(Upload::Graph)?;
        return Ok(());
    }
    let session: Value = s
        .graph
        .send(
            reqwest::Method::POST,
            &format!("{base}/attachments/createUploadSession"),
            token,
            Some(&json!({"AttachmentItem": {"attachmentType": "file", "name": a.name, "size": size, "contentType": a.content_type}})),
            &[],
        )
        .await
        .map_err(Upload::Graph)?
        .json()
        .map_err(Upload::Graph)?;
    let url = session["uploadUrl"].as_str().unwrap_or("").to_string();
    let url_ok =
        url::Url::parse(&url).is_ok_and(|u| u.scheme() == "https" || relay365::config::is_loopback(&u));
    if !url_ok {
        return Err(Upload::Other(SendError::new(
            502,
            "graph_failed",
            "Microsoft returned an unusable upload URL",
        )));
    }
    let mut start = 0u64;
    while start < size {
        let end = (start + CHUNK).min(size) - 1;
        let chunk = match &a.source {
            Source::Inline(b) => b[start as usize..=end as usize].to_vec(),
            Source::S3 { bucket, key } => s3_range(sender, bucket, key, start, end)
                .await
                .map_err(Upload::Other)?,
        };
        // The upload URL is pre-authenticated: no bearer token goes there.
        let resp = s
            .http
            .put(&url)
            .timeout(Duration::from_secs(60))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("bytes {start}-{end}/{size}"))
            .body(chunk)
            .send()
            .await
            .map_err(|_| {
                Upload::Other(SendError::new(
                    502,
                    "graph_failed",
                    "uploading an attachment range failed: retry",
                ))
            })?;
        if !resp.status().is_success() {
            return Err(Upload::Other(SendError::new(
                502,
                "graph_failed",
                format!(
                    "Microsoft refused an attachment range ({})",
                    resp.status().as_u16()
                ),
            )));
        }
        start = end + 1;
    }
    Ok(())
}

/// `POST /mail/send`.
pub async fn handle_http(req: Request, sender: &Sender<'_>) -> HttpResponse {
    let path = api::path(&req);
    if path.trim_end_matches('/') != "/mail/send" {
        return api::error(404, "not_found", format!("no route {} {path}", req.method()));
    }
    if req.method() != lambda_http::http::Method::POST {
        return api::error(405, "method_not_allowed", "use POST /mail/send");
    }
    let body: Value = match api::json_body_limited(&req, MAX_REQUEST_BODY) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let header_key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let parsed = match request::parse(
        &body,
        sender.services.config.attachments_bucket.as_deref(),
        header_key.as_deref(),
    ) {
        Ok(r) => r,
        Err(e) => return SendError::from(e).response(),
    };
    match send(sender, &parsed).await {
        Ok(replay) => api::json(202, &json!({"status": "sent", "idempotent_replay": replay})),
        Err(e) => e.response(),
    }
}

/// Any invocation: API Gateway, an Amazon Connect `ContactFlowEvent`, or the JSON request itself.
pub async fn handle_event(payload: Value, sender: &Sender<'_>) -> Value {
    if payload.get("requestContext").is_some() {
        return match lambda_http::request::from_str(&payload.to_string()) {
            Ok(req) => api::to_apigw_v2(handle_http(req, sender).await),
            Err(_) => api::to_apigw_v2(api::error(400, "invalid_request", "unreadable HTTP event")),
        };
    }
    let connect = payload
        .get("Details")
        .and_then(|d| d.get("Parameters"))
        .and_then(Value::as_object)
        .cloned();
    let json_req = match &connect {
        Some(params) => request::from_connect(params),
        None => Ok(payload.clone()),
    };
    let outcome = match json_req
        .and_then(|v| request::parse(&v, sender.services.config.attachments_bucket.as_deref(), None))
    {
        Ok(r) => send(sender, &r).await,
        Err(e) => Err(e.into()),
    };
    // Amazon Connect needs a flat map of strings.
    match outcome {
        Ok(_) => json!({"status": "sent"}),
        Err(e) => {
            json!({"status": "error", "error_code": e.code, "error_message": e.message, "http_status": e.status.to_string()})
        }
    }
}
