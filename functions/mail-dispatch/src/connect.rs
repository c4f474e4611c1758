//! Delivery to Amazon Connect: a task per new mail for a
//! `connect-task:{instance-id}/{contact-flow-id}` target (`StartTaskContact`,
//! here), an email contact per new mail for a
//! `connect-email:{instance-id}/{contact-flow-id}/{address}` target
//! ([`email`]), and the copy of an agent's reply in the mailbox's Sent Items
//! ([`reply`]).
//!
//! - `Name` is the subject (cut to [`NAME_MAX`] characters; "(no subject)"
//!   when there is none), `Description` the start of the body as text (cut
//!   to [`DESCRIPTION_MAX`]), `References` the mail's `web_link` (URL) and
//!   the relay365 event id (STRING), `Attributes` the sender, the mailbox,
//!   the conversation id and the connection id.
//! - `ClientToken` is the event id with the flow's key: the event id is the
//!   same on every retry of the record and for a duplicate notification, so
//!   Connect answers a repeat with the task it started, never a second one.
//! - The first task of a conversation is remembered per flow in the state
//!   table ([`relay365::aws::store::Store::conversation_contact`]); later
//!   mail of the conversation names it as `RelatedContactId`.
//! - Events that are not new mail (calendar changes, the reauthorization
//!   notice) have no task to become: they are recorded as delivered with a
//!   log line. The admin API refuses calendar subscriptions to such a target.
//!
//! Every refusal follows the dispatch rules: throttling and Connect's own
//! failures pass, and what a person must fix (an instance or flow that does
//! not exist, a request Connect refuses, a missing IAM permission) is
//! retried too, with words that say what to fix, shown as the
//! subscription's `last_delivery_error`; nothing is lost.

use std::collections::HashMap;

use aws_sdk_connect::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_connect::types::{Reference, ReferenceType};
use relay365::aws::store::ConversationContact;
use serde_json::Value;

use crate::destination::{Delivery, Destination, MailSource};
use crate::dispatcher::Dispatcher;

pub mod email;
pub mod reply;
mod staging;

/// The longest task name Connect accepts (`Name`, in characters).
pub const NAME_MAX: usize = 1024;
/// The longest task description Connect accepts (`Description`, in characters).
pub const DESCRIPTION_MAX: usize = 4096;
/// The most UTF-8 bytes Connect accepts across all references of a contact.
pub const REFERENCES_MAX_BYTES: usize = 4096;
/// The longest `ClientToken` Connect accepts.
pub const CLIENT_TOKEN_MAX: usize = 500;
/// How much of an HTML body is read to find the description's text.
const HTML_SCAN_MAX: usize = 256 * 1024;

/// A Graph failure while reading the mail: retried (with a fresh token
/// after a 401, whose cached token went bad before its time).
pub(crate) async fn graph_failed(
    d: &Dispatcher,
    src: MailSource<'_>,
    what: &str,
    e: relay365::microsoft::graph::GraphError,
) -> Delivery {
    if e.status() == Some(401) {
        d.services.tokens.invalidate(&src.conn.id).await;
    }
    Delivery::Retry(format!("Microsoft Graph: {what} could not be read: {e}"))
}

/// True when `event` is new mail. Amazon Connect targets take new mail only;
/// any other event is logged here and recorded as delivered by the caller.
pub(crate) fn is_new_mail(event: &Value, target_kind: &str) -> bool {
    if event["type"].as_str() == Some("mail.received") {
        return true;
    }
    tracing::info!(
        event = %event["id"].as_str().unwrap_or_default(),
        kind = event["type"].as_str().unwrap_or_default(),
        "a {target_kind} target takes new mail only; this event is not sent and is recorded as delivered"
    );
    false
}

