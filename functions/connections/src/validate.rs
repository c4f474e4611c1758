//! What the admin API accepts: request bodies, and the checks that refuse
//! what could never work (with the reason) before anything is stored.

use relay365::model::connection::{Connection, Subscription};
use relay365::model::scopes::{self, Resource};
use relay365::model::target::Target;
use relay365::services::Services;
use relay365::web::response::{self as api, HttpResponse};
use relay365::{AuthMode, Cloud};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
/// A `POST /connections` body.
pub(crate) struct CreateBody {
    pub(crate) id: Option<String>,
    pub(crate) auth: AuthMode,
    pub(crate) mailbox: Option<String>,
    pub(crate) tenant_id: Option<String>,
    pub(crate) cloud: Option<Cloud>,
    pub(crate) scopes: Vec<String>,
    #[serde(default)]
    pub(crate) subscriptions: Vec<SubscriptionBody>,
    /// Who may send from it (IAM principal ARN patterns, Amazon Connect instance ARNs).
    #[serde(default)]
    pub(crate) allowed_callers: Vec<String>,
    /// The most recipients a contact flow's send may name (default 10).
    pub(crate) connect_max_recipients: Option<u32>,
}

/// The largest `connect_max_recipients` accepted: Exchange Online's
/// per-message recipient limit, which send-mail enforces for every caller.
pub const MAX_CONNECT_RECIPIENTS: u32 = 500;

/// Checks the send-mail settings of a connection: `allowed_callers` and
/// `connect_max_recipients`.
///
/// # Errors
/// What is wrong and how to write it, for a 400.
pub fn validate_send_settings(
    allowed_callers: &[String],
    connect_max_recipients: Option<u32>,
) -> Result<(), String> {
    relay365::model::callers::validate_list(allowed_callers).map_err(|e| format!("allowed_callers: {e}"))?;
    if let Some(n) = connect_max_recipients
        && !(1..=MAX_CONNECT_RECIPIENTS).contains(&n)
    {
        return Err(format!(
            "connect_max_recipients is {n}: give 1 to {MAX_CONNECT_RECIPIENTS} (the addresses a contact flow's to, cc and bcc may split into; default 10)"
        ));
    }
    Ok(())
}

/// A subscription request, at creation or later.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionBody {
    /// `mail` or `calendar`.
    pub resource: Resource,
    /// `inbox` or a folder id (mail only).
    pub folder: Option<String>,
    /// `https://…`, `eventbridge:BUS`,
    /// `connect-task:{instance-id}/{contact-flow-id}` or
    /// `connect-email:{instance-id}/{contact-flow-id}/{connect-email-address}`.
    pub target: Option<String>,
    /// The mailbox to watch; only the connection's own is possible.
    pub mailbox: Option<String>,
}

pub(crate) fn bad(message: impl Into<String>) -> HttpResponse {
    api::error(400, "invalid_request", message)
}

/// Checks a mailbox address with the rule every route uses.
///
/// # Errors
/// What is wrong, for a person.
pub fn validate_mailbox(m: &str) -> Result<(), String> {
    if relay365::model::address::is_valid(m) {
        Ok(())
    } else {
        Err(format!("mailbox {m:?} is not an e-mail address (user@domain)"))
    }
}

pub(crate) fn validate_tenant(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 253
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant_id {t:?} is not a tenant id (a GUID), a domain, or organizations"
        ))
    }
}

pub(crate) fn validate_folder(f: &str) -> Result<(), String> {
    let ok = !f.is_empty()
        && f.len() <= 512
        && f.chars()
            .all(|c| c.is_ascii_alphanumeric() || "=+/_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("folder {f:?} is neither inbox nor a Graph folder id"))
    }
}

/// Validates a subscription request for a connection and turns it into a record.
///
/// # Errors
/// A 400 response that says what to change.
#[allow(clippy::result_large_err)]
pub fn subscription_from_body(
    s: &Services,
    conn: &Connection,
    b: SubscriptionBody,
) -> Result<Subscription, HttpResponse> {
    let own = match (&b.mailbox, &conn.mailbox) {
        (None, _) => true,
        (Some(m), Some(own)) => m.eq_ignore_ascii_case(own),
        (Some(_), None) => false,
    };
    if conn.auth.is_app_only() && !own {
        return Err(bad(format!(
            "this connection is for {}; create another app-only connection for {}",
            conn.mailbox.as_deref().unwrap_or("its mailbox"),
            b.mailbox.as_deref().unwrap_or("that mailbox")
        )));
    }
    scopes::check_subscription(conn.auth, &conn.scopes, b.resource, b.mailbox.as_deref(), own)
        .map_err(|e| bad(e.to_string()))?;
    if let Some(f) = &b.folder {
        if b.resource == Resource::Calendar {
            return Err(bad(
                "folder applies to mail subscriptions only; calendar subscriptions watch the primary calendar",
            ));
        }
        validate_folder(f).map_err(bad)?;
    }
    let (target, resolved) = match (&b.target, &s.config.default_target) {
        (Some(t), _) => {
            let parsed = Target::parse(t, s.config.local).map_err(bad)?;
            (Some(parsed.to_string_form()), parsed)
        }
        (None, Some(default)) => (None, default.clone()),
        (None, None) => {
            return Err(bad(
                "name a target (https://…, eventbridge:BUS, connect-task:{instance-id}/{contact-flow-id} or connect-email:{instance-id}/{contact-flow-id}/{connect-email-address}): this deployment has no RELAY365_DEFAULT_TARGET",
            ));
        }
    };
    if b.resource == Resource::Calendar && resolved.mail_only() {
        return Err(bad(format!(
            "{} starts an Amazon Connect contact (a task or an email) per new mail: calendar changes cannot go there; subscribe calendar to an https:// or eventbridge: target",
            resolved.to_string_form()
        )));
    }
    Ok(Subscription::new(
        b.resource,
        b.folder
            .or_else(|| (b.resource == Resource::Mail).then(|| "inbox".to_string())),
        target,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_folders_and_mailboxes() {
        for ok in [
            "organizations",
            "contoso.onmicrosoft.com",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        ] {
            assert!(validate_tenant(ok).is_ok(), "{ok}");
        }
        for bad in ["", "con toso", "a/b", &"x".repeat(254)] {
            assert!(validate_tenant(bad).is_err(), "{bad}");
        }
        assert!(validate_folder("inbox").is_ok());
        assert!(validate_folder("AAMkAGI2TG93AAA=").is_ok());
        assert!(validate_folder("../x").is_err());
        assert!(validate_mailbox("ann@contoso.com").is_ok());
        let e = validate_mailbox("ann at contoso").unwrap_err();
        assert!(e.contains("not an e-mail address"), "{e}");
    }

    #[test]
    fn send_settings_say_what_to_write() {
        assert!(validate_send_settings(&[], None).is_ok());
        assert!(
            validate_send_settings(&["arn:aws:iam::123456789012:role/billing-*".into()], Some(2)).is_ok()
        );
        let e = validate_send_settings(&["*".into()], None).unwrap_err();
        assert!(
            e.starts_with("allowed_callers:") && e.contains("arn:aws:iam::ACCOUNT"),
            "{e}"
        );
        let e = validate_send_settings(&[], Some(0)).unwrap_err();
        assert!(e.contains("1 to 500"), "{e}");
        assert!(validate_send_settings(&[], Some(501)).is_err());
    }
}
