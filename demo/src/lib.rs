//! `make demo`: the whole relay365 stack on one machine, with the very
//! release binaries that deploy.
//!
//! [`Demo::start`] starts moto (Secrets Manager, SQS, DynamoDB, S3) with the
//! resources `template.yaml` creates, the Microsoft simulator (or nothing,
//! against a real tenant), each function's release binary under its own
//! local Lambda Runtime API ([`runtime`]), an HTTP front that routes and
//! shapes requests as API Gateway does ([`apigw`]), the SQS event source
//! mappings of `mail-dispatch` (batches of 10, partial batch failures) and of
//! `send-mail`'s deferred sends, the renewal schedule (the template's
//! 15 minutes by default), a flow receiver ([`receiver`]), and a local
//! Amazon Connect (`connect-fake`, strict and SigV4-checked) with one
//! instance, its inbound flow and the mailbox's address, so that
//! `connect-task:` and `connect-email:` targets can be tried without AWS.
//!
//! The same [`Demo`] runs the binary end-to-end tests, so what the tests
//! check is what a user sees with `make demo`.

pub mod apigw;
pub mod browser;
pub mod cgroup;
pub mod coldpath;
mod connect;
mod event_sources;
pub mod fleet;
pub mod fleet_report;
mod front;
pub mod metric_log;
pub mod receiver;
mod resources;
pub mod runtime;
pub mod sigv4;
pub mod tls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use relay365::model::cloud::Cloud;
use relay365_testkit::Aws;
use serde_json::{Value, json};

pub use connect::contact_json;
pub use event_sources::{scheduled_event, sqs_record};
use front::Front;
pub use receiver::{Received, Receiver};
pub use resources::Resources;
pub use runtime::{Function, InvokeError, Spec};

/// The functions, with the timeouts `template.yaml` gives them.
pub const FUNCTIONS: [(&str, u64); 5] = [
    ("connections", 120),
    ("oauth-callback", 30),
    ("mail-webhook", 10),
    ("mail-dispatch", 90),
    ("send-mail", 900),
];

/// The region the local stack pretends to be in.
pub const DEMO_REGION: &str = "us-east-1";
/// The one access key the local API accepts (SigV4-signed with
/// [`DEMO_SECRET_ACCESS_KEY`]); moto takes any key.
pub const DEMO_ACCESS_KEY_ID: &str = "demo";
/// Its secret key.
pub const DEMO_SECRET_ACCESS_KEY: &str = "demo";

/// The simulated app registration and mailbox.
pub const DEMO_CLIENT_ID: &str = "00000000-0000-0000-0000-0000000d3e30";
/// The simulated tenant.
pub const DEMO_TENANT: &str = "6d3e0000-0000-4000-8000-00000000de30";
/// The simulated mailbox that signs in.
pub const DEMO_USER: &str = "support@demo.example";

/// The local Amazon Connect instance's id (the last part of its ARN).
pub const DEMO_CONNECT_INSTANCE_ID: &str = "5e1a7365-0000-4000-8000-00000000c0de";
/// Its published inbound contact flow.
pub const DEMO_CONNECT_FLOW_ID: &str = "f10e7365-0000-4000-8000-00000000c0de";
/// The id of its email address, [`DEMO_USER`] (the mailbox's own address, as
/// the design asks: agents reply from it).
pub const DEMO_CONNECT_EMAIL_ID: &str = "e3a17365-0000-4000-8000-00000000c0de";

/// Which Microsoft the stack talks to.
#[derive(Debug, Clone)]
pub enum Microsoft {
    /// The local simulator (`graph-sim`), on this port (0 for any).
    Simulated {
        /// Port of the simulator.
        port: u16,
        /// Show a consent page at sign-in (for a browser) instead of consenting at once.
        interactive: bool,
    },
    /// A real tenant with an app registration (docs/development.md).
    Real {
        /// The app's client id.
        client_id: String,
        /// Its home tenant.
        tenant_id: String,
        /// A client secret's value (kept in moto's Secrets Manager only).
        client_secret: String,
        /// The cloud.
        cloud: Cloud,
    },
}