/// Starts the task for one event (or records a non-mail event as done).
///
/// # Errors
/// [`Delivery::Retry`] with what to fix or that it passes.
pub(crate) async fn deliver_task(
    d: &Dispatcher,
    to: &Destination,
    instance_id: &str,
    flow_id: &str,
    event: &Value,
) -> Result<(), Delivery> {
    if !is_new_mail(event, "connect-task") {
        return Ok(());
    }
    let event_id = event["id"].as_str().unwrap_or_default();
    let conversation = Conversation::of(d, to, instance_id, event).await?;
    let related = conversation.related.clone();
    let task = TaskFields::of(event);
    let data = contact_data(task.references, task.attributes, "a task reference")?;
    let req = d
        .connect
        .get()
        .await
        .start_task_contact()
        .instance_id(instance_id)
        .contact_flow_id(flow_id)
        .name(task.name)
        .client_token(client_token(event_id, &to.flow))
        .set_description(task.description)
        .set_related_contact_id(related)
        .set_references(data.references)
        .set_attributes(data.attributes);
    match req.send().await {
        Ok(out) => {
            conversation.started(d, out.contact_id(), "task").await;
            Ok(())
        }
        Err(e) => Err(Delivery::Retry(refusal(
            &e,
            "StartTaskContact",
            &format!("connect-task:{instance_id}/{flow_id}"),
            instance_id,
        ))),
    }
}

/// A mail's conversation as a flow's Amazon Connect contacts see it: the
/// contact the flow started first for it, if any.
pub(crate) struct Conversation<'a> {
    connection: &'a str,
    flow: &'a str,
    instance_id: &'a str,
    conversation: &'a str,
    event_id: &'a str,
    earlier: Option<ConversationContact>,
    /// `RelatedContactId` for this mail: the first contact, unless this
    /// mail is the one that started it (a retry of the first mail sends the
    /// same request as its first try, so Connect finds it by its token).
    pub(crate) related: Option<String>,
}

impl<'a> Conversation<'a> {
    /// Reads the conversation's first contact from the state table
    /// (`conn#{id}` / `cx#{flow}#{conversation}`).
    ///
    /// # Errors
    /// [`Delivery::Retry`] when the state table cannot be read.
    pub(crate) async fn of(
        d: &Dispatcher,
        to: &'a Destination,
        instance_id: &'a str,
        event: &'a Value,
    ) -> Result<Self, Delivery> {
        let connection = event["connection_id"].as_str().unwrap_or_default();
        let conversation = event["mail"]["conversation_id"].as_str().unwrap_or_default();
        let event_id = event["id"].as_str().unwrap_or_default();
        let earlier = if conversation.is_empty() {
            None
        } else {
            d.services
                .state
                .conversation_contact(connection, &to.flow, conversation, instance_id)
                .await
                .map_err(|e| Delivery::Retry(e.to_string()))?
        };
        let related = earlier
            .as_ref()
            .filter(|c| c.event_id != event_id)
            .map(|c| c.contact_id.clone());
        Ok(Self {
            connection,
            flow: &to.flow,
            instance_id,
            conversation,
            event_id,
            earlier,
            related,
        })
    }

    /// Logs the contact Amazon Connect started for the event (`what`: a task,
    /// an email contact), and remembers it as the conversation's first
    /// contact when there was none; a failure to remember is logged (later
    /// mail starts unrelated contacts).
    pub(crate) async fn started(&self, d: &Dispatcher, contact_id: Option<&str>, what: &str) {
        let contact_id = contact_id.unwrap_or_default();
        tracing::info!(event = %self.event_id, contact = %contact_id, related = self.related.is_some(), "Amazon Connect {what} started");
        if self.earlier.is_some() || self.conversation.is_empty() || contact_id.is_empty() {
            return;
        }
        let first = ConversationContact {
            contact_id: contact_id.to_string(),
            event_id: self.event_id.to_string(),
        };
        if let Err(e) = d
            .services
            .state
            .remember_conversation_contact(
                self.connection,
                self.flow,
                self.conversation,
                self.instance_id,
                &first,
            )
            .await
        {
            tracing::warn!(event = %self.event_id, error = %e, "contact started, but its conversation could not be remembered");
        }
    }
}

