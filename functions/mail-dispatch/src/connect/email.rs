//! Delivery to an Amazon Connect email target
//! (`connect-email:{instance-id}/{contact-flow-id}/{address}`): each new mail
//! becomes one email contact through `StartEmailContact`.
//!
//! - `FromEmailAddress` is the mail's sender, `DestinationEmailAddress` the
//!   target's address (an email address of the instance), and
//!   `AdditionalRecipients` the mail's other To and Cc addresses, at most
//!   [`ADDITIONAL_RECIPIENTS_MAX`] (Connect's 50 recipients in all).
//! - `RawMessage` is the subject (cut to [`SUBJECT_MAX`]), the body as Graph
//!   gave it (`text/html` or `text/plain`) and the threading headers
//!   `MESSAGE_ID`, `IN_REPLY_TO` and `REFERENCES`, from the message's
//!   `internetMessageId` and `internetMessageHeaders`.
//! - Attachments that fit Connect's limits (at most [`ATTACHMENTS_MAX`],
//!   [`ATTACHMENT_BYTES_MAX`] bytes each, one of the
//!   [`ATTACHMENT_EXTENSIONS`]) are copied from Graph into the attachments
//!   bucket under `connect/{connection}/{event id}/` and passed as presigned
//!   GET URLs; the others are named in the contact's `Description` with the
//!   reason, and the mail's `web_link` (also a reference) opens them.
//! - `ClientToken`, `RelatedContactId`, `References` and `Attributes` are
//!   those of a task ([`super::deliver_task`]), plus the `subject` attribute
//!   the reply path reads.
//!
//! A retry of the same event sends the same request: the staged objects are
//! kept, and their URLs are signed as of the object's `Last-Modified`, so
//! Connect recognises its `ClientToken` (which attachments fit, and their
//! staging with [`STAGED_FRESH`] and [`PRESIGN_VALIDITY`], are in
//! `connect/staging.rs`). A retry whose URLs differ (restaged, or signed
//! with rotated credentials) gets `IdempotencyException` from Connect, which
//! means the earlier try started the contact: the event counts as delivered.

use aws_sdk_connect::error::ProvideErrorMetadata;
use aws_sdk_connect::types::{
    EmailAddressInfo, EmailHeaderType, InboundAdditionalRecipients, InboundEmailContent,
    InboundMessageSourceType, InboundRawMessage,
};
use serde_json::Value;

use super::staging::stage_attachments;
pub use super::staging::{
    ATTACHMENT_BYTES_MAX, ATTACHMENT_EXTENSIONS, ATTACHMENTS_MAX, AttachmentPlan, Listed, PRESIGN_VALIDITY,
    STAGED_FRESH, extension_allowed, plan_attachments,
};
use super::{Conversation, TaskFields, client_token, contact_data, cut, graph_failed, refusal};
use crate::destination::{Delivery, Destination, MailSource};
use crate::dispatcher::Dispatcher;

/// To and Cc addresses besides the destination (50 recipients in all).
pub const ADDITIONAL_RECIPIENTS_MAX: usize = 49;
/// The longest subject (`InboundRawMessage.Subject`).
pub const SUBJECT_MAX: usize = 998;
/// The longest body (`InboundRawMessage.Body`, characters).
pub const BODY_MAX: usize = 5_242_880;
/// The longest value of a threading header.
pub const HEADER_VALUE_MAX: usize = 20_000;
/// The longest email address Connect takes.
const ADDRESS_MAX: usize = 255;

/// A `connect-email:` target.
#[derive(Debug, Clone, Copy)]
pub struct EmailTarget<'a> {
    /// The instance id.
    pub instance_id: &'a str,
    /// The inbound contact flow id.
    pub flow_id: &'a str,
    /// The instance's email address (`DestinationEmailAddress`).
    pub address: &'a str,
}

impl EmailTarget<'_> {
    fn form(&self) -> String {
        format!(
            "connect-email:{}/{}/{}",
            self.instance_id, self.flow_id, self.address
        )
    }
}

