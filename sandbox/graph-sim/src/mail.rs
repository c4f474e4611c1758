//! Sending mail: `sendMail`, drafts, large-attachment upload sessions,
//! `reply`, `createReply` and `send`, with Graph's checks: recipients must
//! resolve, the body type must be Text or HTML, `from` another mailbox needs
//! Send As rights (else 403 `ErrorSendAsDenied`), requests over 4 MB get 413,
//! and upload ranges must arrive in order, at most 4 MiB each, without an
//! `Authorization` header.
//!
//! A message's `singleValueExtendedProperties` (`[{"id", "value"}]`, ids in
//! Graph's forms `String {guid} Name n`, `String {guid} Id 0x…`, `String 0x…`)
//! are kept on drafts and on the sent copy. A sent mail is put in the
//! sender's Sent Items (unless `saveToSentItems` is false; silently, without
//! notifications) and in the inbox of every recipient who is a simulated
//! user (as mail arrives, notified). A folder's messages can be found by an
//! extended property, `$filter=singleValueExtendedProperties/Any(ep: ep/id eq
//! '…' and ep/value eq '…')`, with Graph's rules: the id compares with case
//! in its name, the value without. Drafts can be read (`isDraft`) and deleted.
//!
//! Faults a test can ask for ([`SendFaults`](crate::state::SendFaults)):
//! the next send refused with a status, or accepted and carried out with its
//! answer held back (a client that gives up first sees a timeout for a mail
//! that went out).

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::reply::{graph_error, item_not_found};
use crate::state::{Draft, Message, SentMail, Shared, State, Upload, lock};

/// Graph's practical request limit.
pub(crate) const MAX_REQUEST: usize = 4 * 1024 * 1024;
const MAX_CHUNK: usize = 4 * 1024 * 1024;

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
    let extended_properties = extended_properties(message)?;
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
        extended_properties,
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
            let arriving = accept(&mut st, sent, None);
            drop(st);
            arrive(state, arriving);
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
    new_draft(&mut st, mailbox, message, None)
}

/// Keeps `message` as a new draft of `mailbox` and answers Graph's `201`.
fn new_draft(st: &mut State, mailbox: &str, message: Value, in_reply_to: Option<String>) -> Response {
    let id = format!("AAMkDraft{}", uuid::Uuid::new_v4().simple());
    st.drafts.insert(
        id.clone(),
        Draft {
            mailbox: mailbox.to_string(),
            message,
            attachments: Vec::new(),
            in_reply_to,
        },
    );
    ok(StatusCode::CREATED, json!({"id": id, "isDraft": true}))
}

/// `PidTagMessageFlags` (`Integer 0x0E07`), and its `MSGFLAG_UNSENT` bit:
/// a message created in a folder with the property and without that bit is
/// an ordinary (sent or received) item, not a draft.
const MESSAGE_FLAGS: &str = "integer 0x0e07";
const MSGFLAG_UNSENT: i64 = 0x8;

