//! Sending mail: `sendMail`, drafts, large-attachment upload sessions,
//! `reply`, `createReply` and `send`, with Graph's checks: recipients must
//! resolve, the body type must be Text or HTML, `from` another mailbox needs
//! Send As rights (else 403 `ErrorSendAsDenied`), requests over 4 MB get 413,
//! and upload ranges must arrive in order, at most 4 MiB each, without an
//! `Authorization` header.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::graph::graph_error;
use crate::state::{Draft, SentMail, State, Upload};

type Shared = Arc<Mutex<State>>;

/// Graph's practical request limit.
pub(crate) const MAX_REQUEST: usize = 4 * 1024 * 1024;
const MAX_CHUNK: usize = 4 * 1024 * 1024;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn ok(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn addresses(v: &Value, field: &str) -> Result<Vec<String>, Response> {
    let Some(list) = v.get(field) else {
        return Ok(Vec::new());
    };
    let Some(list) = list.as_array() else {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            &format!("{field} must be an array of recipients."),
        ));
    };
    list.iter()
        .map(|r| {
            let a = r["emailAddress"]["address"].as_str().unwrap_or("");
            let ok = a.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.')) && !a.contains(' ');
            if ok { Ok(a.to_string()) } else { Err(graph_error(StatusCode::BAD_REQUEST, "ErrorInvalidRecipients", &format!("At least one recipient is not valid., Recipient '{a}' is not resolved. All recipients must be resolved before a message can be submitted."))) }
        })
        .collect()
}

fn file_attachments(v: &Value) -> Result<Vec<(String, String, Vec<u8>)>, Response> {
    let Some(list) = v.get("attachments").and_then(|a| a.as_array()) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|a| {
            if a["@odata.type"] != "#microsoft.graph.fileAttachment" {
                return Err(graph_error(
                    StatusCode::BAD_REQUEST,
                    "RequestBodyRead",
                    "Attachments need @odata.type #microsoft.graph.fileAttachment.",
                ));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(a["contentBytes"].as_str().unwrap_or(""))
                .map_err(|_| {
                    graph_error(
                        StatusCode::BAD_REQUEST,
                        "ErrorInvalidAttachment",
                        "contentBytes is not valid base64.",
                    )
                })?;
            let name = a["name"].as_str().unwrap_or("").to_string();
            if name.is_empty() {
                return Err(graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidAttachment",
                    "An attachment needs a name.",
                ));
            }
            Ok((
                name,
                a["contentType"]
                    .as_str()
                    .unwrap_or("application/octet-stream")
                    .to_string(),
                bytes,
            ))
        })
        .collect()
}

/// Checks a message as Graph does and turns it into what gets sent.
fn to_sent(
    st: &State,
    mailbox: &str,
    message: &Value,
    attachments: Vec<(String, String, Vec<u8>)>,
    need_recipients: bool,
) -> Result<SentMail, Response> {
    let to = addresses(message, "toRecipients")?;
    let cc = addresses(message, "ccRecipients")?;
    let bcc = addresses(message, "bccRecipients")?;
    let reply_to = addresses(message, "replyTo")?;
    if need_recipients && to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRecipientsNone",
            "At least one recipient is required.",
        ));
    }
    let content_type = message["body"]["contentType"]
        .as_str()
        .unwrap_or("Text")
        .to_ascii_lowercase();
    if content_type != "text" && content_type != "html" {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            "Requested value for body.contentType was not found: use Text or HTML.",
        ));
    }
    let from = message["from"]["emailAddress"]["address"]
        .as_str()
        .map(str::to_string);
    if let Some(f) = &from
        && !f.eq_ignore_ascii_case(mailbox)
        && !st
            .send_as
            .contains(&(mailbox.to_ascii_lowercase(), f.to_ascii_lowercase()))
    {
        return Err(graph_error(
            StatusCode::FORBIDDEN,
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.",
        ));
    }
    let mut all = file_attachments(message)?;
    all.extend(attachments);
    Ok(SentMail {
        mailbox: mailbox.to_string(),
        from,
        to,
        cc,
        bcc,
        reply_to,
        subject: message["subject"].as_str().unwrap_or("").to_string(),
        content_type,
        body: message["body"]["content"].as_str().unwrap_or("").to_string(),
        attachments: all,
        save_to_sent_items: true,
        in_reply_to: None,
    })
}

fn json_body(body: &Bytes) -> Result<Value, Response> {
    if body.len() > MAX_REQUEST {
        return Err(graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request is larger than 4 MB.",
        ));
    }
    serde_json::from_slice(body).map_err(|_| {
        graph_error(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            "Invalid JSON in the request body.",
        )
    })
}