/// How to run the stack.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the release binaries are (`target/release`).
    pub bin_dir: PathBuf,
    /// Port of the HTTP front (the API), 0 for any.
    pub api_port: u16,
    /// Port of the flow receiver, 0 for any.
    pub receiver_port: u16,
    /// The URL the outside world reaches the API at, when not the front's own
    /// (a tunnel, for a real tenant: Graph needs HTTPS).
    pub public_url: Option<String>,
    /// Microsoft.
    pub microsoft: Microsoft,
    /// A folder for each function's log (`<name>.log`).
    pub log_dir: Option<PathBuf>,
    /// Copy function logs to stderr too.
    pub echo_logs: bool,
    /// Print each event the receiver gets.
    pub print_events: bool,
    /// How often the scheduled run (renewal and sweep) comes (the template says 15 minutes).
    pub renew_every: Duration,
    /// Where to describe the running stack for the `relay365` CLI (its
    /// outputs, resources and credentials, as CloudFormation would give
    /// them); removed when the demo stops.
    pub stack_file: Option<PathBuf>,
    /// How soon a failed delivery is tried again, in seconds (doubling each
    /// time; 5 tries, then the dead-letter queue). The notification queue's
    /// visibility timeout stays the template's, as it must outlast the
    /// longest dispatch invocation.
    pub retry_after_seconds: u32,
    /// Every invocation gets this `Lambda-Runtime-Deadline-Ms` instead of the
    /// real deadline, as `cargo lambda watch` does (600000, in 1970).
    pub fixed_deadline_ms: Option<u64>,
    /// Seal delegated refresh tokens with a KMS key in the state table, as
    /// the template deploys them (`RELAY365_TOKEN_KEY_ID`); off, each
    /// token is a Secrets Manager secret, as earlier versions kept them.
    pub seal_tokens: bool,
    /// DynamoDB in a moto of its own (for load: each moto serves one
    /// request at a time).
    pub separate_dynamodb: bool,
    /// Run mail-dispatch's SQS event source; off when a harness runs its
    /// own (the fleet's scales like Lambda's), so one consumer takes the
    /// queue.
    pub dispatch_event_source: bool,
}

impl Options {
    /// Test defaults: any free ports, the simulator consenting at once, quiet.
    pub fn for_tests(bin_dir: PathBuf) -> Self {
        Self {
            bin_dir,
            api_port: 0,
            receiver_port: 0,
            public_url: None,
            microsoft: Microsoft::Simulated {
                port: 0,
                interactive: false,
            },
            log_dir: None,
            echo_logs: false,
            print_events: false,
            renew_every: Duration::from_secs(15 * 60),
            stack_file: None,
            retry_after_seconds: 10,
            fixed_deadline_ms: None,
            seal_tokens: true,
            separate_dynamodb: false,
            dispatch_event_source: true,
        }
    }
}

/// The stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A release binary is missing.
    #[error(
        "{0} not found: build the functions with `make demo` (or `cargo build --release` of each function)"
    )]
    MissingBinary(String),
    /// A port or a resource could not be set up.
    #[error("{0}")]
    Setup(String),
    /// A function failed to start.
    #[error(transparent)]
    Function(#[from] InvokeError),
}

/// A set-up error with its whole cause chain: the AWS SDK's own message
/// ("service error") says nothing until its sources are added.
fn setup<E: std::error::Error>(what: &str) -> impl FnOnce(E) -> DemoError + '_ {
    move |e| {
        let mut out = format!("{what}: {e}");
        let mut source = e.source();
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        DemoError::Setup(out)
    }
}