/// The threading headers of a mail: `MESSAGE_ID` (its `internetMessageId`,
/// else its `Message-ID` header), `IN_REPLY_TO` and `REFERENCES`, each
/// when present and cut to [`HEADER_VALUE_MAX`] (`References` keeps its
/// last, most recent ids).
pub fn threading_headers(internet_message_id: &str, headers: &[Value]) -> Vec<(EmailHeaderType, String)> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .and_then(|h| h["value"].as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let message_id = Some(internet_message_id.trim().to_string())
        .filter(|v| !v.is_empty())
        .or_else(|| header("Message-ID"));
    let mut out = Vec::new();
    if let Some(v) = message_id {
        out.push((EmailHeaderType::MessageId, cut(&v, HEADER_VALUE_MAX)));
    }
    if let Some(v) = header("In-Reply-To") {
        out.push((EmailHeaderType::InReplyTo, cut(&v, HEADER_VALUE_MAX)));
    }
    if let Some(v) = header("References") {
        out.push((EmailHeaderType::References, last_references(&v)));
    }
    out
}

/// The last ids of a `References` header that fit [`HEADER_VALUE_MAX`].
fn last_references(v: &str) -> String {
    if v.chars().count() <= HEADER_VALUE_MAX {
        return v.to_string();
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut len = 0;
    for id in v.split_whitespace().rev() {
        let add = id.chars().count() + usize::from(!kept.is_empty());
        if len + add > HEADER_VALUE_MAX {
            break;
        }
        len += add;
        kept.push(id);
    }
    kept.reverse();
    kept.join(" ")
}

/// An address Connect takes (its pattern `[^\s@]+@[^\s@]+\.[^\s@]+`, at most 255).
fn valid_address(a: &str) -> bool {
    let part = |p: &str| !p.is_empty() && !p.chars().any(|c| c.is_whitespace() || c == '@');
    a.chars().count() <= ADDRESS_MAX
        && a.split_once('@').is_some_and(|(local, domain)| {
            part(local)
                && domain
                    .rsplit_once('.')
                    .is_some_and(|(host, tld)| part(host) && part(tld))
        })
}

/// A person of the event as Connect's `EmailAddressInfo`.
fn address_info(p: &Value) -> Option<EmailAddressInfo> {
    let address = p["address"].as_str().unwrap_or_default().trim();
    if !valid_address(address) {
        return None;
    }
    let name = p["name"].as_str().unwrap_or_default().trim();
    EmailAddressInfo::builder()
        .email_address(address)
        .set_display_name((!name.is_empty()).then(|| cut(name, 256)))
        .build()
        .ok()
}

/// The mail's To and Cc but the destination, within the limit; and how many
/// were left out.
fn additional_recipients(mail: &Value, destination: &str) -> (Option<InboundAdditionalRecipients>, usize) {
    let mut room = ADDITIONAL_RECIPIENTS_MAX;
    let mut left = 0usize;
    let mut seen: Vec<String> = vec![destination.to_ascii_lowercase()];
    let mut pick = |list: &Value| -> Vec<EmailAddressInfo> {
        let mut out = Vec::new();
        for p in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(info) = address_info(p) else {
                continue;
            };
            let key = info.email_address().to_ascii_lowercase();
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            if room == 0 {
                left += 1;
                continue;
            }
            room -= 1;
            out.push(info);
        }
        out
    };
    let to = pick(&mail["to"]);
    let cc = pick(&mail["cc"]);
    if to.is_empty() && cc.is_empty() {
        return (None, left);
    }
    let recipients = InboundAdditionalRecipients::builder()
        .set_to_addresses((!to.is_empty()).then_some(to))
        .set_cc_addresses((!cc.is_empty()).then_some(cc))
        .build();
    (Some(recipients), left)
}

/// The contact's `Description`: what did not reach Connect, and where it is.
fn description(left_out: &[(String, String)], more_recipients: usize, web_link: &str) -> Option<String> {
    if left_out.is_empty() && more_recipients == 0 {
        return None;
    }
    let mut text = String::new();
    if !left_out.is_empty() {
        text.push_str("Attachments not passed to Amazon Connect:\n");
        for (name, why) in left_out {
            text.push_str(&format!("- {name} ({why})\n"));
        }
    }
    if more_recipients > 0 {
        text.push_str(&format!(
            "{more_recipients} more recipients are not listed (Amazon Connect takes 50).\n"
        ));
    }
    if !web_link.is_empty() {
        text.push_str(&format!("Open the mail in Outlook: {web_link}"));
    }
    Some(cut(text.trim_end(), super::DESCRIPTION_MAX))
}