/// `ClientToken`: the event id, and the flow's key, so two flows on the same
/// instance each start their own task for a mail (at most 500 characters).
pub fn client_token(event_id: &str, flow: &str) -> String {
    let token = format!("{event_id}-{flow}");
    if token.chars().count() <= CLIENT_TOKEN_MAX {
        token
    } else {
        relay365::digest::sha256_hex(token.as_bytes())
    }
}

/// What one task carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFields {
    /// `Name`.
    pub name: String,
    /// `Description`, when the body has text.
    pub description: Option<String>,
    /// `References`: name, value, type.
    pub references: Vec<(&'static str, String, ReferenceType)>,
    /// `Attributes` (empty values left out).
    pub attributes: Vec<(&'static str, String)>,
}

impl TaskFields {
    /// The task for a `mail.received` event.
    pub fn of(event: &Value) -> Self {
        let mail = &event["mail"];
        let text = |v: &Value| v.as_str().unwrap_or_default().trim().to_string();
        let subject = text(&mail["subject"]);
        let name = if subject.is_empty() {
            "(no subject)".to_string()
        } else {
            cut(&subject, NAME_MAX)
        };
        let body = &mail["body"];
        let content = body["content"].as_str().unwrap_or_default();
        let description = if body["content_type"].as_str() == Some("html") {
            html_text(content, DESCRIPTION_MAX)
        } else {
            cut(content.trim(), DESCRIPTION_MAX)
        };
        let description = if description.is_empty() {
            Some(cut(&text(&mail["body_preview"]), DESCRIPTION_MAX)).filter(|d| !d.is_empty())
        } else {
            Some(description)
        };
        let event_id = text(&event["id"]);
        let web_link = text(&mail["web_link"]);
        let mut references = Vec::new();
        let used = "relay365_event_id".len() + event_id.len() + "web_link".len();
        // A link too long to fit Connect's 4,096 bytes is left out; the
        // event id finds the mail all the same.
        if !web_link.is_empty() && used + web_link.len() <= REFERENCES_MAX_BYTES {
            references.push(("web_link", web_link, ReferenceType::Url));
        }
        references.push(("relay365_event_id", event_id, ReferenceType::String));
        let attributes = [
            ("sender", text(&mail["from"]["address"])),
            ("mailbox", text(&event["mailbox"])),
            ("conversation_id", text(&mail["conversation_id"])),
            ("connection_id", text(&event["connection_id"])),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, cut(&v, 4096)))
        .collect();
        Self {
            name,
            description,
            references,
            attributes,
        }
    }
}

/// A contact's `References` and `Attributes` as Connect's start-contact
/// requests take them: `None` when there are none, as a request that never
/// set them sends.
pub(crate) struct ContactData {
    /// `References`.
    pub(crate) references: Option<HashMap<String, Reference>>,
    /// `Attributes`.
    pub(crate) attributes: Option<HashMap<String, String>>,
}

/// Builds a contact's `References` and `Attributes` from a task's (tasks and
/// email contacts carry the same ones; email contacts add attributes of their
/// own). `what` names a reference in the error.
///
/// # Errors
/// [`Delivery::Retry`] when a reference cannot be built.
pub(crate) fn contact_data(
    references: Vec<(&'static str, String, ReferenceType)>,
    attributes: impl IntoIterator<Item = (&'static str, String)>,
    what: &str,
) -> Result<ContactData, Delivery> {
    let references = references
        .into_iter()
        .map(|(name, value, kind)| {
            let reference = Reference::builder()
                .value(value)
                .r#type(kind)
                .build()
                .map_err(|e| Delivery::Retry(format!("{what} could not be built: {e}")))?;
            Ok((name.to_string(), reference))
        })
        .collect::<Result<HashMap<_, _>, Delivery>>()?;
    let attributes: HashMap<String, String> =
        attributes.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Ok(ContactData {
        references: (!references.is_empty()).then_some(references),
        attributes: (!attributes.is_empty()).then_some(attributes),
    })
}

/// The first `max` characters of `s` (never splitting a character).
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_string(),
        None => s.to_string(),
    }
}

