//! The send-mail request: parsed from JSON (HTTP callers, direct invocation)
//! or from an Amazon Connect contact flow's flat string parameters, and
//! checked field by field before anything is sent.
//!
//! Policy on unknown fields: refused with a 400 that names the field and lists
//! the allowed ones, because a misspelt `bcc` silently dropped is worse than
//! an error. Every message names the field (`to[2]`, `attachments[0].s3.bucket`).

use base64::Engine;
use serde_json::{Map, Value};

/// Most recipients in one message (Exchange Online's per-message limit).
pub const MAX_RECIPIENTS: usize = 500;
/// Most attachments in one message.
pub const MAX_ATTACHMENTS: usize = 100;
/// Largest attachment Microsoft accepts (upload session limit).
pub const MAX_ATTACHMENT_BYTES: u64 = 150 * 1024 * 1024;
/// Largest subject accepted.
pub const MAX_SUBJECT: usize = 998;

const FIELDS: [&str; 13] = [
    "connection_id",
    "from",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "subject",
    "body",
    "attachments",
    "save_to_sent_items",
    "reply_to_message_id",
    "idempotency_key",
    "body_type",
];

/// A recipient.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recipient {
    /// Display name.
    pub name: Option<String>,
    /// Address.
    pub address: String,
}

/// The body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum MailBody {
    /// Plain text.
    Text(String),
    /// HTML.
    Html(String),
}

/// Where an attachment's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Source {
    /// In the request.
    Inline(#[serde(skip)] Vec<u8>),
    /// In the deployment's attachments bucket.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
}

/// An attachment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attachment {
    /// File name.
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// The bytes.
    pub source: Source,
}

/// A checked request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SendRequest {
    /// Which connection sends.
    pub connection_id: String,
    /// Send as this mailbox.
    pub from: Option<String>,
    /// To.
    pub to: Vec<Recipient>,
    /// Cc.
    pub cc: Vec<Recipient>,
    /// Bcc.
    pub bcc: Vec<Recipient>,
    /// Reply-To.
    pub reply_to: Vec<Recipient>,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: MailBody,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// Keep a copy in Sent Items.
    pub save_to_sent_items: bool,
    /// Reply in the thread of this message.
    pub reply_to_message_id: Option<String>,
    /// Repeat-safe key.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

impl SendRequest {
    /// SHA-256 of the request's content, to tell a true retry from a key reused for another message.
    pub fn fingerprint(&self) -> String {
        let mut json = serde_json::to_vec(self).unwrap_or_default();
        for a in &self.attachments {
            if let Source::Inline(bytes) = &a.source {
                json.extend_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
            }
        }
        relay365::digest::sha256_hex(&json)
    }

    /// Total bytes of inline attachments.
    pub fn inline_bytes(&self) -> usize {
        self.attachments
            .iter()
            .map(|a| {
                if let Source::Inline(b) = &a.source {
                    b.len()
                } else {
                    0
                }
            })
            .sum()
    }
}

/// A request problem, with the HTTP status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// 400 or 413.
    pub status: u16,
    /// `invalid_request` or `too_large`.
    pub code: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
}

fn bad(message: impl Into<String>) -> Invalid {
    Invalid {
        status: 400,
        code: "invalid_request",
        message: message.into(),
    }
}

fn recipient(field: &str, v: &Value) -> Result<Recipient, Invalid> {
    let (name, address) = match v {
        Value::String(s) => (None, s.trim().to_string()),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| *k != "name" && *k != "address") {
                return Err(bad(format!(
                    "{field}: unknown field `{k}`; a recipient is \"address\" or {{\"name\", \"address\"}}"
                )));
            }
            let address = o
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{field}: \"address\" is required")))?;
            let name = match o.get("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(n)) if n.chars().count() <= 256 && !n.chars().any(char::is_control) => {
                    Some(n.clone())
                }
                Some(_) => {
                    return Err(bad(format!(
                        "{field}.name must be text of at most 256 characters"
                    )));
                }
            };
            (name, address.trim().to_string())
        }
        _ => {
            return Err(bad(format!(
                "{field}: expected an address string or {{\"name\", \"address\"}}"
            )));
        }
    };
    if !relay365::model::address::is_valid(&address) {
        return Err(bad(format!("{field}: {address:?} is not a valid e-mail address")));
    }
    Ok(Recipient { name, address })
}