/// `POST …/mailFolders/{folder}/messages` with a JSON message: the message is
/// created in the folder (`201` with it). As Graph documents, it is a draft
/// unless it is given `PidTagMessageFlags` (`singleValueExtendedProperties`
/// `Integer 0x0E07`) without the unsent bit at creation; such a message
/// keeps the properties given, is read when `isRead` says so, and raises no
/// notification (only new mail arriving does, and Sent Items is not watched).
pub(crate) fn create_in_folder(state: &Shared, mailbox: &str, folder: &str, body: &Bytes) -> Response {
    let message = match json_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut st = lock(state);
    let sent = match to_sent(&st, mailbox, &message, Vec::new(), false) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(v) = message.get("isRead")
        && !v.is_boolean()
    {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            "isRead must be a boolean.",
        );
    }
    let mut is_draft = true;
    for (id, value) in &sent.extended_properties {
        if id.to_ascii_lowercase() == MESSAGE_FLAGS {
            let Ok(flags) = value.parse::<i64>() else {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidExtendedPropertyValue",
                    &format!("The value '{value}' of an Integer extended property is not an integer."),
                );
            };
            is_draft = flags & MSGFLAG_UNSENT != 0;
        }
    }
    let html = if sent.content_type == "html" {
        sent.body.clone()
    } else {
        format!("<pre>{}</pre>", sent.body)
    };
    st.seq += 1;
    let seq = st.seq;
    let id = format!("AAMkItem{}", uuid::Uuid::new_v4().simple());
    let mailbox_address = mailbox.to_string();
    let kept = Message {
        id: id.clone(),
        internet_message_id: format!("<{}@sim.example>", uuid::Uuid::new_v4().simple()),
        conversation_id: format!("AAQkAD{}", uuid::Uuid::new_v4().simple()),
        subject: sent.subject.clone(),
        from: (mailbox_address.clone(), mailbox_address),
        to: sent.to.iter().map(|a| (a.clone(), a.clone())).collect(),
        cc: sent.cc.iter().map(|a| (a.clone(), a.clone())).collect(),
        body_html: html,
        received: crate::reply::now_rfc3339(),
        folder: folder.to_string(),
        seq,
        changed_seq: seq,
        extended_properties: sent.extended_properties.clone(),
        is_draft,
        ..Default::default()
    };
    let mbox = st.mailboxes.entry(mailbox.to_ascii_lowercase()).or_default();
    crate::body::keep(mbox, &kept.id, &kept.body_html);
    let answer = crate::reply::message_json(&kept, mailbox, "");
    mbox.messages.push(kept);
    ok(StatusCode::CREATED, answer)
}

pub(crate) fn create_reply(state: &Shared, mailbox: &str, original: &str, body: &Bytes) -> Response {
    // An optional body: {"comment"?, "message"?: writable properties}.
    let given = if body.is_empty() {
        json!({})
    } else {
        match json_body(body) {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
    let properties = match extended_properties(&given["message"]) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = lock(state);
    let exists = st
        .mailboxes
        .get(&mailbox.to_ascii_lowercase())
        .is_some_and(|m| m.messages.iter().any(|x| x.id == original));
    if !exists {
        return item_not_found();
    }
    let from = st.mailboxes[&mailbox.to_ascii_lowercase()]
        .messages
        .iter()
        .find(|x| x.id == original)
        .map(|m| (m.from.1.clone(), m.subject.clone()))
        .unwrap_or_default();
    let mut message = json!({"subject": format!("RE: {}", from.1), "toRecipients": [{"emailAddress": {"address": from.0}}], "body": {"contentType": "HTML", "content": ""}});
    if !properties.is_empty() {
        message["singleValueExtendedProperties"] = properties
            .iter()
            .map(|(i, v)| json!({"id": i, "value": v}))
            .collect();
    }
    new_draft(&mut st, mailbox, message, Some(original.to_string()))
}

/// The draft `id` when it is `mailbox`'s.
fn draft_of<'a>(st: &'a mut State, mailbox: &str, id: &str) -> Option<&'a mut Draft> {
    st.drafts
        .get_mut(id)
        .filter(|d| d.mailbox.eq_ignore_ascii_case(mailbox))
}

/// A write to one of `mailbox`'s drafts: the JSON body, read by `parse`
/// (a bad body is refused before the draft is looked up), then `edit`
/// applied to the draft.
fn edit_draft<T>(
    state: &Shared,
    mailbox: &str,
    id: &str,
    body: &Bytes,
    parse: impl FnOnce(&Value) -> Result<T, Response>,
    edit: impl FnOnce(&mut Draft, &Value, T) -> Response,
) -> Response {
    let v = match json_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let parsed = match parse(&v) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = lock(state);
    let Some(d) = draft_of(&mut st, mailbox, id) else {
        return item_not_found();
    };
    edit(d, &v, parsed)
}

