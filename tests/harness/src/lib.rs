//! The whole stack for end-to-end tests of the functions' handlers: a moto
//! server (Secrets Manager, DynamoDB) holding the app secret, the signing key
//! and the state table, the
//! Microsoft simulator with a registered app and a user, and relay365's
//! `Services` loaded from them exactly as a function loads at cold start.
//!
//! Requests are API Gateway HTTP API (payload 2.0) events built by the demo's
//! gateway (`relay365_demo::apigw`, checked against AWS's own fixtures) and
//! parsed by lambda_http's own deserializer, so the tests cross the same
//! boundary a deployed function does.
//!
//! With `RELAY365_TEST_SEALED_TOKENS=1` in the environment (or
//! [`Options::sealed_tokens`]) every stack creates a KMS key in moto and sets
//! `RELAY365_TOKEN_KEY_ID`, so the same tests run with refresh tokens sealed
//! in the state table instead of token secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;

use graph_sim::{App, Sim, User};
use lambda_http::{Body, Request, Response};
use relay365::aws::secrets::{AwsSecretStore, SecretStore};
use relay365::services::Services;
use relay365_testkit::Aws;

pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CUSTOMER_TENANT: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
pub const CLIENT_SECRET: &str = "harness~client~secret~value~42";
pub const PUBLIC_URL: &str = "https://relay.example";
pub const UPN: &str = "ann@contoso.com";
pub const SHARED_UPN: &str = "support@fabrikam.com";
pub const SIGNING_KEY: &str = "harness-signing-key-0123456789abcdef0123456789";
/// The flows' key: the only one a receiver holds.
pub const EVENT_SIGNING_KEY: &str = "harness-event-signing-key-0123456789abcdef012345";

pub const STATE_TABLE: &str = "relay365-state";

pub struct Stack {
    pub aws: Aws,
    pub sim: Sim,
    pub services: Services,
    /// The store without the cache: what is really in Secrets Manager.
    pub direct: AwsSecretStore,
    /// The settings every container of this stack starts with.
    pub config: relay365::Config,
}

