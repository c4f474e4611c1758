//! The shared library of relay365's Lambda functions.
//!
//! Every function needs the same few things: which Microsoft cloud it talks
//! to, which permissions a feature needs, where a mailbox's tokens live, how to
//! get a valid access token without hammering Microsoft or AWS, and how to call
//! Graph politely. They live here once, so each function's own code is only
//! its handler.

pub mod aadsts;
pub mod api;
pub mod certificate;
pub mod cloud;
pub mod config;
pub mod connection;
pub mod graph;
pub mod http;
pub mod links;
pub mod queue;
pub mod runtime;
pub mod scopes;
pub mod secrets;
pub mod sensitive;
pub mod signing;
pub mod store;
pub mod subscriptions;
pub mod tokens;

pub use cloud::Cloud;
pub use config::Config;
pub use connection::{AuthMode, Connection, Status};
pub use sensitive::Sensitive;
