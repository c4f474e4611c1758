//! Repeat-safe sending: a request carrying an idempotency key is sent at most
//! once within 24 hours, whichever container serves the retry.
//!
//! The store is a DynamoDB table (on-demand, TTL on `expires_at`) written with
//! a conditional put: atomic across containers, one cheap write per send, and
//! gone after a day without a clean-up job. Secrets Manager (per-secret
//! pricing and its one-write-per-ten-minutes guidance) and the SQS FIFO
//! deduplication window (five minutes) do not fit this job.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

/// How long a sent key is remembered.
pub const KEEP_SECS: i64 = 24 * 3600;
/// How long a key stays claimed by a send in progress before another may take over.
pub const CLAIM_SECS: i64 = 15 * 60;

/// What the store says about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First time: go ahead and send.
    New,
    /// Sent already with the same request: answer as sent, do not send.
    AlreadySent,
    /// Another send with this key is in progress.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// Keeps idempotency keys.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims a key for a request fingerprint.
    async fn claim(&self, key: &str, fingerprint: &str) -> Result<Claim, String>;
    /// Marks a claimed key as sent.
    async fn sent(&self, key: &str) -> Result<(), String>;
    /// Releases a claim after a failed send, so a retry can send.
    async fn release(&self, key: &str) -> Result<(), String>;
}

/// [`IdempotencyStore`] on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: std::sync::Arc<relay365::runtime::LazyClient<aws_sdk_dynamodb::Client>>,
    table: String,
}

impl DynamoStore {
    /// A store in `table` with this client.
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self {
            client: std::sync::Arc::new(relay365::runtime::LazyClient::ready(client)),
            table,
        }
    }

    /// A store in `table` whose client is built on the first request with an
    /// idempotency key (not at cold start).
    pub fn lazy(table: String) -> Self {
        Self {
            client: std::sync::Arc::new(relay365::runtime::LazyClient::new(aws_sdk_dynamodb::Client::new)),
            table,
        }
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[async_trait]
impl IdempotencyStore for DynamoStore {
    async fn claim(&self, key: &str, fingerprint: &str) -> Result<Claim, String> {
        let put = self
            .client
            .get()
            .await
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(key.into()))
            .item("status", AttributeValue::S("pending".into()))
            .item("fingerprint", AttributeValue::S(fingerprint.into()))
            .item("expires_at", AttributeValue::N((now() + CLAIM_SECS).to_string()))
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", AttributeValue::N(now().to_string()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(Claim::New),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                let item = self
                    .client
                    .get()
                    .await
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", AttributeValue::S(key.into()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "DynamoDB GetItem failed: {}",
                            aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                        )
                    })?;
                let item = item.item().cloned().unwrap_or_default();
                let field = |k: &str| {
                    item.get(k)
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default()
                };
                Ok(if field("fingerprint") != fingerprint {
                    Claim::Mismatch
                } else if field("status") == "sent" {
                    Claim::AlreadySent
                } else {
                    Claim::InProgress
                })
            }
            Err(e) => Err(format!(
                "DynamoDB PutItem failed: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            )),
        }
    }

    async fn sent(&self, key: &str) -> Result<(), String> {
        self.client
            .get()
            .await
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.into()))
            .update_expression("SET #s = :sent, expires_at = :exp")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":sent", AttributeValue::S("sent".into()))
            .expression_attribute_values(":exp", AttributeValue::N((now() + KEEP_SECS).to_string()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "DynamoDB UpdateItem failed: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                )
            })
    }

    async fn release(&self, key: &str) -> Result<(), String> {
        self.client
            .get()
            .await
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.into()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "DynamoDB DeleteItem failed: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                )
            })
    }
}
