//! The fleet benchmark (`make bench-fleet`): what a thousand mailboxes cost
//! and whether the scheduled work keeps up with them.
//!
//! The other benchmarks look at one request; a deployment lives or dies by
//! its fleet: connecting hundreds of mailboxes without breaking Graph's
//! subscription-write limits, one scheduled run renewing and sweeping every
//! subscription inside the function's `Timeout`, a storm of mail delivered
//! once and only once, and the bill per mailbox. This harness measures all of
//! it in one run of the real function binaries:
//!
//! - the stack runs as in `make demo` ([`crate::Demo`]), with Graph latency
//!   injected at the simulator, and the harness's own front in place of the
//!   demo's: each function runs in several sandboxes (as Lambda scales out),
//!   every invocation is timed, and the webhook's and dispatch's work is
//!   spread over them;
//! - N mailboxes are connected through the admin API, half app-only (admin
//!   consent per mailbox) and half delegated (a browser sign-in each);
//! - the `connections` function is invoked with a scheduled event asking to
//!   renew and sweep everything, again and again as EventBridge would, until
//!   its report says nothing is left;
//! - mail arrives at random mailboxes at a fixed rate; the simulator posts the
//!   notifications and the harness's flow receiver records each event;
//! - every AWS request (moto's counting proxy), Graph request and subscription
//!   write (the simulator's recording) is counted per phase, and extrapolated
//!   to a month per mailbox at AWS list prices.
//!
//! It depends on nothing inside the functions: only the admin API, the
//! scheduled event and its JSON report, the webhook, the simulator and the
//! counting proxy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use relay365::model::sensitive::Sensitive;
use relay365::web::signing::EventSigner;
use serde_json::{Value, json};

use crate::apigw::{self, HttpRequest};
use crate::event_sources;
use crate::runtime::{Function, Spec};
use crate::{DEMO_ACCESS_KEY_ID, DEMO_TENANT, Demo, Options};

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The function binaries (`target/release` for the benchmark).
    pub bin_dir: PathBuf,
    /// `template.yaml`: each function's `Timeout` and `MemorySize`, and the architecture.
    pub template: PathBuf,
    /// Mailboxes to connect.
    pub mailboxes: usize,
    /// How many of them sign in delegated (the rest are app-only).
    pub delegated: usize,
    /// Tenants the mailboxes are spread over (1: every write in one tenant).
    pub tenants: usize,
    /// Latency the simulator adds to every Graph request.
    pub graph_latency: Duration,
    /// Admin-API connects in flight at once.
    pub connect_concurrency: usize,
    /// Sandboxes each HTTP function starts with.
    pub sandboxes: usize,
    /// How far each HTTP function scales out when every sandbox is busy
    /// (Lambda starts one per waiting request), and dispatch's event source
    /// (pollers, one invocation each).
    pub max_sandboxes: usize,
    /// Mails per second across the fleet during the storm.
    pub storm_rate: f64,
    /// How long the storm lasts.
    pub storm_seconds: f64,
    /// Scheduled invocations at most in the renewal phase.
    pub max_runs: usize,
    /// Mails per mailbox per day, for the monthly figures.
    pub mails_per_day: f64,
    /// Minutes between scheduled runs, for the monthly figures (the template's 15).
    pub schedule_minutes: f64,
    /// For the function logs.
    pub work_dir: PathBuf,
}

impl FleetOptions {
    /// The benchmark's defaults for `bin_dir`: 1,000 mailboxes, half
    /// delegated, one tenant, 150 ms of Graph latency, 20 mails per second
    /// for 300 seconds.
    pub fn new(bin_dir: PathBuf) -> Self {
        Self {
            bin_dir,
            template: PathBuf::from("template.yaml"),
            mailboxes: 1000,
            delegated: 500,
            tenants: 1,
            graph_latency: Duration::from_millis(150),
            connect_concurrency: 8,
            sandboxes: 4,
            max_sandboxes: 32,
            storm_rate: 20.0,
            storm_seconds: 300.0,
            max_runs: 20,
            mails_per_day: 50.0,
            schedule_minutes: 15.0,
            work_dir: PathBuf::from("target/fleet"),
        }
    }
}

/// What `template.yaml` says about the functions.
#[derive(Debug, Clone, Default)]
pub struct TemplateFacts {
    /// `Timeout` (seconds) by binary name.
    pub timeout: BTreeMap<String, u64>,
    /// `MemorySize` (MB) by binary name.
    pub memory: BTreeMap<String, u64>,
    /// `Architectures` (`arm64` or `x86_64`).
    pub architecture: String,
}

