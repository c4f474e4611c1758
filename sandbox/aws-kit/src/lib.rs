//! The AWS side of the local sandbox (`sandbox/aws-kit`), shared by the demo
//! and every crate's integration tests.
//!
//! * [`Aws`] starts a real moto server (the AWS API emulator, installed into
//!   `.venv` by `make test`) on a free loopback port, behind a small HTTP
//!   proxy that counts each AWS operation that reaches it and can play dead.
//!   Counting at the server is how tests prove that a cache made no call.
//! * [`LogCapture`] records every log line a test produces, so tests can
//!   search them for secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Default)]
struct ProxyState {
    counts: Mutex<BTreeMap<String, u32>>,
    down: AtomicBool,
    /// Milliseconds every request waits before it is passed on.
    latency_ms: std::sync::atomic::AtomicU64,
}

/// A moto server behind a counting proxy. Dropping it stops both.
pub struct Aws {
    _moto: tokio::process::Child,
    _dynamodb_moto: Option<tokio::process::Child>,
    proxy: SocketAddr,
    state: Arc<ProxyState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Serves `app` on a free 127.0.0.1 port until the returned sender is dropped.
pub async fn serve(app: axum::Router) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    serve_on(0, app).await.unwrap()
}

/// Serves `app` on `127.0.0.1:port` (0 for any) until the returned sender is dropped.
///
/// # Errors
/// When the port cannot be bound.
pub async fn serve_on(
    port: u16,
    app: axum::Router,
) -> std::io::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Every answer goes out at once: with Nagle's algorithm a response
    // written in two parts would wait for the client's delayed ACK (40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok((addr, tx))
}

/// Polls `check` every 50 ms for at most `secs` seconds.
pub async fn eventually<F: FnMut() -> bool>(secs: u64, mut check: F) -> bool {
    for _ in 0..secs * 20 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// [`eventually`] for a check that must await (an AWS call, a process).
pub async fn eventually_async<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 20 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

/// `moto_server` as the tests and benches run it (`moto_launcher.py` says
/// what it changes and why): answers with TCP_NODELAY, no record of every
/// model object moto made, and DynamoDB transactions that roll back the
/// items they touched instead of copying whole tables. Without the last two,
/// memory grew with the square of the table (a fleet of 1,000 mailboxes
/// exhausted 24 GB) and each transaction took longer than the one before.
const MOTO_LAUNCHER: &str = include_str!("moto_launcher.py");

fn moto_binary() -> String {
    if let Ok(p) = std::env::var("RELAY365_MOTO_SERVER") {
        return p;
    }
    // Integration tests run with the crate's folder as working directory; find the workspace's .venv.
    let mut dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join(".venv/bin/moto_server");
        if candidate.exists() {
            return candidate.to_string_lossy().into_owned();
        }
        if !dir.pop() {
            panic!(
                "moto_server not found: run `make venv` (or `make test`) first, or set RELAY365_MOTO_SERVER"
            );
        }
    }
}

