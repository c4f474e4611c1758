//! What is kept of a delegated connection's sign-in: its refresh token and
//! the sign-in generation it belongs to.
//!
//! The same JSON is a token secret's value and, sealed, a state-table
//! item's: both the token provider (which reads and writes it) and the
//! sealing of tokens (which only turns it into an item and back) use it, so
//! it sits below both.

use serde::Deserialize;

use crate::model::sensitive::Sensitive;

/// A delegated connection's token secret: the refresh token and the sign-in
/// generation it belongs to.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct StoredToken {
    /// The newest refresh token written.
    pub refresh_token: Sensitive,
    /// The sign-in it comes from (the connection record's `generation`).
    pub generation: u64,
}