/// Reads each function's `Timeout` and `MemorySize` (its own, else the
/// `Globals`, a `!Ref` resolved to the parameter's default) and the
/// architecture from the template's text.
///
/// # Errors
/// When the file cannot be read or names no function.
pub fn read_template(path: &std::path::Path) -> Result<TemplateFacts, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let value_of = |l: &str, key: &str| {
        l.trim()
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    // The default of a parameter (`Parameters:` → `  Name:` → `    Default:`).
    let parameter_default = |name: &str| -> Option<String> {
        let start = lines.iter().position(|l| *l == format!("  {name}:"))?;
        lines[start + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indent(l) > 2)
            .find_map(|l| value_of(l, "Default"))
    };
    let resolve = |v: String| match v.strip_prefix("!Ref ") {
        Some(name) => parameter_default(name.trim()).unwrap_or(v),
        None => v,
    };
    let mut facts = TemplateFacts::default();
    let mut global_timeout = None;
    let mut global_memory = None;
    // Globals → Function: its keys at indent 4.
    if let Some(g) = lines.iter().position(|l| *l == "Globals:") {
        for l in lines[g + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indent(l) > 0)
        {
            if indent(l) != 4 {
                continue;
            }
            if let Some(v) = value_of(l, "Timeout") {
                global_timeout = resolve(v).parse::<u64>().ok();
            }
            if let Some(v) = value_of(l, "MemorySize") {
                global_memory = resolve(v).parse::<u64>().ok();
            }
            if let Some(v) = value_of(l, "Architectures") {
                facts.architecture = v.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            }
        }
    }
    // Each resource at indent 2 whose block names a `Binary:`.
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if indent(l) == 2 && l.trim_end().ends_with(':') && !l.trim().starts_with('#') {
            let end = lines[i + 1..]
                .iter()
                .position(|l| !l.trim().is_empty() && indent(l) <= 2)
                .map_or(lines.len(), |p| i + 1 + p);
            let block = &lines[i + 1..end];
            if block
                .iter()
                .any(|l| l.trim() == "Type: AWS::Serverless::Function")
                && let Some(binary) = block.iter().find_map(|l| value_of(l, "Binary"))
            {
                let own = |key: &str| {
                    block
                        .iter()
                        .filter(|l| indent(l) == 6)
                        .find_map(|l| value_of(l, key))
                        .and_then(|v| resolve(v).parse::<u64>().ok())
                };
                if let Some(t) = own("Timeout").or(global_timeout) {
                    facts.timeout.insert(binary.clone(), t);
                }
                if let Some(m) = own("MemorySize").or(global_memory) {
                    facts.memory.insert(binary, m);
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    if facts.timeout.is_empty() {
        return Err(format!("{} names no function with a Binary", path.display()));
    }
    if facts.architecture.is_empty() {
        facts.architecture = "x86_64".into();
    }
    Ok(facts)
}

/// The phases, in order; each invocation and request is counted in the phase it happened in.
pub const PHASES: [&str; 4] = ["connect", "renew and sweep", "ordinary run", "storm"];

/// One invocation of a function by the harness.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The function.
    pub function: &'static str,
    /// Index in [`PHASES`].
    pub phase: usize,
    /// Wall time from hand-over to answer.
    pub duration: Duration,
    /// SQS records in the event (dispatch), else 0.
    pub records: usize,
}

/// One invocation of the scheduled run.
#[derive(Debug, Clone)]
pub struct ScheduledRun {
    /// Wall time.
    pub duration: Duration,
    /// The report it answered (or the error).
    pub report: Result<Value, String>,
}

/// Subscription writes per 20-second window.
#[derive(Debug, Clone, Default)]
pub struct WriteRates {
    /// Writes in the phase, by kind.
    pub by_kind: BTreeMap<String, usize>,
    /// The most writes for one tenant and app in any 20 s window.
    pub max_per_tenant: usize,
    /// The most writes for one app in any 20 s window.
    pub max_per_app: usize,
}

/// What one phase cost, as counted at the servers.
#[derive(Debug, Clone, Default)]
pub struct PhaseCounts {
    /// AWS operations (`dynamodb.GetItem`, …) that reached moto.
    pub aws: BTreeMap<String, u32>,
    /// Graph requests (`/v1.0/…`) at the simulator.
    pub graph: u32,
    /// Token requests at the simulator.
    pub token: u32,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct FleetResults {
    /// The template's figures.
    pub template: TemplateFacts,
    /// Connections made active.
    pub connected: usize,
    /// Connects that failed, with why (the first few).
    pub connect_failures: Vec<String>,
    /// Wall time of connecting them all.
    pub connect_wall: Duration,
    /// Graph subscriptions at the simulator after connecting.
    pub subscriptions: usize,
    /// Subscription writes while connecting.
    pub connect_writes: WriteRates,
    /// Each scheduled invocation of the renewal phase.
    pub runs: Vec<ScheduledRun>,
    /// Whether the last run's report said nothing was left.
    pub nothing_left: bool,
    /// Subscriptions due (the event asks for every one).
    pub due: usize,
    /// Of those, renewed at Graph (a later expiry) or recreated (a new one for the same mailbox).
    pub renewed_at_graph: usize,
    /// Subscription writes during the renewal phase.
    pub renew_writes: WriteRates,
    /// The ordinary scheduled run after it (`{"sweep": "all"}` only).
    pub ordinary: Option<ScheduledRun>,
    /// Mails created during the storm.
    pub mails: usize,
    /// Storm wall time (mails created).
    pub storm_wall: Duration,
    /// Distinct mails delivered to the flow.
    pub delivered: usize,
    /// Mails delivered more than once.
    pub doubled: usize,
    /// Events whose signature did not verify.
    pub bad_signatures: usize,
    /// Webhook acknowledgement latencies (ms), first POST of each notification.
    pub ack_ms: Vec<f64>,
    /// Notification POSTs answered other than 2xx.
    pub ack_failures: usize,
    /// Those POSTs by the status they got (0: no answer within Graph's 3 s).
    pub ack_failure_statuses: BTreeMap<u16, usize>,
    /// End-to-end latencies (ms): notification sent to the flow's 2xx.
    pub e2e_ms: Vec<f64>,
    /// Counts per phase (index in [`PHASES`]).
    pub counts: Vec<PhaseCounts>,
    /// Every timed invocation.
    pub invocations: Vec<Invocation>,
    /// Delegated mailboxes: each would hold one token secret in the
    /// Secrets Manager comparison row.
    pub delegated: usize,
    /// Sandboxes each function's pool had started by the end (its scale-out).
    pub sandboxes_started: BTreeMap<String, usize>,
    /// Pollers dispatch's event source had scaled out to by the end.
    pub pollers: usize,
}

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// A function run in several sandboxes, each invocation on a free one and
/// timed. Like Lambda, the pool starts a new sandbox (a cold start) when
/// every one is busy, up to its most.
struct Pool {
    name: &'static str,
    spec: Spec,
    sandboxes: Mutex<Vec<Arc<Function>>>,
    free: Mutex<Vec<usize>>,
    permits: tokio::sync::Semaphore,
}

impl Pool {
    /// Starts `warm` sandboxes; up to `most` run at once.
    async fn start(name: &'static str, spec: Spec, warm: usize, most: usize) -> Result<Self, String> {
        let warm = warm.max(1);
        let mut sandboxes = Vec::new();
        for _ in 0..warm {
            sandboxes.push(Self::sandbox(&spec).await?);
        }
        Ok(Self {
            name,
            spec,
            sandboxes: Mutex::new(sandboxes),
            free: Mutex::new((0..warm).collect()),
            permits: tokio::sync::Semaphore::new(most.max(warm)),
        })
    }

    async fn sandbox(spec: &Spec) -> Result<Arc<Function>, String> {
        let f = Function::new(spec.clone())
            .await
            .map_err(err("a Runtime API cannot listen"))?;
        f.start().await.map_err(|e| e.to_string())?;
        Ok(Arc::new(f))
    }

    /// How many sandboxes the pool has started.
    fn started(&self) -> usize {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Invokes on a free sandbox (a new one when all are busy); returns the
    /// answer and the wall time, a cold start included.
    async fn invoke(&self, event: &Value) -> (Result<Value, String>, Duration) {
        let Ok(_permit) = self.permits.acquire().await else {
            return (Err("the pool is closed".into()), Duration::ZERO);
        };
        let started = Instant::now();
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let i = match free {
            Some(i) => i,
            // A permit and no free sandbox: fewer are started than may run.
            None => match Self::sandbox(&self.spec).await {
                Ok(f) => {
                    let mut all = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
                    all.push(f);
                    all.len() - 1
                }
                Err(e) => return (Err(e), started.elapsed()),
            },
        };
        // The sandbox goes back to the free list however this ends: when a
        // caller gives up (Graph drops a notification POST after 3 s), its
        // handler is dropped here, and a sandbox lost that way was never
        // used again (every later request found none free).
        let _back = FreeOnDrop { free: &self.free, i };
        let sandbox = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())[i].clone();
        let out = sandbox.invoke(event).await.map_err(|e| e.to_string());
        (out, started.elapsed())
    }
}

/// Puts a sandbox back on its pool's free list when dropped.
struct FreeOnDrop<'a> {
    free: &'a Mutex<Vec<usize>>,
    i: usize,
}

impl Drop for FreeOnDrop<'_> {
    fn drop(&mut self) {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).push(self.i);
    }
}