/// Extra settings for a stack.
#[derive(Default)]
pub struct Options {
    pub env: Vec<(&'static str, String)>,
    /// A certificate (DER) registered on the app, and the app secret's certificate JSON.
    pub certificate: Option<(Vec<u8>, serde_json::Value)>,
    /// The public URL (default: https://relay.example); use a [`Gateway`]'s URL for flows that need Graph to call back.
    pub public_url: Option<String>,
    /// Seal refresh tokens with a KMS key in moto (also with `RELAY365_TEST_SEALED_TOKENS=1`).
    pub sealed_tokens: bool,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// An S3 client on the stack's moto (path-style, as moto serves it),
    /// with `bucket` created in it.
    pub async fn s3_with_bucket(&self, bucket: &str) -> aws_sdk_s3::Client {
        let sdk = self.aws.sdk_config().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        s3.create_bucket().bucket(bucket).send().await.unwrap();
        s3
    }

    pub async fn start_with(opts: Options) -> Self {
        let aws = Aws::start().await;
        // The simulator answers as the deployment's cloud's Graph does
        // (scopes are spelled with its root).
        let cloud: relay365::Cloud = opts
            .env
            .iter()
            .find(|(k, _)| *k == "RELAY365_CLOUD")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_default();
        let sim = Sim::start_on(0, cloud.graph_root()).await.unwrap();
        let public = opts.public_url.clone().unwrap_or_else(|| PUBLIC_URL.to_string());
        sim.register_app(App {
            client_id: CLIENT_ID.into(),
            home_tenant: TENANT.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            certificate_der: opts.certificate.as_ref().map(|c| c.0.clone()),
            redirect_uris: vec![
                format!("{public}/oauth/callback"),
                format!("{public}/oauth/admin-consent"),
            ],
        });
        sim.add_user(User {
            id: "u-ann".into(),
            upn: UPN.into(),
            display_name: "Ann".into(),
            tenant: TENANT.into(),
        });
        sim.add_user(User {
            id: "u-admin".into(),
            upn: "admin@fabrikam.com".into(),
            display_name: "Fabrikam admin".into(),
            tenant: CUSTOMER_TENANT.into(),
        });
        let sm = aws_sdk_secretsmanager::Client::new(&aws.sdk_config().await);
        let direct = AwsSecretStore::new(sm);
        let mut app =
            serde_json::json!({"client_id": CLIENT_ID, "tenant_id": TENANT, "client_secret": CLIENT_SECRET});
        if let Some((_, cert)) = &opts.certificate {
            app["certificate"] = cert.clone();
        }
        direct.create("relay365/app", &app.to_string()).await.unwrap();
        direct.create("relay365/signing-key", SIGNING_KEY).await.unwrap();
        direct
            .create("relay365/event-signing-key", EVENT_SIGNING_KEY)
            .await
            .unwrap();
        relay365_testkit::create_state_table(&aws.sdk_config().await, STATE_TABLE)
            .await
            .unwrap();
        let mut env: HashMap<String, String> = [
            ("RELAY365_APP_SECRET_ID", "relay365/app".to_string()),
            (
                "RELAY365_SIGNING_KEY_SECRET_ID",
                "relay365/signing-key".to_string(),
            ),
            (
                "RELAY365_EVENT_SIGNING_SECRET_ID",
                "relay365/event-signing-key".to_string(),
            ),
            ("RELAY365_PUBLIC_URL", public.clone()),
            ("RELAY365_LOGIN_URL", sim.url()),
            ("RELAY365_GRAPH_URL", sim.url()),
            ("RELAY365_STATE_TABLE", STATE_TABLE.to_string()),
            // The flow receiver, the gateway and the simulator listen on loopback.
            ("RELAY365_LOCAL", "1".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if opts.sealed_tokens || relay365_testkit::sealed_tokens_requested() {
            let key = relay365_testkit::create_token_key(&aws.sdk_config().await)
                .await
                .unwrap();
            env.insert("RELAY365_TOKEN_KEY_ID".into(), key);
        }
        for (k, v) in opts.env {
            env.insert(k.to_string(), v);
        }
        let config = relay365::Config::from_map(&env).unwrap();
        let services = container(&aws, config.clone()).await;
        Self {
            aws,
            sim,
            services,
            direct,
            config,
        }
    }

    /// Another Lambda container of the same deployment: its own secret
    /// cache, token cache and clients, against the same moto and simulator.
    pub async fn container(&self) -> Services {
        container(&self.aws, self.config.clone()).await
    }

    /// The stored record of a connection with its subscriptions, read fresh.
    pub async fn stored(&self, id: &str) -> Option<relay365::Connection> {
        self.services.state.connection(id).await.unwrap()
    }

    /// The refresh token stored for a delegated connection (its token
    /// secret, or its sealed item when tokens are sealed), past every cache.
    pub async fn stored_refresh_token(&self, id: &str) -> Option<(String, u64)> {
        if let Some(key) = &self.config.token_key_id {
            let vault = relay365::microsoft::sealed_tokens::SealedTokens::new(
                kms_keys(&self.aws, key).await,
                self.services.state.clone(),
                std::time::Duration::ZERO,
            );
            let t = vault.read(id, 0, true).await.unwrap()?;
            return Some((t.refresh_token.expose().to_string(), t.generation));
        }
        let raw = self.direct.get(&format!("relay365/tokens/{id}")).await.unwrap()?;
        let t: relay365::microsoft::tokens::StoredToken = serde_json::from_str(&raw).unwrap();
        Some((t.refresh_token.expose().to_string(), t.generation))
    }

    /// A GET through the simulator (authorize, admin consent); returns the redirect target.
    pub async fn follow(&self, url: &str) -> String {
        let resp = self.services.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 302, "expected a redirect from {url}");
        resp.headers()["location"].to_str().unwrap().to_string()
    }
}

/// Services as a function builds them at cold start, with fresh caches.
async fn container(aws: &Aws, config: relay365::Config) -> Services {
    let sdk = aws.sdk_config().await;
    let store = Arc::new(relay365::aws::secrets::CachedSecretStore::new(
        AwsSecretStore::new(aws_sdk_secretsmanager::Client::new(&sdk)),
        relay365::services::SECRET_TTL,
    ));
    let state = relay365::aws::store::Store::dynamo(
        Arc::new(relay365::aws::sdk::LazyClient::ready(
            aws_sdk_dynamodb::Client::new(&sdk),
        )),
        STATE_TABLE.into(),
    );
    let keys = match &config.token_key_id {
        Some(key) => Some(kms_keys(aws, key).await),
        None => None,
    };
    Services::with_stores_and_keys(config, store, state, keys)
        .await
        .unwrap()
}

/// KMS data keys of `key` in this stack's moto.
async fn kms_keys(aws: &Aws, key: &str) -> Arc<dyn relay365::aws::kms::DataKeys> {
    let sdk = aws.sdk_config().await;
    Arc::new(relay365::aws::kms::KmsDataKeys::new(
        Arc::new(relay365::aws::sdk::LazyClient::ready(aws_sdk_kms::Client::new(
            &sdk,
        ))),
        key,
    ))
}

/// An API Gateway HTTP API (2.0) event, as AWS sends it, parsed by lambda_http.
pub fn request(method: &str, path_and_query: &str, body: Option<&str>, cookies: &[&str]) -> Request {
    request_with_headers(
        method,
        path_and_query,
        body,
        cookies,
        &[("content-type", "application/json")],
    )
}

pub fn request_with_headers(
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
    cookies: &[&str],
    headers: &[(&str, &str)],
) -> Request {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut hdrs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (name, default) in [("host", "relay.example"), ("user-agent", "relay365-tests")] {
        if !hdrs.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            hdrs.push((name.into(), default.into()));
        }
    }
    if !cookies.is_empty() {
        hdrs.push(("cookie".into(), cookies.join("; ")));
    }
    let http = relay365_demo::apigw::HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: hdrs,
        body: body.unwrap_or("").as_bytes().to_vec(),
        source_ip: "203.0.113.9".into(),
    };
    // The route API Gateway would match (and its path parameters), as deployed.
    let (route_key, params, iam) = relay365_demo::apigw::find(method, path)
        .map(|(r, p)| (r.key(), p, r.iam))
        .unwrap_or_else(|| ("$default".to_string(), Vec::new(), false));
    let event = relay365_demo::apigw::event(
        &route_key,
        &params,
        &http,
        iam.then_some("AKIDTEST"),
        "relay.example",
    );
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway v2 event")
}

