//! An inbound change, as relay365 queues it between the webhook (or a
//! catch-up) and dispatch: which connection and Graph subscription, what
//! changed, and for a catch-up which flow and where its walk goes on. One
//! shape for every producer, typed, so dispatch matches on enums instead of
//! Graph's strings. The queue adapter (`aws::queue`) only carries it.

use serde::{Deserialize, Serialize};

/// What happened to an item, as Graph's `changeType` says it (and the
/// reminder relay365 queues itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    /// A new item (a mail received, an event made).
    Created,
    /// An item changed.
    Updated,
    /// An item was deleted.
    Deleted,
    /// Not Graph's: the scheduled run reminds dispatch that a connection's
    /// flow has not been told it needs a new sign-in.
    ReauthReminder,
}

impl ChangeType {
    /// Graph's spelling, if it is one relay365 knows.
    pub fn parse(graph: &str) -> Option<Self> {
        match graph {
            "created" => Some(Self::Created),
            "updated" => Some(Self::Updated),
            "deleted" => Some(Self::Deleted),
            "reauth_reminder" => Some(Self::ReauthReminder),
            _ => None,
        }
    }

    /// As Graph spells it (and events carry it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
            Self::ReauthReminder => "reauth_reminder",
        }
    }
}

/// A lifecycle notification's `lifecycleEvent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LifecycleEvent {
    /// Graph could not deliver some notifications: catch up.
    Missed,
    /// Graph removed the subscription: create it again and catch up.
    SubscriptionRemoved,
    /// The subscription needs reauthorizing: renew it.
    ReauthorizationRequired,
    /// One relay365 does not know (logged and dropped).
    #[serde(other)]
    Unknown,
}

/// A change notification, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedNotification {
    /// The connection (from the verified `clientState`).
    pub connection_id: String,
    /// Graph's subscription id.
    pub subscription_id: String,
    /// What happened to the item (resource notifications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_type: Option<ChangeType>,
    /// The resource path Graph named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The changed item's id (`resourceData.id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The item's version as Graph announced it (`resourceData.@odata.etag`):
    /// two edits of an event are two notifications, not one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A lifecycle notification's event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_event: Option<LifecycleEvent>,
    /// When the webhook received it (RFC 3339).
    pub received_at: String,
    /// Only for this flow (a subscription key): an item a catch-up found for
    /// that flow. Absent: every flow on the Graph subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// A step of a catch-up to run for `flow` (the catch-up module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUpStep>,
}

/// Where a catch-up step starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpStep {
    /// A delta `@odata.nextLink` to go on from; absent: the flow's stored
    /// delta link (or a new baseline when `rebaseline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Start from a new baseline (received since the flow's watermark, less
    /// a margin) instead of the stored link: a resume, an expired link.
    #[serde(default)]
    pub rebaseline: bool,
}

impl QueuedNotification {
    /// A notification of the connection's Graph subscription `subscription_id`
    /// with nothing else set: the start of what the sweep and catch-up queue.
    pub fn for_subscription(connection_id: &str, subscription_id: &str) -> Self {
        Self {
            connection_id: connection_id.to_string(),
            subscription_id: subscription_id.to_string(),
            change_type: None,
            resource: None,
            resource_id: None,
            version: None,
            lifecycle_event: None,
            received_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            flow: None,
            catch_up: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_types_and_lifecycle_events_read_as_graph_spells_them() {
        assert_eq!(ChangeType::parse("created"), Some(ChangeType::Created));
        assert_eq!(ChangeType::parse("Created"), None);
        assert_eq!(ChangeType::Deleted.as_str(), "deleted");
        let n: QueuedNotification = serde_json::from_str(
            r#"{"connection_id":"c","subscription_id":"s","change_type":"updated","lifecycle_event":"subscriptionRemoved","received_at":""}"#,
        )
        .unwrap();
        assert_eq!(n.change_type, Some(ChangeType::Updated));
        assert_eq!(n.lifecycle_event, Some(LifecycleEvent::SubscriptionRemoved));
        let odd: QueuedNotification = serde_json::from_str(
            r#"{"connection_id":"c","subscription_id":"s","lifecycle_event":"somethingNew","received_at":""}"#,
        )
        .unwrap();
        assert_eq!(odd.lifecycle_event, Some(LifecycleEvent::Unknown));
        assert_eq!(
            serde_json::to_value(LifecycleEvent::ReauthorizationRequired).unwrap(),
            "reauthorizationRequired"
        );
    }
}
