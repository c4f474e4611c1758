//! Sends too large to finish inside API Gateway's 29 seconds.
//!
//! API Gateway cuts a request at 29 s whatever the function does next, so a
//! caller whose large send is cut sees a 503 for a mail that is then sent, and
//! sends it again. A request whose attachments by S3 reference add up to more
//! than [`DEFER_ABOVE_BYTES`] is therefore checked completely (connection,
//! send-as policy, every attachment), claimed under its idempotency key (one
//! is made when the caller sent none) and put on the deferred-send queue; the
//! caller gets 202 `{"status": "accepted", "idempotency_key"}` at once. The
//! queue invokes send-mail again, without API Gateway's limit, which sends
//! it and records the result under the key. The caller learns it by repeating
//! the request with the same key: `in_progress`, then `sent` or the error.
//! A passing failure (Graph or S3 unavailable, throttling) is retried by the
//! queue and ends in its dead-letter queue (alarmed), never in a log line alone.

use async_trait::async_trait;
use serde_json::Value;

/// Attachments by reference above this total are sent from the queue. At
/// the slowest upload rate seen to Graph's upload sessions from Lambda
/// (about 2 MB/s) this much fits well inside API Gateway's limit.
pub const DEFER_ABOVE_BYTES: u64 = 20 * 1024 * 1024;

/// How long a deferred send keeps its key claimed: longer than the queue
/// takes to retry it to its dead-letter queue (3 receives of up to 15 minutes).
pub const DEFERRED_CLAIM_SECS: i64 = 3 * 3600;

/// Where deferred sends wait for their turn.
#[async_trait]
pub trait Deferred: Send + Sync {
    /// Queues one request (its JSON, idempotency key included).
    async fn defer(&self, request: &Value) -> Result<(), String>;
}

/// [`Deferred`] on the SQS queue `RELAY365_SEND_QUEUE_URL`.
#[derive(Debug)]
pub struct SqsDeferred {
    client: relay365::aws::sdk::LazyClient<aws_sdk_sqs::Client>,
    url: String,
}

impl SqsDeferred {
    /// The queue at `url`; its client is built on first use.
    pub fn new(url: String) -> Self {
        Self {
            client: relay365::aws::sdk::LazyClient::new(aws_sdk_sqs::Client::new),
            url,
        }
    }

    /// The queue at `url` through a client already built (tests, tools).
    pub fn with_client(client: aws_sdk_sqs::Client, url: String) -> Self {
        Self {
            client: relay365::aws::sdk::LazyClient::ready(client),
            url,
        }
    }
}

#[async_trait]
impl Deferred for SqsDeferred {
    async fn defer(&self, request: &Value) -> Result<(), String> {
        let body = serde_json::json!({ "deferred_send": request }).to_string();
        self.client
            .get()
            .await
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                use aws_sdk_sqs::error::ProvideErrorMetadata;
                e.code().unwrap_or("unreachable").to_string()
            })
    }
}

/// The request a deferred-send queue record carries, if it is one.
pub fn request_of(record_body: &str) -> Option<Value> {
    let mut v: Value = serde_json::from_str(record_body).ok()?;
    v.get_mut("deferred_send").map(Value::take)
}
