//! Storage and AWS: the SDK configuration, secrets, the state table and the
//! notification queue, each behind a small port with a local implementation
//! for tests and runs without AWS.

pub mod queue;
pub mod sdk;
pub mod secret_value;
pub mod secrets;
pub mod store;
