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

pub mod attachments;
pub mod deferred;
pub mod error;
pub mod idempotency;
pub mod message;
pub mod once;
pub mod policy;
pub mod request;

use std::sync::Arc;

use lambda_http::Request;
use relay365::Sensitive;
use relay365::model::connection::{AuthMode, Connection};
use relay365::services::Services;
use relay365::web::response::{self as api, HttpResponse};
use serde_json::{Value, json};

pub use error::SendError;
use error::{graph_error, token_error};
use idempotency::{Claim, IdempotencyStore};
pub use message::{Plan, graph_message, plan};
pub use policy::Caller;
use policy::{check_caller, check_connection, check_contact_flow_recipients};
use request::SendRequest;

/// Largest request accepted: Lambda's synchronous invocation payload limit.
pub const MAX_REQUEST_BODY: usize = 6 * 1024 * 1024;
/// What send-mail needs.
pub struct Sender<'a> {
    /// Shared services.
    pub services: &'a Services,
    /// For attachments by reference (built on first use).
    pub s3: Option<relay365::aws::sdk::LazyClient<aws_sdk_s3::Client>>,
    /// For idempotency keys.
    pub idempotency: Option<Arc<dyn IdempotencyStore>>,
    /// Where sends too large for API Gateway's time limit go
    /// (`Config::send_queue_url`, `RELAY365_SEND_QUEUE_URL`); without it every
    /// send is synchronous.
    pub deferred: Option<Arc<dyn deferred::Deferred>>,
}

impl<'a> Sender<'a> {
    /// What a container needs, from its services: the S3 client (when the
    /// deployment has an attachments bucket) and the DynamoDB client behind
    /// idempotency keys, both built on first use, so a cold start pays only
    /// for what its first request needs.
    pub fn new(services: &'a Services) -> Self {
        Self {
            s3: services
                .config
                .attachments_bucket
                .as_ref()
                .map(|_| relay365::aws::sdk::LazyClient::new(aws_sdk_s3::Client::new)),
            idempotency: Some(Arc::new(idempotency::StateKeys::new(services.state.clone()))),
            deferred: services
                .config
                .send_queue_url
                .clone()
                .map(|u| Arc::new(deferred::SqsDeferred::new(u)) as Arc<dyn deferred::Deferred>),
            services,
        }
    }

    fn objects(&self) -> Option<&dyn attachments::Objects> {
        self.s3.as_ref().map(|c| c as &dyn attachments::Objects)
    }
}

/// Sends a checked request for `caller`; `contact_flow` when it came from
/// an Amazon Connect contact flow's parameters. Returns `true` when it was
/// a repeat of a request already sent.
///
/// # Errors
/// [`SendError`] with the status and words for the caller.
pub async fn send(
    sender: &Sender<'_>,
    req: &SendRequest,
    caller: &Caller,
    contact_flow: bool,
) -> Result<bool, SendError> {
    let (conn, sizes) = check(sender, req, caller, contact_flow).await?;
    send_checked(sender, req, &conn, &sizes).await
}

/// Everything that can be refused before a send: the caller (before
/// anything else of the connection is used), the recipients of a contact
/// flow, the attachments (each inspected once), and the send-as policy.
async fn check(
    sender: &Sender<'_>,
    req: &SendRequest,
    caller: &Caller,
    contact_flow: bool,
) -> Result<(Connection, Vec<u64>), SendError> {
    let s = sender.services;
    let conn = s
        .tokens
        .load(&req.connection_id)
        .await
        .map_err(|e| token_error(e, s, None))?;
    check_caller(&conn, caller)?;
    if contact_flow {
        check_contact_flow_recipients(req, &conn)?;
    }
    let sizes = attachments::sizes(sender.objects(), &req.attachments).await?;
    check_connection(req, &conn, &s.config)?;
    Ok((conn, sizes))
}

/// The idempotency item of a request's key (keys are per connection).
fn key_id(req: &SendRequest, key: &str) -> String {
    relay365::digest::sha256_hex(format!("{}\n{key}", req.connection_id).as_bytes())
}

