//! Repeat-safe sending: a request carrying an idempotency key is sent at most
//! once within 24 hours, whichever container serves the retry.
//!
//! Keys are items of the state table (`idem#{key}`), claimed with a
//! conditional put: atomic across containers, one cheap write per send, and
//! gone after a day through the table's TTL, without a clean-up job. Secrets
//! Manager (per-secret pricing and its one-write-per-ten-minutes guidance) and
//! the SQS FIFO deduplication window (five minutes) do not fit this job.

use async_trait::async_trait;
pub use relay365::aws::store::Claim;
use relay365::aws::store::{Store, StoreError};

/// How long a sent key is remembered.
pub const KEEP_SECS: i64 = 24 * 3600;
/// How long a key stays claimed by a send in progress before another may take over.
pub const CLAIM_SECS: i64 = 15 * 60;

/// Keeps idempotency keys; its errors are the state store's, which say
/// whether a retry can help.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims a key for a request fingerprint, for `claim_secs`.
    async fn claim(&self, key: &str, fingerprint: &str, claim_secs: i64) -> Result<Claim, StoreError>;
    /// Marks a claimed key as sent.
    async fn sent(&self, key: &str) -> Result<(), StoreError>;
    /// Releases a claim after a failed send, so a retry can send.
    async fn release(&self, key: &str) -> Result<(), StoreError>;
    /// Records that a deferred send failed for good, with its error.
    async fn failed(&self, key: &str, result: &serde_json::Value) -> Result<(), StoreError>;
    /// How a key stands, without claiming it (`None`: free).
    async fn status(&self, key: &str, fingerprint: &str) -> Result<Option<Claim>, StoreError>;
}

/// [`IdempotencyStore`] on the state table.
#[derive(Debug, Clone)]
pub struct StateKeys {
    store: Store,
}

impl StateKeys {
    /// Keys in this state store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[async_trait]
impl IdempotencyStore for StateKeys {
    async fn claim(&self, key: &str, fingerprint: &str, claim_secs: i64) -> Result<Claim, StoreError> {
        self.store.claim(key, fingerprint, claim_secs).await
    }

    async fn sent(&self, key: &str) -> Result<(), StoreError> {
        self.store.claim_sent(key, KEEP_SECS).await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.store.claim_release(key).await
    }

    async fn status(&self, key: &str, fingerprint: &str) -> Result<Option<Claim>, StoreError> {
        self.store.claim_status(key, fingerprint).await
    }

    async fn failed(&self, key: &str, result: &serde_json::Value) -> Result<(), StoreError> {
        self.store.claim_failed(key, result, KEEP_SECS).await
    }
}