/// Starts the email contact for one event (or records a non-mail event as done).
///
/// # Errors
/// [`Delivery::Retry`] with what to fix or that it passes.
pub(crate) async fn deliver_email(
    d: &Dispatcher,
    to: &Destination,
    target: &EmailTarget<'_>,
    event: &Value,
    source: Option<MailSource<'_>>,
) -> Result<(), Delivery> {
    if !super::is_new_mail(event, "connect-email") {
        return Ok(());
    }
    let event_id = event["id"].as_str().unwrap_or_default();
    let mail = &event["mail"];
    let Some(from) = address_info(&mail["from"]) else {
        return Err(Delivery::Retry(format!(
            "the mail has no sender address Amazon Connect takes; it cannot become an email contact at {}",
            target.form()
        )));
    };
    let conversation = Conversation::of(d, to, target.instance_id, event).await?;
    let related = conversation.related.clone();
    let (headers, listed) = match source {
        Some(src) => read_extras(d, src, mail).await?,
        None => (Vec::new(), Vec::new()),
    };
    let threading = threading_headers(mail["internet_message_id"].as_str().unwrap_or_default(), &headers);
    let mut plan = plan_attachments(&listed);
    let attachments = stage_attachments(d, source, event, &mut plan).await?;
    let (recipients, more) = additional_recipients(mail, target.address);
    let web_link = mail["web_link"].as_str().unwrap_or_default();
    let task = TaskFields::of(event);
    let subject = cut(mail["subject"].as_str().unwrap_or_default().trim(), SUBJECT_MAX);
    let message = message(mail, &subject, threading)?;
    // Email contacts take URL, NUMBER, STRING and DATE references, so a
    // task's go as they are; the reply path reads the `subject` attribute.
    let subject_attribute = (!subject.is_empty()).then_some(("subject", subject));
    let data = contact_data(
        task.references,
        task.attributes.into_iter().chain(subject_attribute),
        "a reference",
    )?;
    let req = d
        .connect
        .get()
        .await
        .start_email_contact()
        .instance_id(target.instance_id)
        .contact_flow_id(target.flow_id)
        .destination_email_address(target.address)
        .from_email_address(from)
        .email_message(message)
        .name(task.name)
        .client_token(client_token(event_id, &to.flow))
        .set_description(description(&plan.left_out, more, web_link))
        .set_additional_recipients(recipients)
        .set_related_contact_id(related)
        .set_attachments((!attachments.is_empty()).then_some(attachments))
        .set_references(data.references)
        .set_attributes(data.attributes);
    if !plan.left_out.is_empty() {
        tracing::info!(event = %event_id, left_out = plan.left_out.len(), "attachments Amazon Connect does not take are named in the contact's description");
    }
    match req.send().await {
        Ok(out) => {
            conversation.started(d, out.contact_id(), "email contact").await;
            Ok(())
        }
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("IdempotencyException") => {
            // Only an earlier try of this event used its token: its contact
            // exists, with presigned URLs signed in an earlier window.
            tracing::info!(event = %event_id, "Amazon Connect had started this email contact on an earlier try");
            Ok(())
        }
        Err(e) => Err(Delivery::Retry(refusal(
            &e,
            "StartEmailContact",
            &target.form(),
            target.instance_id,
        ))),
    }
}

/// The contact's `RawMessage`: the subject, the body as Graph gave it
/// (the preview, or "(no text)", when it is empty) and the threading headers.
///
/// # Errors
/// [`Delivery::Retry`] when the message cannot be built.
fn message(
    mail: &Value,
    subject: &str,
    threading: Vec<(EmailHeaderType, String)>,
) -> Result<InboundEmailContent, Delivery> {
    let body = &mail["body"];
    let content = body["content"].as_str().unwrap_or_default();
    let (content, content_type) = if content.trim().is_empty() {
        let preview = mail["body_preview"].as_str().unwrap_or_default().trim();
        (
            if preview.is_empty() { "(no text)" } else { preview }.to_string(),
            "text/plain",
        )
    } else if body["content_type"].as_str() == Some("html") {
        (cut(content, BODY_MAX), "text/html")
    } else {
        (cut(content, BODY_MAX), "text/plain")
    };
    let mut raw = InboundRawMessage::builder()
        .subject(subject)
        .body(content)
        .content_type(content_type);
    for (kind, value) in threading {
        raw = raw.headers(kind, value);
    }
    let raw = raw
        .build()
        .map_err(|e| Delivery::Retry(format!("the email message could not be built: {e}")))?;
    InboundEmailContent::builder()
        .message_source_type(InboundMessageSourceType::Raw)
        .raw_message(raw)
        .build()
        .map_err(|e| Delivery::Retry(format!("the email message could not be built: {e}")))
}