pub(crate) fn send_mail(state: &Shared, mailbox: &str, body: &Bytes) -> Response {
    let v = match json_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(message) = v.get("message") else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidParameter",
            "The value of the parameter 'Message' is empty.",
        );
    };
    let save = match v.get("saveToSentItems") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "RequestBodyRead",
                "saveToSentItems must be a boolean.",
            );
        }
    };
    let mut st = lock(state);
    match to_sent(&st, mailbox, message, Vec::new(), true) {
        Ok(mut sent) => {
            sent.save_to_sent_items = save;
            st.sent.push(sent);
            StatusCode::ACCEPTED.into_response()
        }
        Err(r) => r,
    }
}

pub(crate) fn create_draft(state: &Shared, mailbox: &str, body: &Bytes) -> Response {
    let message = match json_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut st = lock(state);
    if let Err(r) = to_sent(&st, mailbox, &message, Vec::new(), false) {
        return r;
    }
    let id = format!("AAMkDraft{}", uuid::Uuid::new_v4().simple());
    st.drafts.insert(
        id.clone(),
        Draft {
            mailbox: mailbox.to_string(),
            message,
            attachments: Vec::new(),
            in_reply_to: None,
        },
    );
    ok(StatusCode::CREATED, json!({"id": id, "isDraft": true}))
}

pub(crate) fn create_reply(state: &Shared, mailbox: &str, original: &str) -> Response {
    let mut st = lock(state);
    let exists = st
        .mailboxes
        .get(&mailbox.to_ascii_lowercase())
        .is_some_and(|m| m.messages.iter().any(|x| x.id == original));
    if !exists {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    }
    let from = st.mailboxes[&mailbox.to_ascii_lowercase()]
        .messages
        .iter()
        .find(|x| x.id == original)
        .map(|m| (m.from.1.clone(), m.subject.clone()))
        .unwrap_or_default();
    let id = format!("AAMkDraft{}", uuid::Uuid::new_v4().simple());
    let message = json!({"subject": format!("RE: {}", from.1), "toRecipients": [{"emailAddress": {"address": from.0}}], "body": {"contentType": "HTML", "content": ""}});
    st.drafts.insert(
        id.clone(),
        Draft {
            mailbox: mailbox.to_string(),
            message,
            attachments: Vec::new(),
            in_reply_to: Some(original.to_string()),
        },
    );
    ok(StatusCode::CREATED, json!({"id": id, "isDraft": true}))
}

pub(crate) fn update_draft(state: &Shared, mailbox: &str, id: &str, body: &Bytes) -> Response {
    let patch = match json_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut st = lock(state);
    let Some(d) = st
        .drafts
        .get_mut(id)
        .filter(|d| d.mailbox.eq_ignore_ascii_case(mailbox))
    else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    if let (Some(m), Some(p)) = (d.message.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            m.insert(k.clone(), v.clone());
        }
    }
    ok(StatusCode::OK, json!({"id": id}))
}

pub(crate) fn add_attachment(state: &Shared, mailbox: &str, id: &str, body: &Bytes) -> Response {
    let a = match json_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let parsed = match file_attachments(&json!({"attachments": [a]})) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = lock(state);
    let Some(d) = st
        .drafts
        .get_mut(id)
        .filter(|d| d.mailbox.eq_ignore_ascii_case(mailbox))
    else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    d.attachments.extend(parsed);
    ok(
        StatusCode::CREATED,
        json!({"id": uuid::Uuid::new_v4().to_string()}),
    )
}

pub(crate) fn create_upload_session(state: &Shared, mailbox: &str, id: &str, body: &Bytes) -> Response {
    let v = match json_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let item = &v["AttachmentItem"];
    let (Some(name), Some(size)) = (item["name"].as_str(), item["size"].as_u64()) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "AttachmentItem needs attachmentType, name and size.",
        );
    };
    if item["attachmentType"] != "file" {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "attachmentType must be file.",
        );
    }
    if size > 150 * 1024 * 1024 {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorAttachmentSizeLimitExceeded",
            "Attachments are limited to 150 MB.",
        );
    }
    let mut st = lock(state);
    if !st
        .drafts
        .get(id)
        .is_some_and(|d| d.mailbox.eq_ignore_ascii_case(mailbox))
    {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    }
    let session = uuid::Uuid::new_v4().simple().to_string();
    let token = format!("sim-upload-{}", uuid::Uuid::new_v4().simple());
    let upload_url = format!("{}/upload/{session}?authtoken={token}", st.base_url);
    st.uploads.insert(
        session,
        Upload {
            draft: id.to_string(),
            name: name.to_string(),
            content_type: item["contentType"]
                .as_str()
                .unwrap_or("application/octet-stream")
                .to_string(),
            size,
            bytes: Vec::new(),
            token,
        },
    );
    ok(
        StatusCode::CREATED,
        json!({"uploadUrl": upload_url, "expirationDateTime": "2026-11-23T00:00:00Z", "nextExpectedRanges": ["0-"]}),
    )
}

