//! `POST /notifications` and `POST /notifications/lifecycle`: the one place
//! Microsoft Graph calls us.
//!
//! Graph gives the validation handshake 10 seconds and every notification 3,
//! and slows or drops endpoints that answer late. So this function does the
//! least that keeps notifications safe: the handshake is answered before any
//! I/O; a notification is verified (`clientState`, in constant time, without a
//! store lookup) and put on the SQS FIFO queue, and only when the queue has
//! accepted every genuine item does it answer 202. If the queue fails it
//! answers 503 and Graph retries, so nothing is lost. Forged items are dropped
//! and counted.

use std::sync::Arc;

use lambda_http::Request;
use relay365::Sensitive;
use relay365::api::{self, HttpResponse};
use relay365::queue::{Queue, QueuedNotification};
use relay365::secrets::SecretStore;
use relay365::signing::Signer;
use serde::Deserialize;

/// Largest notification body accepted (Graph batches are far smaller).
pub const MAX_BODY: usize = 1024 * 1024;

/// The webhook's dependencies. The signing key is read on the first real
/// notification, never for a handshake.
pub struct Webhook {
    store: Option<Arc<dyn SecretStore>>,
    config: Option<relay365::Config>,
    signing_key_secret_id: String,
    signer: tokio::sync::OnceCell<Signer>,
    queue: Arc<dyn Queue>,
}

impl Webhook {
    /// A webhook that loads the signing key from `store` when first needed.
    pub fn new(store: Arc<dyn SecretStore>, signing_key_secret_id: String, queue: Arc<dyn Queue>) -> Self {
        Self {
            store: Some(store),
            config: None,
            signing_key_secret_id,
            signer: tokio::sync::OnceCell::new(),
            queue,
        }
    }

    /// A webhook that builds its secret store from the settings only when the
    /// first real notification arrives, so a cold start that only answers the
    /// validation handshake constructs no AWS client at all.
    pub fn lazy(config: relay365::Config, queue: Arc<dyn Queue>) -> Self {
        let signing_key_secret_id = config.signing_key_secret_id.clone();
        Self {
            store: None,
            config: Some(config),
            signing_key_secret_id,
            signer: tokio::sync::OnceCell::new(),
            queue,
        }
    }

    /// A webhook with its signer already loaded (tests, benchmarks).
    pub fn with_signer(signer: Signer, queue: Arc<dyn Queue>) -> Self {
        Self {
            store: None,
            config: None,
            signing_key_secret_id: String::new(),
            signer: tokio::sync::OnceCell::new_with(Some(signer)),
            queue,
        }
    }

    async fn signer(&self) -> Result<&Signer, String> {
        self.signer
            .get_or_try_init(|| async {
                let store = match (&self.store, &self.config) {
                    (Some(s), _) => s.clone(),
                    (None, Some(c)) => relay365::runtime::secret_store(c)
                        .await
                        .map_err(|e| e.to_string())?,
                    (None, None) => return Err("no secret store".to_string()),
                };
                let key = store
                    .get(&self.signing_key_secret_id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("secret {} is empty", self.signing_key_secret_id))?;
                Signer::new(&Sensitive::new(key)).map_err(|e| e.to_string())
            })
            .await
    }
}

/// [`Queue`] on SQS, with the client built on first use (not at cold start).
pub struct LazySqs {
    url: String,
    queue: tokio::sync::OnceCell<relay365::queue::SqsQueue>,
}

impl LazySqs {
    /// A queue at `url`.
    pub fn new(url: String) -> Self {
        Self {
            url,
            queue: tokio::sync::OnceCell::new(),
        }
    }
}

#[async_trait::async_trait]
impl Queue for LazySqs {
    async fn send(&self, items: &[QueuedNotification]) -> Result<(), relay365::queue::QueueError> {
        let queue = self
            .queue
            .get_or_init(|| async {
                let sdk = relay365::runtime::aws_sdk_config().await;
                relay365::queue::SqsQueue::new(aws_sdk_sqs::Client::new(sdk), self.url.clone())
            })
            .await;
        queue.send(items).await
    }
}

#[derive(Deserialize)]
struct Collection {
    value: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(rename = "subscriptionId")]
    subscription_id: String,
    #[serde(rename = "clientState")]
    client_state: Option<String>,
    #[serde(rename = "changeType")]
    change_type: Option<String>,
    resource: Option<String>,
    #[serde(rename = "resourceData")]
    resource_data: Option<ResourceData>,
    #[serde(rename = "lifecycleEvent")]
    lifecycle_event: Option<String>,
}

#[derive(Deserialize)]
struct ResourceData {
    id: Option<String>,
}

/// Answers one request.
pub async fn handle(req: Request, w: &Webhook) -> HttpResponse {
    let path = api::path(&req);
    let path = path.trim_end_matches('/');
    if path != "/notifications" && path != "/notifications/lifecycle" {
        return api::error(404, "not_found", format!("no route {} {path}", req.method()));
    }
    // The handshake first, before anything that could wait on the network.
    let query = api::query(&req);
    if let Some(token) = api::query_param(&query, "validationToken") {
        let mut resp = api::text(200, token);
        resp.headers_mut().insert(
            "x-content-type-options",
            lambda_http::http::HeaderValue::from_static("nosniff"),
        );
        return resp;
    }
    if req.method() != lambda_http::http::Method::POST {
        return api::error(405, "method_not_allowed", "Graph notifications are POSTed");
    }
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY {
        return api::error(
            413,
            "body_too_large",
            format!("notification bodies are limited to {MAX_BODY} bytes"),
        );
    }
    let collection: Collection = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(_) => {
            return api::error(
                400,
                "invalid_request",
                "expected a change notification collection: {\"value\": [...]}",
            );
        }
    };
    let signer = match w.signer().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot verify notifications without the signing key");
            return api::error(
                503,
                "unavailable",
                "notifications cannot be verified right now; Graph will retry",
            );
        }
    };
    let received_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let total = collection.value.len();
    let mut genuine = Vec::with_capacity(total);
    for item in collection.value {
        let Some(connection_id) = item
            .client_state
            .as_deref()
            .and_then(|cs| signer.verify_client_state(cs))
        else {
            continue;
        };
        genuine.push(QueuedNotification {
            connection_id: connection_id.to_string(),
            subscription_id: item.subscription_id,
            change_type: item.change_type,
            resource: item.resource,
            resource_id: item.resource_data.and_then(|d| d.id),
            lifecycle_event: item.lifecycle_event,
            received_at: received_at.clone(),
        });
    }
    let forged = total - genuine.len();
    if forged > 0 {
        // A metric filter on this line counts forged notifications.
        tracing::warn!(
            forged_notifications = forged,
            "dropped notifications whose clientState did not verify"
        );
    }
    if genuine.is_empty() {
        return api::empty(202);
    }
    match w.queue.send(&genuine).await {
        Ok(()) => {
            tracing::info!(queued = genuine.len(), "notifications queued");
            api::empty(202)
        }
        Err(e) => {
            tracing::error!(error = %e, "queueing failed; answering 503 so Graph retries");
            api::error(
                503,
                "queue_unavailable",
                "the notifications could not be queued; Graph will retry",
            )
        }
    }
}
