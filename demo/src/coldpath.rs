//! The cold-path benchmark (`make bench`): what a function's first real
//! request costs in a new Lambda container, over TLS, at Lambda's CPU share.
//!
//! A cold start that answers without the network says little: deployed, a
//! function's first request also builds its HTTPS clients and pays a TLS
//! handshake to every host it calls, on the sliver of CPU a small memory
//! size gets. This harness measures exactly that path on one machine:
//!
//! - the whole stack runs as in `make demo` ([`crate::Demo`]: moto, the
//!   Microsoft simulator, the functions, the flow receiver), and a mailbox is
//!   connected through it;
//! - TLS proxies ([`crate::tls`]) put every host a function calls behind real
//!   TLS with a test CA: Secrets Manager, SQS and DynamoDB (each its own host,
//!   as in AWS), Microsoft's login and Graph hosts, and the flow's target;
//! - each sample starts a new process of the release binary (or of the
//!   Python baseline, `scripts/python_baseline.py`) under a local Runtime API
//!   ([`crate::runtime`]) in a CPU-limited cgroup ([`crate::cgroup`]): either
//!   init with the whole machine and invocations at the share (how Lambda
//!   runs it: init gets a burst), or both phases at the share;
//! - it times init (process start to the first `GET /next`), the first
//!   invocation, a second (warm) one, reads the peak RSS, and records every
//!   TLS handshake the process made, so a slow path shows where its time went.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::apigw::{self, HttpRequest};
use crate::cgroup::{CpuShare, lambda_share};
use crate::runtime::{CpuPlacement, Function, Spec};
use crate::tls::{TestCa, Timeline, TlsProxy, socket_of};
use crate::{DEMO_ACCESS_KEY_ID, DEMO_CLIENT_ID, DEMO_TENANT, DEMO_USER, Demo, Options};

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The release binaries.
    pub bin_dir: PathBuf,
    /// The virtualenv's Python, with boto3, msal and requests.
    pub python: PathBuf,
    /// `scripts/python_baseline.py`.
    pub baseline: PathBuf,
    /// Cold starts per path, runtime, share and mode.
    pub reps: usize,
    /// Memory sizes (MB) whose CPU share to model.
    pub memory_sizes: Vec<u32>,
    /// Leave out the Python baseline.
    pub rust_only: bool,
    /// The paths to measure (dispatch takes what the webhook's first
    /// notification queued, so it needs that path too).
    pub paths: Vec<PathKind>,
    /// For the CA, logs and the raw results.
    pub work_dir: PathBuf,
}

/// Who runs a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Runtime {
    /// The release binary.
    Rust,
    /// `scripts/python_baseline.py`.
    Python,
}

/// How the CPU share applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Init with the whole machine (Lambda's init burst), invocations at the share.
    Phased,
    /// Both phases at the share.
    Throttled,
}

/// A measured path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    /// mail-webhook answering Graph's validation handshake.
    Handshake,
    /// mail-webhook's first real notification: the signing key, the SQS send.
    Notification,
    /// mail-dispatch's first event: state, secrets, token, Graph GET, target POST.
    Dispatch,
    /// send-mail's first mail: state, secrets, token, Graph sendMail.
    SendMail,
    /// oauth-callback: token exchange, `/me`, state write, subscription create.
    Callback,
}

impl PathKind {
    /// Every path, in the order a sample round runs them (dispatch takes what
    /// the webhook queued).
    pub const ALL: [Self; 5] = [
        Self::Handshake,
        Self::Notification,
        Self::Dispatch,
        Self::SendMail,
        Self::Callback,
    ];

    /// The function that serves it (the binary's name).
    pub fn function(self) -> &'static str {
        match self {
            Self::Handshake | Self::Notification => "mail-webhook",
            Self::Dispatch => "mail-dispatch",
            Self::SendMail => "send-mail",
            Self::Callback => "oauth-callback",
        }
    }

    /// The Python baseline's handler for it.
    fn python_handler(self) -> &'static str {
        match self {
            Self::Handshake | Self::Notification => "webhook",
            Self::Dispatch => "dispatch",
            Self::SendMail => "send-mail",
            Self::Callback => "oauth-callback",
        }
    }

    /// The name `--paths` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Notification => "notification",
            Self::Dispatch => "dispatch",
            Self::SendMail => "send-mail",
            Self::Callback => "callback",
        }
    }

    /// How the table names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Handshake => "webhook: validation handshake",
            Self::Notification => "webhook: first notification",
            Self::Dispatch => "dispatch: first event delivered",
            Self::SendMail => "send-mail: first mail",
            Self::Callback => "oauth-callback: sign-in",
        }
    }
}

