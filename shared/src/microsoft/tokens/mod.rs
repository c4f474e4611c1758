//! Access tokens for connections, in the three ways a connection can sign in,
//! with a per-container cache.
//!
//! * delegated: authorization code with PKCE, then the refresh-token grant;
//! * app-only with the client secret (client credentials);
//! * app-only with a certificate (client credentials with a signed assertion).
//!
//! The cache renews a token a few minutes before it expires and lets at most
//! one request per connection go to Microsoft at a time, however many
//! invocations ask at once. Microsoft rotates refresh tokens on every use but
//! keeps the old ones valid, so a rotated token is written back to its secret
//! at most once every ten minutes per connection across all containers
//! (Secrets Manager's guidance for one secret) and kept in memory in between.
//! Every sign-in bumps the connection's `generation`; a token held in memory
//! is used only while the record still has the generation it came from. When
//! Microsoft says the grant is gone (`invalid_grant`: revoked, expired after
//! 90 days idle, password reset) the record and the secret are read again past
//! every cache, and only when no newer sign-in exists is the connection marked
//! `reauth_required`, so nothing keeps hammering a dead grant and a fresh
//! sign-in is never undone.
//!
//! With `RELAY365_TOKEN_KEY_ID` the refresh tokens are sealed with KMS in the
//! state table instead ([`crate::microsoft::sealed_tokens`]), under the same
//! rules; a token secret left by an earlier version is moved there on first
//! use and then scheduled for deletion.
//!
//! Where each part lives:
//!
//! * this file: [`TokenError`] and [`TokenSet`], shared by all the others;
//! * `credentials`: the app secret ([`AppCredentials`]) and which of its
//!   credentials (client secret or certificate) a connection's mode uses;
//! * `client`: [`TokenClient`], the authorize and token endpoints, with the
//!   client secret or a signed certificate assertion;
//! * `answer`: what a token endpoint answer means ([`token_answer`],
//!   [`classify`]);
//! * `provider`: [`TokenProvider`], the per-container cache, the renewal of
//!   access tokens and the marking of dead grants;
//! * `refresh_store`: where a delegated connection's refresh token is kept
//!   ([`StoredToken`]): its sign-in generation, the throttled write-back of
//!   rotated tokens, and the move from token secrets to sealed tokens.

mod answer;
mod client;
mod credentials;
mod provider;
mod refresh_store;

use std::time::Instant;

use crate::aws::secrets::SecretError;
use crate::aws::store::StoreError;
use crate::microsoft::sealed_tokens::SealError;
use crate::model::sensitive::Sensitive;

pub use crate::microsoft::stored_token::StoredToken;
pub use answer::{classify, token_answer};
pub use client::{AuthorizeOptions, TokenClient};
pub use credentials::AppCredentials;
pub use provider::TokenProvider;

/// Why no token could be had. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The user must sign in again (revoked, expired, password reset, MFA or consent needed).
    #[error("the mailbox must be connected again: {reason}")]
    ReauthRequired {
        /// The AADSTS code, when Microsoft gave one.
        code: Option<String>,
        /// What happened and what to do, for a person.
        reason: String,
    },
    /// Microsoft refused the app's own credentials: the operator must fix the app secret.
    #[error("Microsoft refused the app's credentials ({code}): {title} {fix}")]
    AppCredentials {
        /// The AADSTS code or OAuth error.
        code: String,
        /// What happened.
        title: String,
        /// What to do.
        fix: String,
    },
    /// Microsoft refused the request for another reason; the explanation says what to change.
    #[error("Microsoft refused the token request ({code}): {title} {fix}")]
    Refused {
        /// The OAuth `error`.
        error: String,
        /// The AADSTS code or OAuth error.
        code: String,
        /// What happened.
        title: String,
        /// What to do.
        fix: String,
    },
    /// The sign-in service could not be reached or failed: retry later.
    #[error("Microsoft's sign-in service is unavailable ({0}); retry later")]
    Unavailable(String),
    /// The deployment's app secret is missing something this connection needs.
    #[error("the app secret is not usable: {0}")]
    Misconfigured(String),
    /// No connection has this id.
    #[error("connection {0} does not exist")]
    UnknownConnection(String),
    /// The connection has not been consented yet.
    #[error("connection {0} is waiting for sign-in or admin consent: open its connect link first")]
    NotConnected(String),
    /// The secret store failed.
    #[error(transparent)]
    Store(#[from] SecretError),
    /// The state table failed.
    #[error(transparent)]
    State(#[from] StoreError),
    /// The sealed refresh token could not be read or written (KMS, or a
    /// token that is not this connection's); the variant says what to do.
    #[error(transparent)]
    Sealed(#[from] SealError),
}

impl TokenError {
    /// True when retrying later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            TokenError::Unavailable(_) => true,
            TokenError::Store(e) => e.is_retryable(),
            TokenError::State(e) => e.is_retryable(),
            TokenError::Sealed(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Tokens Microsoft issued.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// The bearer token for Graph.
    pub access_token: Sensitive,
    /// When it stops working (monotonic clock).
    pub expires_at: Instant,
    /// The new refresh token (delegated only).
    pub refresh_token: Option<Sensitive>,
    /// The permissions granted, as Microsoft reports them.
    pub scopes: Vec<String>,
}

/// serde's description of a JSON error: its kind and position, never a
/// value, so it can name what is wrong in a secret without repeating it.
trait ClassifyMessage {
    fn classify_message(&self) -> String;
}

impl ClassifyMessage for serde_json::Error {
    fn classify_message(&self) -> String {
        format!(
            "{:?} error at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}

#[cfg(test)]
mod tests;