pub(crate) fn update_draft(state: &Shared, mailbox: &str, id: &str, body: &Bytes) -> Response {
    edit_draft(
        state,
        mailbox,
        id,
        body,
        extended_properties,
        |d, patch, added| {
            // Extended properties are added or replaced one by one, as Graph's PATCH does.
            let mut properties = extended_properties(&d.message).unwrap_or_default();
            for (pid, v) in added {
                let key = property_key(&pid);
                properties.retain(|(other, _)| property_key(other) != key);
                properties.push((pid, v));
            }
            if let (Some(m), Some(p)) = (d.message.as_object_mut(), patch.as_object()) {
                for (k, v) in p {
                    m.insert(k.clone(), v.clone());
                }
                if !properties.is_empty() {
                    m.insert(
                        "singleValueExtendedProperties".into(),
                        properties
                            .iter()
                            .map(|(i, v)| json!({"id": i, "value": v}))
                            .collect(),
                    );
                }
            }
            ok(StatusCode::OK, json!({"id": id}))
        },
    )
}

pub(crate) fn add_attachment(state: &Shared, mailbox: &str, id: &str, body: &Bytes) -> Response {
    let one = |a: &Value| file_attachments(&json!({"attachments": [a]}));
    edit_draft(state, mailbox, id, body, one, |d, _, parsed| {
        d.attachments.extend(parsed);
        ok(
            StatusCode::CREATED,
            json!({"id": uuid::Uuid::new_v4().to_string()}),
        )
    })
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
    if draft_of(&mut st, mailbox, id).is_none() {
        return item_not_found();
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
    let Some(d) = draft_of(&mut st, mailbox, id).cloned() else {
        return item_not_found();
    };
    match to_sent(&st, mailbox, &d.message, d.attachments.clone(), true) {
        Ok(mut sent) => {
            sent.in_reply_to = d.in_reply_to.clone();
            st.drafts.remove(id);
            // An immutable id stays the same when the draft moves to Sent Items.
            let arriving = accept(&mut st, sent, Some(id.to_string()));
            drop(st);
            arrive(state, arriving);
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
        return item_not_found();
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
            let arriving = accept(&mut st, sent, None);
            drop(st);
            arrive(state, arriving);
            StatusCode::ACCEPTED.into_response()
        }
        Err(r) => r,
    }
}

/// Whether a mailbox route (after `/users/{u}` or `/me`) sends mail.
pub(crate) fn is_send(method: &str, rest: &[&str]) -> bool {
    method == "POST"
        && matches!(
            rest,
            ["sendMail"] | ["messages", _, "reply"] | ["messages", _, "send"]
        )
}

/// The refusal a test asked for, for a send about to be handled.
pub(crate) fn refusal(state: &Shared) -> Option<Response> {
    let (status, code, message) = lock(state).send_faults.refuse_next.take()?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(graph_error(status, &code, &message))
}

/// Answers a send, after the stall a test asked for when Graph accepted it.
pub(crate) async fn answer(state: &Shared, resp: Response) -> Response {
    if resp.status() == StatusCode::ACCEPTED {
        let stall = lock(state).send_faults.stall_next_answer.take();
        if let Some(d) = stall {
            tokio::time::sleep(d).await;
        }
    }
    resp
}

/// The parts of an extended property id that identify it, as Graph compares
/// them: the type and GUID without case, a name with case, a tag without.
#[derive(Debug, PartialEq, Eq)]
struct PropertyKey {
    kind: String,
    guid: Option<String>,
    name: String,
}

/// The MAPI types an extended property id may name.
const PROPERTY_TYPES: [&str; 12] = [
    "Binary",
    "Boolean",
    "CLSID",
    "Currency",
    "Double",
    "Float",
    "Integer",
    "Long",
    "Object",
    "Short",
    "String",
    "SystemTime",
];

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn is_tag(s: &str) -> bool {
    s.len() > 2
        && s.len() <= 6
        && s[..2].eq_ignore_ascii_case("0x")
        && s[2..].chars().all(|c| c.is_ascii_hexdigit())
}

/// Parses an extended property id in one of Graph's forms.
fn property_key(id: &str) -> Option<PropertyKey> {
    let mut words = id.splitn(4, ' ');
    let kind = words.next()?;
    let kind = PROPERTY_TYPES.iter().find(|t| t.eq_ignore_ascii_case(kind))?;
    let second = words.next()?;
    if is_tag(second) {
        return words.next().is_none().then(|| PropertyKey {
            kind: kind.to_ascii_lowercase(),
            guid: None,
            name: second.to_ascii_lowercase(),
        });
    }
    let guid = second.strip_prefix('{')?.strip_suffix('}')?;
    if !is_guid(guid) {
        return None;
    }
    let (how, name) = (words.next()?, words.next()?);
    let name = if how == "Name" && !name.is_empty() {
        name.to_string()
    } else if how == "Id" && is_tag(name) {
        name.to_ascii_lowercase()
    } else {
        return None;
    };
    Some(PropertyKey {
        kind: kind.to_ascii_lowercase(),
        guid: Some(guid.to_ascii_lowercase()),
        name,
    })
}

fn invalid_property(id: &str) -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        "ErrorInvalidProperty",
        &format!(
            "The extended property id '{id}' is not valid: use 'String {{guid}} Name name', 'String {{guid}} Id 0x8000' or 'String 0x0037'."
        ),
    )
}

