//! The typed changes a writer makes to a connection or a subscription: each
//! names only the attributes its function owns and the conditions it needs,
//! so two containers never undo each other's writes.

use serde_json::Value;
use time::OffsetDateTime;

use super::table::{Expect, Update};
use super::{KIND_FLOW, rfc3339};
use crate::model::connection::Status;

/// The attributes of a connection item one writer changes, and the conditions
/// it needs. Each function owns its attributes: oauth-callback the status,
/// mailbox, granted scopes, nonce and token generation; the token code the
/// token write time and `reauth_required`.
#[derive(Debug, Clone, Default)]
pub struct ConnectionChange {
    pub(super) update: Update,
}

impl ConnectionChange {
    /// An empty change (only `updated_at` and `version` move).
    pub fn new() -> Self {
        Self::default()
    }
    fn put(self, name: &str, value: Option<Value>) -> Self {
        Self {
            update: self.update.put(name, value),
        }
    }
    fn expecting(self, expect: Expect) -> Self {
        Self {
            update: self.update.expecting(expect),
        }
    }
    /// Sets the status.
    pub fn status(self, status: Status) -> Self {
        self.put("status", serde_json::to_value(status).ok())
    }
    /// Sets the mailbox.
    pub fn mailbox(self, mailbox: &str) -> Self {
        self.put("mailbox", Some(mailbox.into()))
    }
    /// Sets the permissions Microsoft reported as granted.
    pub fn granted_scopes(self, scopes: &[String]) -> Self {
        self.put("granted_scopes", Some(scopes.into()))
    }
    /// Sets or clears the last error.
    pub fn last_error(self, error: Option<&str>) -> Self {
        self.put("last_error", error.map(Value::from))
    }
    /// Sets the token generation.
    pub fn generation(self, generation: u64) -> Self {
        self.put("generation", Some(generation.into()))
    }
    /// Sets or clears the pending sign-in nonce.
    pub fn pending_auth_nonce(self, nonce: Option<&str>) -> Self {
        self.put("pending_auth_nonce", nonce.map(Value::from))
    }
    /// Records when the refresh token was last written (unix seconds).
    pub fn token_written_at(self, at: i64) -> Self {
        self.put("token_written_at", Some(at.into()))
    }
    /// Records the tenant id (`tid`) of the organisation the sign-in was made in.
    pub fn tid(self, tid: &str) -> Self {
        self.put("tid", Some(tid.into()))
    }
    /// Records the object id (`oid`) of the user who signed in.
    pub fn oid(self, oid: &str) -> Self {
        self.put("oid", Some(oid.into()))
    }
    /// Only if this sign-in nonce is still the pending one.
    pub fn if_nonce(self, nonce: &str) -> Self {
        self.expecting(Expect::Equals("pending_auth_nonce".into(), nonce.into()))
    }
    /// Only if the token generation is still this one.
    pub fn if_generation(self, generation: u64) -> Self {
        self.expecting(Expect::Equals("generation".into(), generation.into()))
    }
    /// Only if the item's version is still this one (a read-modify-write).
    pub fn if_version(self, version: u64) -> Self {
        self.expecting(Expect::Equals("version".into(), version.into()))
    }
    /// Only if the refresh token was last written before `at` (unix seconds), or never.
    pub fn if_token_written_before(self, at: i64) -> Self {
        self.expecting(Expect::MissingOrBelow("token_written_at".into(), at.into()))
    }
}

/// The attributes of a subscription item one writer changes: the renewal run
/// owns the Graph id, expiry and last error; dispatch the delta link,
/// watermark and notification and delivery times.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionChange {
    pub(super) update: Update,
}