fn store_unavailable(e: &relay365::aws::store::StoreError) -> SendError {
    SendError::new(
        503,
        "unavailable",
        format!("the idempotency store is unavailable: {e}"),
    )
}

fn key_reused() -> SendError {
    SendError::new(
        422,
        "idempotency_key_reused",
        "this idempotency key was used for a different message in the last 24 hours: use a new key",
    )
}

/// A stored result of a deferred send that failed, as the caller gets it.
fn stored_failure(result: &Value) -> HttpResponse {
    let status = result["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(500);
    api::error(
        status,
        result["code"].as_str().unwrap_or("failed"),
        result["message"].as_str().unwrap_or("the deferred send failed"),
    )
}

async fn send_checked(
    sender: &Sender<'_>,
    req: &SendRequest,
    conn: &Connection,
    sizes: &[u64],
) -> Result<bool, SendError> {
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
            let id = key_id(req, k);
            match store
                .claim(&id, &req.fingerprint(), idempotency::CLAIM_SECS)
                .await
            {
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
                Ok(Claim::Mismatch) => return Err(key_reused()),
                Ok(Claim::Failed(result)) => {
                    return Err(SendError::new(
                        422,
                        "idempotency_key_failed",
                        format!(
                            "a send with this idempotency key failed: {}; send with a new key",
                            result["message"].as_str().unwrap_or("")
                        ),
                    ));
                }
                Err(e) => return Err(store_unavailable(&e)),
            }
        }
    };
    let result = deliver(sender, req, conn, sizes).await;
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

/// A token, then the send.
async fn deliver(
    sender: &Sender<'_>,
    req: &SendRequest,
    conn: &Connection,
    sizes: &[u64],
) -> Result<(), SendError> {
    let s = sender.services;
    let token = s
        .tokens
        .access_token(conn)
        .await
        .map_err(|e| token_error(e, s, Some(conn)))?;
    send_with(sender, req, conn, &token, sizes).await
}

/// Bytes of the attachments that are read from S3 (what a send must upload).
fn by_reference_bytes(req: &SendRequest, sizes: &[u64]) -> u64 {
    req.attachments
        .iter()
        .zip(sizes)
        .filter(|(a, _)| matches!(a.source, request::Source::S3 { .. }))
        .map(|(_, n)| *n)
        .sum()
}

/// A large send, checked, claimed and queued; or the answer of an earlier one.
async fn defer(
    sender: &Sender<'_>,
    queue: &dyn deferred::Deferred,
    mut req: SendRequest,
    mut body: Value,
) -> HttpResponse {
    let Some(store) = &sender.idempotency else {
        return SendError::new(500, "misconfigured", "deferred sends need RELAY365_STATE_TABLE").response();
    };
    let key = req
        .idempotency_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.idempotency_key = Some(key.clone());
    body["idempotency_key"] = key.clone().into();
    let id = key_id(&req, &key);
    let accepted = |status: &str| {
        api::json(
            202,
            &json!({
                "status": status,
                "idempotency_key": key,
                "message": "sent in the background (its attachments take longer than an API request may): repeat this request with the same Idempotency-Key to learn the result",
            }),
        )
    };
    match store
        .claim(&id, &req.fingerprint(), deferred::DEFERRED_CLAIM_SECS)
        .await
    {
        Ok(Claim::New) => match queue.defer(&body).await {
            Ok(()) => accepted("accepted"),
            Err(e) => {
                let _ = store.release(&id).await;
                SendError::new(
                    503,
                    "unavailable",
                    format!("the deferred-send queue is unavailable ({e}): retry"),
                )
                .response()
            }
        },
        Ok(Claim::InProgress) => accepted("in_progress"),
        Ok(Claim::AlreadySent) => api::json(
            202,
            &json!({"status": "sent", "idempotent_replay": true, "idempotency_key": key}),
        ),
        Ok(Claim::Failed(result)) => stored_failure(&result),
        Ok(Claim::Mismatch) => key_reused().response(),
        Err(e) => store_unavailable(&e).response(),
    }
}