/// The text of an HTML body, at most `max` characters: tags dropped (block
/// tags become line breaks), `script` and `style` left out, the common
/// entities decoded, runs of blank space made one. Reads at most the first
/// 256 KiB.
pub fn html_text(html: &str, max: usize) -> String {
    let html = &html[..floor_boundary(html, HTML_SCAN_MAX)];
    let mut out = String::new();
    let mut count = 0usize;
    let mut rest = html;
    let mut pending_space: Option<char> = None;
    let push = |out: &mut String, count: &mut usize, pending: &mut Option<char>, c: char| {
        if c.is_whitespace() {
            if !out.is_empty() && *pending != Some('\n') {
                *pending = Some(if c == '\n' { '\n' } else { ' ' });
            }
            return;
        }
        if let Some(p) = pending.take() {
            out.push(p);
            *count += 1;
        }
        out.push(c);
        *count += 1;
    };
    while let Some(c) = rest.chars().next() {
        if count >= max {
            break;
        }
        if c == '<' {
            let Some(end) = rest.find('>') else { break };
            let tag = rest[1..end].trim().to_ascii_lowercase();
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            rest = &rest[end + 1..];
            if (name == "script" || name == "style") && !tag.starts_with('/') {
                let close = format!("</{name}");
                match rest.to_ascii_lowercase().find(&close) {
                    Some(at) => rest = &rest[at..],
                    None => break,
                }
                continue;
            }
            if matches!(
                name.as_str(),
                "p" | "br" | "div" | "li" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "blockquote"
            ) {
                push(&mut out, &mut count, &mut pending_space, '\n');
            }
            continue;
        }
        if c == '&'
            && let Some(end) = rest[..floor_boundary(rest, 10)].find(';')
        {
            let decoded = match &rest[1..end] {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                _ => None,
            };
            if let Some(ch) = decoded {
                push(&mut out, &mut count, &mut pending_space, ch);
                rest = &rest[end + 1..];
                continue;
            }
        }
        push(&mut out, &mut count, &mut pending_space, c);
        rest = &rest[c.len_utf8()..];
    }
    cut(&out, max)
}

/// The largest char boundary of `s` at or below `at`.
fn floor_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// What a refused call to Connect means, for a person: the record is
/// retried in every case, and these words are the subscription's
/// `last_delivery_error`.
pub(crate) fn refusal<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_sdk_connect::config::http::HttpResponse>,
    operation: &str,
    target: &str,
    instance_id: &str,
) -> String {
    let Some(service) = e.as_service_error() else {
        return match e {
            SdkError::TimeoutError(_) => "Amazon Connect did not answer in time".into(),
            _ => "Amazon Connect unreachable".into(),
        };
    };
    let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
    let code = service.code().unwrap_or("an error");
    let message = service.message().unwrap_or_default();
    explain_for(operation, code, status, message, target, instance_id)
}

/// The words for a Connect error `code` (with its HTTP `status` and message)
/// to `StartTaskContact`.
pub fn explain(code: &str, status: u16, message: &str, target: &str, instance_id: &str) -> String {
    explain_for("StartTaskContact", code, status, message, target, instance_id)
}

