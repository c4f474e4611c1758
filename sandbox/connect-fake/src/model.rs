//! The request bodies of the operations the fake serves, as the Connect API
//! reference (API version 2017-08-08) defines them, and their documented
//! constraints. Each check names the limit it enforces and answers with one
//! of the errors the reference lists for the operation: `StartTaskContact`
//! lists `InvalidParameterException` for a bad parameter,
//! `StartEmailContact` does not, so its refusals are `InvalidRequestException`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Limits of the API model (`Name`, `Description`, references, attributes).
pub mod limits {
    /// `Name` of a task or email contact: at most 1,024 characters (the
    /// service model's `Name` shape; 512 before December 2024).
    pub const NAME_MAX: usize = 1024;
    /// `Description`: at most 4,096 characters.
    pub const DESCRIPTION_MAX: usize = 4096;
    /// A reference's key and its value: at most 4,096 characters each.
    pub const REFERENCE_PART_MAX: usize = 4096;
    /// "up to 4,096 UTF-8 bytes across all references for a contact".
    pub const REFERENCES_TOTAL_BYTES: usize = 4096;
    /// "up to 32,768 UTF-8 bytes across all key-value pairs per contact".
    pub const ATTRIBUTES_TOTAL_BYTES: usize = 32_768;
    /// An attribute key (1..) and value: at most 32,767 characters.
    pub const ATTRIBUTE_PART_MAX: usize = 32_767;
    /// `ClientToken`: at most 500 characters.
    pub const CLIENT_TOKEN_MAX: usize = 500;
    /// `ContactFlowId`: at most 500 characters.
    pub const CONTACT_FLOW_ID_MAX: usize = 500;
    /// `RelatedContactId` / `PreviousContactId`: 1 to 256 characters.
    pub const CONTACT_ID_MAX: usize = 256;
    /// `InstanceId`: 1 to 100 characters.
    pub const INSTANCE_ID_MAX: usize = 100;
    /// Task attachments: at most 5 ("a maximum of 5 attachments per task").
    pub const TASK_ATTACHMENTS_MAX: usize = 5;
    /// An attachment's `FileName`: 1 to 256 characters, no control characters.
    pub const FILE_NAME_MAX: usize = 256;
    /// An attachment's presigned `S3Url`: 1 to 2,000 characters.
    pub const S3_URL_MAX: usize = 2000;
    /// An email address: 1 to 255 characters.
    pub const EMAIL_ADDRESS_MAX: usize = 255;
    /// A display name: at most 256 characters.
    pub const DISPLAY_NAME_MAX: usize = 256;
    /// The email subject: at most 998 characters.
    pub const SUBJECT_MAX: usize = 998;
    /// The email body: 1 to 5,242,880 characters.
    pub const BODY_MAX: usize = 5_242_880;
    /// A threading header's value: 1 to 20,000 characters.
    pub const HEADER_VALUE_MAX: usize = 20_000;
    /// Recipients of an inbound email: `DestinationEmailAddress` plus at most
    /// 49 across `ToAddresses` and `CcAddresses`.
    pub const RECIPIENTS_MAX: usize = 50;
}

/// A reference shown to the agent (`{"Value", "Type"}`; `Arn`, `Status` and
/// `StatusReason` are output fields but accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Reference {
    /// The value.
    #[serde(default)]
    pub value: Option<String>,
    /// `URL`, `NUMBER`, `STRING`, `DATE`, `EMAIL`, …
    pub r#type: String,
    /// Output only.
    #[serde(default)]
    pub arn: Option<String>,
    /// Output only.
    #[serde(default)]
    pub status: Option<String>,
    /// Output only.
    #[serde(default)]
    pub status_reason: Option<String>,
}

/// A file passed by presigned URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Attachment {
    /// The file's name (its extension decides whether Connect accepts it).
    pub file_name: String,
    /// A presigned S3 URL Connect downloads the file from.
    pub s3_url: String,
}

