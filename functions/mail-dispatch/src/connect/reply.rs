//! The agent's reply to a `connect-email:` contact, filed in the Microsoft
//! 365 mailbox's Sent Items (docs/amazon-connect.md, "The design").
//!
//! Amazon Connect sends the reply itself, through SES, from the mailbox's
//! address (an email address of the instance); the mailbox never sees it.
//! An EventBridge rule hands mail-dispatch Connect's contact events for
//! email replies (`channel` `EMAIL`, `initiationMethod` `AGENT_REPLY`), and
//! [`file_reply`] makes the copy:
//!
//! 1. the reply is taken once it has left (`eventType` `DISCONNECTED` or
//!    `COMPLETED`; other events of the reply are not acted on);
//! 2. the inbound contact it answers (`relatedContactId`, else
//!    `previousContactId`, else `initialContactId`) names the connection,
//!    the customer and the subject in the attributes relay365 gave it
//!    (`GetContactAttributes`); a contact relay365 did not start is ignored;
//! 3. the reply's text is read from its `EMAIL_MESSAGE` reference
//!    (`ListContactReferences`, `GetAttachedFile`, then the file's presigned
//!    URL);
//! 4. the copy is created in Sent Items (`POST
//!    {mailbox}/mailFolders/sentitems/messages`, JSON) with
//!    `PidTagMessageFlags` = 1 (read, not unsent), so it is an ordinary sent
//!    item and not a draft, and a named property holding the reply's
//!    contact id.
//!
//! Exactly once: the ledger (`conn#{id}` / `dlv#reply#{contact id}`) is
//! checked first and written last, and before creating the copy Sent Items
//! is searched for the property, so a repeated event, a retry after a lost
//! answer or a crash before the ledger entry finds the copy instead of
//! making a second one.

use aws_sdk_connect::types::{ReferenceSummary, ReferenceType};
use relay365::Sensitive;
use relay365::aws::store::StoreError;
use relay365::microsoft::graph::GraphError;
use relay365::microsoft::paths;
use relay365::microsoft::tokens::TokenError;
use relay365::model::connection::Connection;
use serde_json::{Value, json};

use crate::dispatcher::Dispatcher;

/// The named property that holds, on a copy in Sent Items, the Connect
/// contact id of the reply it copies.
pub const REPLY_PROPERTY: &str = "String {3f1f6a52-5f0e-4f1a-9a3b-6c1e0d2b7a41} Name relay365-connect-reply";

/// `PidTagMessageFlags`: given at creation, it makes the copy an ordinary
/// item rather than a draft.
pub const MESSAGE_FLAGS_PROPERTY: &str = "Integer 0x0E07";

/// `MSGFLAG_READ`: the value of [`MESSAGE_FLAGS_PROPERTY`] for a sent item
/// (read, and without `MSGFLAG_UNSENT`).
pub const MSGFLAG_READ: i64 = 0x1;

/// The most of the reply's text that is filed (Graph takes requests up to
/// 4 MB; the JSON around it and its escaping need the rest).
pub const REPLY_BYTES_MAX: usize = 3 * 1024 * 1024;

/// What became of a contact event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filed {
    /// The copy was created in Sent Items.
    Filed {
        /// The connection whose mailbox holds it.
        connection: String,
        /// The reply's contact id.
        contact_id: String,
    },
    /// The copy was there already (a repeated event, or a retry).
    AlreadyFiled,
    /// Nothing to do, and why (not an agent's email reply, not sent yet,
    /// not a contact relay365 started, a connection that is gone).
    Ignored(&'static str),
}