fn recipients(obj: &Map<String, Value>, field: &str) -> Result<Vec<Recipient>, Invalid> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| recipient(&format!("{field}[{i}]"), v))
            .collect(),
        Some(Value::String(s)) => s
            .split([',', ';'])
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .enumerate()
            .map(|(i, a)| recipient(&format!("{field}[{i}]"), &Value::String(a.to_string())))
            .collect(),
        Some(_) => Err(bad(format!("{field} must be a list of recipients"))),
    }
}

fn opt_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, Invalid> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{field} must be a string"))),
    }
}

/// The key prefix a connection's attachments by reference must lie under:
/// `{connection_id}/`, so one caller's connection never reads another's files.
pub fn attachment_prefix(connection_id: &str) -> String {
    format!("{connection_id}/")
}

fn attachment(i: usize, v: &Value, bucket: Option<&str>, connection_id: &str) -> Result<Attachment, Invalid> {
    let field = format!("attachments[{i}]");
    let Value::Object(o) = v else {
        return Err(bad(format!("{field} must be an object")));
    };
    if let Some(k) = o
        .keys()
        .find(|k| !["name", "content_type", "content_base64", "s3"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "{field}: unknown field `{k}`; use name, content_type, and content_base64 or s3"
        )));
    }
    let text_of = |key: &str, default: &'static str| o.get(key).and_then(Value::as_str).unwrap_or(default);
    let name = text_of("name", "").trim().to_string();
    if name.is_empty()
        || name.chars().count() > 255
        || name.chars().any(|c| c.is_control() || c == '/' || c == '\\')
        || name == "."
        || name == ".."
    {
        return Err(bad(format!(
            "{field}.name must be a file name of 1 to 255 characters without / or \\"
        )));
    }
    let content_type = text_of("content_type", "application/octet-stream").to_string();
    let mime_ok = content_type.split_once('/').is_some_and(|(t, s)| {
        let tok = |x: &str| {
            !x.is_empty()
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
        };
        tok(t) && tok(s.split(';').next().unwrap_or("").trim())
    }) && content_type.len() <= 255;
    if !mime_ok {
        return Err(bad(format!(
            "{field}.content_type {content_type:?} is not a MIME type (type/subtype)"
        )));
    }
    let source = match (o.get("content_base64"), o.get("s3")) {
        (Some(_), Some(_)) => return Err(bad(format!("{field}: give content_base64 or s3, not both"))),
        (None, None) => {
            return Err(bad(format!(
                "{field}: give the bytes in content_base64, or an s3 reference"
            )));
        }
        (Some(Value::String(b64)), None) => {
            let cleaned: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(cleaned.as_bytes())
                .map_err(|_| bad(format!("{field}.content_base64 is not valid base64")))?;
            if bytes.is_empty() {
                return Err(bad(format!("{field}.content_base64 is empty")));
            }
            Source::Inline(bytes)
        }
        (Some(_), None) => return Err(bad(format!("{field}.content_base64 must be a string"))),
        (None, Some(Value::Object(s3))) => {
            let b = s3.get("bucket").and_then(Value::as_str).unwrap_or("");
            let k = s3.get("key").and_then(Value::as_str).unwrap_or("");
            if b.is_empty() || k.is_empty() || k.len() > 1024 {
                return Err(bad(format!("{field}.s3 needs \"bucket\" and \"key\"")));
            }
            match bucket {
                None => {
                    return Err(bad(format!(
                        "{field}.s3: this deployment has no attachments bucket (RELAY365_ATTACHMENTS_BUCKET); send the bytes in content_base64"
                    )));
                }
                Some(allowed) if allowed != b => {
                    return Err(bad(format!(
                        "{field}.s3.bucket: only the deployment's attachments bucket {allowed} can be read, not {b}"
                    )));
                }
                _ => {}
            }
            let prefix = attachment_prefix(connection_id);
            if !k.starts_with(&prefix) || k.len() == prefix.len() {
                return Err(bad(format!(
                    "{field}.s3.key {k:?} is outside this connection's files: attachments of connection {connection_id} must lie under the key prefix {prefix} of bucket {b}; upload it as {prefix}…"
                )));
            }
            Source::S3 {
                bucket: b.to_string(),
                key: k.to_string(),
            }
        }
        (None, Some(_)) => return Err(bad(format!("{field}.s3 must be an object with bucket and key"))),
    };
    Ok(Attachment {
        name,
        content_type,
        source,
    })
}

