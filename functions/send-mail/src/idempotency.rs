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
use relay365::aws::store::Store;

/// How long a sent key is remembered.
pub const KEEP_SECS: i64 = 24 * 3600;
/// How long a key stays claimed by a send in progress before another may take over.
pub const CLAIM_SECS: i64 = 15 * 60;

/// Keeps idempotency keys.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims a key for a request fingerprint, for `claim_secs`.
    async fn claim(&self, key: &str, fingerprint: &str, claim_secs: i64) -> Result<Claim, String>;
    /// Marks a claimed key as sent.
    async fn sent(&self, key: &str) -> Result<(), String>;
    /// Releases a claim after a failed send, so a retry can send.
    async fn release(&self, key: &str) -> Result<(), String>;
    /// Records that a deferred send failed for good, with its error.
    async fn failed(&self, key: &str, result: &serde_json::Value) -> Result<(), String>;
    /// How a key stands, without claiming it (`None`: free).
    async fn status(&self, key: &str, fingerprint: &str) -> Result<Option<Claim>, String>;
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
    async fn claim(&self, key: &str, fingerprint: &str, claim_secs: i64) -> Result<Claim, String> {
        self.store
            .claim(key, fingerprint, claim_secs)
            .await
            .map_err(|e| e.to_string())
    }

    async fn sent(&self, key: &str) -> Result<(), String> {
        self.store
            .claim_sent(key, KEEP_SECS)
            .await
            .map_err(|e| e.to_string())
    }

    async fn release(&self, key: &str) -> Result<(), String> {
        self.store.claim_release(key).await.map_err(|e| e.to_string())
    }

    async fn status(&self, key: &str, fingerprint: &str) -> Result<Option<Claim>, String> {
        self.store
            .claim_status(key, fingerprint)
            .await
            .map_err(|e| e.to_string())
    }

    async fn failed(&self, key: &str, result: &serde_json::Value) -> Result<(), String> {
        self.store
            .claim_failed(key, result, KEEP_SECS)
            .await
            .map_err(|e| e.to_string())
    }
}