/// A port free on loopback now, for a server a test starts later.
///
/// It is drawn below the kernel's ephemeral range: every outgoing connection
/// (an SDK client's, the simulator's) takes its local port from that range,
/// so a port the kernel handed out could belong to some client socket by the
/// time the server binds it. Below the range only another test's server
/// competes, and a random draw over twenty thousand ports rarely meets one.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    const FIRST: u16 = 10_000;
    let span = u64::from(low.saturating_sub(FIRST).max(1));
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0..1_000u64 {
        let mut h = random.build_hasher();
        h.write_u64(attempt);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let port = FIRST + (h.finish() % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts one `moto_server` on a free port; returns it and its URL once it answers.
async fn start_moto() -> (tokio::process::Child, String) {
    let port = free_port();
    let binary = moto_binary();
    // moto's server (werkzeug) writes a response's headers and body in two
    // segments with Nagle's algorithm on, so every answer waits for the
    // client's delayed ACK (40 ms on Linux). Run it with TCP_NODELAY,
    // through the Python next to it, when there is one.
    let python = std::path::Path::new(&binary).with_file_name("python");
    let mut command = if python.exists() {
        let mut c = tokio::process::Command::new(python);
        c.args(["-c", MOTO_LAUNCHER]);
        c
    } else {
        tokio::process::Command::new(&binary)
    };
    let moto = command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start moto_server");
    let moto_url = format!("http://127.0.0.1:{port}");
    let probe: Client<_, http_body_util::Empty<axum::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = probe.get(format!("{moto_url}/moto-api/").parse().unwrap()).await
            && r.status().is_success()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "moto_server did not start on port {port}");
    (moto, moto_url)
}

/// Where the proxy sends each request.
struct Upstreams {
    /// Every service not named below.
    default: String,
    /// DynamoDB's own moto, when it has one.
    dynamodb: Option<String>,
}

impl Upstreams {
    fn for_operation(&self, op: &str) -> &str {
        match &self.dynamodb {
            Some(url) if op.starts_with("DynamoDB_") => url,
            _ => &self.default,
        }
    }
}

impl Aws {
    /// Starts moto and the proxy; returns once moto answers.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// Like [`Aws::start`], with DynamoDB in a moto of its own: moto serves
    /// one request at a time per process, and a load test whose every
    /// notification reads and writes the table and the queue would measure
    /// moto's queueing. The two share no state the functions use.
    pub async fn start_split() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(separate_dynamodb: bool) -> Self {
        let (moto, default) = start_moto().await;
        let (dynamodb_moto, dynamodb) = if separate_dynamodb {
            let (child, url) = start_moto().await;
            (Some(child), Some(url))
        } else {
            (None, None)
        };
        let state = Arc::new(ProxyState::default());
        let app = axum::Router::new()
            .fallback(forward)
            .with_state((state.clone(), Arc::new(Upstreams { default, dynamodb })));
        let (proxy, tx) = serve(app).await;
        Self {
            _moto: moto,
            _dynamodb_moto: dynamodb_moto,
            proxy,
            state,
            _stop: tx,
        }
    }

    /// The endpoint to give the AWS SDK (`AWS_ENDPOINT_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// An SDK config for this server: region us-east-1, test credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.url()).await
    }

    /// How many times an operation (`secretsmanager.GetSecretValue`, `AmazonSQS.SendMessageBatch`) reached the server.
    pub fn count(&self, operation: &str) -> u32 {
        self.state
            .counts
            .lock()
            .unwrap()
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Every operation counted so far.
    pub fn counts(&self) -> BTreeMap<String, u32> {
        self.state.counts.lock().unwrap().clone()
    }

    /// Every request waits this long before it reaches moto (a slow AWS).
    pub fn set_latency(&self, latency: Duration) {
        self.state
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// While down, every request is answered 503, as an unreachable service would be.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
}

/// An SDK config for an endpoint: region us-east-1, test credentials, no retries' long waits.
pub async fn sdk_config(url: &str) -> aws_config::SdkConfig {
    let creds = aws_sdk_secretsmanager::config::Credentials::new("test", "test", None, None, "testkit");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(creds)
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(2)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .load()
        .await
}

async fn forward(
    State((state, upstreams)): State<(Arc<ProxyState>, Arc<Upstreams>)>,
    req: Request,
) -> Response {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{} {}", req.method(), req.uri().path()));
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    // SQS's query protocol names the operation in the form body.
    let op = if target.starts_with("POST") {
        form_action(&bytes).map_or(target, |a| format!("AmazonSQS.{a}"))
    } else {
        target
    };
    let moto = upstreams.for_operation(&op).to_string();
    *state.counts.lock().unwrap().entry(op).or_default() += 1;
    if state.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for the test").into_response();
    }
    let latency = state.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    // TCP_NODELAY on this side too: a request's head and body must not wait
    // for moto's delayed ACK either.
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, http_body_util::Full<axum::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let uri = format!(
        "{moto}{}",
        parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut out = hyper::Request::builder().method(parts.method).uri(uri);
    for (k, v) in &parts.headers {
        out = out.header(k, v);
    }
    match client
        .request(out.body(http_body_util::Full::new(bytes)).unwrap())
        .await
    {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            // moto answers as HTTP/1.0 (`Connection: close`). That is
            // between moto and this proxy (a hop-by-hop header): the caller's
            // connection stays open, as AWS keeps it.
            parts.headers.remove(axum::http::header::CONNECTION);
            parts.headers.remove("keep-alive");
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn form_action(body: &[u8]) -> Option<String> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action=").map(str::to_string))
}

/// Records every log line written while it is alive (on this thread's subscriber).
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufWriter {
    type Writer = BufWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogCapture {
    /// Captures at TRACE level, the most a misconfigured deployment could log.
    pub fn start() -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(BufWriter(buf.clone()))
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        Self { buf, _guard: guard }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
}

/// Creates the state table as `template.yaml` defines it (keys `pk`/`sk`,
/// the sparse `kind-index` over connection items, the sparse `due-index`
/// over subscription items by `due_at`, TTL on `ttl`), for moto.
///
/// # Errors
/// The SDK's error, as text.
pub async fn create_state_table(sdk: &aws_config::SdkConfig, name: &str) -> Result<(), String> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
        ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
    };
    let err = |e: &dyn std::fmt::Display| format!("the state table could not be created: {e}");
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| err(&e))
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| err(&e))
    };
    // Both indexes list the items of a kind, keys only, ordered by `range`.
    let by_kind = |index: &str, range: &str| {
        GlobalSecondaryIndex::builder()
            .index_name(index)
            .key_schema(key("kind", KeyType::Hash)?)
            .key_schema(key(range, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()
            .map_err(|e| err(&e))
    };
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let index = by_kind("kind-index", "pk")?;
    let due = by_kind("due-index", "due_at")?;
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .attribute_definitions(attr("kind")?)
        .attribute_definitions(attr("due_at")?)
        .global_secondary_indexes(index)
        .global_secondary_indexes(due)
        .send()
        .await
        .map_err(|e| err(&aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name("ttl")
        .enabled(true)
        .build()
        .map_err(|e| err(&e))?;
    ddb.update_time_to_live()
        .table_name(name)
        .time_to_live_specification(ttl)
        .send()
        .await
        .map_err(|e| err(&aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
    Ok(())
}

/// The alias [`create_token_key`] gives the key, as `RELAY365_TOKEN_KEY_ID` names it.
pub const TOKEN_KEY_ALIAS: &str = "alias/relay365-tokens";

/// Creates a symmetric KMS key for sealing refresh tokens (as the
/// template's `TokenKey`) with the alias [`TOKEN_KEY_ALIAS`]; returns the alias.
///
/// # Errors
/// The SDK's error, as text.
pub async fn create_token_key(sdk: &aws_config::SdkConfig) -> Result<String, String> {
    let err = |e: &dyn std::fmt::Display| format!("the token key could not be created: {e}");
    let kms = aws_sdk_kms::Client::new(sdk);
    let key = kms
        .create_key()
        .description("relay365 refresh tokens (test)")
        .send()
        .await
        .map_err(|e| err(&aws_sdk_kms::error::DisplayErrorContext(&e)))?;
    let id = key
        .key_metadata()
        .map(|m| m.key_id().to_string())
        .ok_or_else(|| err(&"no key id"))?;
    kms.create_alias()
        .alias_name(TOKEN_KEY_ALIAS)
        .target_key_id(id)
        .send()
        .await
        .map_err(|e| err(&aws_sdk_kms::error::DisplayErrorContext(&e)))?;
    Ok(TOKEN_KEY_ALIAS.to_string())
}

/// Whether end-to-end stacks seal refresh tokens with KMS in the state table
/// (`RELAY365_TEST_SEALED_TOKENS=1`) instead of keeping token secrets, so
/// one suite runs on either store.
pub fn sealed_tokens_requested() -> bool {
    std::env::var("RELAY365_TEST_SEALED_TOKENS").is_ok_and(|v| v == "1")
}