/// Parses and checks a JSON request. `header_key` is the `Idempotency-Key` header, if any.
///
/// # Errors
/// [`Invalid`] naming the first problem found.
pub fn parse(v: &Value, bucket: Option<&str>, header_key: Option<&str>) -> Result<SendRequest, Invalid> {
    let Value::Object(obj) = v else {
        return Err(bad("the body must be a JSON object"));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !FIELDS.contains(&k.as_str()) || *k == "body_type")
    {
        return Err(bad(format!(
            "unknown field `{k}`: allowed fields are {}",
            FIELDS[..12].join(", ")
        )));
    }
    let connection_id = opt_str(obj, "connection_id")?
        .ok_or_else(|| bad("connection_id is required"))?
        .to_string();
    relay365::model::connection::validate_id(&connection_id)
        .map_err(|m| bad(format!("connection_id: {m}")))?;
    let from = opt_str(obj, "from")?.map(str::trim).map(str::to_string);
    if let Some(f) = &from
        && !relay365::model::address::is_valid(f)
    {
        return Err(bad(format!("from: {f:?} is not a valid e-mail address")));
    }
    let to = recipients(obj, "to")?;
    let cc = recipients(obj, "cc")?;
    let bcc = recipients(obj, "bcc")?;
    let reply_to = recipients(obj, "reply_to")?;
    let reply_to_message_id = opt_str(obj, "reply_to_message_id")?.map(str::to_string);
    if let Some(id) = &reply_to_message_id
        && (id.is_empty()
            || id.len() > 512
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "=+/_-".contains(c)))
    {
        return Err(bad("reply_to_message_id is not a Graph message id"));
    }
    let count = to.len() + cc.len() + bcc.len();
    if count == 0 && reply_to_message_id.is_none() {
        return Err(bad("to, cc or bcc: name at least one recipient"));
    }
    if count > MAX_RECIPIENTS {
        return Err(bad(format!(
            "{count} recipients: at most {MAX_RECIPIENTS} per message"
        )));
    }
    let subject = opt_str(obj, "subject")?.unwrap_or("").to_string();
    if subject.chars().count() > MAX_SUBJECT || subject.chars().any(|c| c.is_control() && c != '\t') {
        return Err(bad(format!(
            "subject must be one line of at most {MAX_SUBJECT} characters"
        )));
    }
    let body = match obj.get("body") {
        Some(Value::Object(b)) => {
            if let Some(k) = b.keys().find(|k| *k != "text" && *k != "html") {
                return Err(bad(format!(
                    "body: unknown field `{k}`; use {{\"text\": …}} or {{\"html\": …}}"
                )));
            }
            match (b.get("text"), b.get("html")) {
                (Some(_), Some(_)) => return Err(bad("body: give text or html, not both")),
                (Some(Value::String(t)), None) => MailBody::Text(t.clone()),
                (None, Some(Value::String(h))) => MailBody::Html(h.clone()),
                (None, None) => return Err(bad("body: give {\"text\": …} or {\"html\": …}")),
                _ => return Err(bad("body.text or body.html must be a string")),
            }
        }
        None | Some(Value::Null) => return Err(bad("body is required: {\"text\": …} or {\"html\": …}")),
        Some(_) => return Err(bad("body must be an object: {\"text\": …} or {\"html\": …}")),
    };
    let attachments = match obj.get("attachments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() > MAX_ATTACHMENTS => {
            return Err(bad(format!("at most {MAX_ATTACHMENTS} attachments per message")));
        }
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| attachment(i, v, bucket, &connection_id))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("attachments must be a list")),
    };
    let save_to_sent_items = match obj.get("save_to_sent_items") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("save_to_sent_items must be true or false")),
    };
    let body_key = opt_str(obj, "idempotency_key")?;
    let idempotency_key = match (header_key, body_key) {
        (Some(h), Some(b)) if h != b => {
            return Err(bad(
                "the Idempotency-Key header and idempotency_key differ: send one",
            ));
        }
        (h, b) => h.or(b).map(str::to_string),
    };
    if let Some(k) = &idempotency_key
        && (k.is_empty() || k.len() > 255 || k.chars().any(|c| c.is_control()))
    {
        return Err(bad("idempotency_key must be 1 to 255 printable characters"));
    }
    Ok(SendRequest {
        connection_id,
        from,
        to,
        cc,
        bcc,
        reply_to,
        subject,
        body,
        attachments,
        save_to_sent_items,
        reply_to_message_id,
        idempotency_key,
    })
}