/// One cold start and what followed.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Process start to the first `GET /next`.
    pub init: Duration,
    /// The first invocation, handed over to answered.
    pub first: Duration,
    /// The second invocation in the same process.
    pub warm: Duration,
    /// Peak resident memory (VmHWM), bytes.
    pub peak_rss: u64,
    /// CPU time the process used during init (all its threads).
    pub init_cpu: Duration,
    /// CPU time it used during the first invocation.
    pub first_cpu: Duration,
    /// The calls the first invocation made: AWS operations as moto counted
    /// them, and Microsoft's token and Graph requests as the simulator did.
    pub first_calls: BTreeMap<String, u32>,
    /// TLS handshakes during init: (service, accepted to finished).
    pub init_handshakes: Vec<(&'static str, Duration)>,
    /// TLS handshakes during the first invocation.
    pub first_handshakes: Vec<(&'static str, Duration)>,
}

impl Sample {
    /// What the caller of a cold start waits: init, then the first invocation.
    pub fn cold(&self) -> Duration {
        self.init + self.first
    }
}

/// Samples by (memory size, mode, path, runtime).
pub type Samples = BTreeMap<(u32, Mode, PathKind, Runtime), Vec<Sample>>;

/// What a run measured.
#[derive(Debug, Default)]
pub struct Results {
    /// The samples.
    pub samples: Samples,
    /// Why CPU shares could not be applied, when they could not (every
    /// figure is then at the machine's full speed, and the report says so).
    pub unthrottled: Option<String>,
    /// How long the local servers take to answer one call, measured from
    /// the harness over plain HTTP: (what, median milliseconds).
    pub server_latency: Vec<(&'static str, f64)>,
}

/// The whole benchmark: the stack, the TLS fronts and the state both runtimes use.
struct Bench {
    demo: Demo,
    opts: BenchOptions,
    timeline: Timeline,
    _proxies: Vec<TlsProxy>,
    env: Vec<(String, String)>,
    queues: BTreeMap<Runtime, (String, String)>,
    sqs: aws_sdk_sqs::Client,
    counter: AtomicU64,
}

/// The bench connection's id: every path but the callback uses it.
const CONNECTION: &str = "bench";

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Runs every sample and returns them.
///
/// # Errors
/// A sentence saying which step failed (a binary missing, the stack not
/// starting, a path answering wrongly).
pub async fn run(opts: BenchOptions, progress: impl Fn(&str)) -> Result<Results, String> {
    let bench = Bench::start(opts).await?;
    progress("stack ready, mailbox connected, TLS fronts up");
    let mut results = Results {
        server_latency: bench.server_latency().await,
        ..Results::default()
    };
    let runtimes: &[Runtime] = if bench.opts.rust_only {
        &[Runtime::Rust]
    } else {
        &[Runtime::Rust, Runtime::Python]
    };
    for &mb in &bench.opts.memory_sizes {
        let share = match CpuShare::create(&format!("bench-{mb}"), lambda_share(mb)) {
            Ok(s) => Some(s),
            Err(why) => {
                progress(&format!("{why}: measuring at full speed"));
                results.unthrottled = Some(why);
                None
            }
        };
        let modes: &[Mode] = if share.is_some() {
            &[Mode::Phased, Mode::Throttled]
        } else {
            &[Mode::Phased]
        };
        for &mode in modes {
            for &runtime in runtimes {
                for rep in 0..bench.opts.reps {
                    for &path in &bench.opts.paths {
                        let sample = bench
                            .sample(path, runtime, mode, mb, share.as_ref())
                            .await
                            .map_err(|e| format!("{} ({runtime:?}, {mb} MB, {mode:?}): {e}", path.label()))?;
                        progress(&format!(
                            "{mb} MB {mode:?} {runtime:?} #{rep} {}: init {:.1} ms, first {:.1} ms",
                            path.label(),
                            ms(sample.init),
                            ms(sample.first)
                        ));
                        results
                            .samples
                            .entry((mb, mode, path, runtime))
                            .or_default()
                            .push(sample);
                    }
                }
            }
        }
    }
    Ok(results)
}

impl Bench {
    async fn start(opts: BenchOptions) -> Result<Self, String> {
        if opts.paths.contains(&PathKind::Dispatch) && !opts.paths.contains(&PathKind::Notification) {
            return Err("dispatch takes what the webhook's first notification queued: measure both".into());
        }
        for &path in &opts.paths {
            let binary = opts.bin_dir.join(path.function());
            if !binary.is_file() {
                return Err(format!(
                    "{} is missing: run `make release` first",
                    binary.display()
                ));
            }
        }
        if !opts.rust_only && !opts.python.is_file() {
            return Err(format!(
                "{} is missing: run `make bench`, which installs the Python baseline's libraries",
                opts.python.display()
            ));
        }
        let mut demo_opts = Options::for_tests(opts.bin_dir.clone());
        demo_opts.log_dir = Some(opts.work_dir.join("demo-logs"));
        // Refresh tokens stay in Secrets Manager here, as the Python
        // baseline keeps them: both sides read one secret on the cold path,
        // so the comparison is like with like.
        demo_opts.seal_tokens = false;
        let demo = Demo::start(demo_opts).await.map_err(err("the local stack"))?;
        let sim = demo.sim.as_ref().ok_or("the benchmark needs the simulator")?;
        // Mail arriving for the benchmark's samples must reach only the
        // process a sample starts, never the stack's own webhook.
        sim.hold_notifications(true);

        let ca = TestCa::create(&opts.work_dir)?;
        let timeline: Timeline = Arc::new(Mutex::new(Vec::new()));
        let moto = socket_of(&demo.aws.url())?;
        let sim_addr = socket_of(&sim.url())?;
        let receiver = socket_of(&demo.receiver.url)?;
        let mut proxies = Vec::new();
        let mut urls = BTreeMap::new();
        for (service, upstream) in [
            ("secretsmanager", moto),
            ("sqs", moto),
            ("dynamodb", moto),
            ("login", sim_addr),
            ("graph", sim_addr),
            ("target", receiver),
        ] {
            let proxy = TlsProxy::start(service, upstream, &ca, timeline.clone())
                .await
                .map_err(err("a TLS proxy cannot listen"))?;
            urls.insert(service, proxy.url.clone());
            proxies.push(proxy);
        }
        sim.set_advertised_url(&urls["login"]);

        let sdk = demo.aws.sdk_config().await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let mut queues = BTreeMap::new();
        for (runtime, name) in [
            (Runtime::Rust, "relay365-bench-rust.fifo"),
            (Runtime::Python, "relay365-bench-python.fifo"),
        ] {
            let url = sqs
                .create_queue()
                .queue_name(name)
                .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
                .send()
                .await
                .map_err(err("a benchmark queue"))?
                .queue_url
                .unwrap_or_default();
            let arn = format!("arn:aws:sqs:us-east-1:123456789012:{name}");
            queues.insert(runtime, (url, arn));
        }

        let ca_file = ca.root_pem_file.display().to_string();
        let mut env: Vec<(String, String)> = demo
            .env
            .iter()
            .filter(|(k, _)| k != "AWS_ENDPOINT_URL")
            .cloned()
            .collect();
        let target = format!("{}/events", urls["target"]);
        let set = |env: &mut Vec<(String, String)>, k: &str, v: String| {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v));
        };
        for (k, v) in [
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", urls["secretsmanager"].clone()),
            ("AWS_ENDPOINT_URL_SQS", urls["sqs"].clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB", urls["dynamodb"].clone()),
            ("AWS_ENDPOINT_URL_S3", demo.aws.url()),
            ("RELAY365_LOGIN_URL", urls["login"].clone()),
            ("RELAY365_GRAPH_URL", urls["graph"].clone()),
            ("RELAY365_DEFAULT_TARGET", target.clone()),
            ("RELAY365_LOCAL_CA_FILE", ca_file.clone()),
            ("AWS_CA_BUNDLE", ca_file.clone()),
            ("REQUESTS_CA_BUNDLE", ca_file),
            ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ] {
            set(&mut env, k, v);
        }
        // `RUST_LOG=debug relay365-coldpath …` passes the level on, with the
        // functions' logs as JSON lines in the work directory's logs/.
        if let Ok(level) = std::env::var("RUST_LOG") {
            set(&mut env, "RUST_LOG", level);
            set(&mut env, "AWS_LAMBDA_LOG_FORMAT", "JSON".into());
        }

        let bench = Self {
            demo,
            opts,
            timeline,
            _proxies: proxies,
            env,
            queues,
            sqs,
            counter: AtomicU64::new(0),
        };
        let conn = bench.create_connection(CONNECTION, Some(&target), true).await?;
        let (status, page) = crate::browser::sign_in(&conn).await?;
        if status != 200 || !page.contains("is connected") {
            return Err(format!(
                "the benchmark mailbox did not connect ({status}): {page}"
            ));
        }
        Ok(bench)
    }

    fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The simulator's own (plain HTTP) URL, as a browser reaches it.
    fn sim_url(&self) -> String {
        self.demo
            .sim
            .as_ref()
            .map(graph_sim::Sim::url)
            .unwrap_or_default()
    }

    /// Creates a delegated connection through the stack's own `connections`
    /// function and returns its connect link.
    async fn create_connection(
        &self,
        id: &str,
        target: Option<&str>,
        subscribe: bool,
    ) -> Result<String, String> {
        let mut sub = json!({"resource": "mail"});
        if let Some(t) = target {
            sub["target"] = json!(t);
        }
        let subs = if subscribe { vec![sub] } else { Vec::new() };
        let body = json!({"id": id, "auth": "delegated", "scopes": ["Mail.ReadOnly", "Mail.Send"], "subscriptions": subs});
        let event = http_event(
            "POST",
            "/connections",
            "",
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
            Some(DEMO_ACCESS_KEY_ID),
        );
        let f = self
            .demo
            .function("connections")
            .ok_or("no connections function")?;
        let resp = f.invoke(&event).await.map_err(err("POST /connections"))?;
        let created: Value = serde_json::from_str(resp["body"].as_str().unwrap_or("{}")).unwrap_or_default();
        created["connect_url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("POST /connections answered {resp}"))
    }

    /// An event for `path`, made fresh: each invocation gets its own mail,
    /// queued message or sign-in.
    async fn event(&self, path: PathKind, runtime: Runtime) -> Result<Value, String> {
        Ok(match path {
            PathKind::Handshake => http_event(
                "POST",
                "/notifications",
                "validationToken=Validation%3A+Testing+client+application+reachability",
                &[],
                b"",
                None,
            ),
            PathKind::Notification => http_event(
                "POST",
                "/notifications",
                "",
                &[("content-type", "application/json")],
                self.new_mail_notification()?.as_bytes(),
                None,
            ),
            PathKind::Dispatch => self.queued(runtime).await?,
            PathKind::SendMail => json!({"connection_id": CONNECTION, "to": ["customer@example.com"],
                                         "subject": "Your case", "body": {"text": "We are on it."}}),
            PathKind::Callback => self.callback_event(runtime).await?,
        })
    }

    /// A new mail in the bench mailbox, and the notification Graph would
    /// POST for it to the bench connection's subscription.
    fn new_mail_notification(&self) -> Result<String, String> {
        let sim = self.demo.sim.as_ref().ok_or("no simulator")?;
        let n = self.next_id();
        sim.deliver_message(
            DEMO_USER,
            graph_sim::Message {
                subject: format!("Order {n} is late"),
                from: ("Customer".into(), "customer@example.com".into()),
                to: vec![("Support".into(), DEMO_USER.into())],
                body_html: "<p>Where is my order?</p>".into(),
                ..graph_sim::Message::default()
            },
        );
        let prefix = format!("{CONNECTION}.");
        sim.take_held_notifications()
            .into_iter()
            .map(|(_, body)| body)
            .find(|b| {
                b["value"][0]["clientState"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&prefix))
            })
            .map(|b| b.to_string())
            .ok_or_else(|| "the simulator held no notification for the bench subscription".to_string())
    }

    /// One message the runtime's webhook queued, as the event source mapping hands it over.
    async fn queued(&self, runtime: Runtime) -> Result<Value, String> {
        let (url, arn) = &self.queues[&runtime];
        let got = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(1)
            .wait_time_seconds(5)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(err("receiving from the benchmark queue"))?;
        let m = got
            .messages()
            .first()
            .ok_or("the webhook queued nothing for dispatch to take")?;
        let record = crate::sqs_record(m, arn);
        if let Some(handle) = m.receipt_handle() {
            let _ = self
                .sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(handle)
                .send()
                .await;
        }
        Ok(json!({"Records": [record]}))
    }

    /// The callback a browser brings back after signing in for a new connection.
    async fn callback_event(&self, runtime: Runtime) -> Result<Value, String> {
        let n = self.next_id();
        let (callback, cookie) = match runtime {
            Runtime::Rust => {
                // No subscription: the bench mailbox's inbox has one
                // already (the bench connection's), and Graph allows one.
                let link = self.create_connection(&format!("cb-{n}"), None, false).await?;
                crate::browser::authorize(&link).await?
            }
            Runtime::Python => {
                let mut url =
                    url::Url::parse(&format!("{}/{DEMO_TENANT}/oauth2/v2.0/authorize", self.sim_url()))
                        .map_err(err("the authorize URL"))?;
                url.query_pairs_mut()
                    .append_pair("client_id", DEMO_CLIENT_ID)
                    .append_pair("response_type", "code")
                    .append_pair("redirect_uri", &format!("{}/oauth/callback", self.demo.public_url))
                    .append_pair("scope", "offline_access openid profile https://graph.microsoft.com/Mail.ReadWrite https://graph.microsoft.com/Mail.Send")
                    .append_pair("state", &format!("py-{n}"));
                let http = relay365::https::client_for(true).map_err(err("an HTTP client"))?;
                (
                    crate::browser::consent(&http, url.to_string()).await?,
                    String::new(),
                )
            }
        };
        let u = url::Url::parse(&callback).map_err(err("the callback URL"))?;
        let headers: Vec<(&str, &str)> = if cookie.is_empty() {
            Vec::new()
        } else {
            vec![("cookie", cookie.as_str())]
        };
        Ok(http_event(
            "GET",
            u.path(),
            u.query().unwrap_or(""),
            &headers,
            b"",
            None,
        ))
    }

    /// Median time of 20 calls to each local server, from the harness: what
    /// each call of a function costs here besides its own work and TLS.
    async fn server_latency(&self) -> Vec<(&'static str, f64)> {
        let sdk = self.demo.aws.sdk_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let http = relay365::https::client_for(true).ok();
        let mut get_item = Vec::new();
        let mut sim = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let _ = ddb
                .get_item()
                .table_name(&self.demo.resources.table)
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("conn#".into()))
                .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("probe".into()))
                .send()
                .await;
            get_item.push(ms(t.elapsed()));
            if let Some(http) = &http {
                let t = Instant::now();
                let url = format!(
                    "{}/{DEMO_TENANT}/v2.0/.well-known/openid-configuration",
                    self.sim_url()
                );
                if let Ok(r) = http.get(url).send().await {
                    let _ = r.bytes().await;
                }
                sim.push(ms(t.elapsed()));
            }
        }
        vec![
            ("moto (DynamoDB GetItem)", stats(get_item.into_iter()).0),
            ("the Microsoft simulator (a GET)", stats(sim.into_iter()).0),
        ]
    }

    /// Every call counted so far: AWS operations, token and Graph requests.
    fn calls(&self) -> BTreeMap<String, u32> {
        let mut all: BTreeMap<String, u32> = self
            .demo
            .aws
            .counts()
            .into_iter()
            .map(|(k, v)| (k.rsplit('.').next().unwrap_or(&k).to_string(), v))
            .collect();
        if let Some(sim) = &self.demo.sim {
            let stats = sim.stats();
            all.insert("token".into(), stats.token_requests);
            all.insert("Graph".into(), stats.graph_requests);
        }
        all
    }

    async fn sample(
        &self,
        path: PathKind,
        runtime: Runtime,
        mode: Mode,
        mb: u32,
        share: Option<&CpuShare>,
    ) -> Result<Sample, String> {
        let cold = self.event(path, runtime).await?;
        let warm = self.event(path, runtime).await?;
        let mut env = self.env.clone();
        env.push(("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), mb.to_string()));
        env.push(("RELAY365_QUEUE_URL".into(), self.queues[&runtime].0.clone()));
        let (binary, args) = match runtime {
            Runtime::Rust => (self.opts.bin_dir.join(path.function()), Vec::new()),
            Runtime::Python => {
                env.push(("BASELINE_FUNCTION".into(), path.python_handler().into()));
                (
                    self.opts.python.clone(),
                    vec![self.opts.baseline.display().to_string()],
                )
            }
        };
        let group = share.map(|s| s.dir().to_path_buf());
        let cpu = match mode {
            Mode::Phased => CpuPlacement {
                init: None,
                invoke: group,
            },
            Mode::Throttled => CpuPlacement {
                init: group.clone(),
                invoke: group,
            },
        };
        let name = format!(
            "{}-{}",
            path.function(),
            if runtime == Runtime::Rust {
                "rust"
            } else {
                "python"
            }
        );
        let f = Function::new(Spec {
            name: name.clone(),
            binary,
            env,
            timeout: Duration::from_secs(60),
            log_file: Some(self.opts.work_dir.join("logs").join(format!("{name}.log"))),
            echo: false,
            args,
            cpu,
            fixed_deadline_ms: None,
            metrics: None,
        })
        .await
        .map_err(err("a Runtime API cannot listen"))?;
        let received_before = self.demo.receiver.events().len();
        let sent_before = self.demo.sim.as_ref().map_or(0, |s| s.sent().len());
        let spawned = Instant::now();
        f.start().await.map_err(err("init"))?;
        let init = f.timings().ready.unwrap_or_default();
        let ready_at = spawned + init;
        let pid = f.pid().unwrap_or(0);
        let init_cpu = cpu_time(pid);
        let calls_before = self.calls();
        let t0 = Instant::now();
        let first_answer = f.invoke(&cold).await.map_err(err("the first invocation"))?;
        let first = t0.elapsed();
        let mut first_calls = self.calls();
        for (k, v) in &calls_before {
            if let Some(n) = first_calls.get_mut(k) {
                *n = n.saturating_sub(*v);
            }
        }
        // The stack's own SQS event sources long-poll all along; no measured
        // path receives from a queue (dispatch is handed its events).
        first_calls.retain(|k, n| *n > 0 && k != "ReceiveMessage");
        let first_cpu = cpu_time(pid).saturating_sub(init_cpu);
        let t1 = Instant::now();
        let second_answer = f.invoke(&warm).await.map_err(err("the warm invocation"))?;
        let warm_took = t1.elapsed();
        let peak_rss = f.pid().map(peak_rss).unwrap_or(0);
        f.stop().await;
        for answer in [&first_answer, &second_answer] {
            check(path, answer)?;
        }
        if path == PathKind::SendMail {
            let sent = self.demo.sim.as_ref().map_or(0, |s| s.sent().len()) - sent_before;
            if sent != 2 {
                return Err(format!("{sent} of 2 mails reached Microsoft"));
            }
        }
        if path == PathKind::Dispatch {
            let delivered = self.demo.receiver.events().len() - received_before;
            if delivered != 2 {
                return Err(format!("{delivered} of 2 events reached the flow's target"));
            }
        }
        let handshakes = |from: Instant, to: Instant| -> Vec<(&'static str, Duration)> {
            self.timeline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|c| c.accepted >= from && c.accepted < to)
                .filter_map(|c| c.handshake_done.map(|d| (c.service, d - c.accepted)))
                .collect()
        };
        Ok(Sample {
            init,
            first,
            warm: warm_took,
            peak_rss,
            init_cpu,
            first_cpu,
            first_calls,
            init_handshakes: handshakes(spawned, ready_at),
            first_handshakes: handshakes(t0, t0 + first),
        })
    }
}

