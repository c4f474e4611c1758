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
use relay365::aws::queue::{Queue, QueuedNotification};
use relay365::aws::secret_value::SecretValue;
use relay365::aws::secrets::SecretStore;
use relay365::web::response::{self as api, HttpResponse};
use relay365::web::signing::Signer;
use serde::Deserialize;

/// Largest notification body accepted (Graph batches are far smaller).
pub const MAX_BODY: usize = 1024 * 1024;

/// Where the signing key comes from when the first real notification needs it.
enum KeySource {
    /// Read it from this store.
    Store(Arc<dyn SecretStore>),
    /// Build the secret store from these settings first (no AWS client at cold start).
    Settings(Box<relay365::Config>),
}

/// The webhook's dependencies. The signing key is read on the first real
/// notification, never for a handshake, and again when the last read is older
/// than the secret TTL (a rotated key reaches warm containers that way).
pub struct Webhook {
    source: KeySource,
    signing_key_secret_id: String,
    secret_ttl: std::time::Duration,
    signer: tokio::sync::OnceCell<SecretValue<Signer>>,
    queue: Arc<dyn Queue>,
}

impl Webhook {
    /// A webhook that loads the signing key from `store` when first needed.
    pub fn new(store: Arc<dyn SecretStore>, signing_key_secret_id: String, queue: Arc<dyn Queue>) -> Self {
        Self {
            source: KeySource::Store(store),
            signing_key_secret_id,
            secret_ttl: relay365::services::SECRET_TTL,
            signer: tokio::sync::OnceCell::new(),
            queue,
        }
    }

    /// How long a read signing key is trusted before it is read again
    /// (default [`relay365::services::SECRET_TTL`]; a lazy webhook takes
    /// `RELAY365_SECRET_TTL_SECONDS`).
    pub fn with_secret_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.secret_ttl = ttl;
        self
    }

    /// A webhook that builds its secret store from the settings only when the
    /// first real notification arrives, so a cold start that only answers the
    /// validation handshake constructs no AWS client at all.
    pub fn lazy(config: relay365::Config, queue: Arc<dyn Queue>) -> Self {
        Self {
            signing_key_secret_id: config.signing_key_secret_id.clone(),
            secret_ttl: config.secret_ttl,
            source: KeySource::Settings(Box::new(config)),
            signer: tokio::sync::OnceCell::new(),
            queue,
        }
    }

    /// The deployed webhook: settings from the environment, the queue and the
    /// secret store built on the first real notification.
    ///
    /// # Errors
    /// The setting that is missing or invalid.
    pub fn from_env() -> Result<Self, relay365::config::ConfigError> {
        let config = relay365::Config::from_env()?;
        let queue_url = config.queue_url.clone().ok_or(relay365::config::ConfigError {
            name: "RELAY365_QUEUE_URL",
            message: "is required by mail-webhook; the SAM template sets it".into(),
        })?;
        Ok(Self::lazy(
            config,
            Arc::new(relay365::aws::queue::SqsQueue::lazy(queue_url)),
        ))
    }

    /// A webhook with its signer already loaded (tests, benchmarks).
    pub fn with_signer(signer: Signer, queue: Arc<dyn Queue>) -> Self {
        Self {
            source: KeySource::Store(Arc::new(relay365::aws::secrets::MemorySecretStore::default())),
            signing_key_secret_id: String::new(),
            secret_ttl: relay365::services::SECRET_TTL,
            signer: tokio::sync::OnceCell::new_with(Some(SecretValue::fixed(signer))),
            queue,
        }
    }

    async fn signer(&self) -> Result<Arc<Signer>, String> {
        let value = self
            .signer
            .get_or_try_init(|| async {
                let store = match &self.source {
                    KeySource::Store(s) => s.clone(),
                    KeySource::Settings(c) => relay365::services::secret_store(c)
                        .await
                        .map_err(|e| e.to_string())?,
                };
                SecretValue::load(
                    store,
                    &self.signing_key_secret_id,
                    self.secret_ttl,
                    |raw| Signer::new(&Sensitive::new(raw)).map_err(|e| e.to_string()),
                    |raw| Ok::<_, relay365::services::StartupError>(Signer::new(&Sensitive::new(raw))?),
                )
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("secret {} is empty", self.signing_key_secret_id))
            })
            .await?;
        Ok(value.get().await)
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
    lifecycle_event: Option<relay365::aws::queue::LifecycleEvent>,
}