/// The running stack. Dropping it stops everything it started.
pub struct Demo {
    /// The HTTP front (API Gateway's role).
    pub api_url: String,
    /// What the functions believe their public URL is.
    pub public_url: String,
    /// The simulator, when simulated.
    pub sim: Option<graph_sim::Sim>,
    /// moto.
    pub aws: Aws,
    /// The flow receiver.
    pub receiver: Receiver,
    /// The local Amazon Connect ([`DEMO_CONNECT_INSTANCE_ID`], its flow
    /// [`DEMO_CONNECT_FLOW_ID`] and the address [`DEMO_USER`]): every contact
    /// mail-dispatch starts is recorded there.
    pub connect: Arc<connect_fake::Fake>,
    /// The resources in moto.
    pub resources: Resources,
    /// The environment every function runs with.
    pub env: Vec<(String, String)>,
    functions: Arc<HashMap<&'static str, Function>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stack_file: Option<PathBuf>,
    _api_stop: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(f) = &self.stack_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Demo {
    /// Starts everything and returns once every function has finished its init.
    ///
    /// # Errors
    /// When a binary is missing, a port is taken, or a function fails its init.
    pub async fn start(opts: Options) -> Result<Self, DemoError> {
        check_binaries(&opts.bin_dir)?;
        let aws = if opts.separate_dynamodb {
            Aws::start_split().await
        } else {
            Aws::start().await
        };
        let sdk = aws.sdk_config().await;
        let (listener, api_url, public_url) = bind_api(&opts).await?;
        let tenant = start_microsoft(&opts.microsoft, &public_url).await?;
        let signing_key = random_key("random signing key")?;
        // The flow's key is its own secret: the receiver never sees the signing key.
        let event_signing_key = random_key("random event signing key")?;
        let resources =
            resources::create(&sdk, &tenant.app.to_string(), &signing_key, &event_signing_key).await?;
        let receiver = Receiver::start(opts.receiver_port, &event_signing_key, opts.print_events)
            .await
            .map_err(DemoError::Setup)?;
        let connect = Arc::new(connect::start().await);
        let env = function_env(&opts, &aws, &connect, &tenant, &public_url, &resources, &receiver);
        let metrics = Arc::new(metric_log::MetricLog::default());
        let functions = Arc::new(start_functions(&opts, &env, &metrics).await?);

        let front = Front::new(connect.clone(), functions.clone(), metrics, &public_url);
        let (api_stop, api) = front::serve(listener, front);
        let mut tasks = vec![api];
        tasks.extend(event_sources::start_mappings(
            &sdk,
            &resources,
            &functions,
            opts.dispatch_event_source,
        ));
        if opts.print_events {
            tasks.push(tokio::spawn(connect::print_contacts(connect.clone())));
        }
        tasks.push(event_sources::start_schedule(functions.clone(), opts.renew_every));
        let Tenant { sim, cloud, .. } = tenant;
        let demo = Self {
            api_url,
            public_url,
            sim,
            aws,
            receiver,
            connect,
            resources,
            env,
            functions,
            tasks,
            stack_file: opts.stack_file.clone(),
            _api_stop: api_stop,
        };
        if let Some(path) = &opts.stack_file {
            demo.write_stack_file(path, cloud)?;
        }
        Ok(demo)
    }

    /// Describes the running stack in `path` for the `relay365` CLI.
    fn write_stack_file(&self, path: &Path, cloud: Cloud) -> Result<(), DemoError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(setup("the stack file's folder"))?;
        }
        std::fs::write(path, self.stack_description(cloud).to_string()).map_err(setup("the stack file"))
    }
}

/// Each function's release binary must be there before anything starts.
fn check_binaries(bin_dir: &Path) -> Result<(), DemoError> {
    for (name, _) in FUNCTIONS {
        let path = bin_dir.join(name);
        if !path.is_file() {
            return Err(DemoError::MissingBinary(path.display().to_string()));
        }
    }
    Ok(())
}

/// The API's listener, its URL, and the public URL the functions believe in
/// (the API's own unless a tunnel's is given), without a trailing slash.
async fn bind_api(opts: &Options) -> Result<(tokio::net::TcpListener, String, String), DemoError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.api_port))
        .await
        .map_err(setup("the API cannot listen"))?;
    let api_addr = listener.local_addr().map_err(setup("the API's address"))?;
    let api_url = format!("http://{api_addr}");
    let public_url = opts
        .public_url
        .clone()
        .unwrap_or_else(|| api_url.clone())
        .trim_end_matches('/')
        .to_string();
    Ok((listener, api_url, public_url))
}

/// The Microsoft side once started.
struct Tenant {
    /// The simulator, when simulated.
    sim: Option<graph_sim::Sim>,
    /// The app registration as the app secret holds it.
    app: Value,
    /// The cloud the functions sign in to.
    cloud: Cloud,
}