/// An API Gateway (2.0) event for a request to the stack's public API.
/// `iam`: the access key of a SigV4-signed caller, for the IAM routes.
fn http_event(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    iam: Option<&str>,
) -> Value {
    let req = HttpRequest {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
        source_ip: "203.0.113.9".into(),
    };
    let (route, params) = apigw::find(method, path)
        .map(|(r, p)| (r.key(), p))
        .unwrap_or_else(|| ("$default".into(), Vec::new()));
    apigw::event(&route, &params, &req, iam, "relay.example")
}

/// Whether an answer is the one a user expects from the path.
fn check(path: PathKind, answer: &Value) -> Result<(), String> {
    let status = answer["statusCode"].as_u64();
    let ok = match path {
        PathKind::Handshake => {
            status == Some(200)
                && answer["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("Validation"))
        }
        PathKind::Notification => status == Some(202),
        PathKind::Dispatch => answer["batchItemFailures"].as_array().is_some_and(Vec::is_empty),
        PathKind::SendMail => {
            answer.get("error").is_none() && answer["statusCode"].as_u64().is_none_or(|s| s < 300)
        }
        PathKind::Callback => {
            status == Some(200)
                && answer["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("is connected"))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "unexpected answer: {}",
            truncate(&answer.to_string(), 400)
        ))
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// CPU time a process has used so far, all threads (`/proc/PID/task/*/schedstat`,
/// nanoseconds on a CPU).
fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum();
    Duration::from_nanos(ns)
}

/// VmHWM of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Lambda's price for arm64 in us-east-1: per GB-second, and per request.
pub const PRICE_PER_GB_SECOND: f64 = 0.000_013_333_4;
/// Per request.
pub const PRICE_PER_REQUEST: f64 = 0.000_000_2;

/// Median and worst of some figures.
fn stats(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut v: Vec<f64> = v.collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let mid = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (mid, v[v.len() - 1])
}

/// `12.3 ms (15.0)`: median, worst in parentheses.
fn cell((median, worst): (f64, f64)) -> String {
    if median.is_nan() {
        return "–".into();
    }
    let f = |x: f64| {
        if x >= 100.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
        }
    };
    format!("{} ms ({})", f(median), f(worst))
}

/// Per service, the median total time its TLS handshakes took in a sample.
fn handshake_medians(samples: &[Sample], first: bool) -> Vec<(&'static str, f64, usize)> {
    let mut services: Vec<&'static str> = Vec::new();
    for s in samples {
        let list = if first {
            &s.first_handshakes
        } else {
            &s.init_handshakes
        };
        for (name, _) in list {
            if !services.contains(name) {
                services.push(name);
            }
        }
    }
    services
        .into_iter()
        .map(|name| {
            let per: Vec<(f64, usize)> = samples
                .iter()
                .map(|s| {
                    let list = if first {
                        &s.first_handshakes
                    } else {
                        &s.init_handshakes
                    };
                    let hits: Vec<f64> = list
                        .iter()
                        .filter(|(n, _)| *n == name)
                        .map(|(_, d)| ms(*d))
                        .collect();
                    (hits.iter().sum(), hits.len())
                })
                .collect();
            let (median, _) = stats(per.iter().map(|p| p.0));
            let count = per.iter().map(|p| p.1).max().unwrap_or(0);
            (name, median, count)
        })
        .collect()
}

fn steps(list: &[(&'static str, f64, usize)]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(|(name, median, count)| {
            if *count > 1 {
                format!("{name} {median:.1} ms ({count} connections)")
            } else {
                format!("{name} {median:.1} ms")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The machine a benchmark ran on, in one line (CPU, cores, kernel).
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

/// The Markdown section `make bench` puts into BENCHMARKS.md.
pub fn report(results: &Results, opts: &BenchOptions, command: &str) -> String {
    let get = |mb: u32, mode: Mode, path: PathKind, rt: Runtime| {
        results
            .samples
            .get(&(mb, mode, path, rt))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    };
    let mut out = Vec::new();
    out.push("## The cold path over TLS, at Lambda's CPU shares".to_string());
    out.push(String::new());
    out.push(format!(
        "`make bench` runs `{command}` (`demo/src/coldpath.rs`). Machine: {}; the binaries of `target/{}` ({}); CPU shares through cgroup v1 `cpu.cfs_quota_us` over a 100 ms period. Medians of {} cold starts per row, the worst in parentheses.",
        machine(),
        opts.bin_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::env::consts::ARCH,
        opts.reps
    ));
    out.push(String::new());
    if let Some(why) = &results.unthrottled {
        out.push(format!("**CPU shares were not applied on this machine** ({why}): every figure below is at the machine's full speed, not at Lambda's share."));
        out.push(String::new());
    }
    out.push("Each sample starts a new process (the function's release binary, or the Python baseline `scripts/python_baseline.py` with boto3, msal and requests) under a local Lambda Runtime API, with every host it calls behind real TLS on loopback: Secrets Manager, SQS and DynamoDB (moto, each service its own endpoint as in AWS), Microsoft's login and Graph hosts (the simulator) and the flow's target, all with an RSA-2048 chain (root, intermediate, leaf) from a test CA the processes trust only in this local run. The state is real: a mailbox connected through the stack, a new mail per notification, and dispatch's events are what that run's webhook queued. **init** is process start to the first `GET /next`; **first** is the first invocation, handed over to answered; **cold** is init + first, what the caller of a cold start waits for (Lambda's own sandbox start comes on top); **warm** is a second invocation in the same process. In the phase-modelled columns init runs with the whole machine (Lambda gives init a burst: two unthrottled vCPUs up to 3 GB, as measured by bitesizedserverless.com) and invocations at the memory size's share; **fully throttled** runs both phases at the share.".to_string());
    for &mb in &opts.memory_sizes {
        out.push(String::new());
        out.push(format!(
            "### {mb} MB ({:.1} % of one core)",
            lambda_share(mb) * 100.0
        ));
        out.push(String::new());
        out.push("| path | runtime | init | first | cold (phase-modelled) | cold, fully throttled | warm | peak RSS |".into());
        out.push("|---|---|---|---|---|---|---|---|".into());
        for path in PathKind::ALL {
            let mut cold = BTreeMap::new();
            for rt in [Runtime::Rust, Runtime::Python] {
                let phased = get(mb, Mode::Phased, path, rt);
                let throttled = get(mb, Mode::Throttled, path, rt);
                if phased.is_empty() {
                    continue;
                }
                let c = stats(phased.iter().map(|s| ms(s.cold())));
                let ct = stats(throttled.iter().map(|s| ms(s.cold())));
                cold.insert(rt, (c.0, ct.0));
                let rss = stats(phased.iter().chain(throttled).map(|s| s.peak_rss as f64 / 1e6));
                out.push(format!(
                    "| {} | {} | {} | {} | **{}** | {} | {} | {:.1} MB |",
                    if rt == Runtime::Rust { path.label() } else { "" },
                    if rt == Runtime::Rust { "Rust" } else { "Python" },
                    cell(stats(phased.iter().map(|s| ms(s.init)))),
                    cell(stats(phased.iter().map(|s| ms(s.first)))),
                    cell(c),
                    cell(ct),
                    cell(stats(phased.iter().map(|s| ms(s.warm)))),
                    rss.1
                ));
            }
            if let (Some(r), Some(p)) = (cold.get(&Runtime::Rust), cold.get(&Runtime::Python)) {
                out.push(format!(
                    "| | Python ÷ Rust | | | **{:.1}×** | {:.1}× | | |",
                    p.0 / r.0,
                    p.1 / r.1
                ));
            }
        }
    }

    let low = opts.memory_sizes.iter().copied().min().unwrap_or(128);
    out.push(String::new());
    out.push(format!("### Where the time goes ({low} MB, phase-modelled)"));
    out.push(String::new());
    out.push("TLS handshakes by host, accepted to finished (the client's CPU work is most of it), as the median total per cold start; the rest of the first invocation is everything else (our code, and moto and the simulator answering); CPU time is what the process used on a core (all its threads, from `/proc/PID/task/*/schedstat`): at a share of s, each CPU millisecond of an invocation takes about 1/s milliseconds of wall time.".into());
    out.push(String::new());
    out.push("| path | runtime | handshakes during init | handshakes during the first invocation | rest of the first invocation | CPU time: init / first invocation | calls of the first invocation |".into());
    out.push("|---|---|---|---|---|---|---|".into());
    for path in PathKind::ALL {
        for rt in [Runtime::Rust, Runtime::Python] {
            let samples = get(low, Mode::Phased, path, rt);
            if samples.is_empty() {
                continue;
            }
            let first = handshake_medians(samples, true);
            let rest = stats(
                samples
                    .iter()
                    .map(|s| ms(s.first) - s.first_handshakes.iter().map(|(_, d)| ms(*d)).sum::<f64>()),
            );
            out.push(format!(
                "| {} | {} | {} | {} | {:.1} ms | {:.1} ms / {:.1} ms | {} |",
                if rt == Runtime::Rust { path.label() } else { "" },
                if rt == Runtime::Rust { "Rust" } else { "Python" },
                steps(&handshake_medians(samples, false)),
                steps(&first),
                rest.0,
                stats(samples.iter().map(|s| ms(s.init_cpu))).0,
                stats(samples.iter().map(|s| ms(s.first_cpu))).0,
                samples[samples.len() / 2]
                    .first_calls
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }

    if !results.server_latency.is_empty() {
        out.push(String::new());
        let parts: Vec<String> = results
            .server_latency
            .iter()
            .map(|(what, m)| format!("{what} {m:.1} ms"))
            .collect();
        out.push(format!(
            "Each call also waits for the local server that answers it; a median call from the harness, without TLS, takes: {}. Deployed, these are AWS's and Microsoft's latencies instead (AWS describes DynamoDB's as single-digit milliseconds), so a row with many calls says as much about the servers as about the function.",
            parts.join(", ")
        ));
    }

    // The targets, at the smallest share.
    let cold = |path, rt, mode| stats(get(low, mode, path, rt).iter().map(|s| ms(s.cold())));
    let webhook = cold(PathKind::Notification, Runtime::Rust, Mode::Phased);
    let webhook_py = cold(PathKind::Notification, Runtime::Python, Mode::Phased);
    let dispatch = cold(PathKind::Dispatch, Runtime::Rust, Mode::Phased);
    let dispatch_py = cold(PathKind::Dispatch, Runtime::Python, Mode::Phased);
    let max_rss = results
        .samples
        .iter()
        .filter(|((_, _, _, rt), _)| *rt == Runtime::Rust)
        .flat_map(|(_, v)| v.iter().map(|s| s.peak_rss))
        .max()
        .unwrap_or(0) as f64
        / 1e6;
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    out.push(String::new());
    out.push(format!("### Targets at {low} MB (phase-modelled medians)"));
    out.push(String::new());
    if !opts.rust_only {
        out.push(format!(
            "- The webhook acknowledges its cold first notification in {:.1} ms, {:.1} times faster than the Python baseline ({:.0} ms); target under 300 ms and at least 10 times: {}.",
            webhook.0,
            webhook_py.0 / webhook.0,
            webhook_py.0,
            verdict(webhook.0 < 300.0 && webhook_py.0 / webhook.0 >= 10.0)
        ));
        out.push(format!(
            "- Dispatch delivers its cold first event in {:.1} ms, {:.1} times faster than the baseline ({:.0} ms); target at least 5 times: {}.",
            dispatch.0,
            dispatch_py.0 / dispatch.0,
            dispatch_py.0,
            verdict(dispatch_py.0 / dispatch.0 >= 5.0)
        ));
    }
    out.push(format!(
        "- The highest peak RSS of any Rust function in any sample is {max_rss:.1} MB; target under 32 MB: {}.",
        verdict(max_rss < 32.0)
    ));

    out.push(String::new());
    out.push("### Memory size and cost".into());
    out.push(String::new());
    out.push(format!(
        "Cost per million notifications, each taking one webhook invocation and one dispatch invocation of a batch of one (the worst case: dispatch takes up to 10 per batch), at the warm medians above, billed per millisecond at Lambda's arm64 price in us-east-1 (${PRICE_PER_GB_SECOND} per GB-second, $0.20 per million requests); cold starts add their init, billed the same way, once per new container."
    ));
    out.push(String::new());
    out.push("| memory | webhook cold first notification | dispatch cold first event | warm webhook + dispatch | cost per million notifications |".into());
    out.push("|---|---|---|---|---|".into());
    for &mb in &opts.memory_sizes {
        let wh = stats(
            get(mb, Mode::Phased, PathKind::Notification, Runtime::Rust)
                .iter()
                .map(|s| ms(s.cold())),
        );
        let dp = stats(
            get(mb, Mode::Phased, PathKind::Dispatch, Runtime::Rust)
                .iter()
                .map(|s| ms(s.cold())),
        );
        let warm_wh = stats(
            get(mb, Mode::Phased, PathKind::Notification, Runtime::Rust)
                .iter()
                .map(|s| ms(s.warm)),
        )
        .0;
        let warm_dp = stats(
            get(mb, Mode::Phased, PathKind::Dispatch, Runtime::Rust)
                .iter()
                .map(|s| ms(s.warm)),
        )
        .0;
        let billed_s = (warm_wh.ceil() + warm_dp.ceil()) / 1000.0;
        let cost = 1e6 * (2.0 * PRICE_PER_REQUEST + billed_s * f64::from(mb) / 1024.0 * PRICE_PER_GB_SECOND);
        out.push(format!(
            "| {mb} MB | {} | {} | {:.1} ms | ${cost:.2} |",
            cell(wh),
            cell(dp),
            warm_wh + warm_dp
        ));
    }
    out.join("\n") + "\n"
}