pub fn body_text(resp: &Response<Body>) -> String {
    match resp.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        Body::Empty => String::new(),
        _ => String::new(),
    }
}

pub fn body_json(resp: &Response<Body>) -> serde_json::Value {
    serde_json::from_str(&body_text(resp)).unwrap_or(serde_json::Value::Null)
}

pub fn location(resp: &Response<Body>) -> String {
    resp.headers()["location"].to_str().unwrap().to_string()
}

/// `name=value` of each `Set-Cookie`, for sending back.
pub fn cookies(resp: &Response<Body>) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect()
}

/// The path and query of a URL (to hand a redirect back to a handler).
pub fn path_and_query(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

// ---------------------------------------------------------------------------
// An HTTP front for handlers, a flow receiver, and the SQS event source.

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>;
type Handler = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;

/// A loopback HTTP server that turns each request into an API Gateway v2
/// event and hands it to a handler, as API Gateway would. Start it first (its
/// URL is the public URL), set the handler once the services exist.
pub struct Gateway {
    pub url: String,
    handler: Arc<std::sync::RwLock<Option<Handler>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Gateway {
    pub async fn start() -> Self {
        let handler: Arc<std::sync::RwLock<Option<Handler>>> = Arc::new(std::sync::RwLock::new(None));
        let h = handler.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let h = h.clone();
            async move { Self::serve(h, req).await }
        });
        let (addr, tx) = relay365_testkit::serve(app).await;
        let url = format!("http://{addr}");
        Self {
            url,
            handler,
            _stop: tx,
        }
    }

    pub fn set_handler<F, Fut>(&self, f: F)
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    {
        let boxed: Handler = Arc::new(move |r| Box::pin(f(r)));
        *self.handler.write().unwrap() = Some(boxed);
    }

    async fn serve(
        h: Arc<std::sync::RwLock<Option<Handler>>>,
        req: axum::extract::Request,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 8 * 1024 * 1024)
            .await
            .unwrap_or_default();
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
            .collect();
        let hdr_refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = String::from_utf8_lossy(&bytes).into_owned();
        let req = request_with_headers(
            parts.method.as_str(),
            &pq,
            (!body.is_empty()).then_some(body.as_str()),
            &[],
            &hdr_refs,
        );
        let handler = h.read().unwrap().clone();
        let Some(handler) = handler else {
            return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "no handler yet").into_response();
        };
        let resp = handler(req).await;
        let (parts, body) = resp.into_parts();
        let bytes = match body {
            Body::Text(t) => t.into_bytes(),
            Body::Binary(b) => b,
            _ => Vec::new(),
        };
        axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
    }
}