/// Why a reply could not be filed now; EventBridge's retries of the
/// invocation bring the event back.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// Connect refused or failed a call.
    #[error("Amazon Connect {operation}: {message}")]
    Connect {
        /// The operation.
        operation: &'static str,
        /// Connect's words.
        message: String,
    },
    /// The reply's stored message could not be read.
    #[error("the reply's message could not be read: {0}")]
    Message(String),
    /// The state table failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No Graph token for the connection.
    #[error("no Microsoft Graph token for the connection: {0}")]
    Token(#[from] TokenError),
    /// Graph refused or failed.
    #[error("Microsoft Graph: {0}")]
    Graph(#[from] GraphError),
}

fn connect_error<E: aws_sdk_connect::error::ProvideErrorMetadata>(
    operation: &'static str,
    e: &aws_sdk_connect::error::SdkError<E, aws_sdk_connect::config::http::HttpResponse>,
) -> ReplyError {
    let message = match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("an error"),
            s.message().unwrap_or_default()
        ),
        None => "unreachable or no answer in time".to_string(),
    };
    ReplyError::Connect { operation, message }
}

/// The reply contact an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyEvent {
    /// The instance's ARN.
    pub instance_arn: String,
    /// The instance id (the last part of its ARN).
    pub instance_id: String,
    /// The reply's contact id.
    pub contact_id: String,
    /// The inbound contact it answers.
    pub inbound_contact_id: String,
}

/// Reads an EventBridge event: `Ok` for an agent's email reply that has
/// left, else why it is not one.
pub fn reply_event(event: &Value) -> Result<ReplyEvent, &'static str> {
    if event["source"].as_str() != Some("aws.connect")
        || event["detail-type"].as_str() != Some("Amazon Connect Contact Event")
    {
        return Err("not an Amazon Connect contact event");
    }
    let detail = &event["detail"];
    if detail["channel"].as_str() != Some("EMAIL")
        || detail["initiationMethod"].as_str() != Some("AGENT_REPLY")
    {
        return Err("not an agent's email reply");
    }
    if !matches!(detail["eventType"].as_str(), Some("DISCONNECTED" | "COMPLETED")) {
        return Err("the reply has not left yet");
    }
    let text = |k: &str| detail[k].as_str().unwrap_or_default().to_string();
    let instance_arn = text("instanceArn");
    let contact_id = text("contactId");
    let instance_id = instance_arn
        .rsplit_once("instance/")
        .map(|(_, id)| id.to_string())
        .unwrap_or_default();
    let inbound_contact_id = ["relatedContactId", "previousContactId", "initialContactId"]
        .iter()
        .map(|k| text(k))
        .find(|id| !id.is_empty() && *id != contact_id)
        .unwrap_or_default();
    if instance_id.is_empty() || contact_id.is_empty() || inbound_contact_id.is_empty() {
        return Err("the event names no instance, reply or inbound contact");
    }
    Ok(ReplyEvent {
        instance_arn,
        instance_id,
        contact_id,
        inbound_contact_id,
    })
}

/// Files the copy of the agent's reply an event is about, once.
///
/// # Errors
/// [`ReplyError`]: the event is to be retried.
pub async fn file_reply(d: &Dispatcher, event: &Value) -> Result<Filed, ReplyError> {
    let reply = match reply_event(event) {
        Ok(r) => r,
        Err(why) => return Ok(Filed::Ignored(why)),
    };
    let connect = d.connect.get().await;
    let attributes = connect
        .get_contact_attributes()
        .instance_id(&reply.instance_id)
        .initial_contact_id(&reply.inbound_contact_id)
        .send()
        .await
        .map_err(|e| connect_error("GetContactAttributes", &e))?;
    let attrs = attributes.attributes().cloned().unwrap_or_default();
    let attr = |k: &str| attrs.get(k).map(String::as_str).unwrap_or_default();
    let connection_id = attr("connection_id");
    if connection_id.is_empty() {
        return Ok(Filed::Ignored("the contact was not started by relay365"));
    }
    let Some(conn) = d.services.state.connection(connection_id).await? else {
        return Ok(Filed::Ignored("the connection is gone"));
    };
    let ledger = format!("reply#{}", reply.contact_id);
    if d.services.state.is_delivered(&conn.id, &ledger).await? {
        return Ok(Filed::AlreadyFiled);
    }
    let token = d.services.tokens.access_token(&conn).await?;
    let owner = paths::owner(&conn);
    let found: Value = d
        .services
        .graph
        .get_json(&lookup_path(&owner, &reply.contact_id), &token)
        .await?;
    if found["value"].as_array().is_some_and(|v| !v.is_empty()) {
        d.services
            .state
            .mark_delivered(&conn.id, &ledger, &reply.contact_id)
            .await?;
        return Ok(Filed::AlreadyFiled);
    }
    let (text, html) = read_message(d, &reply).await?;
    let copy = sent_copy(attr("sender"), attr("subject"), &text, html, &reply.contact_id);
    create(d, &conn, &token, &owner, &copy).await?;
    if let Err(e) = d
        .services
        .state
        .mark_delivered(&conn.id, &ledger, &reply.contact_id)
        .await
    {
        // The copy is there and carries the property: a repeat finds it.
        tracing::warn!(connection = %conn.id, error = %e, "reply filed, but the ledger could not record it");
    }
    tracing::info!(connection = %conn.id, contact = %reply.contact_id, "agent reply filed in Sent Items");
    Ok(Filed::Filed {
        connection: conn.id.clone(),
        contact_id: reply.contact_id,
    })
}