/// `PUT {uploadUrl}`: one byte range, in order.
pub(crate) fn upload(
    state: &Shared,
    session: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut st = lock(state);
    if headers.contains_key(header::AUTHORIZATION) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Do not send an Authorization header to the upload URL: it is pre-authenticated.",
        );
    }
    let Some(up) = st.uploads.get(session).cloned() else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The upload session does not exist.",
        );
    };
    if query
        .iter()
        .find(|(k, _)| k == "authtoken")
        .map(|(_, v)| v.as_str())
        != Some(up.token.as_str())
    {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The upload URL's token is wrong.",
        );
    }
    let range = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parsed = range
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('/'))
        .and_then(|(span, total)| {
            let (a, b) = span.split_once('-')?;
            Some((
                a.parse::<u64>().ok()?,
                b.parse::<u64>().ok()?,
                total.parse::<u64>().ok()?,
            ))
        });
    let Some((start, end, total)) = parsed else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidContentRange",
            "Content-Range must be bytes {start}-{end}/{total}.",
        );
    };
    if body.len() > MAX_CHUNK {
        return graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "Upload each range in at most 4 MB.",
        );
    }
    if total != up.size
        || start != up.bytes.len() as u64
        || end < start
        || end - start + 1 != body.len() as u64
        || end >= total
    {
        return graph_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            &format!(
                "Expected the range starting at {} of {}.",
                up.bytes.len(),
                up.size
            ),
        );
    }
    st.max_upload_chunk = st.max_upload_chunk.max(body.len());
    let Some(u) = st.uploads.get_mut(session) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    u.bytes.extend_from_slice(body);
    if (u.bytes.len() as u64) < u.size {
        let next = u.bytes.len();
        return ok(
            StatusCode::OK,
            json!({"expirationDateTime": "2026-11-23T00:00:00Z", "nextExpectedRanges": [format!("{next}-")]}),
        );
    }
    let done = st
        .uploads
        .remove(session)
        .map(|u| (u.draft, u.name, u.content_type, u.bytes));
    if let Some((draft, name, ct, bytes)) = done
        && let Some(d) = st.drafts.get_mut(&draft)
    {
        d.attachments.push((name, ct, bytes));
    }
    let mut resp = StatusCode::CREATED.into_response();
    if let Ok(v) = header::HeaderValue::from_str(&format!("{}/v1.0/attachments/{session}", st.base_url)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

pub(crate) fn send_draft(state: &Shared, mailbox: &str, id: &str) -> Response {
    let mut st = lock(state);
    let Some(d) = st
        .drafts
        .get(id)
        .filter(|d| d.mailbox.eq_ignore_ascii_case(mailbox))
        .cloned()
    else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    match to_sent(&st, mailbox, &d.message, d.attachments.clone(), true) {
        Ok(mut sent) => {
            sent.in_reply_to = d.in_reply_to.clone();
            st.drafts.remove(id);
            st.sent.push(sent);
            StatusCode::ACCEPTED.into_response()
        }
        Err(r) => r,
    }
}

pub(crate) fn reply(state: &Shared, mailbox: &str, original: &str, body: &Bytes) -> Response {
    let v = match json_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if v.get("comment").is_some() && v["message"].get("body").is_some() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "Specify either a comment or the body property of the message parameter, not both.",
        );
    }
    let mut st = lock(state);
    let Some(orig) = st
        .mailboxes
        .get(&mailbox.to_ascii_lowercase())
        .and_then(|m| m.messages.iter().find(|x| x.id == original))
        .cloned()
    else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    let mut message = v.get("message").cloned().unwrap_or_else(|| json!({}));
    if message.get("toRecipients").is_none() {
        message["toRecipients"] = json!([{"emailAddress": {"address": orig.from.1}}]);
    }
    if message.get("subject").is_none() {
        message["subject"] = json!(format!("RE: {}", orig.subject));
    }
    if let Some(c) = v.get("comment") {
        message["body"] = json!({"contentType": "HTML", "content": c});
    }
    match to_sent(&st, mailbox, &message, Vec::new(), true) {
        Ok(mut sent) => {
            sent.in_reply_to = Some(original.to_string());
            st.sent.push(sent);
            StatusCode::ACCEPTED.into_response()
        }
        Err(r) => r,
    }
}