/// A message's `singleValueExtendedProperties`, checked as Graph checks them.
fn extended_properties(message: &Value) -> Result<Vec<(String, String)>, Response> {
    let Some(list) = message.get("singleValueExtendedProperties") else {
        return Ok(Vec::new());
    };
    let Some(list) = list.as_array() else {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            "singleValueExtendedProperties must be an array of {id, value}.",
        ));
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for p in list {
        let (Some(id), Some(value)) = (p["id"].as_str(), p["value"].as_str()) else {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                "RequestBodyRead",
                "An extended property needs a string id and a string value.",
            ));
        };
        let Some(key) = property_key(id) else {
            return Err(invalid_property(id));
        };
        out.retain(|(other, _)| property_key(other).as_ref() != Some(&key));
        out.push((id.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Records a send Graph accepted: in what was sent, in the sender's Sent
/// Items (kept as `id` when it was a draft), and returns the copies that
/// arrive in simulated users' inboxes (delivered by [`arrive`] once the
/// state is unlocked).
fn accept(st: &mut State, sent: SentMail, id: Option<String>) -> Vec<(String, Message)> {
    let now = crate::reply::now_rfc3339();
    let internet_message_id = format!("<{}@sim.example>", uuid::Uuid::new_v4().simple());
    let conversation_id = format!("AAQkAD{}", uuid::Uuid::new_v4().simple());
    let html = if sent.content_type == "html" {
        sent.body.clone()
    } else {
        format!("<pre>{}</pre>", sent.body)
    };
    let copy = Message {
        id: String::new(),
        internet_message_id,
        conversation_id,
        subject: sent.subject.clone(),
        from: {
            let from = sent.from.clone().unwrap_or_else(|| sent.mailbox.clone());
            (from.clone(), from)
        },
        to: sent.to.iter().map(|a| (a.clone(), a.clone())).collect(),
        cc: sent.cc.iter().map(|a| (a.clone(), a.clone())).collect(),
        body_html: html,
        attachments: sent
            .attachments
            .iter()
            .map(|(n, c, b)| (n.clone(), c.clone(), b.len() as u64))
            .collect(),
        received: now,
        folder: String::new(),
        seq: 0,
        changed_seq: 0,
        extended_properties: Vec::new(),
        ..Default::default()
    };
    if sent.save_to_sent_items {
        st.seq += 1;
        let mut kept = copy.clone();
        kept.id = id.unwrap_or_else(|| format!("AAMkSent{}", uuid::Uuid::new_v4().simple()));
        kept.folder = "sentitems".into();
        kept.seq = st.seq;
        kept.changed_seq = st.seq;
        kept.extended_properties = sent.extended_properties.clone();
        let mbox = st.mailboxes.entry(sent.mailbox.to_ascii_lowercase()).or_default();
        crate::body::keep(mbox, &kept.id, &kept.body_html);
        mbox.messages.push(kept);
    }
    let arriving = sent
        .to
        .iter()
        .chain(&sent.cc)
        .chain(&sent.bcc)
        .filter_map(|a| st.user(a).map(|u| u.upn.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|upn| (upn, copy.clone()))
        .collect();
    st.sent.push(sent);
    arriving
}

/// Delivers sent copies into their recipients' inboxes (notified, as mail arrives).
fn arrive(state: &Shared, arriving: Vec<(String, Message)>) {
    for (upn, mut m) in arriving {
        m.folder = "inbox".into();
        crate::deliver(state, &upn, m);
    }
}

/// `GET …/messages/{id}` of a draft (the simulator keeps drafts apart from
/// delivered mail): its id, `isDraft` and what it was given.
pub(crate) fn get_draft(st: &State, mailbox: &str, id: &str) -> Option<Response> {
    let d = st
        .drafts
        .get(id)
        .filter(|d| d.mailbox.eq_ignore_ascii_case(mailbox))?;
    let mut v = d.message.clone();
    v["id"] = json!(id);
    v["isDraft"] = json!(true);
    v["parentFolderId"] = json!("drafts");
    Some(ok(StatusCode::OK, v))
}

/// `DELETE …/messages/{id}`: a draft is removed with its attachments and
/// upload sessions; a delivered message moves to Deleted Items, as Graph does.
pub(crate) fn delete_message(state: &Shared, mailbox: &str, id: &str) -> Response {
    let mut st = lock(state);
    if st
        .drafts
        .get(id)
        .is_some_and(|d| d.mailbox.eq_ignore_ascii_case(mailbox))
    {
        st.drafts.remove(id);
        st.uploads.retain(|_, u| u.draft != id);
        return StatusCode::NO_CONTENT.into_response();
    }
    let seq = st.next_seq();
    let moved = st.message_mut(mailbox, id).map(|m| {
        m.folder = "deleteditems".into();
        m.seq = seq;
        m.changed_seq = seq;
    });
    match moved {
        Some(()) => StatusCode::NO_CONTENT.into_response(),
        None => item_not_found(),
    }
}

/// A token of an OData `$filter` as far as extended property filters need.
#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    Comma,
    Colon,
}

fn syntax(filter: &str, at: usize) -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &format!("Syntax error at position {at} in '{filter}'."),
    )
}

