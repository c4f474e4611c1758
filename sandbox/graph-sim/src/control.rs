//! The simulator's own control surface under `/_sim/`, for people and
//! scripts that cannot call [`crate::Sim`] in-process (the demo): deliver a
//! mail into a mailbox as if it had arrived from outside, read what the
//! mailboxes sent, expire Graph's delta state. Nothing here exists at Microsoft; everything Graph does
//! stays under `/v1.0/`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::state::{Message, Shared, lock};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/_sim/mailboxes/{upn}/messages", post(deliver))
        .route("/_sim/mailboxes/{upn}/sent", get(sent))
        .route("/_sim/delta/expire", post(expire_delta))
}

/// Graph's delta state expires ([`crate::Sim::expire_delta_links`]).
async fn expire_delta(AxState(state): AxState<Shared>) -> Response {
    lock(&state).expire_delta_links();
    StatusCode::NO_CONTENT.into_response()
}

fn reply(status: StatusCode, v: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn bad(message: &str) -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        json!({"error": {"code": "invalid_request", "message": message}}),
    )
}

/// A mail arriving from outside.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming {
    from: String,
    #[serde(default)]
    from_name: Option<String>,
    subject: String,
    #[serde(default)]
    body: String,
}

async fn deliver(AxState(state): AxState<Shared>, Path(upn): Path<String>, body: Bytes) -> Response {
    let known = lock(&state).user(&upn).is_some();
    if !known {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": "ErrorInvalidUser", "message": format!("no simulated user {upn}; start graph-sim with --user {upn}")}}),
        );
    }
    let incoming: Incoming = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return bad(&format!(
                "{e}; send {{\"from\": \"address\", \"subject\": \"text\", \"body\": \"html or text\"}}"
            ));
        }
    };
    if !incoming.from.contains('@') {
        return bad("\"from\" must be an email address");
    }
    let message = Message {
        subject: incoming.subject,
        from: (
            incoming.from_name.unwrap_or_else(|| incoming.from.clone()),
            incoming.from,
        ),
        to: vec![(upn.clone(), upn.clone())],
        body_html: incoming.body,
        ..Message::default()
    };
    let id = crate::deliver(&state, &upn, message);
    reply(StatusCode::CREATED, json!({"id": id, "mailbox": upn}))
}

async fn sent(AxState(state): AxState<Shared>, Path(upn): Path<String>) -> Response {
    let st = lock(&state);
    let out: Vec<serde_json::Value> = st
        .sent
        .iter()
        .filter(|m| m.mailbox.eq_ignore_ascii_case(&upn))
        .map(|m| {
            json!({
                "mailbox": m.mailbox, "from": m.from, "to": m.to, "cc": m.cc, "bcc": m.bcc,
                "subject": m.subject, "content_type": m.content_type, "body": m.body,
                "in_reply_to": m.in_reply_to, "save_to_sent_items": m.save_to_sent_items,
                "attachments": m.attachments.iter().map(|(name, ct, bytes)| json!({
                    "name": name, "content_type": ct, "size": bytes.len(),
                    "sha256": base64::engine::general_purpose::STANDARD.encode(
                        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref()),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    reply(StatusCode::OK, json!({"value": out}))
}
