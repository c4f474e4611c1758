//! Graph's message and event JSON turned into relay365's event shape
//! (docs/architecture.md, "Events delivered to a flow").
//!
//! Event ids are derived from the connection and the item (and, for calendar
//! changes, the item's change key), so a redelivery of the same change carries
//! the same `Relay365-Event-Id` and a receiver can drop it.

use relay365::model::connection::Connection;
use serde_json::{Value, json};

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `evt_` and 32 hex characters of SHA-256 over the parts.
pub fn event_id(parts: &[&str]) -> String {
    let hex = relay365::digest::sha256_hex(parts.join("|").as_bytes());
    format!("evt_{}", &hex[..32])
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

/// The event's `body` from Graph's. A body the fetch cut (see
/// [`crate::fetch`]) says so: `truncated` and the whole content's
/// `original_length` in bytes, which `fit` keeps when it cuts further.
fn body(b: &Value) -> Value {
    let mut out = json!({
        "content_type": b["contentType"].as_str().unwrap_or("text").to_ascii_lowercase(),
        "content": str_of(&b["content"]),
    });
    if b["truncated"].as_bool() == Some(true) {
        out["truncated"] = true.into();
        out["original_length"] = b["originalLength"].as_u64().unwrap_or(0).into();
    }
    out
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
            "body": body(&m["body"]),
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
pub fn calendar_event(
    conn: &Connection,
    change: &str,
    id: &str,
    item: Option<&Value>,
    version: &str,
) -> Value {
    let kind = match change {
        "created" => "calendar.event.created",
        "deleted" => "calendar.event.deleted",
        _ => "calendar.event.updated",
    };
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
        "id": event_id(&[&conn.id, kind, id, version]),
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
        "id": event_id(&[&conn.id, "connection.reauth_required", &conn.generation.to_string()]),
        "type": "connection.reauth_required",
        "connection_id": conn.id,
        "mailbox": conn.mailbox.clone().unwrap_or_default(),
        "occurred_at": now(),
        "reason": reason,
        "connect_url": connect_url,
    })
}

#[cfg(test)]
mod tests {
    //! Normalisation of the message and event Graph returns (fixtures in
    //! `tests/fixtures/graph`) into the event contract.
    use relay365::Cloud;
    use relay365::model::connection::AuthMode;
    use serde_json::json;

    use super::*;

    fn conn() -> Connection {
        Connection::new(
            "support".into(),
            AuthMode::AppSecret,
            Cloud::Global,
            "contoso.onmicrosoft.com".into(),
            Some("support@contoso.com".into()),
            vec![],
        )
    }

    fn fixture(raw: &str) -> Value {
        serde_json::from_str(raw).unwrap()
    }

    #[test]
    fn a_graph_message_becomes_a_mail_received_event() {
        let m = fixture(include_str!("../../../tests/fixtures/graph/message.json"));
        let a = fixture(include_str!("../../../tests/fixtures/graph/attachments.json"));
        let e = mail_event(&conn(), &m, a["value"].as_array().unwrap());
        assert_eq!(e["type"], "mail.received");
        assert_eq!(e["connection_id"], "support");
        assert_eq!(e["mailbox"], "support@contoso.com");
        assert_eq!(e["occurred_at"], "2026-11-22T18:00:00Z");
        let mail = &e["mail"];
        assert_eq!(mail["id"], "AAMkAGUwNjQ4ZjIxAAA=");
        assert_eq!(
            mail["from"],
            json!({"name": "Bo Ek", "address": "bo@example.com"})
        );
        assert_eq!(
            mail["cc"],
            json!([{"name": "", "address": "cc@example.com"}]),
            "recipients are always name and address"
        );
        assert_eq!(mail["body"]["content_type"], "html");
        assert_eq!(
            mail["attachments"],
            json!([{"name": "photo.jpg", "content_type": "image/jpeg", "size": 48213}])
        );
        assert!(
            mail["web_link"]
                .as_str()
                .unwrap()
                .starts_with("https://outlook.office365.com/")
        );
        // The same item always has the same event id; another item another.
        assert_eq!(e["id"], mail_event(&conn(), &m, &[])["id"]);
        let mut other = m.clone();
        other["id"] = "AAMkother".into();
        assert_ne!(e["id"], mail_event(&conn(), &other, &[])["id"]);
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(e["id"].as_str().unwrap().len(), 36);
    }

    #[test]
    fn a_body_cut_at_the_fetch_says_so_and_keeps_its_original_length() {
        let mut m = fixture(include_str!("../../../tests/fixtures/graph/message.json"));
        let whole = mail_event(&conn(), &m, &[]);
        assert!(whole["mail"]["body"].get("truncated").is_none());
        m["body"] =
            json!({"contentType": "html", "content": "<p>", "truncated": true, "originalLength": 26_214_400});
        let e = mail_event(&conn(), &m, &[]);
        assert_eq!(
            e["mail"]["body"],
            json!({"content_type": "html", "content": "<p>", "truncated": true, "original_length": 26_214_400})
        );
        assert_eq!(e["mail"]["web_link"], whole["mail"]["web_link"]);
    }

    #[test]
    fn a_graph_event_becomes_a_calendar_event_and_a_deletion_carries_the_id() {
        let ev = fixture(include_str!("../../../tests/fixtures/graph/event.json"));
        let e = calendar_event(&conn(), "updated", "AAMkEv1", Some(&ev), "k1");
        assert_eq!(e["type"], "calendar.event.updated");
        assert_eq!(e["event"]["subject"], "Callback with Bo");
        assert_eq!(
            e["event"]["organizer"],
            json!({"name": "Ann", "address": "ann@contoso.com"})
        );
        assert_eq!(
            e["event"]["online_meeting_url"],
            "https://teams.microsoft.com/l/meetup-join/x"
        );
        let gone = calendar_event(&conn(), "deleted", "AAMkEv1", None, "deleted");
        assert_eq!(gone["type"], "calendar.event.deleted");
        assert_eq!(gone["event"]["id"], "AAMkEv1");
    }
}