fn tokens(filter: &str) -> Result<Vec<Tok>, Response> {
    let mut out = Vec::new();
    let mut chars = filter.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            ' ' => {}
            '(' => out.push(Tok::Open),
            ')' => out.push(Tok::Close),
            ',' => out.push(Tok::Comma),
            ':' => out.push(Tok::Colon),
            '\'' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\'')) if chars.peek().map(|x| x.1) == Some('\'') => {
                            chars.next();
                            s.push('\'');
                        }
                        Some((_, '\'')) => break,
                        Some((_, x)) => s.push(x),
                        None => return Err(syntax(filter, i)),
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '.' => {
                let mut w = c.to_string();
                while let Some(&(_, x)) = chars.peek() {
                    if x.is_ascii_alphanumeric() || x == '/' || x == '_' || x == '.' {
                        w.push(x);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Tok::Word(w));
            }
            _ => return Err(syntax(filter, i)),
        }
    }
    Ok(out)
}

/// What an extended property filter asks: a property id, and its value if given.
type Wanted = (PropertyKey, Option<String>);

fn not_evaluated() -> Response {
    graph_error(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        "The simulator evaluates extended property filters of the form singleValueExtendedProperties/Any(ep: ep/id eq '…' and ep/value eq '…') only.",
    )
}

/// Parses `singleValueExtendedProperties/Any(ep: ep/id eq '…' [and ep/value eq '…'])`.
fn parse_property_filter(filter: &str) -> Result<Wanted, Response> {
    let toks = tokens(filter)?;
    let (head, var, body) = match toks.as_slice() {
        [
            Tok::Word(head),
            Tok::Open,
            Tok::Word(var),
            Tok::Colon,
            body @ ..,
            Tok::Close,
        ] => (head, var, body),
        _ => return Err(syntax(filter, filter.len())),
    };
    let Some((nav, any)) = head.split_once('/') else {
        return Err(syntax(filter, 0));
    };
    if !nav.eq_ignore_ascii_case("singleValueExtendedProperties") {
        return Err(not_evaluated());
    }
    if !any.eq_ignore_ascii_case("any") {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("'{any}' is not a lambda operator: use any."),
        ));
    }
    let mut id: Option<String> = None;
    let mut value: Option<String> = None;
    let clauses: Vec<&[Tok]> = body.split(|t| matches!(t, Tok::Word(w) if w == "and")).collect();
    for clause in clauses {
        let [Tok::Word(path), Tok::Word(op), Tok::Str(lit)] = clause else {
            if clause
                .iter()
                .any(|t| matches!(t, Tok::Word(w) if w == "or" || w == "contains" || w == "startswith"))
            {
                return Err(not_evaluated());
            }
            return Err(syntax(filter, filter.len()));
        };
        let Some((v, prop)) = path.split_once('/') else {
            return Err(syntax(filter, 0));
        };
        if v != var {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Could not find a property named '{v}' on type 'microsoft.graph.message'."),
            ));
        }
        match (prop, op.as_str()) {
            ("id", "eq") if id.is_none() => id = Some(lit.clone()),
            ("value", "eq") if value.is_none() => value = Some(lit.clone()),
            ("value", "ne" | "gt" | "ge" | "lt" | "le") => return Err(not_evaluated()),
            ("id" | "value", _) => return Err(syntax(filter, 0)),
            (other, _) => {
                return Err(graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!(
                        "Could not find a property named '{other}' on type 'microsoft.graph.singleValueLegacyExtendedProperty'."
                    ),
                ));
            }
        }
    }
    let Some(id) = id else {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidUrlQueryFilter",
            "An extended property filter must name the property: ep/id eq '…'.",
        ));
    };
    let key = property_key(&id).ok_or_else(|| invalid_property(&id))?;
    Ok((key, value))
}