/// The path that finds a copy of the reply `contact_id` in Sent Items.
pub fn lookup_path(owner: &str, contact_id: &str) -> String {
    let value = contact_id.replace('\'', "''");
    let filter = format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq '{REPLY_PROPERTY}' and ep/value eq '{value}')"
    );
    let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!("{owner}/mailFolders/sentitems/messages?$filter={encoded}&$select=id&$top=1")
}

/// The message Graph is given for the copy: to the customer, the subject
/// as a reply's (`RE: ` unless it has one), the reply's text, read, not a
/// draft, marked with the reply's contact id.
pub fn sent_copy(customer: &str, subject: &str, text: &str, html: bool, contact_id: &str) -> Value {
    let subject = subject.trim();
    let subject = if subject.to_ascii_lowercase().starts_with("re:") {
        subject.to_string()
    } else {
        format!("RE: {subject}")
    };
    let mut message = json!({
        "subject": subject,
        "body": {"contentType": if html { "HTML" } else { "Text" }, "content": text},
        "isRead": true,
        "singleValueExtendedProperties": [
            {"id": MESSAGE_FLAGS_PROPERTY, "value": MSGFLAG_READ.to_string()},
            {"id": REPLY_PROPERTY, "value": contact_id},
        ],
    });
    if !customer.is_empty() {
        message["toRecipients"] = json!([{"emailAddress": {"address": customer}}]);
    }
    message
}

