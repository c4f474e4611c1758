//! The record kept per connected mailbox and its subscriptions, as the state
//! table holds them (the state store in `aws::store` reads and writes them).
//!
//! No token is part of it: a delegated connection's refresh token lives in
//! its own secret (`{SECRET_PREFIX}tokens/{id}`), and the record only says which
//! `generation` of sign-in that secret must come from.
//! [`Connection::public_view`] is the only shape that leaves the service.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::model::auth::AuthMode;
use crate::model::cloud::Cloud;
use crate::model::scopes::{FeatureScope, Resource};

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created; waiting for the user's sign-in or the admin's consent.
    PendingConsent,
    /// Connected and usable.
    Active,
    /// Microsoft no longer accepts the stored grant; someone must connect again.
    ReauthRequired,
}

/// Whether a flow receives events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowStatus {
    /// Events are sent to its target.
    #[default]
    Active,
    /// Nothing is sent to it (its target answered 410 Gone, or an operator
    /// paused it); what arrives meanwhile is delivered once it is resumed.
    Paused,
}

/// A flow: what a connection watches (mail or calendar, a folder) and where
/// its events go. Several flows on the same resource and folder share one
/// Graph change-notification subscription (Graph allows one per resource and
/// app); each keeps its own delivery ledger, delta link and watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Its key within the connection: stable while Graph's id changes on
    /// every recreation.
    #[serde(default)]
    pub key: String,
    /// Graph's subscription id (empty until created at Graph).
    #[serde(default)]
    pub id: String,
    /// What it watches.
    pub resource: Resource,
    /// The mail folder (`inbox` or a folder id) for mail subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Where events go (`https://…` or `eventbridge:BUS`); the deployment default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// When Graph will delete it unless renewed.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// The last problem met creating or renewing it, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Mail: the delta link a resync starts from (never shown by the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_link: Option<String>,
    /// The `receivedDateTime` of the newest mail delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// When the last notification for it was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notification_at: Option<String>,
    /// When the last event was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_at: Option<String>,
    /// When it was added, which orders a connection's subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The id of the signing key its Graph subscription's `clientState` was
    /// made with ([`crate::web::signing::Signer::key_id`]); after a key
    /// rotation the renewal run recreates the subscriptions made with another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// When its target answered 410 Gone; no events are sent to it since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_gone_at: Option<String>,
    /// Why the last delivery attempt failed (cleared by the next delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_error: Option<String>,
    /// When it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_error_at: Option<String>,
    /// Whether events are sent to it.
    #[serde(default)]
    pub status: FlowStatus,
    /// When it was paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
    /// Why it was paused, in words, with what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// Set by a resume until the catch-up has delivered everything that
    /// arrived while it was paused: until then new notifications are left to
    /// the catch-up, so the flow gets every item once and in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catching_up: Option<String>,
    /// Records of it that the last batch returned for retry (0 once they
    /// went through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<u64>,
    /// When the reconciliation sweep last asked Graph what arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_swept_at: Option<String>,
    /// Mails the sweep found that Graph never announced, in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<u64>,
}

impl Subscription {
    /// A subscription not yet created at Graph, with a new key.
    pub fn new(resource: Resource, folder: Option<String>, target: Option<String>) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            key: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            id: String::new(),
            resource,
            folder,
            target,
            expires_at: None,
            last_error: None,
            delta_link: None,
            watermark: None,
            last_notification_at: None,
            last_delivery_at: None,
            key_id: None,
            target_gone_at: None,
            last_delivery_error: None,
            last_delivery_error_at: None,
            waiting: None,
            status: FlowStatus::Active,
            paused_at: None,
            paused_reason: None,
            catching_up: None,
            last_swept_at: None,
            recovered: None,
            created_at: now.format(&time::format_description::well_known::Rfc3339).ok(),
        }
    }
}

impl Subscription {
    /// Whether nothing may be sent to it now (paused; a target that answered
    /// 410 Gone before flows could be paused counts as paused).
    pub fn is_paused(&self) -> bool {
        self.status == FlowStatus::Paused || self.target_gone_at.is_some()
    }

    /// Whether a live notification is delivered to it: not while paused, and
    /// not while a resume's catch-up is still delivering what came before.
    pub fn takes_live(&self) -> bool {
        !self.is_paused() && self.catching_up.is_none()
    }

    /// The folder it watches (`inbox` when none is named).
    pub fn folder_or_inbox(&self) -> &str {
        self.folder.as_deref().unwrap_or("inbox")
    }

    /// Whether `other` watches the same thing, so both share one Graph
    /// subscription.
    pub fn same_resource(&self, other: &Subscription) -> bool {
        self.resource == other.resource
            && (self.resource == Resource::Calendar
                || self
                    .folder_or_inbox()
                    .eq_ignore_ascii_case(other.folder_or_inbox()))
    }

    /// Its key in the delivery ledger for `item`: each flow has its own.
    pub fn ledger_key(&self, item: &str) -> String {
        format!("f#{}#{item}", self.key)
    }
}

