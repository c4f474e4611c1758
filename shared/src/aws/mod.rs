//! Storage and AWS: the SDK configuration, secrets, the state table, the
//! notification queue and KMS data keys for sealed tokens, each behind a
//! small port with a local implementation for tests and runs without AWS.

pub(crate) mod aead;
pub mod kms;
pub mod queue;
pub mod sdk;
pub mod sealed;
pub mod secret_value;
pub mod secrets;
pub mod store;