/// Sends the deferred requests a queue batch carries; returns the records
/// to retry (passing failures). A lasting failure is recorded under the
/// request's key, where the caller's repeat finds it.
pub async fn handle_deferred(
    event: aws_lambda_events::sqs::SqsEvent,
    sender: &Sender<'_>,
) -> aws_lambda_events::sqs::SqsBatchResponse {
    let mut resp = aws_lambda_events::sqs::SqsBatchResponse::default();
    for record in event.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        let Some(v) = record.body.as_deref().and_then(deferred::request_of) else {
            tracing::error!(message_id = %message_id, "dropping a queue record that is not a deferred send");
            continue;
        };
        let bucket = sender.services.config.attachments_bucket.as_deref();
        let (req, key) = match request::parse(&v, bucket, None) {
            Ok(r) => match r.idempotency_key.clone() {
                Some(k) => (r, k),
                None => {
                    tracing::error!(message_id = %message_id, "a deferred send without its key; dropped");
                    continue;
                }
            },
            Err(e) => {
                tracing::error!(message_id = %message_id, error = %e.message, "a deferred send that no longer parses; dropped");
                continue;
            }
        };
        let id = key_id(&req, &key);
        let outcome = match check(sender, &req, &Caller::Queue, false).await {
            Ok((conn, sizes)) => deliver(sender, &req, &conn, &sizes).await,
            Err(e) => Err(e),
        };
        let Some(store) = &sender.idempotency else {
            continue;
        };
        let recorded = match &outcome {
            Ok(()) => store.sent(&id).await,
            Err(e) if e.status >= 500 || e.status == 429 || e.status == 409 => {
                tracing::warn!(connection = %req.connection_id, error = %e.message, "deferred send left for retry");
                let mut f = aws_lambda_events::sqs::BatchItemFailure::default();
                f.item_identifier = message_id.clone();
                resp.batch_item_failures.push(f);
                continue;
            }
            Err(e) => {
                tracing::error!(connection = %req.connection_id, code = e.code, error = %e.message, "deferred send failed");
                store
                    .failed(
                        &id,
                        &json!({"status": e.status, "code": e.code, "message": e.message}),
                    )
                    .await
            }
        };
        if let Err(e) = recorded {
            // The mail's fate is known but not stored: retry, and the repeat
            // finds the key sent (or sends once more if it was a failure).
            tracing::error!(error = %e, "idempotency store update failed");
            let mut f = aws_lambda_events::sqs::BatchItemFailure::default();
            f.item_identifier = message_id;
            resp.batch_item_failures.push(f);
        }
    }
    resp
}

/// A send's lost answer that could not be settled, for the caller.
fn outcome_unknown(message: String) -> SendError {
    SendError::new(502, "send_outcome_unknown", message)
}

/// The error of a POST that creates a mail.
fn not_sent(e: once::NotSent, conn: &Connection, from: Option<&str>) -> SendError {
    match e {
        once::NotSent::Graph(e) => graph_error(e, conn, from),
        once::NotSent::Unknown(m) => outcome_unknown(m),
    }
}