#[derive(Deserialize)]
struct ResourceData {
    id: Option<String>,
    #[serde(rename = "@odata.etag")]
    etag: Option<String>,
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
    // Graph gives up after 3 s; the webhook's answer time is measured
    // (recorded in memory, written after the invocation).
    let started = std::time::Instant::now();
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
    let genuine = genuine(&signer, collection.value, &received_at);
    let forged = total - genuine.len();
    if forged > 0 {
        // A metric filter on this line counts forged notifications.
        tracing::warn!(
            forged_notifications = forged,
            "dropped notifications whose clientState did not verify or whose item id is not Graph's"
        );
    }
    let sent = if genuine.is_empty() {
        Ok(())
    } else {
        w.queue.send(&genuine).await
    };
    let queued = if sent.is_ok() { genuine.len() } else { 0 };
    relay365::metrics::webhook_answered(started.elapsed(), total, queued, forged);
    match sent {
        Ok(()) if genuine.is_empty() => api::empty(202),
        Ok(()) => {
            tracing::info!(queued, "notifications queued");
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

/// The notifications whose `clientState` verifies and whose item id is
/// Graph's, as queue records; the others are forged and left out.
fn genuine(signer: &Signer, items: Vec<Item>, received_at: &str) -> Vec<QueuedNotification> {
    let mut genuine = Vec::with_capacity(items.len());
    for item in items {
        let Some(connection_id) = item
            .client_state
            .as_deref()
            .and_then(|cs| signer.verify_client_state(cs))
        else {
            continue;
        };
        // A genuine clientState with an id that is not Graph's is forged too:
        // it must never become a path at Graph.
        let (resource_id, version) = match item.resource_data {
            Some(d) => (d.id, d.etag),
            None => (None, None),
        };
        if resource_id
            .as_deref()
            .is_some_and(|id| relay365::microsoft::paths::item_id(id).is_err())
        {
            continue;
        }
        genuine.push(QueuedNotification {
            connection_id: connection_id.to_string(),
            subscription_id: item.subscription_id,
            change_type: item
                .change_type
                .as_deref()
                .and_then(relay365::aws::queue::ChangeType::parse),
            resource: item.resource,
            resource_id,
            version,
            lifecycle_event: item.lifecycle_event,
            received_at: received_at.to_string(),
            flow: None,
            catch_up: None,
        });
    }
    genuine
}

/// Any invocation: an API Gateway event, answered in API Gateway's shape.
pub async fn handle_event(payload: serde_json::Value, w: &Webhook) -> serde_json::Value {
    api::to_apigw_v2(match api::http_event(&payload) {
        Ok(req) => handle(req, w).await,
        Err(r) => r,
    })
}

#[cfg(test)]
mod tests {
    //! The webhook on the payloads Graph and API Gateway send (fixtures in
    //! `tests/fixtures`), with the signer loaded and an in-memory queue: no
    //! server, no AWS.
    use relay365::aws::queue::MemoryQueue;

    use super::*;

    const KEY: &str = "unit-test-signing-key-0123456789abcdef0123456789";

    fn webhook() -> (Webhook, Arc<MemoryQueue>) {
        let queue = Arc::new(MemoryQueue::default());
        let signer = Signer::new(&Sensitive::new(KEY)).unwrap();
        (Webhook::with_signer(signer, queue.clone()), queue)
    }

    /// An API Gateway event for a notification POST with `body`, from the handshake fixture's envelope.
    fn notification(body: &str) -> Request {
        let mut event: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/aws/apigw-v2-notification-handshake.json"
        ))
        .unwrap();
        event["rawQueryString"] = "".into();
        event.as_object_mut().unwrap().remove("queryStringParameters");
        event["headers"]["content-type"] = "application/json".into();
        event["body"] = body.into();
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    fn with_client_state(fixture: &str, client_state: &str) -> String {
        fixture.replace("CLIENT_STATE", client_state)
    }

    #[tokio::test]
    async fn the_handshake_fixture_is_echoed_as_text() {
        let (w, queue) = webhook();
        let req = lambda_http::request::from_str(include_str!(
            "../../../tests/fixtures/aws/apigw-v2-notification-handshake.json"
        ))
        .unwrap();
        let resp = handle(req, &w).await;
        assert_eq!(resp.status(), 200);
        let lambda_http::Body::Text(text) = resp.body() else {
            panic!("a text body")
        };
        assert_eq!(
            text,
            "Validation: Testing client application reachability for subscription Request-Id: 0a1b2c3d"
        );
        assert!(queue.sent().is_empty());
    }

    #[tokio::test]
    async fn every_documented_collection_shape_is_queued_with_its_ids() {
        let signer = Signer::new(&Sensitive::new(KEY)).unwrap();
        let state = signer.client_state("support");
        for (fixture, want) in [
            (
                include_str!("../../../tests/fixtures/graph/notification-created.json"),
                1,
            ),
            (
                include_str!("../../../tests/fixtures/graph/notification-batch.json"),
                3,
            ),
            (
                include_str!("../../../tests/fixtures/graph/notification-rich.json"),
                1,
            ),
            (
                include_str!("../../../tests/fixtures/graph/lifecycle-missed.json"),
                1,
            ),
            (
                include_str!("../../../tests/fixtures/graph/lifecycle-subscriptionRemoved.json"),
                1,
            ),
            (
                include_str!("../../../tests/fixtures/graph/lifecycle-reauthorizationRequired.json"),
                1,
            ),
        ] {
            let (w, queue) = webhook();
            let resp = handle(notification(&with_client_state(fixture, state.expose())), &w).await;
            assert_eq!(resp.status(), 202, "{fixture}");
            let queued = queue.sent();
            assert_eq!(queued.len(), want, "{fixture}");
            assert!(queued.iter().all(|n| n.connection_id == "support"));
            assert!(queued.iter().all(|n| !n.subscription_id.is_empty()));
        }
        let (w, queue) = webhook();
        let created = include_str!("../../../tests/fixtures/graph/notification-created.json");
        handle(notification(&with_client_state(created, state.expose())), &w).await;
        let n = queue.sent()[0].clone();
        assert_eq!(n.resource_id.as_deref(), Some("AAMkAGUwNjQ4ZjIxAAA="));
        assert_eq!(n.change_type, Some(relay365::aws::queue::ChangeType::Created));
        let (w, queue) = webhook();
        let missed = include_str!("../../../tests/fixtures/graph/lifecycle-missed.json");
        handle(notification(&with_client_state(missed, state.expose())), &w).await;
        assert_eq!(
            queue.sent()[0].lifecycle_event,
            Some(relay365::aws::queue::LifecycleEvent::Missed)
        );
    }

    #[tokio::test]
    async fn an_item_id_that_would_change_the_graph_path_is_forged() {
        let signer = Signer::new(&Sensitive::new(KEY)).unwrap();
        let state = signer.client_state("support");
        let created = include_str!("../../../tests/fixtures/graph/notification-created.json");
        for id in ["../../ceo@contoso.com/messages/AAMk", "AAMk%2F..%2Fx", "a/b"] {
            let (w, queue) = webhook();
            let body = with_client_state(created, state.expose())
                .replace("\"id\": \"AAMkAGUwNjQ4ZjIxAAA=\"", &format!("\"id\": \"{id}\""));
            assert!(body.contains(id));
            let resp = handle(notification(&body), &w).await;
            assert_eq!(resp.status(), 202);
            assert!(queue.sent().is_empty(), "{id} was queued");
        }
    }

    #[tokio::test]
    async fn a_forged_client_state_queues_nothing() {
        let (w, queue) = webhook();
        let created = include_str!("../../../tests/fixtures/graph/notification-created.json");
        let forged = with_client_state(created, "support.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let resp = handle(notification(&forged), &w).await;
        assert!(resp.status().is_success() || resp.status().is_client_error());
        assert!(queue.sent().is_empty(), "a forged notification was queued");
    }
}
