//! The record kept per connected mailbox, one secret each
//! (`{SECRET_PREFIX}connections/{id}`).
//!
//! It holds the refresh token of a delegated connection, so it lives in Secrets
//! Manager; [`Connection::public_view`] is the only shape that leaves the
//! service, and it never carries a token.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::cloud::Cloud;
use crate::scopes::{FeatureScope, Resource};
use crate::sensitive::Sensitive;

/// How a connection authenticates to Microsoft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A user signs in (authorization code with PKCE); a refresh token is kept.
    Delegated,
    /// App-only with the app's client secret (client credentials).
    AppSecret,
    /// App-only with the app's certificate (signed client assertion).
    AppCertificate,
}

impl AuthMode {
    /// The API name (`delegated`, `app_secret`, `app_certificate`).
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::Delegated => "delegated",
            AuthMode::AppSecret => "app_secret",
            AuthMode::AppCertificate => "app_certificate",
        }
    }

    /// True for both app-only modes.
    pub fn is_app_only(self) -> bool {
        self != AuthMode::Delegated
    }
}

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

/// A Graph change-notification subscription owned by a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
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
    /// Delegated only: the newest refresh token written to the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Sensitive>,
    /// When the refresh token was last written, to respect Secrets Manager's
    /// guidance of at most one write per secret every ten minutes.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub refresh_token_written_at: Option<OffsetDateTime>,
    /// Where the connection stands.
    pub status: Status,
    /// Its subscriptions.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    /// Delta links per subscription id, for resyncs after `missed`.
    #[serde(default)]
    pub delta_links: BTreeMap<String, String>,
    /// The last problem, in words a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Ids of the messages most recently delivered (at most
    /// [`RECENT_DELIVERIES`]), so a resync after `missed` and a late duplicate
    /// notification deliver nothing twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_deliveries: Vec<String>,
    /// The nonce of the one sign-in in progress: `/oauth/start` sets it, the
    /// callback must present it and clears it, so each OAuth state is usable
    /// once, whichever container serves the callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_auth_nonce: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// How many delivered message ids a connection remembers.
pub const RECENT_DELIVERIES: usize = 500;

/// The secret name of a connection's record.
pub fn secret_name(prefix: &str, id: &str) -> String {
    format!("{prefix}connections/{id}")
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
            refresh_token: None,
            refresh_token_written_at: None,
            status: Status::PendingConsent,
            subscriptions: Vec::new(),
            delta_links: BTreeMap::new(),
            last_error: None,
            pending_auth_nonce: None,
            recent_deliveries: Vec::new(),
            created_at: now,
            updated_at: now,
        }
    }

    /// Parses a stored record.
    pub fn from_json(raw: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw)
    }

    /// The stored form (with the refresh token).
    pub fn to_json(&self) -> String {
        // Serialising this struct cannot fail: every field is a plain value.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The form the API returns: everything but tokens and delta links.
    pub fn public_view(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.remove("refresh_token");
            map.remove("refresh_token_written_at");
            map.remove("delta_links");
            map.remove("pending_auth_nonce");
            map.remove("recent_deliveries");
        }
        v
    }

    /// True when this message was delivered recently.
    pub fn was_delivered(&self, message_id: &str) -> bool {
        self.recent_deliveries.iter().any(|m| m == message_id)
    }

    /// Remembers a delivered message, forgetting the oldest beyond the bound.
    pub fn remember_delivery(&mut self, message_id: &str) {
        self.recent_deliveries.push(message_id.to_string());
        let excess = self.recent_deliveries.len().saturating_sub(RECENT_DELIVERIES);
        self.recent_deliveries.drain(..excess);
    }

    /// Marks the connection as needing a new sign-in and forgets its refresh
    /// token, so no later call keeps retrying a dead grant.
    pub fn mark_reauth_required(&mut self, reason: &str) {
        self.status = Status::ReauthRequired;
        self.refresh_token = None;
        self.last_error = Some(reason.to_string());
        self.updated_at = OffsetDateTime::now_utc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_view_never_carries_the_refresh_token() {
        let mut c = Connection::new(
            "support".into(),
            AuthMode::Delegated,
            Cloud::Global,
            "organizations".into(),
            None,
            vec![FeatureScope::MailReadOnly],
        );
        c.refresh_token = Some(Sensitive::new("RT-very-secret"));
        assert!(c.to_json().contains("RT-very-secret"));
        let view = c.public_view().to_string();
        assert!(!view.contains("RT-very-secret"), "{view}");
        assert!(view.contains("\"status\":\"pending_consent\""), "{view}");
        assert!(view.contains("\"scopes\":[\"Mail.ReadOnly\"]"), "{view}");
        assert!(!format!("{c:?}").contains("RT-very-secret"));
        let back = Connection::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
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

    #[test]
    fn reauth_drops_the_refresh_token() {
        let mut c = Connection::new(
            "x".into(),
            AuthMode::Delegated,
            Cloud::Global,
            "t".into(),
            None,
            vec![],
        );
        c.refresh_token = Some(Sensitive::new("rt"));
        c.status = Status::Active;
        c.mark_reauth_required("revoked");
        assert_eq!(c.status, Status::ReauthRequired);
        assert!(c.refresh_token.is_none());
        assert_eq!(c.last_error.as_deref(), Some("revoked"));
    }
}
