//! The Graph message a request becomes, and the plan for sending it: one
//! `sendMail` when everything fits in one request, a draft with attachments
//! otherwise.

use base64::Engine;
use serde_json::{Value, json};

use crate::request::{Attachment, MailBody, Recipient, SendRequest, Source};

/// The largest Graph request we build (its practical limit is about 4 MB).
pub const MAX_GRAPH_REQUEST: usize = 3_900_000;
/// Attachments at least this big go through an upload session (Graph: 3 MB).
pub const UPLOAD_SESSION_FROM: u64 = 3 * 1024 * 1024;
/// Upload range size (Graph: at most 4 MB per PUT).
pub const CHUNK: u64 = 4 * 1024 * 1024;

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

pub(crate) fn file_attachment(a: &Attachment, bytes: &[u8]) -> Value {
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

#[cfg(test)]
mod tests {
    //! The Graph body and the plan, from parsed requests.
    use serde_json::json;

    use super::*;
    use crate::request::parse;

    fn req(v: Value) -> SendRequest {
        parse(&v, Some("relay365-attachments"), None).unwrap()
    }

    #[test]
    fn a_small_mail_is_one_send_mail_with_graph_s_shapes() {
        let r = req(
            json!({"connection_id": "support", "from": "help@contoso.com", "to": [{"name": "Bo", "address": "bo@example.com"}],
                           "subject": "Hi", "body": {"html": "<p>x</p>"},
                           "attachments": [{"name": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}]}),
        );
        assert_eq!(plan(&r), Plan::Single);
        let m = graph_message(&r, true, true);
        assert_eq!(
            m["toRecipients"],
            json!([{"emailAddress": {"name": "Bo", "address": "bo@example.com"}}])
        );
        assert_eq!(m["body"], json!({"contentType": "HTML", "content": "<p>x</p>"}));
        assert_eq!(m["from"]["emailAddress"]["address"], "help@contoso.com");
        assert_eq!(
            m["attachments"][0]["@odata.type"],
            "#microsoft.graph.fileAttachment"
        );
        assert_eq!(m["attachments"][0]["contentBytes"], "aGk=");
    }

    #[test]
    fn attachments_by_reference_go_through_a_draft() {
        let r = req(
            json!({"connection_id": "support", "to": ["bo@example.com"], "subject": "Hi", "body": {"text": "x"},
                           "attachments": [{"name": "big.pdf", "content_type": "application/pdf",
                                            "s3": {"bucket": "relay365-attachments", "key": "support/big.pdf"}}]}),
        );
        assert_eq!(plan(&r), Plan::Draft);
        assert!(graph_message(&r, false, false).get("attachments").is_none());
    }
}
