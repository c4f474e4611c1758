//! The vocabulary: clouds, auth modes, feature scopes, connections and
//! subscriptions, queued notifications, targets, and values that must stay secret. It uses nothing
//! else of the crate; everything else uses it.

pub mod address;
pub mod auth;
pub mod callers;
pub mod cloud;
pub mod connection;
pub mod notification;
pub mod scopes;
pub mod sensitive;
pub mod target;

/// A time as Graph and the state table spell it: RFC 3339 to the second, in
/// the offset it is given (every caller passes UTC, so stored times compare
/// as strings; Graph's `$filter` and delta windows take no fractions).
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