/// The mail's `internetMessageHeaders` and its attachments as Graph lists
/// them (only when it has any).
async fn read_extras(
    d: &Dispatcher,
    src: MailSource<'_>,
    mail: &Value,
) -> Result<(Vec<Value>, Vec<Listed>), Delivery> {
    let graph = &d.services.graph;
    let headers = match graph
        .get_json::<Value>(&format!("{}?$select=internetMessageHeaders", src.base), src.token)
        .await
    {
        Ok(v) => v["internetMessageHeaders"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        // Deleted since: the contact is started from what the event holds.
        Err(e) if e.status() == Some(404) => Vec::new(),
        Err(e) => return Err(graph_failed(d, src, "the mail's headers", e).await),
    };
    if mail["has_attachments"].as_bool() != Some(true) {
        return Ok((headers, Vec::new()));
    }
    let listed = match graph
        .get_json::<Value>(
            &format!("{}/attachments?$select=id,name,contentType,size", src.base),
            src.token,
        )
        .await
    {
        Ok(v) => v["value"].as_array().cloned().unwrap_or_default(),
        Err(e) if e.status() == Some(404) => Vec::new(),
        Err(e) => return Err(graph_failed(d, src, "the mail's attachments", e).await),
    };
    let listed = listed
        .iter()
        .map(|a| Listed {
            id: a["id"].as_str().unwrap_or_default().to_string(),
            name: a["name"].as_str().unwrap_or_default().to_string(),
            size: a["size"].as_u64().unwrap_or(0),
            is_file: a["@odata.type"].as_str() == Some("#microsoft.graph.fileAttachment"),
        })
        .filter(|a| !a.id.is_empty())
        .collect();
    Ok((headers, listed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn threading_headers_come_from_graph_s_headers() {
        let headers = vec![
            json!({"name": "Message-ID", "value": "<m2@example.com>"}),
            json!({"name": "in-reply-to", "value": "<m1@example.com>"}),
            json!({"name": "References", "value": "<m0@example.com> <m1@example.com>"}),
        ];
        let h = threading_headers("<m2@example.com>", &headers);
        assert_eq!(
            h,
            vec![
                (EmailHeaderType::MessageId, "<m2@example.com>".to_string()),
                (EmailHeaderType::InReplyTo, "<m1@example.com>".to_string()),
                (
                    EmailHeaderType::References,
                    "<m0@example.com> <m1@example.com>".to_string()
                ),
            ]
        );
        assert_eq!(
            threading_headers("", &headers[..1]),
            vec![(EmailHeaderType::MessageId, "<m2@example.com>".to_string())]
        );
        let long: Vec<String> = (0..2000).map(|i| format!("<id{i:05}@example.com>")).collect();
        let kept = last_references(&long.join(" "));
        assert!(kept.chars().count() <= HEADER_VALUE_MAX);
        assert!(kept.ends_with("<id01999@example.com>"));
        assert!(kept.starts_with('<'));
    }

    #[test]
    fn recipients_leave_out_the_destination_and_stop_at_49() {
        let mail = json!({
            "to": (0..40).map(|i| json!({"name": "", "address": format!("to{i}@example.com")}))
                .chain([json!({"name": "Support", "address": "Support@Contoso.com"})]).collect::<Vec<_>>(),
            "cc": (0..20).map(|i| json!({"name": "C", "address": format!("cc{i}@example.com")}))
                .chain([json!({"name": "bad", "address": "not an address"})]).collect::<Vec<_>>(),
        });
        let (r, more) = additional_recipients(&mail, "support@contoso.com");
        let r = r.unwrap();
        assert_eq!(r.to_addresses().len(), 40);
        assert_eq!(r.cc_addresses().len(), 9);
        assert_eq!(more, 11);
        let d = description(&[("a.exe".into(), "a file type".into())], more, "https://x/y").unwrap();
        assert!(d.contains("- a.exe (a file type)"), "{d}");
        assert!(d.contains("11 more recipients"), "{d}");
        assert!(d.ends_with("https://x/y"), "{d}");
        assert_eq!(description(&[], 0, "https://x"), None);
    }
}
