//! Graph's message and event JSON turned into relay365's event shape
//! (ARCHITECTURE.md: "Event delivered to a flow target").
//!
//! Event ids are derived from the connection and the item (and, for calendar
//! changes, the item's change key), so a redelivery of the same change carries
//! the same `Relay365-Event-Id` and a receiver can drop it.

use relay365::connection::Connection;
use serde_json::{Value, json};

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `evt_` and 32 hex characters of SHA-256 over the parts.
pub fn event_id(parts: &[&str]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, parts.join("|").as_bytes());
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("evt_{hex}")
}

/// A Graph `recipient` as `{"name", "address"}`.
pub fn person(v: &Value) -> Value {
    let e = &v["emailAddress"];
    json!({"name": e["name"].as_str().unwrap_or(""), "address": e["address"].as_str().unwrap_or("")})
}

fn people(v: &Value) -> Vec<Value> {
    v.as_array()
        .map(|a| a.iter().map(person).collect())
        .unwrap_or_default()
}

fn str_of(v: &Value) -> Value {
    Value::String(v.as_str().unwrap_or("").to_string())
}

/// `mail.received` from a message (fetched with `MESSAGE_SELECT`) and its attachments.
pub fn mail_event(conn: &Connection, m: &Value, attachments: &[Value]) -> Value {
    let id = m["id"].as_str().unwrap_or("");
    json!({
        "id": event_id(&[&conn.id, "mail.received", id]),
        "type": "mail.received",
        "connection_id": conn.id,
        "mailbox": conn.mailbox.clone().unwrap_or_default(),
        "occurred_at": m["receivedDateTime"].as_str().map_or_else(now, str::to_string),
        "mail": {
            "id": id,
            "internet_message_id": str_of(&m["internetMessageId"]),
            "conversation_id": str_of(&m["conversationId"]),
            "subject": str_of(&m["subject"]),
            "from": person(&m["from"]),
            "to": people(&m["toRecipients"]),
            "cc": people(&m["ccRecipients"]),
            "received_at": str_of(&m["receivedDateTime"]),
            "body": {
                "content_type": m["body"]["contentType"].as_str().unwrap_or("text").to_ascii_lowercase(),
                "content": str_of(&m["body"]["content"]),
            },
            "body_preview": str_of(&m["bodyPreview"]),
            "has_attachments": m["hasAttachments"].as_bool().unwrap_or(false),
            "attachments": attachments.iter().map(|a| json!({
                "name": str_of(&a["name"]),
                "content_type": str_of(&a["contentType"]),
                "size": a["size"].as_u64().unwrap_or(0),
            })).collect::<Vec<_>>(),
            "web_link": str_of(&m["webLink"]),
        }
    })
}

/// `calendar.event.created|updated|deleted`; `item` is the event as Graph
/// returns it now (absent for deletions).
pub fn calendar_event(conn: &Connection, change: &str, id: &str, item: Option<&Value>) -> Value {
    let kind = match change {
        "created" => "calendar.event.created",
        "deleted" => "calendar.event.deleted",
        _ => "calendar.event.updated",
    };
    let etag = item.and_then(|i| i["@odata.etag"].as_str()).unwrap_or("");
    let event = match item {
        Some(e) => json!({
            "id": id,
            "subject": str_of(&e["subject"]),
            "organizer": person(&e["organizer"]),
            "attendees": people(&e["attendees"]),
            "start": str_of(&e["start"]["dateTime"]),
            "end": str_of(&e["end"]["dateTime"]),
            "time_zone": str_of(&e["start"]["timeZone"]),
            "location": str_of(&e["location"]["displayName"]),
            "online_meeting_url": e["onlineMeeting"]["joinUrl"].as_str(),
            "is_cancelled": e["isCancelled"].as_bool().unwrap_or(false),
        }),
        None => json!({"id": id, "is_cancelled": true}),
    };
    json!({
        "id": event_id(&[&conn.id, kind, id, etag]),
        "type": kind,
        "connection_id": conn.id,
        "mailbox": conn.mailbox.clone().unwrap_or_default(),
        "occurred_at": now(),
        "event": event,
    })
}

/// `connection.reauth_required`, with the reason and the link to reconnect.
pub fn reauth_event(conn: &Connection, reason: &str, connect_url: Option<String>) -> Value {
    json!({
        "id": event_id(&[&conn.id, "connection.reauth_required", &conn.updated_at.unix_timestamp().to_string()]),
        "type": "connection.reauth_required",
        "connection_id": conn.id,
        "mailbox": conn.mailbox.clone().unwrap_or_default(),
        "occurred_at": now(),
        "reason": reason,
        "connect_url": connect_url,
    })
}