/// The simulator with the demo's app and mailbox, or a real tenant's app as given.
async fn start_microsoft(microsoft: &Microsoft, public_url: &str) -> Result<Tenant, DemoError> {
    match microsoft {
        Microsoft::Simulated { port, interactive } => {
            let (sim, app) = start_simulator(*port, *interactive, public_url).await?;
            Ok(Tenant {
                sim: Some(sim),
                app,
                cloud: Cloud::Global,
            })
        }
        Microsoft::Real {
            client_id,
            tenant_id,
            client_secret,
            cloud,
        } => Ok(Tenant {
            sim: None,
            app: json!({"client_id": client_id, "tenant_id": tenant_id, "client_secret": client_secret}),
            cloud: *cloud,
        }),
    }
}

/// The Microsoft simulator with the demo's app registration (a new client
/// secret each run, redirect URIs at `public_url`) and its mailbox user;
/// returns it with the app as the app secret holds it.
async fn start_simulator(
    port: u16,
    interactive: bool,
    public_url: &str,
) -> Result<(graph_sim::Sim, Value), DemoError> {
    let sim = graph_sim::Sim::start_on(port, Cloud::Global.graph_root())
        .await
        .map_err(setup("the Microsoft simulator"))?;
    let secret = format!("demo~{}", uuid::Uuid::new_v4().simple());
    sim.register_app(graph_sim::App {
        client_id: DEMO_CLIENT_ID.into(),
        home_tenant: DEMO_TENANT.into(),
        client_secret: Some(secret.clone()),
        certificate_der: None,
        redirect_uris: vec![
            format!("{public_url}/oauth/callback"),
            format!("{public_url}/oauth/admin-consent"),
        ],
    });
    sim.add_user(graph_sim::User {
        id: "u-support".into(),
        upn: DEMO_USER.into(),
        display_name: "Demo Support".into(),
        tenant: DEMO_TENANT.into(),
    });
    sim.set_interactive_consent(interactive);
    let app = json!({"client_id": DEMO_CLIENT_ID, "tenant_id": DEMO_TENANT, "client_secret": secret});
    Ok((sim, app))
}