/// Creates the copy in Sent Items.
async fn create(
    d: &Dispatcher,
    conn: &Connection,
    token: &Sensitive,
    owner: &str,
    copy: &Value,
) -> Result<(), ReplyError> {
    let path = format!("{owner}/mailFolders/sentitems/messages");
    match d
        .services
        .graph
        .send(reqwest::Method::POST, &path, token, Some(copy), &[])
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(401) => {
            d.services.tokens.invalidate(&conn.id).await;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The reply's text as Connect stored it (its `EMAIL_MESSAGE` file), and
/// whether it is HTML.
async fn read_message(d: &Dispatcher, reply: &ReplyEvent) -> Result<(String, bool), ReplyError> {
    let connect = d.connect.get().await;
    let refs = connect
        .list_contact_references()
        .instance_id(&reply.instance_id)
        .contact_id(&reply.contact_id)
        .reference_types(ReferenceType::EmailMessage)
        .send()
        .await
        .map_err(|e| connect_error("ListContactReferences", &e))?;
    let Some(arn) = refs.reference_summary_list().iter().find_map(|r| match r {
        ReferenceSummary::EmailMessage(m) => m.arn().map(str::to_string),
        _ => None,
    }) else {
        return Err(ReplyError::Message(
            "the reply has no EMAIL_MESSAGE reference yet".into(),
        ));
    };
    let file_id = arn.rsplit('/').next().unwrap_or_default();
    let file = connect
        .get_attached_file()
        .instance_id(&reply.instance_id)
        .file_id(file_id)
        .associated_resource_arn(format!("{}/contact/{}", reply.instance_arn, reply.contact_id))
        .url_expiry_in_seconds(300)
        .send()
        .await
        .map_err(|e| connect_error("GetAttachedFile", &e))?;
    let Some(url) = file.download_url_metadata().and_then(|m| m.url()) else {
        return Err(ReplyError::Message("Connect gave no download URL".into()));
    };
    let mut resp = d
        .services
        .http
        .get(url)
        .timeout(crate::destination::TARGET_TIMEOUT)
        .send()
        .await
        .map_err(|e| ReplyError::Message(format!("the download failed: {}", without_url(&e))))?;
    if !resp.status().is_success() {
        return Err(ReplyError::Message(format!(
            "the download answered {}",
            resp.status()
        )));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ReplyError::Message(format!("the download failed: {}", without_url(&e))))?
    {
        let room = REPLY_BYTES_MAX.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let name = file.file_name().unwrap_or_default().to_ascii_lowercase();
    let html = name.ends_with(".html") || name.ends_with(".htm") || text.trim_start().starts_with('<');
    Ok((text, html))
}

/// A transport error's words without its URL (a presigned URL is a secret).
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "the connection failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(detail: Value) -> Value {
        json!({"source": "aws.connect", "detail-type": "Amazon Connect Contact Event", "detail": detail})
    }

    #[test]
    fn only_an_agent_s_email_reply_that_has_left_is_filed() {
        let base = json!({
            "channel": "EMAIL", "initiationMethod": "AGENT_REPLY", "eventType": "DISCONNECTED",
            "instanceArn": "arn:aws:connect:us-east-1:123456789012:instance/i-1",
            "contactId": "reply-1", "relatedContactId": "in-1", "initialContactId": "reply-1",
        });
        let r = reply_event(&event(base.clone())).unwrap();
        assert_eq!(r.instance_id, "i-1");
        assert_eq!(r.inbound_contact_id, "in-1");
        for (k, v) in [
            ("channel", "TASK"),
            ("initiationMethod", "INBOUND"),
            ("eventType", "INITIATED"),
        ] {
            let mut d = base.clone();
            d[k] = v.into();
            assert!(reply_event(&event(d)).is_err(), "{k}={v}");
        }
        let mut d = base.clone();
        d.as_object_mut().unwrap().remove("relatedContactId");
        d["previousContactId"] = "in-2".into();
        assert_eq!(reply_event(&event(d)).unwrap().inbound_contact_id, "in-2");
        assert!(reply_event(&json!({"source": "aws.events", "detail": base})).is_err());
    }

    #[test]
    fn the_copy_is_a_read_sent_item_marked_with_the_reply() {
        let c = sent_copy("bo@example.com", "Order 4411", "<p>Hi</p>", true, "reply-1");
        assert_eq!(c["subject"], "RE: Order 4411");
        assert_eq!(c["body"]["contentType"], "HTML");
        assert_eq!(c["toRecipients"][0]["emailAddress"]["address"], "bo@example.com");
        assert_eq!(c["singleValueExtendedProperties"][0]["id"], "Integer 0x0E07");
        assert_eq!(c["singleValueExtendedProperties"][0]["value"], "1");
        assert_eq!(c["singleValueExtendedProperties"][1]["value"], "reply-1");
        assert_eq!(sent_copy("", "Re: x", "t", false, "r")["subject"], "Re: x");
        let path = lookup_path("/me", "reply-1");
        assert!(
            path.starts_with(
                "/me/mailFolders/sentitems/messages?$filter=singleValueExtendedProperties%2FAny"
            )
        );
        assert!(!path.contains(' ') && !path.contains('+'));
    }
}
