//! The shared library of relay365's Lambda functions.
//!
//! Every function needs the same few things: which Microsoft cloud it talks
//! to, which permissions a feature needs, where a mailbox's state and tokens
//! live, how to get a valid access token without hammering Microsoft or AWS,
//! and how to call Graph politely. They live here once, so each function's
//! own code is only its handler.
//!
//! A map of the crate, from the bottom up:
//!
//! - [`model`]: the vocabulary (clouds, auth modes, feature scopes,
//!   connections and subscriptions, targets, sensitive values). It uses
//!   nothing else of the crate.
//! - [`config`]: the settings, read once from the environment.
//! - [`aws`]: the SDK configuration, the secret store, the state table
//!   ([`aws::store`]) and the queue.
//! - [`digest`] and [`https`]: SHA-256 spellings and the one outbound HTTPS
//!   client (Graph, the token endpoint, flow targets); [`metrics`]: what the
//!   functions measure, as CloudWatch Embedded Metric Format lines.
//! - [`web`]: signing, the links a browser or Graph brings back, and the
//!   responses the functions answer with.
//! - [`microsoft`]: tokens (with their cache), certificate assertions, AADSTS
//!   explanations, the Graph client and Graph paths.
//! - [`lambda`]: the invocation's deadline as the runtime passes it.
//! - [`services`]: what a function builds once per container from all of the
//!   above; [`delta`]: where a flow's delta query starts and walking one to
//!   its end; [`catchup`]: the one bounded walk of a flow's delta query that
//!   queues what it was never sent; [`subscriptions`]: creating, renewing
//!   and recreating Graph subscriptions on top of them (a recreate starts a
//!   catch-up); [`sweep`]: the reconciliation sweep that runs the catch-up
//!   for a flow; [`schedule`]: the scheduled run that finds the flows that
//!   are due and does their work within the invocation's time and Graph's
//!   write limits.

pub mod aws;
pub mod catchup;
pub mod config;
pub mod delta;
pub mod digest;
pub mod https;
pub mod lambda;
pub mod metrics;
pub mod microsoft;
pub mod model;
pub mod schedule;
pub mod services;
pub mod subscriptions;
pub mod sweep;
pub mod web;

pub use config::Config;
pub use model::cloud::Cloud;
pub use model::connection::{AuthMode, Connection, Status};
pub use model::sensitive::Sensitive;