/// A new random 256-bit key, in hex.
fn random_key(what: &str) -> Result<String, DemoError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(setup(what))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The environment every function runs with: where its AWS, Microsoft and
/// flow target are, and the template's settings.
fn function_env(
    opts: &Options,
    aws: &Aws,
    connect: &connect_fake::Fake,
    tenant: &Tenant,
    public_url: &str,
    resources: &Resources,
    receiver: &Receiver,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        // The demo's one key: moto takes any, the local Connect only this one.
        ("AWS_ACCESS_KEY_ID", DEMO_ACCESS_KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY", DEMO_SECRET_ACCESS_KEY.into()),
        ("AWS_ENDPOINT_URL", aws.url()),
        // The SDK's per-service override: Connect is not in moto.
        ("AWS_ENDPOINT_URL_CONNECT", connect.url()),
        ("RUST_LOG", "info".into()),
        ("RELAY365_CLOUD", tenant.cloud.name().into()),
        ("RELAY365_APP_SECRET_ID", "relay365/app".into()),
        ("RELAY365_SIGNING_KEY_SECRET_ID", "relay365/signing-key".into()),
        (
            "RELAY365_EVENT_SIGNING_SECRET_ID",
            "relay365/event-signing-key".into(),
        ),
        ("RELAY365_PUBLIC_URL", public_url.to_string()),
        ("RELAY365_QUEUE_URL", resources.queue_url.clone()),
        ("RELAY365_SEND_QUEUE_URL", resources.deferred_url.clone()),
        ("RELAY365_DEFAULT_TARGET", receiver.url.clone()),
        ("RELAY365_ATTACHMENTS_BUCKET", resources.bucket.clone()),
        ("RELAY365_STATE_TABLE", resources.table.clone()),
        // Everything here listens on loopback: allowed only in a local run.
        ("RELAY365_LOCAL", "1".into()),
        // A failed delivery is tried again this soon, then twice as
        // late each time (the template's 5 s, shortened so a person
        // watching the demo sees it).
        (
            "RELAY365_FIRST_RETRY_SECONDS",
            opts.retry_after_seconds.max(1).to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if opts.seal_tokens {
        env.push(("RELAY365_TOKEN_KEY_ID".into(), resources.token_key.clone()));
    }
    if let Some(sim) = &tenant.sim {
        env.push(("RELAY365_LOGIN_URL".into(), sim.url()));
        env.push(("RELAY365_GRAPH_URL".into(), sim.url()));
    }
    env
}

/// Each function under its own Runtime API, its init finished, by name.
async fn start_functions(
    opts: &Options,
    env: &[(String, String)],
    metrics: &Arc<metric_log::MetricLog>,
) -> Result<HashMap<&'static str, Function>, DemoError> {
    let mut functions = HashMap::new();
    for (name, timeout) in FUNCTIONS {
        let spec = Spec {
            name: name.to_string(),
            binary: opts.bin_dir.join(name),
            env: env.to_vec(),
            timeout: Duration::from_secs(timeout),
            log_file: opts.log_dir.as_ref().map(|d| d.join(format!("{name}.log"))),
            echo: opts.echo_logs,
            args: Vec::new(),
            cpu: Default::default(),
            fixed_deadline_ms: opts.fixed_deadline_ms,
            metrics: Some(metrics.clone()),
        };
        let f = Function::new(spec)
            .await
            .map_err(setup("a Runtime API cannot listen"))?;
        f.start().await?;
        functions.insert(name, f);
    }
    Ok(functions)
}

impl Demo {
    /// The running stack as the `relay365` CLI reads it: what
    /// CloudFormation's DescribeStacks (outputs, parameters) and
    /// DescribeStackResources (logical id to physical id) give for a
    /// deployed stack, plus where its AWS is and the key the API accepts.
    pub fn stack_description(&self, cloud: Cloud) -> Value {
        let public = &self.public_url;
        let r = &self.resources;
        let mut desc = json!({
            "stack": "relay365-demo",
            "pid": std::process::id(),
            "region": DEMO_REGION,
            "endpoint_url": self.aws.url(),
            "credentials": {"access_key_id": DEMO_ACCESS_KEY_ID, "secret_access_key": DEMO_SECRET_ACCESS_KEY},
            "parameters": {
                "Cloud": cloud.name(),
                // As `sam deploy --parameter-overrides` would set them for the
                // local Connect: its instance, every flow of it, email contacts on.
                "ConnectInstanceId": DEMO_CONNECT_INSTANCE_ID,
                "ConnectContactFlowId": "",
                "ConnectEmailAddress": DEMO_USER,
            },
            "endpoints": {"connect": self.connect.url()},
            "outputs": {
                "ApiUrl": self.api_url,
                "RedirectUri": format!("{public}/oauth/callback"),
                "AdminConsentRedirectUri": format!("{public}/oauth/admin-consent"),
                "NotificationUrl": format!("{public}/notifications"),
                "LifecycleNotificationUrl": format!("{public}/notifications/lifecycle"),
                "AppSecretArn": "relay365/app",
                "EventSigningSecretArn": "relay365/event-signing-key",
                "AttachmentsBucketName": r.bucket,
                "DeadLetterQueueUrl": r.dlq_url,
                "StateTableName": r.table,
            },
            "resources": {
                "AppSecret": "relay365/app",
                "SigningKey": "relay365/signing-key",
                "EventSigningSecret": "relay365/event-signing-key",
                "NotificationQueue": r.queue_url,
                "NotificationDeadLetterQueue": r.dlq_url,
                "DeferredSendQueue": r.deferred_url,
                "DeferredSendDeadLetterQueue": r.deferred_dlq_url,
                "AttachmentsBucket": r.bucket,
                "StateTable": r.table,
            },
        });
        if let Some(sim) = &self.sim {
            desc["login_url"] = sim.url().into();
            desc["graph_url"] = sim.url().into();
        }
        desc
    }

    /// A function by name.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.get(name)
    }

    /// Runs the schedule once now (what EventBridge does every 15 minutes).
    ///
    /// # Errors
    /// When `connections` fails.
    pub async fn run_schedule(&self) -> Result<Value, InvokeError> {
        event_sources::renew(&self.functions).await
    }

    /// Invokes send-mail directly, as Amazon Connect or another function would.
    ///
    /// # Errors
    /// When send-mail fails.
    pub async fn invoke_send_mail(&self, event: &Value) -> Result<Value, InvokeError> {
        match self.functions.get("send-mail") {
            Some(f) => f.invoke(event).await,
            None => Ok(Value::Null),
        }
    }
}