async fn send_with(
    sender: &Sender<'_>,
    req: &SendRequest,
    conn: &Connection,
    token: &Sensitive,
    sizes: &[u64],
) -> Result<(), SendError> {
    let s = sender.services;
    let started = std::time::Instant::now();
    let delegated = conn.auth == AuthMode::Delegated;
    // App-only sends through the mailbox it sends as; delegated through /me.
    let owner = if delegated {
        "/me".to_string()
    } else {
        relay365::microsoft::paths::user(req.from.as_deref().or(conn.mailbox.as_deref()).unwrap_or(""))
    };
    let g = |e| graph_error(e, conn, req.from.as_deref());
    // Every mail carries its idempotency key (a digest of it), so a lost
    // answer can be settled by looking for the mail in Sent Items.
    let key = req
        .idempotency_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let value = once::property_value(&req.connection_id, &key, &req.fingerprint());
    let outcome = match plan(req) {
        Plan::Single => {
            let mut message = graph_message(req, delegated, true);
            message["singleValueExtendedProperties"] = once::property(&value);
            let (path, body, kept) = match &req.reply_to_message_id {
                // A reply is always kept in Sent Items.
                Some(id) => (
                    format!("{owner}/messages/{id}/reply"),
                    json!({"message": message}),
                    true,
                ),
                None => (
                    format!("{owner}/sendMail"),
                    json!({"message": message, "saveToSentItems": req.save_to_sent_items}),
                    req.save_to_sent_items,
                ),
            };
            once::post(&s.graph, token, &owner, &path, Some(&body), &value, kept, started)
                .await
                .map_err(|e| not_sent(e, conn, req.from.as_deref()))?
        }
        Plan::Draft => {
            let id = create_draft(s, req, conn, &owner, token, delegated, &value).await?;
            let base = format!("{owner}/messages/{id}");
            let sent = async {
                for (a, size) in req.attachments.iter().zip(sizes) {
                    attachments::add(s, sender.objects(), token, &base, a, *size)
                        .await
                        .map_err(|e| match e {
                            attachments::Upload::Graph(e) => g(e),
                            attachments::Upload::Other(err) => err,
                        })?;
                }
                once::post(
                    &s.graph,
                    token,
                    &owner,
                    &format!("{base}/send"),
                    None,
                    &value,
                    true,
                    started,
                )
                .await
                .map_err(|e| not_sent(e, conn, req.from.as_deref()))
            }
            .await;
            match sent {
                Ok(o) => o,
                Err(e) => {
                    // After a lost answer the draft may have been sent:
                    // only a draft that is still one is deleted.
                    discard_draft(s, token, &base, e.code == "send_outcome_unknown").await;
                    return Err(e);
                }
            }
        }
    };
    tracing::info!(
        connection = %conn.id,
        attachments = req.attachments.len(),
        found_after_lost_answer = matches!(outcome, once::Outcome::Found),
        "mail sent"
    );
    Ok(())
}

/// Creates the draft a large send goes through, carrying the mail's
/// property; returns its id. When the answer to its creation is lost, a
/// draft it made is looked for and deleted, so none stays behind.
async fn create_draft(
    s: &Services,
    req: &SendRequest,
    conn: &Connection,
    owner: &str,
    token: &Sensitive,
    delegated: bool,
    value: &str,
) -> Result<String, SendError> {
    let property = once::property(value);
    let (path, body) = match &req.reply_to_message_id {
        // createReply takes writable properties; the rest is patched in.
        Some(id) => (
            format!("{owner}/messages/{id}/createReply"),
            json!({"message": {"singleValueExtendedProperties": property}}),
        ),
        None => {
            let mut message = graph_message(req, delegated, false);
            message["singleValueExtendedProperties"] = property;
            (format!("{owner}/messages"), message)
        }
    };
    let created = s
        .graph
        .send(reqwest::Method::POST, &path, token, Some(&body), &[])
        .await
        .and_then(|r| r.json::<Value>());
    let id = match created {
        Ok(d) => d["id"].as_str().unwrap_or("").to_string(),
        Err(e) => {
            if once::answer_lost(&e) {
                discard_lost_drafts(s, token, owner, value).await;
            }
            return Err(graph_error(e, conn, req.from.as_deref()));
        }
    };
    if id.is_empty() {
        return Err(SendError::new(
            502,
            "graph_failed",
            "Microsoft created a draft without telling its id",
        ));
    }
    if req.reply_to_message_id.is_some() {
        let patch = graph_message(req, delegated, false);
        let base = format!("{owner}/messages/{id}");
        if let Err(e) = s
            .graph
            .send(reqwest::Method::PATCH, &base, token, Some(&patch), &[])
            .await
        {
            discard_draft(s, token, &base, false).await;
            return Err(graph_error(e, conn, req.from.as_deref()));
        }
    }
    Ok(id)
}