/// `GET …[/mailFolders/{f}]/messages?$filter=singleValueExtendedProperties/Any(…)`:
/// the folder's messages holding that property (and value). `None` when the
/// filter is not about extended properties (the plain listing answers it).
pub(crate) fn list_by_property(
    st: &State,
    upn: &str,
    folder: Option<&str>,
    query: &[(String, String)],
) -> Option<Response> {
    let filter = query
        .iter()
        .find(|(k, _)| k == "$filter")
        .map(|(_, v)| v.as_str())?;
    if !filter
        .to_ascii_lowercase()
        .contains("singlevalueextendedproperties")
    {
        return None;
    }
    if let Some((k, _)) = query
        .iter()
        .find(|(k, _)| k.starts_with('$') && !matches!(k.as_str(), "$filter" | "$select" | "$top"))
    {
        return Some(graph_error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            &format!("The simulator does not evaluate {k} with an extended property filter."),
        ));
    }
    let (key, value) = match parse_property_filter(filter) {
        Ok(w) => w,
        Err(r) => return Some(r),
    };
    let top = query
        .iter()
        .find(|(k, _)| k == "$top")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(10);
    if folder.is_some_and(|f| f.eq_ignore_ascii_case("drafts")) {
        let drafts: Vec<Value> = st
            .drafts
            .iter()
            .filter(|(_, d)| d.mailbox.eq_ignore_ascii_case(upn))
            .filter(|(_, d)| {
                extended_properties(&d.message)
                    .unwrap_or_default()
                    .iter()
                    .any(|(id, v)| {
                        property_key(id).as_ref() == Some(&key)
                            && value
                                .as_deref()
                                .is_none_or(|want| want.to_lowercase() == v.to_lowercase())
                    })
            })
            .take(top)
            .map(|(id, d)| json!({"id": id, "isDraft": true, "subject": d.message["subject"]}))
            .collect();
        return Some(ok(StatusCode::OK, json!({"value": drafts})));
    }
    let value_list: Vec<Value> = st
        .mailboxes
        .get(&upn.to_ascii_lowercase())
        .map(|m| m.messages.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|m| folder.is_none_or(|f| m.folder.eq_ignore_ascii_case(f)))
        .filter(|m| {
            m.extended_properties.iter().any(|(id, v)| {
                property_key(id).as_ref() == Some(&key)
                    && value
                        .as_deref()
                        .is_none_or(|want| want.to_lowercase() == v.to_lowercase())
            })
        })
        .take(top)
        .map(|m| crate::reply::select(crate::reply::message_json(m, upn, ""), query))
        .collect();
    Some(ok(StatusCode::OK, json!({"value": value_list})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_ids_in_graph_s_forms() {
        let named =
            property_key("String {afeddda2-98d4-4cef-b232-e0ea3602decc} Name relay365-idempotency-key");
        assert!(named.is_some());
        assert_eq!(
            named,
            property_key("string {AFEDDDA2-98D4-4CEF-B232-E0EA3602DECC} Name relay365-idempotency-key"),
            "type and GUID without case"
        );
        assert_ne!(
            named,
            property_key("String {afeddda2-98d4-4cef-b232-e0ea3602decc} Name Relay365-Idempotency-Key"),
            "the name with case"
        );
        assert!(property_key("String 0x0037").is_some());
        assert!(property_key("Integer {afeddda2-98d4-4cef-b232-e0ea3602decc} Id 0x8001").is_some());
        for bad in [
            "",
            "String",
            "Text 0x0037",
            "String {nope} Name x",
            "String {afeddda2-98d4-4cef-b232-e0ea3602decc} Name",
            "String 0x",
        ] {
            assert!(property_key(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn extended_property_filters_parse_or_are_refused() {
        let id = "String {afeddda2-98d4-4cef-b232-e0ea3602decc} Name k";
        let (_, v) = parse_property_filter(&format!(
            "singleValueExtendedProperties/Any(ep: ep/id eq '{id}' and ep/value eq 'it''s')"
        ))
        .unwrap();
        assert_eq!(v.as_deref(), Some("it's"));
        for (bad, status) in [
            (
                "singleValueExtendedProperties/Any(ep: ep/value eq 'x')".to_string(),
                400,
            ),
            (
                format!("singleValueExtendedProperties/Any(ep: x/id eq '{id}')"),
                400,
            ),
            (
                "singleValueExtendedProperties/Any(ep: ep/id eq 'String nope')".to_string(),
                400,
            ),
            (
                format!("singleValueExtendedProperties/Any(ep: ep/id eq '{id}'"),
                400,
            ),
            (
                format!("singleValueExtendedProperties/Any(ep: ep/id eq '{id} and ep/value eq 'x')"),
                400,
            ),
            (
                format!("singleValueExtendedProperties/Any(ep: ep/id eq '{id}' and contains(ep/value, 'x'))"),
                501,
            ),
        ] {
            let r = parse_property_filter(&bad).unwrap_err();
            assert_eq!(r.status().as_u16(), status, "{bad}");
        }
    }
}
