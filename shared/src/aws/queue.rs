//! The hand-off between the webhook and dispatch: one SQS FIFO message per
//! genuine change notification.
//!
//! The message group is the connection, so one mailbox's changes are handled
//! in order and never by more than one dispatch at a time (Graph allows four
//! concurrent requests per mailbox). The deduplication id is derived from the
//! subscription, the resource and the change type, so the duplicates Graph
//! sends within SQS's five-minute window collapse into one message.

use async_trait::async_trait;

pub use crate::model::notification::{CatchUpStep, ChangeType, LifecycleEvent, QueuedNotification};

impl QueuedNotification {
    /// The FIFO deduplication id: SHA-256 of what makes two notifications the same.
    pub fn dedup_id(&self) -> String {
        // A catch-up step is work, not a change Graph may repeat: each one
        // queued is its own message.
        let step = match &self.catch_up {
            Some(c) => format!(
                "|step|{}|{}|{}",
                c.cursor.as_deref().unwrap_or(""),
                c.rebaseline,
                self.received_at
            ),
            None => String::new(),
        };
        let flow = self
            .flow
            .as_deref()
            .map(|f| format!("|flow|{f}"))
            .unwrap_or_default();
        let key = format!(
            "{}|{}|{}|{}|{}|{}{flow}{step}",
            self.subscription_id,
            self.resource.as_deref().unwrap_or(""),
            self.resource_id.as_deref().unwrap_or(""),
            self.change_type.map_or("", ChangeType::as_str),
            self.lifecycle_event
                .map(|e| serde_json::to_value(e)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string)))
                .unwrap_or_default()
                .unwrap_or_default(),
            self.version.as_deref().unwrap_or("")
        );
        crate::digest::sha256_hex(key.as_bytes())
    }
}

/// The queue did not take every message: the webhook must answer 5xx so Graph retries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the queue did not accept {failed} of {total} notifications ({detail})")]
pub struct QueueError {
    /// How many were refused or unsent.
    pub failed: usize,
    /// How many were offered.
    pub total: usize,
    /// Why, without message contents.
    pub detail: String,
}

/// Where genuine notifications go.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends all of them, or fails.
    async fn send(&self, items: &[QueuedNotification]) -> Result<(), QueueError>;

    /// Makes received messages (by receipt handle) visible again after the
    /// given number of seconds (0: at once), so a retry comes after its own
    /// backoff instead of the queue's whole visibility timeout. A queue that
    /// cannot leaves the visibility timeout in force.
    async fn retry_after(&self, _handles: &[(String, u32)]) -> Result<(), QueueError> {
        Ok(())
    }
}

/// [`Queue`] in memory: keeps what it is sent, for tests and local tools.
#[derive(Debug, Default)]
pub struct MemoryQueue(std::sync::Mutex<Vec<QueuedNotification>>);

impl MemoryQueue {
    /// Everything sent so far, in order.
    pub fn sent(&self) -> Vec<QueuedNotification> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send(&self, items: &[QueuedNotification]) -> Result<(), QueueError> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(items);
        Ok(())
    }
}

/// [`Queue`] on an SQS FIFO queue.
#[derive(Debug)]
pub struct SqsQueue {
    client: crate::aws::sdk::LazyClient<aws_sdk_sqs::Client>,
    url: String,
}

impl SqsQueue {
    /// A queue at `url` with a client already built.
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Self {
            client: crate::aws::sdk::LazyClient::ready(client),
            url,
        }
    }

    /// A queue at `url` whose client is built on the first send, so a cold
    /// start that only answers the validation handshake builds none.
    pub fn lazy(url: String) -> Self {
        Self {
            client: crate::aws::sdk::LazyClient::new(aws_sdk_sqs::Client::new),
            url,
        }
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, items: &[QueuedNotification]) -> Result<(), QueueError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let total = items.len();
        for chunk in items.chunks(10) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, item) in chunk.iter().enumerate() {
                let body = serde_json::to_string(item).unwrap_or_default();
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .message_group_id(&item.connection_id)
                    .message_deduplication_id(item.dedup_id())
                    .build()
                    .map_err(|e| QueueError {
                        failed: chunk.len(),
                        total,
                        detail: e.to_string(),
                    })?;
                entries.push(entry);
            }
            let (attempt, whole) = crate::aws::sdk::QUEUE_WRITE_TIMEOUTS;
            let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(attempt)
                .operation_timeout(whole)
                .build();
            let out = self
                .client
                .get()
                .await
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .customize()
                .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
                .send()
                .await
                .map_err(|e| unsent(chunk.len(), total, &e))?;
            refused(out.failed().iter().map(|f| f.code()), total)?;
        }
        Ok(())
    }

    async fn retry_after(&self, handles: &[(String, u32)]) -> Result<(), QueueError> {
        for chunk in handles.chunks(10) {
            self.change_visibility(chunk).await?;
        }
        Ok(())
    }
}

impl SqsQueue {
    /// Changes the visibility of up to ten received messages in one call.
    async fn change_visibility(&self, chunk: &[(String, u32)]) -> Result<(), QueueError> {
        use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
        let total = chunk.len();
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, (handle, secs))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .visibility_timeout((*secs).min(43_200) as i32)
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        let out = self
            .client
            .get()
            .await
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| unsent(total, total, &e))?;
        refused(out.failed().iter().map(|f| f.code()), total)
    }
}

/// A batch call SQS did not answer (or refused whole): its error code only.
fn unsent(failed: usize, total: usize, e: &impl aws_sdk_sqs::error::ProvideErrorMetadata) -> QueueError {
    QueueError {
        failed,
        total,
        detail: e.code().unwrap_or("unreachable").to_string(),
    }
}

/// The entries of a batch SQS refused, by their error codes.
fn refused<'a>(codes: impl Iterator<Item = &'a str>, total: usize) -> Result<(), QueueError> {
    let codes: Vec<&str> = codes.collect();
    if codes.is_empty() {
        return Ok(());
    }
    Err(QueueError {
        failed: codes.len(),
        total,
        detail: codes.join(","),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(change: &str, id: &str) -> QueuedNotification {
        QueuedNotification {
            connection_id: "support".into(),
            subscription_id: "sub-1".into(),
            change_type: ChangeType::parse(change),
            resource: Some(format!("Users/u/Messages/{id}")),
            resource_id: Some(id.into()),
            version: None,
            lifecycle_event: None,
            received_at: "2026-11-22T18:00:00Z".into(),
            flow: None,
            catch_up: None,
        }
    }

    #[test]
    fn duplicates_share_a_dedup_id_and_changes_do_not() {
        let a = n("created", "m1");
        let mut b = n("created", "m1");
        b.received_at = "2026-11-22T18:00:01Z".into();
        assert_eq!(a.dedup_id(), b.dedup_id());
        assert_ne!(a.dedup_id(), n("updated", "m1").dedup_id());
        assert_ne!(a.dedup_id(), n("created", "m2").dedup_id());
        let mut edit = n("updated", "m1");
        edit.version = Some("W/\"k1\"".into());
        let mut next = edit.clone();
        next.version = Some("W/\"k2\"".into());
        assert_ne!(
            edit.dedup_id(),
            next.dedup_id(),
            "two edits are two notifications"
        );
        assert_eq!(a.dedup_id().len(), 64);
    }
}