/// Deletes the draft at `base` after a failed send. With `check`, only
/// when Graph says it is still a draft: a send whose answer was lost may
/// have sent it, and an immutable id is then the sent copy's, which must
/// stay. Best effort: a failure is logged.
async fn discard_draft(s: &Services, token: &Sensitive, base: &str, check: bool) {
    if check && !still_draft(s, token, base).await {
        return;
    }
    if let Err(e) = s
        .graph
        .send(reqwest::Method::DELETE, base, token, None, &[])
        .await
    {
        tracing::warn!(error = %e, "a draft of a failed send could not be deleted");
    }
}

/// Whether Graph says the message at `base` is a draft (`false` when it cannot tell).
async fn still_draft(s: &Services, token: &Sensitive, base: &str) -> bool {
    s.graph
        .send(
            reqwest::Method::GET,
            &format!("{base}?$select=isDraft"),
            token,
            None,
            &[],
        )
        .await
        .and_then(|r| r.json::<Value>())
        .is_ok_and(|v| v["isDraft"].as_bool() == Some(true))
}

/// Deletes the drafts carrying `value` (a draft whose creation's answer was lost).
async fn discard_lost_drafts(s: &Services, token: &Sensitive, owner: &str, value: &str) {
    match once::find(&s.graph, token, owner, "drafts", value).await {
        Ok(ids) => {
            for id in ids {
                discard_draft(s, token, &format!("{owner}/messages/{id}"), true).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "drafts of a failed send could not be looked for"),
    }
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
    // A repeat of a finished request gets its result, whatever changed since.
    if let (Some(k), Some(store)) = (&parsed.idempotency_key, &sender.idempotency) {
        match store.status(&key_id(&parsed, k), &parsed.fingerprint()).await {
            Ok(Some(Claim::AlreadySent)) => {
                return api::json(
                    202,
                    &json!({"status": "sent", "idempotent_replay": true, "idempotency_key": k}),
                );
            }
            Ok(Some(Claim::Failed(result))) => return stored_failure(&result),
            Ok(Some(Claim::Mismatch)) => return key_reused().response(),
            Ok(_) => {}
            Err(e) => return store_unavailable(&e).response(),
        }
    }
    let (conn, sizes) = match check(sender, &parsed, &Caller::of_http(&req), false).await {
        Ok(x) => x,
        Err(e) => return e.response(),
    };
    if let Some(queue) = &sender.deferred
        && by_reference_bytes(&parsed, &sizes) > deferred::DEFER_ABOVE_BYTES
    {
        return defer(sender, queue.as_ref(), parsed, body).await;
    }
    match send_checked(sender, &parsed, &conn, &sizes).await {
        Ok(replay) => api::json(202, &json!({"status": "sent", "idempotent_replay": replay})),
        Err(e) => e.response(),
    }
}

/// Any invocation: API Gateway, an Amazon Connect `ContactFlowEvent`, or the JSON request itself.
pub async fn handle_event(payload: Value, sender: &Sender<'_>) -> Value {
    if payload.pointer("/Records/0/eventSource").and_then(Value::as_str) == Some("aws:sqs") {
        return match serde_json::from_value(payload) {
            Ok(event) => serde_json::to_value(handle_deferred(event, sender).await).unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "an SQS event that does not parse");
                json!({"batchItemFailures": []})
            }
        };
    }
    if payload.get("requestContext").is_some() {
        return api::to_apigw_v2(match api::http_event(&payload) {
            Ok(req) => handle_http(req, sender).await,
            Err(r) => r,
        });
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
    let caller = Caller::of_event(&payload);
    let outcome = match json_req
        .and_then(|v| request::parse(&v, sender.services.config.attachments_bucket.as_deref(), None))
    {
        Ok(r) => send(sender, &r, &caller, connect.is_some()).await,
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