/// What a flow receiver got: headers and body of each POST.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A local flow endpoint that records every event and can fail on purpose.
pub struct Receiver {
    pub url: String,
    events: Arc<std::sync::Mutex<Vec<Received>>>,
    fail_next: Arc<std::sync::atomic::AtomicU32>,
    fail_status: Arc<std::sync::atomic::AtomicU32>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    in_flight: Arc<std::sync::atomic::AtomicU32>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let fail_next = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let fail_status = Arc::new(std::sync::atomic::AtomicU32::new(500));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let in_flight = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (e, f, d, n, fs) = (
            events.clone(),
            fail_next.clone(),
            delay_ms.clone(),
            in_flight.clone(),
            fail_status.clone(),
        );
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
            let (e, f, d, n, fs) = (e.clone(), f.clone(), d.clone(), n.clone(), fs.clone());
            async move {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let delay = d.load(std::sync::atomic::Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                }
                n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                let left = f.load(std::sync::atomic::Ordering::SeqCst);
                if left > 0 {
                    f.store(left - 1, std::sync::atomic::Ordering::SeqCst);
                    let status = fs.load(std::sync::atomic::Ordering::SeqCst) as u16;
                    return axum::http::StatusCode::from_u16(status)
                        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                }
                let headers = headers
                    .iter()
                    .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.to_string(), v.to_string())))
                    .collect();
                e.lock().unwrap().push(Received { headers, body });
                axum::http::StatusCode::OK
            }
        });
        let (addr, tx) = relay365_testkit::serve(app).await;
        let url = format!("http://{addr}/hook");
        Self {
            url,
            events,
            fail_next,
            fail_status,
            delay_ms,
            in_flight,
            _stop: tx,
        }
    }

    /// Every delivery waits this long before it is answered (a slow flow).
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }

    /// Deliveries received but not answered yet.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The next `n` deliveries are answered 500.
    pub fn fail_next(&self, n: u32) {
        self.fail_next_with(n, 500);
    }

    /// The next `n` deliveries are answered `status`.
    pub fn fail_next_with(&self, n: u32, status: u16) {
        self.fail_status
            .store(u32::from(status), std::sync::atomic::Ordering::SeqCst);
        self.fail_next.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn events(&self) -> Vec<Received> {
        self.events.lock().unwrap().clone()
    }
}

/// An SQS FIFO queue in moto with a dead-letter queue, and the event source
/// mapping Lambda would run: receive a batch, hand it to the handler as an
/// `SqsEvent`, delete what succeeded, leave the rest to reappear after the
/// visibility timeout.
pub struct Fifo {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
    pub dlq_url: String,
}

impl Fifo {
    /// The notification queue (FIFO), retrying after 1 s.
    pub async fn create(aws: &Aws, max_receives: u32) -> Self {
        Self::create_named(aws, "relay365", true, max_receives, 1).await
    }

    /// The notification queue (FIFO) with the template's visibility timeout
    /// (540 s): only dispatch's own retry times bring a record back sooner.
    pub async fn as_template(aws: &Aws, max_receives: u32) -> Self {
        Self::create_named(aws, "relay365", true, max_receives, 540).await
    }

    /// A standard queue (the deferred-send queue) with its dead-letter queue.
    pub async fn standard(aws: &Aws, name: &str, max_receives: u32) -> Self {
        Self::create_named(aws, name, false, max_receives, 1).await
    }

    async fn create_named(aws: &Aws, name: &str, fifo: bool, max_receives: u32, visibility: u32) -> Self {
        let client = aws_sdk_sqs::Client::new(&aws.sdk_config().await);
        let suffix = if fifo { ".fifo" } else { "" };
        let mut dlq = client.create_queue().queue_name(format!("{name}-dlq{suffix}"));
        if fifo {
            dlq = dlq.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
        }
        let dlq = dlq.send().await.unwrap();
        let dlq_url = dlq.queue_url().unwrap().to_string();
        let dlq_arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes()
            .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
            .clone();
        let mut q = client.create_queue().queue_name(format!("{name}{suffix}"));
        if fifo {
            q = q.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
        }
        let q = q
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                visibility.to_string(),
            )
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        Self {
            client,
            url: q.queue_url().unwrap().to_string(),
            dlq_url,
        }
    }

    /// One receive-and-dispatch round; returns how many records were handed over.
    pub async fn pump<F, Fut>(&self, handler: F) -> usize
    where
        F: Fn(aws_lambda_events::sqs::SqsEvent) -> Fut,
        Fut: std::future::Future<Output = aws_lambda_events::sqs::SqsBatchResponse>,
    {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        let messages = out.messages().to_vec();
        if messages.is_empty() {
            return 0;
        }
        let records: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| relay365_demo::sqs_record(m, "arn:aws:sqs:us-east-1:123456789012:relay365.fifo"))
            .collect();
        let event: aws_lambda_events::sqs::SqsEvent =
            serde_json::from_value(serde_json::json!({"Records": records})).unwrap();
        let resp = handler(event).await;
        let failed: Vec<String> = resp
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        for m in &messages {
            if !failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
                self.client
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        messages.len()
    }

    /// Messages waiting in the dead-letter queue.
    pub async fn dead_letters(&self) -> usize {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        out.messages().len()
    }
}

pub use relay365_testkit::eventually;
