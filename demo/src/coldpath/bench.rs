//! The benchmark's standing parts, set up once per run: the local stack with
//! a connected mailbox, the TLS fronts every host a function calls hides
//! behind, a queue per runtime, and the environment each sample starts with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use super::api::{CONNECTION, http_event};
use super::fail::err;
use super::figures::{ms, stats};
use super::options::{BenchOptions, PathKind, Runtime};
use crate::tls::{TestCa, Timeline, TlsProxy, socket_of};
use crate::{DEMO_ACCESS_KEY_ID, DEMO_TENANT, Demo, Options};

/// The whole benchmark: the stack, the TLS fronts and the state both runtimes use.
pub(super) struct Bench {
    pub(super) demo: Demo,
    pub(super) opts: BenchOptions,
    pub(super) timeline: Timeline,
    _proxies: Vec<TlsProxy>,
    pub(super) env: Vec<(String, String)>,
    /// Each runtime's own queue for its webhook to fill and its dispatch to
    /// take from: (URL, ARN).
    pub(super) queues: BTreeMap<Runtime, (String, String)>,
    pub(super) sqs: aws_sdk_sqs::Client,
    counter: AtomicU64,
}

/// The URL of each TLS front, by the service it stands for.
type Fronts = BTreeMap<&'static str, String>;

impl Bench {
    /// Checks the options, starts the stack and the TLS fronts, and connects
    /// the bench mailbox through the stack.
    pub(super) async fn start(opts: BenchOptions) -> Result<Self, String> {
        check_options(&opts)?;
        let demo = start_stack(&opts).await?;
        let sim = demo.sim.as_ref().ok_or("the benchmark needs the simulator")?;
        // Mail arriving for the benchmark's samples must reach only the
        // process a sample starts, never the stack's own webhook.
        sim.hold_notifications(true);

        let ca = TestCa::create(&opts.work_dir)?;
        let timeline: Timeline = Arc::new(Mutex::new(Vec::new()));
        let (proxies, urls) = start_tls_fronts(&demo, sim, &ca, &timeline).await?;
        sim.set_advertised_url(&urls["login"]);

        let sdk = demo.aws.sdk_config().await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let queues = create_queues(&sqs).await?;
        let target = format!("{}/events", urls["target"]);
        let env = sample_env(&demo, &urls, &target, &ca);
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
        bench.connect_mailbox(&target).await?;
        Ok(bench)
    }

    /// Connects the bench mailbox, its mail subscription delivering to the
    /// flow's target behind TLS, and signs in as a browser would.
    async fn connect_mailbox(&self, target: &str) -> Result<(), String> {
        let conn = self.create_connection(CONNECTION, Some(target), true).await?;
        let (status, page) = crate::browser::sign_in(&conn).await?;
        if status != 200 || !page.contains("is connected") {
            return Err(format!(
                "the benchmark mailbox did not connect ({status}): {page}"
            ));
        }
        Ok(())
    }

    /// A new number for this run: mails and connections never repeat.
    pub(super) fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The simulator's own (plain HTTP) URL, as a browser reaches it.
    pub(super) fn sim_url(&self) -> String {
        self.demo
            .sim
            .as_ref()
            .map(graph_sim::Sim::url)
            .unwrap_or_default()
    }

    /// Creates a delegated connection through the stack's own `connections`
    /// function and returns its connect link.
    pub(super) async fn create_connection(
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

    /// Median time of 20 calls to each local server, from the harness: what
    /// each call of a function costs here besides its own work and TLS.
    pub(super) async fn server_latency(&self) -> Vec<(&'static str, f64)> {
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
    pub(super) fn calls(&self) -> BTreeMap<String, u32> {
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
}

/// What must hold before anything starts: dispatch measured only with the
/// notification that feeds it, every binary built, the baseline's Python there.
fn check_options(opts: &BenchOptions) -> Result<(), String> {
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
    Ok(())
}

/// The local stack, as `make demo` runs it, logging into the work directory.
async fn start_stack(opts: &BenchOptions) -> Result<Demo, String> {
    let mut demo_opts = Options::for_tests(opts.bin_dir.clone());
    demo_opts.log_dir = Some(opts.work_dir.join("demo-logs"));
    // Refresh tokens stay in Secrets Manager here, as the Python
    // baseline keeps them: both sides read one secret on the cold path,
    // so the comparison is like with like.
    demo_opts.seal_tokens = false;
    Demo::start(demo_opts).await.map_err(err("the local stack"))
}

/// A TLS front for every host a function calls (each AWS service its own
/// host, as in AWS), recording its handshakes on `timeline`.
async fn start_tls_fronts(
    demo: &Demo,
    sim: &graph_sim::Sim,
    ca: &TestCa,
    timeline: &Timeline,
) -> Result<(Vec<TlsProxy>, Fronts), String> {
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
        let proxy = TlsProxy::start(service, upstream, ca, timeline.clone())
            .await
            .map_err(err("a TLS proxy cannot listen"))?;
        urls.insert(service, proxy.url.clone());
        proxies.push(proxy);
    }
    Ok((proxies, urls))
}

/// A FIFO queue per runtime, so that each runtime's dispatch takes what its
/// own webhook queued: (URL, ARN) by runtime.
async fn create_queues(sqs: &aws_sdk_sqs::Client) -> Result<BTreeMap<Runtime, (String, String)>, String> {
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
    Ok(queues)
}

/// The stack's function environment with every host behind its TLS front,
/// trusting the test CA (both runtimes' ways of being told).
fn sample_env(demo: &Demo, urls: &Fronts, target: &str, ca: &TestCa) -> Vec<(String, String)> {
    let ca_file = ca.root_pem_file.display().to_string();
    let mut env: Vec<(String, String)> = demo
        .env
        .iter()
        .filter(|(k, _)| k != "AWS_ENDPOINT_URL")
        .cloned()
        .collect();
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
        ("RELAY365_DEFAULT_TARGET", target.to_string()),
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
    env
}