/// `PUT /contact/task`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StartTaskContact {
    /// Required.
    pub instance_id: Option<String>,
    /// The flow that runs the task.
    pub contact_flow_id: Option<String>,
    /// Required: the task's name in the agent's workspace.
    pub name: Option<String>,
    /// Shown to the agent.
    pub description: Option<String>,
    /// Shown to the agent.
    pub references: Option<BTreeMap<String, Reference>>,
    /// Contact attributes.
    pub attributes: Option<BTreeMap<String, String>>,
    /// Idempotency token.
    pub client_token: Option<String>,
    /// A previous contact whose chain this task joins.
    pub previous_contact_id: Option<String>,
    /// A related contact whose attributes are copied.
    pub related_contact_id: Option<String>,
    /// Epoch seconds.
    pub scheduled_time: Option<serde_json::Value>,
    /// A task template (instead of a flow).
    pub task_template_id: Option<String>,
    /// A quick connect (instead of a flow).
    pub quick_connect_id: Option<String>,
    /// System-defined segment attributes.
    pub segment_attributes: Option<serde_json::Value>,
    /// Files by presigned URL.
    pub attachments: Option<Vec<Attachment>>,
}

/// An address and an optional display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct EmailAddressInfo {
    /// The address.
    pub email_address: Option<String>,
    /// Its display name.
    pub display_name: Option<String>,
}

/// Additional To and Cc recipients of an inbound email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AdditionalRecipients {
    /// Further To addresses.
    pub to_addresses: Option<Vec<EmailAddressInfo>>,
    /// Cc addresses.
    pub cc_addresses: Option<Vec<EmailAddressInfo>>,
}

/// The message as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RawMessage {
    /// Required (may be empty).
    pub subject: Option<String>,
    /// Required.
    pub body: Option<String>,
    /// `text/plain` or `text/html`.
    pub content_type: Option<String>,
    /// `MESSAGE_ID`, `IN_REPLY_TO`, `REFERENCES`, `X_SES_SPAM_VERDICT`, `X_SES_VIRUS_VERDICT`.
    pub headers: Option<BTreeMap<String, String>>,
}

/// `EmailMessage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct EmailMessage {
    /// Only `RAW`.
    pub message_source_type: Option<String>,
    /// The message.
    pub raw_message: Option<RawMessage>,
}

/// `PUT /contact/email`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StartEmailContact {
    /// Required.
    pub instance_id: Option<String>,
    /// Required: the customer.
    pub from_email_address: Option<EmailAddressInfo>,
    /// Required: an email address of the instance.
    pub destination_email_address: Option<String>,
    /// Shown to the agent.
    pub description: Option<String>,
    /// Shown to the agent.
    pub references: Option<BTreeMap<String, Reference>>,
    /// Shown to the agent.
    pub name: Option<String>,
    /// Required.
    pub email_message: Option<EmailMessage>,
    /// To and Cc.
    pub additional_recipients: Option<AdditionalRecipients>,
    /// Files by presigned URL.
    pub attachments: Option<Vec<Attachment>>,
    /// The inbound flow (else the destination address's flow).
    pub contact_flow_id: Option<String>,
    /// An earlier contact of the same conversation.
    pub related_contact_id: Option<String>,
    /// Contact attributes.
    pub attributes: Option<BTreeMap<String, String>>,
    /// System-defined segment attributes.
    pub segment_attributes: Option<serde_json::Value>,
    /// Idempotency token.
    pub client_token: Option<String>,
}

/// `POST /search-email-addresses` (only an exact `email_address` condition is understood).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SearchEmailAddresses {
    /// Required.
    pub instance_id: Option<String>,
    /// 1 to 100.
    pub max_results: Option<i64>,
    /// Not used: one page holds everything.
    pub next_token: Option<String>,
    /// `{"StringCondition": {"FieldName", "Value", "ComparisonType"}}`.
    pub search_criteria: Option<serde_json::Value>,
    /// Tag filters (ignored).
    pub search_filter: Option<serde_json::Value>,
}

/// Characters, as the API counts string lengths.
pub(crate) fn chars(s: &str) -> usize {
    s.chars().count()
}

/// A length check: `field` must hold `min..=max` characters.
pub(crate) fn length(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    err: fn(String) -> ApiError,
) -> Result<(), ApiError> {
    let n = chars(value);
    if n < min || n > max {
        let bound = if n < min {
            format!("greater than or equal to {min}")
        } else {
            format!("less than or equal to {max}")
        };
        return Err(err(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: Member must have length {bound}"
        )));
    }
    Ok(())
}

/// `[^\s@]+@[^\s@]+\.[^\s@]+`, the model's pattern for an address.
pub(crate) fn is_email_address(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let ok = |p: &str| !p.is_empty() && !p.chars().any(|c| c.is_whitespace() || c == '@');
    ok(local)
        && domain
            .rsplit_once('.')
            .is_some_and(|(host, tld)| ok(host) && ok(tld))
}