/// A connected mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Short slug chosen by the operator or generated.
    pub id: String,
    /// How it authenticates.
    pub auth: AuthMode,
    /// Which Microsoft cloud.
    pub cloud: Cloud,
    /// The tenant id or domain (`organizations` until a delegated sign-in tells us).
    pub tenant_id: String,
    /// The mailbox (UPN). Required for app-only; learnt from `/me` for delegated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// The feature scopes asked for.
    pub scopes: Vec<FeatureScope>,
    /// The Graph permissions Microsoft reported as granted.
    #[serde(default)]
    pub granted_scopes: Vec<String>,
    /// Delegated only: which sign-in the stored refresh token comes from.
    /// Every sign-in or reconnect adds one, in this record and in the token
    /// secret, so a container holding an older rotated token knows to drop it.
    #[serde(default)]
    pub generation: u64,
    /// When the refresh token was last written (unix seconds), so it is
    /// written at most once per ten minutes whatever the number of containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_written_at: Option<i64>,
    /// Where the connection stands.
    pub status: Status,
    /// Its subscriptions (items of their own in the table, read with it).
    #[serde(default, skip_serializing)]
    pub subscriptions: Vec<Subscription>,
    /// The last problem, in words a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The nonce of the one sign-in in progress: `/oauth/start` sets it, the
    /// callback must present it and clears it, so each OAuth state is usable
    /// once, whichever container serves the callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_auth_nonce: Option<String>,
    /// Delegated only: the tenant id (`tid`) of the organisation the first
    /// accepted sign-in was made in; later sign-ins must be in it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// Delegated only: the object id (`oid`) of the user whose sign-in
    /// connected the mailbox; later sign-ins must be that same user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oid: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Grows with every write; a read-modify-write is conditional on it.
    #[serde(default)]
    pub version: u64,
    /// Who may send mail from it through send-mail: IAM principal ARNs
    /// (`*` patterns allowed; a role's ARN also names its sessions) or
    /// Amazon Connect instance ARNs ([`crate::model::callers`]). Empty:
    /// anyone allowed to call the route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_callers: Vec<String>,
    /// The most addresses a contact flow's recipients may split into;
    /// `None`: send-mail's default (10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_max_recipients: Option<u32>,
}

/// The name of a delegated connection's token secret.
pub fn token_secret_name(prefix: &str, id: &str) -> String {
    format!("{prefix}tokens/{id}")
}

/// Checks a connection id: 1 to 64 characters of `a-z`, `0-9` and `-`,
/// starting with a letter or digit. Kept short because it is part of secret
/// names, URLs and the subscription `clientState` (at most 128 characters).
pub fn validate_id(id: &str) -> Result<(), String> {
    let ok_len = (1..=64).contains(&id.len());
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_start = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_start {
        Ok(())
    } else {
        Err(format!(
            "connection id {id:?} is not valid: use 1 to 64 lowercase letters, digits and '-', starting with a letter or digit"
        ))
    }
}

impl Connection {
    /// A new connection waiting for consent.
    pub fn new(
        id: String,
        auth: AuthMode,
        cloud: Cloud,
        tenant_id: String,
        mailbox: Option<String>,
        scopes: Vec<FeatureScope>,
    ) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            id,
            auth,
            cloud,
            tenant_id,
            mailbox,
            scopes,
            granted_scopes: Vec::new(),
            generation: 0,
            token_written_at: None,
            status: Status::PendingConsent,
            subscriptions: Vec::new(),
            last_error: None,
            pending_auth_nonce: None,
            tid: None,
            oid: None,
            created_at: now,
            updated_at: now,
            version: 0,
            allowed_callers: Vec::new(),
            connect_max_recipients: None,
        }
    }

    /// The form the API returns: no nonce, no delta links, no bookkeeping.
    pub fn public_view(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            for k in ["pending_auth_nonce", "token_written_at", "generation", "version"] {
                map.remove(k);
            }
            let subs: Vec<serde_json::Value> =
                self.subscriptions.iter().map(Subscription::public_view).collect();
            map.insert("subscriptions".into(), subs.into());
        }
        v
    }
}

impl Subscription {
    /// The form the API returns: everything but the delta link.
    pub fn public_view(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.remove("delta_link");
            let status = if self.is_paused() { "paused" } else { "active" };
            map.insert("status".into(), status.into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_view_hides_the_nonce_and_delta_links() {
        let mut c = Connection::new(
            "support".into(),
            AuthMode::Delegated,
            Cloud::Global,
            "organizations".into(),
            None,
            vec![FeatureScope::MailReadOnly],
        );
        c.pending_auth_nonce = Some("nonce-very-secret".into());
        let mut sub = Subscription::new(Resource::Mail, Some("inbox".into()), None);
        sub.delta_link = Some("https://graph/delta?$deltatoken=secret-link".into());
        c.subscriptions.push(sub);
        let view = c.public_view().to_string();
        assert!(!view.contains("nonce-very-secret"), "{view}");
        assert!(!view.contains("secret-link"), "{view}");
        assert!(view.contains("\"status\":\"pending_consent\""), "{view}");
        assert!(view.contains("\"scopes\":[\"Mail.ReadOnly\"]"), "{view}");
        assert!(view.contains("\"resource\":\"mail\""), "{view}");
    }

    #[test]
    fn ids_are_short_slugs() {
        for ok in ["support", "a", "team-7", "0abc"] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "Support", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