impl SubscriptionChange {
    /// An empty change.
    pub fn new() -> Self {
        Self::default()
    }
    fn put(self, name: &str, value: Option<Value>) -> Self {
        Self {
            update: self.update.put(name, value),
        }
    }
    /// Sets when the scheduled run next has work for this flow (see
    /// [`Store::due_flows`]); it also files the item in `due-index`.
    pub fn due_at(self, at: OffsetDateTime) -> Self {
        self.put("due_at", Some(rfc3339(at).into()))
            .put("kind", Some(KIND_FLOW.into()))
    }
    /// The scheduled run looks at this flow again in its next run: a change
    /// another writer made (a new Graph subscription or expiry, a pause, a
    /// resume) may change what is due. The run itself sets the time after that.
    fn look_again(self) -> Self {
        self.due_at(OffsetDateTime::UNIX_EPOCH)
    }
    /// Sets Graph's subscription id.
    pub fn graph_id(self, id: &str) -> Self {
        self.put("id", Some(id.into())).look_again()
    }
    /// Sets the id of the signing key its `clientState` was made with.
    pub fn key_id(self, key_id: &str) -> Self {
        self.put("key_id", Some(key_id.into()))
    }
    /// Sets when Graph will delete it unless renewed.
    pub fn expires_at(self, at: Option<OffsetDateTime>) -> Self {
        self.put("expires_at", at.map(|t| rfc3339(t).into())).look_again()
    }
    /// Sets or clears the last error.
    pub fn last_error(self, error: Option<&str>) -> Self {
        self.put("last_error", error.map(Value::from))
    }
    /// Sets the delta link from which a resync starts.
    pub fn delta_link(self, link: &str) -> Self {
        self.put("delta_link", Some(link.into()))
    }
    /// Sets the delta link only if the subscription has none (a recreated
    /// subscription keeps the old one, so the gap is resynced from it).
    pub fn delta_link_if_missing(mut self, link: &str) -> Self {
        self.update
            .set_if_missing
            .push(("delta_link".into(), link.into()));
        self
    }
    /// Records when the last notification arrived.
    pub fn last_notification_at(self, at: OffsetDateTime) -> Self {
        self.put("last_notification_at", Some(rfc3339(at).into()))
    }
    /// Records why the last delivery attempt failed, and when.
    pub fn last_delivery_error(self, why: Option<&str>, at: OffsetDateTime) -> Self {
        self.put("last_delivery_error", why.map(Value::from))
            .put("last_delivery_error_at", Some(rfc3339(at).into()))
    }
    /// Clears the last delivery error (a delivery succeeded).
    pub fn clear_delivery_error(self) -> Self {
        self.put("last_delivery_error", None)
            .put("last_delivery_error_at", None)
    }
    /// Sets how many of its records wait for a retry.
    pub fn waiting(self, n: u64) -> Self {
        self.put("waiting", Some(n.into()))
    }
    /// Records when the sweep ran.
    pub fn last_swept_at(self, at: OffsetDateTime) -> Self {
        self.put("last_swept_at", Some(rfc3339(at).into()))
    }
    /// Sets how many mails the sweep recovered in all.
    pub fn recovered(self, total: u64) -> Self {
        self.put("recovered", Some(total.into()))
    }
    /// Records that the target answered 410 Gone.
    pub fn target_gone_at(self, at: OffsetDateTime) -> Self {
        self.put("target_gone_at", Some(rfc3339(at).into()))
    }
    /// Pauses the flow: nothing is sent to it until it is resumed.
    pub fn paused(self, at: OffsetDateTime, reason: &str) -> Self {
        self.look_again()
            .put("status", Some("paused".into()))
            .put("paused_at", Some(rfc3339(at).into()))
            .put("paused_reason", Some(reason.into()))
    }
    /// Resumes the flow: active again, with its catch-up running from `at`
    /// until [`SubscriptionChange::caught_up`].
    pub fn resumed(self, at: OffsetDateTime) -> Self {
        self.look_again()
            .put("status", Some("active".into()))
            .put("paused_at", None)
            .put("paused_reason", None)
            .put("target_gone_at", None)
            .put("catching_up", Some(rfc3339(at).into()))
    }
    /// The resume's catch-up delivered everything: new notifications are
    /// delivered to the flow again.
    pub fn caught_up(self) -> Self {
        self.put("catching_up", None)
    }
    /// Records when the last event was delivered.
    pub fn last_delivery_at(self, at: OffsetDateTime) -> Self {
        self.put("last_delivery_at", Some(rfc3339(at).into()))
    }
}