/// Turns an Amazon Connect contact flow's `Details.Parameters` (flat strings)
/// into the JSON request: `to`, `cc`, `bcc` comma separated; `body_html` or
/// `body_text`; `save_to_sent_items` as "true"/"false".
///
/// # Errors
/// [`Invalid`] for a parameter that is not a string.
pub fn from_connect(params: &Map<String, Value>) -> Result<Value, Invalid> {
    let mut out = Map::new();
    let mut body = Map::new();
    for (k, v) in params {
        let Value::String(s) = v else {
            return Err(bad(format!("parameter {k} must be a string")));
        };
        match k.as_str() {
            "body_html" => {
                body.insert("html".into(), Value::String(s.clone()));
            }
            "body_text" => {
                body.insert("text".into(), Value::String(s.clone()));
            }
            "save_to_sent_items" => {
                out.insert(k.clone(), Value::Bool(!s.eq_ignore_ascii_case("false")));
            }
            _ => {
                out.insert(k.clone(), Value::String(s.clone()));
            }
        }
    }
    if !body.is_empty() {
        out.insert("body".into(), Value::Object(body));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    //! Request parsing on the JSON callers send and on Amazon Connect's
    //! `ContactFlowEvent` (fixture in `tests/fixtures/connect`).
    use serde_json::json;

    use super::*;

    fn ok(v: Value) -> SendRequest {
        parse(&v, Some("relay365-attachments"), None).unwrap()
    }

    fn refused(v: Value) -> Invalid {
        parse(&v, Some("relay365-attachments"), None).unwrap_err()
    }

    #[test]
    fn a_contact_flow_event_becomes_a_request() {
        let event: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/connect/contact-flow-event.json"
        ))
        .unwrap();
        let params = event["Details"]["Parameters"].as_object().unwrap();
        let req = ok(from_connect(params).unwrap());
        assert_eq!(req.connection_id, "support");
        let to: Vec<&str> = req.to.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(to, ["ann@example.com", "bo@example.com"]);
        assert_eq!(req.subject, "Your case 4411");
        assert!(matches!(req.body, MailBody::Text(ref t) if t.contains("called you back")));
    }

    #[test]
    fn recipients_come_as_strings_or_objects() {
        let req = ok(
            json!({"connection_id": "support", "to": ["ann@example.com", {"name": "Bo", "address": "bo@example.com"}],
                            "subject": "s", "body": {"html": "<p>x</p>"}}),
        );
        assert_eq!(req.to[1].name.as_deref(), Some("Bo"));
        assert!(req.save_to_sent_items, "saved by default");
    }

    #[test]
    fn each_mistake_is_named() {
        for (body, words) in [
            (
                json!({"connection_id": "support", "to": ["x"], "subject": "s", "body": {"text": "t"}}),
                "x",
            ),
            (
                json!({"connection_id": "support", "to": [], "subject": "s", "body": {"text": "t"}}),
                "to",
            ),
            (
                json!({"connection_id": "support", "to": ["a@b.com"], "subject": "s", "body": {"text": "t"}, "bc": []}),
                "bc",
            ),
            (
                json!({"connection_id": "support", "to": ["a@b.com"], "subject": "s", "body": {"rtf": "t"}}),
                "body",
            ),
            (
                json!({"connection_id": "support", "to": ["a@b.com"], "subject": "s", "body": {"text": "t"},
                    "attachments": [{"name": "a", "content_type": "text/plain", "s3": {"bucket": "elsewhere", "key": "support/k"}}]}),
                "bucket",
            ),
        ] {
            let e = refused(body.clone());
            assert_eq!(e.status, 400, "{body}");
            assert!(e.message.contains(words), "{body}: {}", e.message);
        }
    }

    #[test]
    fn attachments_by_reference_stay_under_the_connection_s_prefix() {
        let with_key = |k: &str| {
            json!({"connection_id": "support", "to": ["a@b.com"], "body": {"text": "t"},
                "attachments": [{"name": "a.pdf", "s3": {"bucket": "relay365-attachments", "key": k}}]})
        };
        assert!(
            parse(
                &with_key("support/case/a.pdf"),
                Some("relay365-attachments"),
                None
            )
            .is_ok()
        );
        for k in [
            "billing/a.pdf",
            "supportx/a.pdf",
            "support",
            "support/",
            "/support/a.pdf",
            "a.pdf",
        ] {
            let e = refused(with_key(k));
            assert!(e.message.contains("key prefix support/"), "{k}: {}", e.message);
        }
    }

    #[test]
    fn the_fingerprint_tells_a_retry_from_another_message() {
        let a =
            ok(json!({"connection_id": "support", "to": ["a@b.com"], "subject": "s", "body": {"text": "t"}}));
        let b =
            ok(json!({"connection_id": "support", "to": ["a@b.com"], "subject": "s", "body": {"text": "t"}}));
        let c = ok(
            json!({"connection_id": "support", "to": ["a@b.com"], "subject": "other", "body": {"text": "t"}}),
        );
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
