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