/// The words for a Connect error `code` (with its HTTP `status` and message)
/// to `operation`, for the subscription's `last_delivery_error`.
pub fn explain_for(
    operation: &str,
    code: &str,
    status: u16,
    message: &str,
    target: &str,
    instance_id: &str,
) -> String {
    let what = if operation == "StartEmailContact" {
        "the email contact"
    } else {
        "the task"
    };
    match code {
        "ThrottlingException" => format!("Amazon Connect throttled {operation}; retrying"),
        "InternalServiceException" => format!("Amazon Connect failed ({status}); retrying"),
        "ResourceNotFoundException" if operation == "StartEmailContact" => format!(
            "Amazon Connect: {message}: check the target {target}: the instance id and the contact flow id must be those of an existing instance and a published flow (the last parts of their ARNs), and the email address one of the instance's"
        ),
        "ResourceNotFoundException" => format!(
            "Amazon Connect: {message}: check the target {target}: the instance id and the contact flow id must be those of an existing instance and a published flow (the last parts of their ARNs)"
        ),
        "InvalidParameterException" | "InvalidRequestException" => {
            format!("Amazon Connect refused {what} for {target} ({code}): {message}")
        }
        "AccessDeniedException" => format!(
            "Amazon Connect denied {operation} for {target}: mail-dispatch's role needs connect:{operation} on instance {instance_id}; deploy with the template parameter ConnectInstanceId={instance_id}"
        ),
        "ServiceQuotaExceededException" => {
            format!("Amazon Connect's quota for contacts is reached ({message}); retrying")
        }
        other => format!("Amazon Connect answered {status} {other}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(subject: &str, body: Value) -> Value {
        json!({
            "id": "evt_0123",
            "type": "mail.received",
            "connection_id": "support",
            "mailbox": "support@contoso.com",
            "mail": {
                "subject": subject,
                "conversation_id": "AAQk=",
                "from": {"name": "Bo", "address": "bo@example.com"},
                "body": body,
                "body_preview": "preview",
                "web_link": "https://outlook.office365.com/owa/?ItemID=AAMk",
            }
        })
    }

    #[test]
    fn a_mail_becomes_a_task_with_its_subject_body_links_and_sender() {
        let t = TaskFields::of(&event(
            "Order 4411",
            json!({"content_type": "html", "content": "<html><style>p{x:y}</style><p>Hello&nbsp;there &amp; bye</p><p>Line 2</p><script>evil()</script></html>"}),
        ));
        assert_eq!(t.name, "Order 4411");
        assert_eq!(t.description.as_deref(), Some("Hello there & bye\nLine 2"));
        assert_eq!(
            t.references,
            vec![
                (
                    "web_link",
                    "https://outlook.office365.com/owa/?ItemID=AAMk".to_string(),
                    ReferenceType::Url
                ),
                ("relay365_event_id", "evt_0123".to_string(), ReferenceType::String),
            ]
        );
        assert_eq!(
            t.attributes,
            vec![
                ("sender", "bo@example.com".to_string()),
                ("mailbox", "support@contoso.com".to_string()),
                ("conversation_id", "AAQk=".to_string()),
                ("connection_id", "support".to_string()),
            ]
        );
    }

    #[test]
    fn names_and_descriptions_are_cut_on_character_boundaries() {
        let t = TaskFields::of(&event(
            &"é".repeat(2000),
            json!({"content_type": "text", "content": "ü".repeat(9000)}),
        ));
        assert_eq!(t.name.chars().count(), NAME_MAX);
        assert_eq!(t.description.unwrap().chars().count(), DESCRIPTION_MAX);
        let t = TaskFields::of(&event("  ", json!({"content_type": "text", "content": ""})));
        assert_eq!(t.name, "(no subject)");
        assert_eq!(t.description.as_deref(), Some("preview"));
        let big = format!("<p>{}</p>", "word ".repeat(100_000));
        assert_eq!(html_text(&big, DESCRIPTION_MAX).chars().count(), DESCRIPTION_MAX);
        assert_eq!(cut("abc", 5), "abc");
    }

    #[test]
    fn client_tokens_are_stable_per_event_and_flow_and_within_connect_s_limit() {
        assert_eq!(client_token("evt_1", "f1"), client_token("evt_1", "f1"));
        assert_ne!(client_token("evt_1", "f1"), client_token("evt_1", "f2"));
        assert_ne!(client_token("evt_1", "f1"), client_token("evt_2", "f1"));
        assert!(client_token("evt_1", &"k".repeat(600)).len() <= CLIENT_TOKEN_MAX);
    }

    #[test]
    fn every_refusal_says_what_to_fix() {
        let t = "connect-task:i/f";
        assert!(
            explain(
                "ResourceNotFoundException",
                404,
                "Contact flow f not found",
                t,
                "i"
            )
            .contains(t)
        );
        assert!(explain("AccessDeniedException", 403, "", t, "i").contains("connect:StartTaskContact"));
        assert!(explain("InvalidParameterException", 400, "name too long", t, "i").contains("name too long"));
        assert!(explain("ThrottlingException", 429, "", t, "i").contains("throttled"));
    }
}