/// What the harness's front, receiver and consumers share.
struct Shared {
    pools: HashMap<&'static str, Pool>,
    phase: AtomicUsize,
    invocations: Mutex<Vec<Invocation>>,
    signer: Mutex<Option<EventSigner>>,
    /// Per Graph message id: when the flow answered each delivery.
    received: Mutex<HashMap<String, Vec<SystemTime>>>,
    bad_signatures: AtomicUsize,
    /// Invocations behind the front that failed (answered 500).
    front_errors: AtomicUsize,
    /// Dispatch's event source: its pollers and how it scales them.
    pollers: Pollers,
}

/// Lambda's SQS event source for dispatch scales its pollers: five batches
/// at a time at first, and while messages are still available up to 300
/// more a minute (one every 200 ms here), to at most `most`. Here it does
/// not scale back down.
struct Pollers {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    most: usize,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    last_added: Mutex<Instant>,
}

impl Pollers {
    /// Lambda's first five.
    const FIRST: usize = 5;
    /// 300 a minute.
    const EVERY: Duration = Duration::from_millis(200);

    fn running(&self) -> usize {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Adds a poller, when the scaling rate and the most allow one.
    fn add(&self, shared: &Arc<Shared>) {
        let mut last = self.last_added.lock().unwrap_or_else(|p| p.into_inner());
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if tasks.len() >= self.most || (tasks.len() >= Self::FIRST && last.elapsed() < Self::EVERY) {
            return;
        }
        *last = Instant::now();
        tasks.push(tokio::spawn(dispatch_poller(shared.clone())));
    }

    fn stop(&self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

impl Shared {
    async fn invoke(&self, function: &'static str, event: &Value, records: usize) -> Result<Value, String> {
        let pool = self
            .pools
            .get(function)
            .ok_or_else(|| format!("no {function} sandboxes"))?;
        let (out, took) = pool.invoke(event).await;
        self.invocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Invocation {
                function: pool.name,
                phase: self.phase.load(Ordering::SeqCst),
                duration: took,
                records,
            });
        out
    }
}

/// The harness's API Gateway: the public routes (OAuth, notifications) to a
/// free sandbox of their function. Admin routes are refused: the harness
/// invokes `connections` itself, as an IAM-signed caller would reach it.
async fn front(State(shared): State<Arc<Shared>>, req: Request<axum::body::Body>) -> Response {
    let (parts, body) = req.into_parts();
    let answer = |(status, headers, body): (u16, Vec<(String, String)>, Vec<u8>)| {
        let mut resp = Response::builder().status(status);
        for (k, v) in headers {
            resp = resp.header(k, v);
        }
        resp.body(axum::body::Body::from(body))
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
    };
    let Ok(body) = axum::body::to_bytes(body, 10 * 1024 * 1024).await else {
        return answer(apigw::gateway_error(413));
    };
    let path = parts.uri.path().to_string();
    let Some((route, params)) = apigw::find(parts.method.as_str(), &path) else {
        return answer(apigw::gateway_error(404));
    };
    if route.iam {
        return answer(apigw::gateway_error(403));
    }
    let http = HttpRequest {
        method: parts.method.as_str().to_string(),
        path,
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
            .collect(),
        body: body.to_vec(),
        source_ip: "203.0.113.9".into(),
    };
    let event = apigw::event(&route.key(), &params, &http, None, "127.0.0.1");
    match shared.invoke(route.function, &event, 0).await {
        Ok(payload) => answer(apigw::response(&payload)),
        Err(e) => {
            // API Gateway's 500 says nothing; the first few failures say why
            // on the harness's error stream.
            if shared.front_errors.fetch_add(1, Ordering::Relaxed) < 20 {
                eprintln!("front: {} failed: {e}", route.function);
            }
            answer(apigw::gateway_error(500))
        }
    }
}

/// The flow's webhook: verifies the signature, records when it answered
/// 2xx for which mail.
async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("relay365-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ok = shared
        .signer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|s| s.verify(signature, &body).is_some());
    if !ok {
        shared.bad_signatures.fetch_add(1, Ordering::Relaxed);
    }
    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(id) = event.pointer("/mail/id").and_then(Value::as_str) {
        shared
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .push(SystemTime::now());
    }
    StatusCode::OK
}

/// One poller of Lambda's SQS event source for dispatch: receive up to 10,
/// hand them over, delete what succeeded. A full batch means messages are
/// still waiting, so the event source scales out.
async fn dispatch_poller(shared: Arc<Shared>) {
    let sqs = shared.pollers.sqs.clone();
    let queue_url = shared.pollers.queue_url.clone();
    let arn = event_sources::queue_arn(&queue_url);
    loop {
        let Some(messages) = event_sources::receive(&sqs, &queue_url, 10).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if messages.is_empty() {
            continue;
        }
        if messages.len() == 10 {
            shared.pollers.add(&shared);
        }
        let records: Vec<Value> = messages.iter().map(|m| crate::sqs_record(m, &arn)).collect();
        let answer = shared
            .invoke("mail-dispatch", &json!({ "Records": records }), messages.len())
            .await;
        let failed: Vec<String> = event_sources::failed_ids(&answer, &messages);
        event_sources::delete_all_but(&sqs, &queue_url, &messages, &failed).await;
    }
}

/// An API Gateway v2 event for an admin route, as API Gateway passes an
/// IAM-signed request on.
fn admin_event(method: &str, path: &str, body: &Value) -> Value {
    let req = HttpRequest {
        method: method.into(),
        path: path.into(),
        query: String::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
        source_ip: "203.0.113.9".into(),
    };
    let (route, params) = apigw::find(method, path)
        .map(|(r, p)| (r.key(), p))
        .unwrap_or_else(|| ("$default".into(), Vec::new()));
    apigw::event(&route, &params, &req, Some(DEMO_ACCESS_KEY_ID), "127.0.0.1")
}

/// One mailbox of the fleet.
#[derive(Debug, Clone)]
struct Mailbox {
    id: String,
    upn: String,
    tenant: String,
    delegated: bool,
}

/// The tenant ids: the demo's own first, then made-up ones.
fn tenant_id(t: usize) -> String {
    if t == 0 {
        DEMO_TENANT.to_string()
    } else {
        format!("f1ee7000-0000-4000-8000-{t:012}")
    }
}

/// A browser's way through a connect or admin-consent link: open it
/// (keeping the cookie), let Microsoft answer (as `upn`, for a sign-in),
/// come back to the callback. Returns the callback's page.
async fn browse(http: &reqwest::Client, link: &str, sign_in_as: Option<&str>) -> Result<String, String> {
    let (jar, to_microsoft) = crate::browser::open_link(http, link).await?;
    let mut at = url::Url::parse(&to_microsoft).map_err(|e| e.to_string())?;
    if let Some(upn) = sign_in_as {
        // The simulator's consent page, answered at once: this user, Accept.
        at.query_pairs_mut()
            .append_pair("sim_user", upn)
            .append_pair("sim_consent", "accept");
    }
    let ms = http
        .get(at.as_str())
        .send()
        .await
        .map_err(|e| format!("GET {at}: {e}"))?;
    if ms.status() != 302 {
        let status = ms.status();
        let page = ms.text().await.unwrap_or_default();
        return Err(format!("Microsoft answered {status}: {}", truncate(&page, 200)));
    }
    let back = crate::browser::location(&ms);
    let (status, page) = crate::browser::come_back(http, &back, &jar).await?;
    if status != 200 {
        return Err(format!(
            "the callback answered {status}: {}",
            truncate(&page, 200)
        ));
    }
    Ok(page)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Connects one mailbox through the admin API and its consent or sign-in.
async fn connect(shared: &Shared, http: &reqwest::Client, m: &Mailbox, target: &str) -> Result<(), String> {
    let auth = if m.delegated { "delegated" } else { "app_secret" };
    let body = json!({"id": m.id, "auth": auth, "mailbox": m.upn, "tenant_id": m.tenant,
                      "scopes": ["Mail.ReadOnly", "Mail.Send"],
                      "subscriptions": [{"resource": "mail", "target": target}]});
    let resp = shared
        .invoke("connections", &admin_event("POST", "/connections", &body), 0)
        .await?;
    let created: Value = serde_json::from_str(resp["body"].as_str().unwrap_or("{}")).unwrap_or_default();
    if resp["statusCode"].as_u64() != Some(201) {
        return Err(format!("POST /connections answered {resp}"));
    }
    let (link, user, done) = if m.delegated {
        (
            created["connect_url"].as_str(),
            Some(m.upn.as_str()),
            "is connected",
        )
    } else {
        (created["admin_consent_url"].as_str(), None, "is active")
    };
    let link = link.ok_or_else(|| format!("no link in {created}"))?;
    let page = browse(http, link, user).await?;
    if !page.contains(done) {
        return Err(format!("the callback said: {}", truncate(&page, 300)));
    }
    Ok(())
}

/// Graph's limits on subscription writes: the most in any 20-second window,
/// per tenant and app, and per app.
fn write_rates(writes: &[graph_sim::SubscriptionWrite]) -> WriteRates {
    let mut rates = WriteRates::default();
    let secs = |w: &graph_sim::SubscriptionWrite| {
        w.at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let mut per_tenant: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut per_app: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for w in writes {
        *rates.by_kind.entry(w.kind.to_string()).or_default() += 1;
        per_tenant
            .entry((w.tenant.clone(), w.app_id.clone()))
            .or_default()
            .push(secs(w));
        per_app.entry(w.app_id.clone()).or_default().push(secs(w));
    }
    // Sliding window: the most writes within any 20 s span.
    let max_in_window = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= 20.0 {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    };
    rates.max_per_tenant = per_tenant.values_mut().map(max_in_window).max().unwrap_or(0);
    rates.max_per_app = per_app.values_mut().map(max_in_window).max().unwrap_or(0);
    rates
}

/// The sum of every number under a key named `left` or ending in `_left`
/// (a count, or an object or array of counts); `None` when there is none.
fn left_in(report: &Value) -> Option<u64> {
    fn sum(v: &Value) -> u64 {
        match v {
            Value::Number(n) => n.as_u64().unwrap_or(0),
            Value::Array(a) => a.iter().map(sum).sum(),
            Value::Object(o) => o.values().map(sum).sum(),
            _ => 0,
        }
    }
    fn walk(v: &Value, found: &mut Option<u64>) {
        if let Value::Object(o) = v {
            for (k, x) in o {
                if k == "left" || k.ends_with("_left") {
                    *found = Some(found.unwrap_or(0) + sum(x));
                } else {
                    walk(x, found);
                }
            }
        }
    }
    let mut found = None;
    walk(report, &mut found);
    found
}

/// The scheduled event with this `detail`, as EventBridge sends it.
fn scheduled(detail: Value) -> Value {
    let mut event = crate::scheduled_event();
    event["detail"] = detail;
    event
}

/// Runs the benchmark; `progress` gets a line per step.
///
/// # Errors
/// A sentence saying which step failed.
pub async fn run(opts: FleetOptions, progress: impl Fn(&str)) -> Result<FleetResults, String> {
    let template = read_template(&opts.template)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(err("the fleet front cannot listen"))?;
    let front_url = format!(
        "http://{}",
        listener.local_addr().map_err(err("the fleet front's address"))?
    );
    let mut demo_opts = Options::for_tests(opts.bin_dir.clone());
    demo_opts.public_url = Some(front_url.clone());
    demo_opts.log_dir = Some(opts.work_dir.join("logs"));
    // A storm reads and writes the table for every mail: in moto's one
    // process with the queue, the figures would measure moto's queueing.
    demo_opts.separate_dynamodb = true;
    // The fleet's own pollers are dispatch's only event source.
    demo_opts.dispatch_event_source = false;
    // The harness invokes the scheduled run itself.
    demo_opts.renew_every = Duration::from_secs(30 * 24 * 3600);
    let demo = Demo::start(demo_opts).await.map_err(err("the local stack"))?;
    let sim = demo
        .sim
        .as_ref()
        .ok_or("the fleet benchmark needs the simulator")?;
    // Each sign-in names its user on the consent page, so concurrent
    // sign-ins never take each other's.
    sim.set_interactive_consent(true);

    let timeout_of = |name: &str| Duration::from_secs(template.timeout.get(name).copied().unwrap_or(30));
    let spec = |name: &str| Spec {
        name: name.to_string(),
        binary: opts.bin_dir.join(name),
        env: demo.env.clone(),
        timeout: timeout_of(name),
        log_file: Some(opts.work_dir.join("logs").join(format!("fleet-{name}.log"))),
        echo: false,
        args: Vec::new(),
        cpu: Default::default(),
        fixed_deadline_ms: None,
        metrics: None,
    };
    let mut pools = HashMap::new();
    for name in ["connections", "oauth-callback", "mail-webhook", "mail-dispatch"] {
        pools.insert(
            name,
            Pool::start(name, spec(name), opts.sandboxes, opts.max_sandboxes).await?,
        );
    }
    // One sandbox for the schedule, as EventBridge invokes one at a time.
    pools.insert(
        "schedule",
        Pool::start("connections", spec("connections"), 1, 1).await?,
    );
    let sdk = demo.aws.sdk_config().await;
    let shared = Arc::new(Shared {
        pools,
        phase: AtomicUsize::new(0),
        invocations: Mutex::new(Vec::new()),
        signer: Mutex::new(None),
        received: Mutex::new(HashMap::new()),
        bad_signatures: AtomicUsize::new(0),
        front_errors: AtomicUsize::new(0),
        pollers: Pollers {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            queue_url: demo.resources.queue_url.clone(),
            most: opts.max_sandboxes.max(Pollers::FIRST),
            tasks: Mutex::new(Vec::new()),
            last_added: Mutex::new(Instant::now()),
        },
    });
    let key = aws_sdk_secretsmanager::Client::new(&sdk)
        .get_secret_value()
        .secret_id("relay365/event-signing-key")
        .send()
        .await
        .map_err(err("the event signing key"))?
        .secret_string
        .unwrap_or_default();
    *shared.signer.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(EventSigner::from_secret(&Sensitive::new(key)).map_err(err("the event signing key"))?);

    let app = axum::Router::new()
        .route("/_fleet/events", axum::routing::post(receive))
        .fallback(front)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(shared.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    for _ in 0..Pollers::FIRST {
        shared.pollers.add(&shared);
    }
    let result = measure(&opts, &demo, sim, &shared, &front_url, template, &progress).await;
    server.abort();
    shared.pollers.stop();
    result
}

/// What every phase works on: the options, the running stack and the
/// harness's shared state.
struct Bench<'a> {
    opts: &'a FleetOptions,
    demo: &'a Demo,
    sim: &'a graph_sim::Sim,
    shared: &'a Arc<Shared>,
    progress: &'a dyn Fn(&str),
}

impl Bench<'_> {
    /// Every count so far: AWS requests at moto's proxy, Graph and token
    /// requests at the simulator.
    fn snapshot(&self) -> PhaseCounts {
        let stats = self.sim.stats();
        PhaseCounts {
            aws: self.demo.aws.counts().into_iter().collect(),
            graph: stats.graph_requests,
            token: stats.token_requests,
        }
    }
}

/// What a phase added to the counts.
fn diff(before: &PhaseCounts, after: &PhaseCounts) -> PhaseCounts {
    let mut aws = BTreeMap::new();
    for (k, v) in &after.aws {
        let d = v.saturating_sub(before.aws.get(k).copied().unwrap_or(0));
        if d > 0 {
            aws.insert(k.clone(), d);
        }
    }
    PhaseCounts {
        aws,
        graph: after.graph.saturating_sub(before.graph),
        token: after.token.saturating_sub(before.token),
    }
}

/// Connecting queues nothing, but a sweep recovers what it finds: dispatch
/// drains before the next phase.
async fn wait_idle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// The four phases, on a running stack.
async fn measure(
    opts: &FleetOptions,
    demo: &Demo,
    sim: &graph_sim::Sim,
    shared: &Arc<Shared>,
    front_url: &str,
    template: TemplateFacts,
    progress: &impl Fn(&str),
) -> Result<FleetResults, String> {
    let target = format!("{front_url}/_fleet/events");
    let tenants: Vec<String> = (0..opts.tenants.max(1)).map(tenant_id).collect();
    let mailboxes: Vec<Mailbox> = (0..opts.mailboxes)
        .map(|i| {
            let t = i % tenants.len();
            Mailbox {
                id: format!("mbx{i:05}"),
                upn: format!("mbx{i:05}@t{t}.fleet.example"),
                tenant: tenants[t].clone(),
                // Delegated and app-only alternate, so both spread evenly.
                delegated: i % 2 == 1 && i / 2 < opts.delegated,
            }
        })
        .collect();
    let delegated = mailboxes.iter().filter(|m| m.delegated).count();
    for (i, m) in mailboxes.iter().enumerate() {
        sim.add_user(graph_sim::User {
            id: format!("u-fleet-{i:05}"),
            upn: m.upn.clone(),
            display_name: format!("Desk {i}"),
            tenant: m.tenant.clone(),
        });
    }
    sim.set_latency(opts.graph_latency);
    let mut results = FleetResults {
        template,
        delegated,
        ..FleetResults::default()
    };
    let b = Bench {
        opts,
        demo,
        sim,
        shared,
        progress,
    };
    connect_all(&b, &mut results, &mailboxes, &tenants, &target).await?;
    renew_all(&b, &mut results).await?;
    ordinary_run(&b, &mut results).await?;
    storm(&b, &mut results, &mailboxes).await?;
    Ok(results)
}

/// 1. Connects every mailbox through the admin API, `connect_concurrency` at a time.
async fn connect_all(
    b: &Bench<'_>,
    results: &mut FleetResults,
    mailboxes: &[Mailbox],
    tenants: &[String],
    target: &str,
) -> Result<(), String> {
    let opts = b.opts;
    let sim = b.sim;
    let shared = b.shared;
    let progress = b.progress;
    // 1. Connect.
    shared.phase.store(0, Ordering::SeqCst);
    sim.set_recording(true);
    let before = b.snapshot();
    progress(&format!(
        "connecting {} mailboxes ({} delegated) in {} tenant(s), {} at a time",
        mailboxes.len(),
        results.delegated,
        tenants.len(),
        opts.connect_concurrency
    ));
    let started = Instant::now();
    let http = relay365::https::client_for(true).map_err(|e| e.to_string())?;
    let gate = Arc::new(tokio::sync::Semaphore::new(opts.connect_concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for m in mailboxes.iter().cloned() {
        let (shared, http, gate, target) = (shared.clone(), http.clone(), gate.clone(), target.to_string());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let out = connect(&shared, &http, &m, &target).await;
            (m.id, out)
        });
    }
    let mut done = 0;
    while let Some(joined) = set.join_next().await {
        done += 1;
        match joined {
            Ok((_, Ok(()))) => results.connected += 1,
            Ok((id, Err(e))) => {
                if results.connect_failures.len() < 5 {
                    results.connect_failures.push(format!("{id}: {e}"));
                }
            }
            Err(e) => results.connect_failures.push(e.to_string()),
        }
        if done % 100 == 0 {
            progress(&format!(
                "  {done} connects answered, {:.0} s",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    results.connect_wall = started.elapsed();
    results.subscriptions = sim.subscriptions().len();
    results.connect_writes = write_rates(&sim.take_recording().subscription_writes);
    results.counts.push(diff(&before, &b.snapshot()));
    progress(&format!(
        "connected {} of {} in {:.1} s; {} subscriptions at Graph",
        results.connected,
        mailboxes.len(),
        results.connect_wall.as_secs_f64(),
        results.subscriptions
    ));
    Ok(())
}

/// 2. Renews everything and sweeps everything, run after run, until a report leaves nothing.
async fn renew_all(b: &Bench<'_>, results: &mut FleetResults) -> Result<(), String> {
    let opts = b.opts;
    let sim = b.sim;
    let shared = b.shared;
    let progress = b.progress;
    // 2. Renew everything and sweep everything, run after run.
    shared.phase.store(1, Ordering::SeqCst);
    let before = b.snapshot();
    let expiries: HashMap<String, (String, time::OffsetDateTime)> = sim
        .subscriptions()
        .into_iter()
        .map(|(id, mailbox, _, expires)| (id, (mailbox, expires)))
        .collect();
    results.due = expiries.len();
    for n in 1..=opts.max_runs.max(1) {
        let event = scheduled(json!({"renew": "all", "sweep": "all"}));
        let (report, duration) = shared
            .pools
            .get("schedule")
            .ok_or("no schedule sandbox")?
            .invoke(&event)
            .await;
        record_schedule(shared, duration);
        progress(&format!(
            "scheduled run {n}: {:.1} s, {}",
            duration.as_secs_f64(),
            match &report {
                Ok(r) => truncate(&r.to_string(), 300).to_string(),
                Err(e) => e.clone(),
            }
        ));
        let left = report.as_ref().ok().and_then(left_in);
        let failed = report.is_err();
        results.runs.push(ScheduledRun { duration, report });
        if !failed && left.unwrap_or(0) == 0 {
            results.nothing_left = true;
            break;
        }
        // Two runs in a row without a report (overrun or failed): another
        // says nothing new about what is left.
        if failed
            && results
                .runs
                .iter()
                .rev()
                .nth(1)
                .is_some_and(|r| r.report.is_err())
        {
            progress("two runs in a row answered no report: stopping the renewal phase");
            break;
        }
    }
    let after: HashMap<String, (String, time::OffsetDateTime)> = sim
        .subscriptions()
        .into_iter()
        .map(|(id, mailbox, _, expires)| (id, (mailbox, expires)))
        .collect();
    let renewed_mailboxes: HashSet<String> = after
        .iter()
        .filter(|(id, (_, expires))| expiries.get(*id).is_none_or(|(_, before)| expires > before))
        .map(|(_, (mailbox, _))| mailbox.to_ascii_lowercase())
        .collect();
    results.renewed_at_graph = expiries
        .values()
        .filter(|(mailbox, _)| renewed_mailboxes.contains(&mailbox.to_ascii_lowercase()))
        .count();
    results.renew_writes = write_rates(&sim.take_recording().subscription_writes);
    wait_idle().await;
    results.counts.push(diff(&before, &b.snapshot()));
    Ok(())
}

/// 3. An ordinary run: the sweep every run does, nothing due.
async fn ordinary_run(b: &Bench<'_>, results: &mut FleetResults) -> Result<(), String> {
    let sim = b.sim;
    let shared = b.shared;
    let progress = b.progress;
    // 3. An ordinary run: the sweep every run does, nothing due.
    shared.phase.store(2, Ordering::SeqCst);
    let before = b.snapshot();
    let (report, duration) = shared
        .pools
        .get("schedule")
        .ok_or("no schedule sandbox")?
        .invoke(&scheduled(json!({"sweep": "all"})))
        .await;
    record_schedule(shared, duration);
    progress(&format!(
        "ordinary run (sweep all): {:.1} s, {}",
        duration.as_secs_f64(),
        match &report {
            Ok(r) => truncate(&r.to_string(), 300).to_string(),
            Err(e) => e.clone(),
        }
    ));
    results.ordinary = Some(ScheduledRun { duration, report });
    wait_idle().await;
    results.counts.push(diff(&before, &b.snapshot()));
    let _ = sim.take_recording();
    Ok(())
}

/// 4. The storm: mail at a fixed rate in random mailboxes, every delivery recorded.
async fn storm(b: &Bench<'_>, results: &mut FleetResults, mailboxes: &[Mailbox]) -> Result<(), String> {
    let opts = b.opts;
    let sim = b.sim;
    let shared = b.shared;
    let progress = b.progress;
    // 4. The storm.
    shared.phase.store(3, Ordering::SeqCst);
    shared.received.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let before = b.snapshot();
    let total = (opts.storm_rate * opts.storm_seconds).round().max(0.0) as usize;
    progress(&format!(
        "storm: {total} mails at {} per second over {} mailboxes",
        opts.storm_rate,
        mailboxes.len()
    ));
    let mut expected = HashSet::new();
    let started = Instant::now();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for k in 0..total {
        let due = Duration::from_secs_f64(k as f64 / opts.storm_rate.max(0.001));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        // xorshift: a fixed, even spread over the mailboxes.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let m = &mailboxes[(seed % mailboxes.len().max(1) as u64) as usize];
        let id = sim.deliver_message(
            &m.upn,
            graph_sim::Message {
                subject: format!("Case {k}: my order is late"),
                from: ("Customer".into(), "customer@example.com".into()),
                to: vec![(m.upn.clone(), m.upn.clone())],
                body_html: format!("<p>Hello, order {k} has not arrived.</p>"),
                ..Default::default()
            },
        );
        expected.insert(id);
        if (k + 1) % 1000 == 0 {
            progress(&format!(
                "  {} mails created, {:.0} s",
                k + 1,
                started.elapsed().as_secs_f64()
            ));
        }
    }
    results.storm_wall = started.elapsed();
    results.mails = expected.len();
    // The tail: poll, bounded, while deliveries still come.
    let mut last = (0, Instant::now());
    loop {
        let delivered = {
            let received = shared.received.lock().unwrap_or_else(|p| p.into_inner());
            expected.iter().filter(|id| received.contains_key(*id)).count()
        };
        if delivered == expected.len() {
            break;
        }
        if delivered > last.0 {
            last = (delivered, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            progress(&format!(
                "no delivery for 60 s: {delivered} of {} delivered",
                expected.len()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Late doubles would show within a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recording = sim.take_recording();
    results.counts.push(diff(&before, &b.snapshot()));
    let received = shared.received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    results.delivered = expected.iter().filter(|id| received.contains_key(*id)).count();
    results.doubled = received.values().filter(|v| v.len() > 1).count();
    results.bad_signatures = shared.bad_signatures.load(Ordering::Relaxed);
    let mut first_sent: HashMap<&str, SystemTime> = HashMap::new();
    let mut seen = HashSet::new();
    for post in &recording.notification_posts {
        if !(200..300).contains(&post.status) {
            results.ack_failures += 1;
            *results.ack_failure_statuses.entry(post.status).or_default() += 1;
        }
        if seen.insert(post.item_id.as_str()) {
            results.ack_ms.push(ms(post.answered_after));
        }
        first_sent.entry(post.item_id.as_str()).or_insert(post.sent_at);
    }
    for (id, times) in &received {
        if let (Some(sent), Some(first)) = (first_sent.get(id.as_str()), times.iter().min()) {
            results
                .e2e_ms
                .push(ms(first.duration_since(*sent).unwrap_or_default()));
        }
    }
    results.invocations = shared
        .invocations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    results.sandboxes_started = shared
        .pools
        .iter()
        .filter(|(key, _)| **key != "schedule")
        .map(|(_, pool)| (pool.name.to_string(), pool.started()))
        .collect();
    results.pollers = shared.pollers.running();
    progress(&format!(
        "storm: {} of {} delivered, {} doubled",
        results.delivered, results.mails, results.doubled
    ));
    Ok(())
}

fn record_schedule(shared: &Shared, duration: Duration) {
    shared
        .invocations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Invocation {
            function: "connections",
            phase: shared.phase.load(Ordering::SeqCst),
            duration,
            records: 0,
        });
}

/// Milliseconds as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile (0 to 100) of `v`, nearest rank; 0 when empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

pub use crate::fleet_report::report;
