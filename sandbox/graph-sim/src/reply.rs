//! Graph's answers as JSON: a message's and an event's properties, `$select`
//! applied to them, Graph's error body and a plain JSON answer, and the time
//! stamps they carry. The router and every family of routes it hands on to
//! (bodies, lists, delta, sending) answer with these, so they sit below all
//! of them, on the simulator's memory.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::state::{Event, Message};

/// Graph's error answer: `{"error": {"code", "message", "innerError"}}`
/// with a fresh `request-id`.
pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"error": {"code": code, "message": message, "innerError": {"request-id": id, "date": "2026-11-22T00:00:00"}}});
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("request-id"), id.as_str()),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Graph's `404 ErrorItemNotFound` for an item the mailbox does not hold.
pub(crate) fn item_not_found() -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// A JSON answer with `status`.
pub(crate) fn ok_json(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn recipient((name, address): &(String, String)) -> Value {
    json!({"emailAddress": {"name": name, "address": address}})
}

/// A message's properties but its body (which [`crate::body`] serves).
pub(crate) fn message_json(m: &Message, upn: &str, preview: &str) -> Value {
    json!({
        "@odata.etag": format!("W/\"{}\"", m.seq),
        "id": m.id,
        "internetMessageId": m.internet_message_id,
        "conversationId": m.conversation_id,
        "subject": m.subject,
        "from": recipient(&m.from),
        "sender": recipient(&m.from),
        "toRecipients": m.to.iter().map(recipient).collect::<Vec<_>>(),
        "ccRecipients": m.cc.iter().map(recipient).collect::<Vec<_>>(),
        "receivedDateTime": m.received,
        "bodyPreview": preview,
        "hasAttachments": !m.attachments.is_empty(),
        "parentFolderId": m.folder,
        "isRead": false,
        "isDraft": m.is_draft,
        "internetMessageHeaders": internet_headers(m),
        "webLink": format!("https://outlook.office365.com/owa/?ItemID={}&exvsurl=1&viewmodel=ReadMessageItem&mailbox={upn}", m.id),
    })
}

/// A message's `internetMessageHeaders`: the ones every message has, then
/// its own (`In-Reply-To`, `References`, …). Graph returns them only when
/// `$select` names them.
fn internet_headers(m: &Message) -> Value {
    let list = |people: &[(String, String)]| {
        people
            .iter()
            .map(|(name, address)| format!("{name} <{address}>"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut headers = vec![
        ("Message-ID".to_string(), m.internet_message_id.clone()),
        ("From".to_string(), list(std::slice::from_ref(&m.from))),
        ("To".to_string(), list(&m.to)),
        ("Subject".to_string(), m.subject.clone()),
        ("Date".to_string(), m.received.clone()),
    ];
    if !m.cc.is_empty() {
        headers.push(("Cc".to_string(), list(&m.cc)));
    }
    headers.extend(m.headers.iter().cloned());
    Value::Array(
        headers
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

/// An event's properties, as Graph serves them.
pub(crate) fn event_json(e: &Event) -> Value {
    json!({
        "@odata.etag": format!("W/\"{}\"", e.change_key),
        "changeKey": e.change_key,
        "id": e.id,
        "subject": e.subject,
        "organizer": recipient(&e.organizer),
        "attendees": e.attendees.iter().map(|a| json!({"type": "required", "status": {"response": "none"}, "emailAddress": {"name": a.0, "address": a.1}})).collect::<Vec<_>>(),
        "start": {"dateTime": e.start, "timeZone": e.time_zone},
        "end": {"dateTime": e.end, "timeZone": e.time_zone},
        "location": {"displayName": e.location},
        "onlineMeeting": e.online_meeting_url.as_ref().map(|u| json!({"joinUrl": u})),
        "isCancelled": e.is_cancelled,
    })
}

/// `v` with only the properties `$select` names (and `id`, `@odata.*`);
/// without `$select`, all but those Graph returns only on asking.
pub(crate) fn select(v: Value, query: &[(String, String)]) -> Value {
    let Some((_, sel)) = query.iter().find(|(k, _)| k == "$select") else {
        // Returned only on applying $select (Graph's message resource).
        let mut v = v;
        if let Value::Object(map) = &mut v {
            map.remove("internetMessageHeaders");
        }
        return v;
    };
    let wanted: Vec<&str> = sel.split(',').map(str::trim).collect();
    let Value::Object(map) = v else { return v };
    Value::Object(
        map.into_iter()
            .filter(|(k, _)| k == "id" || k.starts_with('@') || wanted.contains(&k.as_str()))
            .collect(),
    )
}

/// Now, as Graph writes time stamps.
pub(crate) fn now_rfc3339() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default()
}