/// References: each key 1..4096, value ..4096, a type the operation allows
/// at creation, `DATE` in epoch form, and 4,096 UTF-8 bytes in all.
pub(crate) fn references(
    refs: &BTreeMap<String, Reference>,
    allowed: &[&str],
    err: fn(String) -> ApiError,
) -> Result<(), ApiError> {
    let mut total = 0;
    for (key, reference) in refs {
        length("references.key", key, 1, limits::REFERENCE_PART_MAX, err)?;
        let value = reference.value.as_deref().unwrap_or("");
        length("references.value", value, 0, limits::REFERENCE_PART_MAX, err)?;
        if !allowed.contains(&reference.r#type.as_str()) {
            return Err(err(format!(
                "Reference '{key}' has type {}; at creation only {} are supported",
                reference.r#type,
                allowed.join(" | ")
            )));
        }
        if reference.r#type == "DATE" && !value.chars().all(|c| c.is_ascii_digit()) {
            return Err(err(format!(
                "Reference '{key}' of type DATE must be an epoch timestamp"
            )));
        }
        total += key.len() + value.len();
    }
    if total > limits::REFERENCES_TOTAL_BYTES {
        return Err(err(format!(
            "References hold {total} UTF-8 bytes; at most {} are allowed across all references",
            limits::REFERENCES_TOTAL_BYTES
        )));
    }
    Ok(())
}

/// Attributes: keys of alphanumerics, `-` and `_`; 32,768 UTF-8 bytes in all.
pub(crate) fn attributes(
    attrs: &BTreeMap<String, String>,
    err: fn(String) -> ApiError,
) -> Result<(), ApiError> {
    let mut total = 0;
    for (key, value) in attrs {
        length("attributes.key", key, 1, limits::ATTRIBUTE_PART_MAX, err)?;
        length("attributes.value", value, 0, limits::ATTRIBUTE_PART_MAX, err)?;
        if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(format!(
                "Attribute key '{key}' may hold only alphanumeric, dash and underscore characters"
            )));
        }
        total += key.len() + value.len();
    }
    if total > limits::ATTRIBUTES_TOTAL_BYTES {
        return Err(err(format!(
            "Attributes hold {total} UTF-8 bytes; at most {} are allowed per contact",
            limits::ATTRIBUTES_TOTAL_BYTES
        )));
    }
    Ok(())
}

/// An attachment's name and URL within their lengths, the name without control characters.
pub(crate) fn attachment_shape(a: &Attachment, err: fn(String) -> ApiError) -> Result<(), ApiError> {
    length(
        "attachments.fileName",
        &a.file_name,
        1,
        limits::FILE_NAME_MAX,
        err,
    )?;
    length("attachments.s3Url", &a.s3_url, 1, limits::S3_URL_MAX, err)?;
    if a.file_name.chars().any(char::is_control) {
        return Err(err(
            "An attachment's FileName may not hold control characters".into()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_model_pattern() {
        assert!(is_email_address("ann@example.com"));
        assert!(!is_email_address("ann@example"));
        assert!(!is_email_address("ann example@example.com"));
        assert!(!is_email_address("@example.com"));
    }

    #[test]
    fn references_are_limited_in_type_and_bytes() {
        let mut refs = BTreeMap::new();
        refs.insert(
            "link".to_string(),
            Reference {
                value: Some("https://x".into()),
                r#type: "URL".into(),
                arn: None,
                status: None,
                status_reason: None,
            },
        );
        assert!(references(&refs, &["URL"], ApiError::invalid_parameter).is_ok());
        assert!(references(&refs, &["STRING"], ApiError::invalid_parameter).is_err());
        refs.insert(
            "big".into(),
            Reference {
                value: Some("x".repeat(4090)),
                r#type: "URL".into(),
                arn: None,
                status: None,
                status_reason: None,
            },
        );
        assert!(references(&refs, &["URL"], ApiError::invalid_parameter).is_err());
    }

    #[test]
    fn attribute_keys_are_restricted() {
        let mut attrs = BTreeMap::new();
        attrs.insert("sender-address_1".to_string(), "a".to_string());
        assert!(attributes(&attrs, ApiError::invalid_parameter).is_ok());
        attrs.insert("bad key".to_string(), "a".to_string());
        assert!(attributes(&attrs, ApiError::invalid_parameter).is_err());
    }
}
