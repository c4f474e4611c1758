//! `make demo`: the whole relay365 stack on one machine, with the very
//! release binaries that deploy.
//!
//! [`Demo::start`] starts moto (Secrets Manager, SQS, DynamoDB, S3) with the
//! resources `template.yaml` creates, the Microsoft simulator (or nothing,
//! against a real tenant), each function's release binary under its own
//! local Lambda Runtime API ([`runtime`]), an HTTP front that routes and
//! shapes requests as API Gateway does ([`apigw`]), the SQS event source
//! mappings of `mail-dispatch` (batches of 10, partial batch failures) and of
//! `send-mail`'s deferred sends, the
//! 6-hourly renewal schedule, a flow receiver ([`receiver`]), and a local
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
pub mod fleet;
pub mod fleet_report;
pub mod metric_log;
pub mod receiver;
pub mod runtime;
pub mod sigv4;
pub mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use relay365::model::cloud::Cloud;
use relay365_testkit::Aws;
use serde_json::{Value, json};

pub use receiver::{Received, Receiver};
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

/// Names of the resources the stack created in moto.
#[derive(Debug, Clone)]
pub struct Resources {
    /// The notifications queue (FIFO).
    pub queue_url: String,
    /// Its dead-letter queue.
    pub dlq_url: String,
    /// The deferred-send queue (standard), consumed by send-mail.
    pub deferred_url: String,
    /// Its dead-letter queue.
    pub deferred_dlq_url: String,
    /// The attachments bucket.
    pub bucket: String,
    /// The KMS key that seals delegated refresh tokens (the template's
    /// `TokenKey`), as `RELAY365_TOKEN_KEY_ID` names it.
    pub token_key: String,
    /// The state table.
    pub table: String,
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
        for (name, _) in FUNCTIONS {
            let path = opts.bin_dir.join(name);
            if !path.is_file() {
                return Err(DemoError::MissingBinary(path.display().to_string()));
            }
        }
        let aws = if opts.separate_dynamodb {
            Aws::start_split().await
        } else {
            Aws::start().await
        };
        let sdk = aws.sdk_config().await;
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

        let (sim, app, cloud) = match &opts.microsoft {
            Microsoft::Simulated { port, interactive } => {
                let sim = graph_sim::Sim::start_on(*port, Cloud::Global.graph_root())
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
                sim.set_interactive_consent(*interactive);
                let app =
                    json!({"client_id": DEMO_CLIENT_ID, "tenant_id": DEMO_TENANT, "client_secret": secret});
                (Some(sim), app, Cloud::Global)
            }
            Microsoft::Real {
                client_id,
                tenant_id,
                client_secret,
                cloud,
            } => (
                None,
                json!({"client_id": client_id, "tenant_id": tenant_id, "client_secret": client_secret}),
                *cloud,
            ),
        };

        let signing_key = {
            let mut bytes = [0u8; 32];
            aws_lc_rs::rand::fill(&mut bytes).map_err(setup("random signing key"))?;
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        // The flow's key is its own secret: the receiver never sees the signing key.
        let event_signing_key = {
            let mut bytes = [0u8; 32];
            aws_lc_rs::rand::fill(&mut bytes).map_err(setup("random event signing key"))?;
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let resources = create_resources(&sdk, &app.to_string(), &signing_key, &event_signing_key).await?;
        let receiver = Receiver::start(opts.receiver_port, &event_signing_key, opts.print_events)
            .await
            .map_err(DemoError::Setup)?;
        let connect = Arc::new(start_connect().await);

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
            ("RELAY365_CLOUD", cloud.name().into()),
            ("RELAY365_APP_SECRET_ID", "relay365/app".into()),
            ("RELAY365_SIGNING_KEY_SECRET_ID", "relay365/signing-key".into()),
            (
                "RELAY365_EVENT_SIGNING_SECRET_ID",
                "relay365/event-signing-key".into(),
            ),
            ("RELAY365_PUBLIC_URL", public_url.clone()),
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
        if let Some(sim) = &sim {
            env.push(("RELAY365_LOGIN_URL".into(), sim.url()));
            env.push(("RELAY365_GRAPH_URL".into(), sim.url()));
        }

        let metrics = Arc::new(metric_log::MetricLog::default());
        let mut functions = HashMap::new();
        for (name, timeout) in FUNCTIONS {
            let spec = Spec {
                name: name.to_string(),
                binary: opts.bin_dir.join(name),
                env: env.clone(),
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
        let functions = Arc::new(functions);

        let front = Front {
            connect: connect.clone(),
            metrics: metrics.clone(),
            functions: functions.clone(),
            domain: url::Url::parse(&public_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "127.0.0.1".into()),
        };
        let app = axum::Router::new()
            .route("/_demo/metrics", axum::routing::get(demo_metrics))
            .route("/_demo/connect/contacts", axum::routing::get(demo_contacts))
            .fallback(gateway)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(Arc::new(front));
        let (api_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut tasks = vec![tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        })];
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        tasks.push(tokio::spawn(event_source(
            sqs.clone(),
            resources.queue_url.clone(),
            functions.clone(),
            "mail-dispatch",
            10,
        )));
        tasks.push(tokio::spawn(event_source(
            sqs,
            resources.deferred_url.clone(),
            functions.clone(),
            "send-mail",
            1,
        )));
        if opts.print_events {
            tasks.push(tokio::spawn(print_contacts(connect.clone())));
        }
        let f = functions.clone();
        let every = opts.renew_every;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                match renew(&f).await {
                    Ok(report) => eprintln!("renewal schedule: {report}"),
                    Err(e) => eprintln!("renewal schedule: {e}"),
                }
            }
        }));
        let demo = Self {
            api_url,
            public_url,
            sim,
            aws,
            receiver,
            connect,
            resources,
            env: env.clone(),
            functions,
            tasks,
            stack_file: opts.stack_file.clone(),
            _api_stop: api_stop,
        };
        if let Some(path) = &opts.stack_file {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(setup("the stack file's folder"))?;
            }
            std::fs::write(path, demo.stack_description(cloud).to_string())
                .map_err(setup("the stack file"))?;
        }
        Ok(demo)
    }

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
        renew(&self.functions).await
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

/// What `template.yaml` creates: the two secrets, the FIFO queue and its
/// dead-letter queue, the state table and the attachments bucket.
/// The notification queue's visibility timeout in template.yaml (six times
/// mail-dispatch's Timeout of 90 s, as Lambda's SQS event source asks).
const NOTIFICATION_VISIBILITY_SECONDS: u32 = 540;

async fn create_resources(
    sdk: &aws_config::SdkConfig,
    app_secret: &str,
    signing_key: &str,
    event_signing_key: &str,
) -> Result<Resources, DemoError> {
    let sm = aws_sdk_secretsmanager::Client::new(sdk);
    for (name, value) in [
        ("relay365/app", app_secret),
        ("relay365/signing-key", signing_key),
        ("relay365/event-signing-key", event_signing_key),
    ] {
        sm.create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .map_err(setup(name))?;
    }
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let dlq_url = sqs
        .create_queue()
        .queue_name("relay365-dlq.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .map_err(setup("the dead-letter queue"))?
        .queue_url
        .unwrap_or_default();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(setup("the dead-letter queue's ARN"))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .unwrap_or_default();
    // The template's visibility timeout: 6× dispatch's timeout. A shorter
    // one hands a record that an invocation still works on to a second
    // invocation, which delivers it again. Dispatch makes a failed record
    // visible again after its own backoff (`RELAY365_FIRST_RETRY_SECONDS`,
    // short in the demo so a person sees it happen).
    let queue_url = sqs
        .create_queue()
        .queue_name("relay365-notifications.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            NOTIFICATION_VISIBILITY_SECONDS.to_string(),
        )
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).to_string(),
        )
        .send()
        .await
        .map_err(setup("the notifications queue"))?
        .queue_url
        .unwrap_or_default();
    // Sends too large for one API request (the template's DeferredSendQueue).
    let deferred_dlq = sqs
        .create_queue()
        .queue_name("relay365-deferred-sends-dlq")
        .send()
        .await
        .map_err(setup("the deferred-send dead-letter queue"))?
        .queue_url
        .unwrap_or_default();
    let deferred_dlq_arn = format!(
        "arn:aws:sqs:us-east-1:123456789012:{}",
        deferred_dlq.rsplit('/').next().unwrap_or_default()
    );
    let deferred_url = sqs
        .create_queue()
        .queue_name("relay365-deferred-sends")
        .attributes(QueueAttributeName::VisibilityTimeout, "960")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": deferred_dlq_arn, "maxReceiveCount": 3}).to_string(),
        )
        .send()
        .await
        .map_err(setup("the deferred-send queue"))?
        .queue_url
        .unwrap_or_default();
    let table = "relay365-state".to_string();
    relay365_testkit::create_state_table(sdk, &table)
        .await
        .map_err(DemoError::Setup)?;
    let bucket = "relay365-attachments".to_string();
    aws_sdk_s3::Client::new(sdk)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .map_err(setup("the attachments bucket"))?;
    // The template always seals refresh tokens; so does the local stack.
    let token_key = relay365_testkit::create_token_key(sdk)
        .await
        .map_err(DemoError::Setup)?;
    Ok(Resources {
        token_key,
        queue_url,
        dlq_url,
        deferred_url,
        deferred_dlq_url: deferred_dlq,
        bucket,
        table,
    })
}

/// One run of the renewal rule: `connections` with a scheduled event.
async fn renew(functions: &HashMap<&'static str, Function>) -> Result<Value, InvokeError> {
    match functions.get("connections") {
        Some(f) => f.invoke(&scheduled_event()).await,
        None => Ok(Value::Null),
    }
}

/// EventBridge's scheduled event, as the renewal rule sends it.
pub fn scheduled_event() -> Value {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/relay365-renewal"],
        "detail": {}
    })
}

struct Front {
    connect: Arc<connect_fake::Fake>,
    functions: Arc<HashMap<&'static str, Function>>,
    domain: String,
    metrics: Arc<metric_log::MetricLog>,
}

/// `GET /_demo/metrics?since=MS`: the functions' metric lines since then
/// (what CloudWatch would have made metrics of), for `relay365 status`.
async fn demo_metrics(
    State(front): State<Arc<Front>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> axum::Json<Value> {
    let since = q.get("since").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    axum::Json(json!({"lines": front.metrics.since(since)}))
}

/// The local Amazon Connect with the demo's instance, its published inbound
/// flow and the mailbox's address; it accepts the demo's key only.
async fn start_connect() -> connect_fake::Fake {
    let connect = connect_fake::Fake::start_with(connect_fake::Config {
        region: DEMO_REGION.into(),
        access_key_id: DEMO_ACCESS_KEY_ID.into(),
        secret_access_key: DEMO_SECRET_ACCESS_KEY.into(),
    })
    .await;
    connect.add_instance(DEMO_CONNECT_INSTANCE_ID);
    connect.add_flow(
        DEMO_CONNECT_INSTANCE_ID,
        DEMO_CONNECT_FLOW_ID,
        "relay365 demo inbound",
    );
    connect.add_email_address(
        DEMO_CONNECT_INSTANCE_ID,
        DEMO_CONNECT_EMAIL_ID,
        DEMO_USER,
        Some(DEMO_CONNECT_FLOW_ID),
    );
    connect
}

/// A contact the local Connect started, as `GET /_demo/connect/contacts`
/// lists it: what an agent would see of it, and the whole request.
pub fn contact_json(c: &connect_fake::Contact) -> Value {
    let r = &c.request;
    let name = r["Name"]
        .as_str()
        .or_else(|| r["EmailMessage"]["RawMessage"]["Subject"].as_str())
        .unwrap_or("");
    json!({
        "operation": format!("{:?}", c.operation),
        "contact_id": c.contact_id,
        "instance_id": c.instance_id,
        "contact_flow_id": c.contact_flow_id,
        "name": name,
        "related_contact_id": c.related_contact_id,
        "attachments": c.attachments.iter().map(|a| json!({"file_name": a.file_name, "size": a.bytes.len()})).collect::<Vec<_>>(),
        "request": r,
    })
}

/// `GET /_demo/connect/contacts`: every contact the local Amazon Connect
/// started (tasks and email contacts), oldest first.
async fn demo_contacts(State(front): State<Arc<Front>>) -> axum::Json<Value> {
    let contacts: Vec<Value> = front.connect.contacts().iter().map(contact_json).collect();
    axum::Json(json!({ "contacts": contacts }))
}

/// Prints each contact the local Connect starts, as the receiver prints events.
async fn print_contacts(connect: Arc<connect_fake::Fake>) {
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let contacts = connect.contacts();
        for c in contacts.iter().skip(seen) {
            let what = match c.operation {
                connect_fake::Operation::StartEmailContact => "email contact",
                _ => "task",
            };
            let related = c
                .related_contact_id
                .as_ref()
                .map(|r| format!(", related to {r}"))
                .unwrap_or_default();
            println!(
                "==> Amazon Connect (local): {what} {} started in flow {}{related}: {:?}",
                c.contact_id,
                c.contact_flow_id,
                contact_json(c)["name"].as_str().unwrap_or("")
            );
        }
        seen = contacts.len();
    }
}

/// API Gateway's payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;

async fn gateway(
    State(front): State<Arc<Front>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    req: Request<axum::body::Body>,
) -> Response {
    let (parts, body) = req.into_parts();
    let answer = |(status, headers, body): (u16, Vec<(String, String)>, Vec<u8>)| {
        let mut resp = Response::builder().status(status);
        for (k, v) in headers {
            resp = resp.header(k, v);
        }
        resp.body(axum::body::Body::from(body))
            .unwrap_or_else(|_| axum::http::StatusCode::BAD_GATEWAY.into_response())
    };
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return answer(apigw::gateway_error(413)),
    };
    let path = parts.uri.path().to_string();
    let Some((route, params)) = apigw::find(parts.method.as_str(), &path) else {
        return answer(apigw::gateway_error(404));
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    let query = parts.uri.query().unwrap_or("").to_string();
    // API Gateway checks the signature itself for AWS_IAM routes: the
    // function never sees a request that is not signed by a known key.
    let access_key = if route.iam {
        let signed = sigv4::Signed {
            method: parts.method.as_str(),
            path: &path,
            query: &query,
            headers: &headers,
            body: &body,
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match sigv4::verify(&signed, DEMO_REGION, "execute-api", now, |k| {
            (k == DEMO_ACCESS_KEY_ID).then(|| DEMO_SECRET_ACCESS_KEY.to_string())
        }) {
            Ok(key) => Some(key),
            Err(sigv4::Refused::Unsigned) => return answer(apigw::gateway_error(403)),
            Err(why) => {
                let mut message = why.to_string();
                if let Some(first) = message.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                return answer((
                    403,
                    vec![("content-type".into(), "application/json".into())],
                    json!({ "message": format!("{message}.") })
                        .to_string()
                        .into_bytes(),
                ));
            }
        }
    } else {
        None
    };
    let http = apigw::HttpRequest {
        method: parts.method.as_str().to_string(),
        path,
        query,
        headers,
        body: body.to_vec(),
        source_ip: peer.ip().to_string(),
    };
    let event = apigw::event(&route.key(), &params, &http, access_key.as_deref(), &front.domain);
    let Some(function) = front.functions.get(route.function) else {
        return answer(apigw::gateway_error(500));
    };
    match function.invoke(&event).await {
        Ok(payload) => answer(apigw::response(&payload)),
        Err(InvokeError::Timeout { .. }) => answer(apigw::gateway_error(503)),
        Err(e) => {
            eprintln!("{e}");
            answer(apigw::gateway_error(500))
        }
    }
}

/// One SQS message as the event source mapping hands it to a function,
/// inside an `SqsEvent`'s `Records`.
pub fn sqs_record(m: &aws_sdk_sqs::types::Message, queue_arn: &str) -> Value {
    let attributes: serde_json::Map<String, Value> = m
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": m.message_id(),
        "receiptHandle": m.receipt_handle(),
        "body": m.body(),
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": m.md5_of_body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1",
    })
}

/// Lambda's SQS event source mapping (mail-dispatch's notifications in
/// batches of 10, send-mail's deferred sends one at a time): long-poll
/// batches of up to `batch`, hand them over as an `SqsEvent`, delete what
/// succeeded (all of it unless `batchItemFailures` names some), and leave the
/// rest to come back after the visibility timeout (and to the dead-letter
/// queue after its maximum receives).
async fn event_source(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    functions: Arc<HashMap<&'static str, Function>>,
    function: &'static str,
    batch: i32,
) {
    let Some(dispatch) = functions.get(function) else {
        return;
    };
    let arn = format!(
        "arn:aws:sqs:us-east-1:123456789012:{}",
        queue_url.rsplit('/').next().unwrap_or("queue")
    );
    loop {
        let out = match sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(batch)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .wait_time_seconds(1)
            .send()
            .await
        {
            Ok(o) => o,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let records: Vec<Value> = messages.iter().map(|m| sqs_record(m, &arn)).collect();
        let failed: Vec<String> = match dispatch.invoke(&json!({ "Records": records })).await {
            Ok(resp) => resp["batchItemFailures"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            Err(e) => {
                eprintln!("{e}");
                messages
                    .iter()
                    .filter_map(|m| m.message_id().map(str::to_string))
                    .collect()
            }
        };
        for m in &messages {
            if failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
                continue;
            }
            if let Some(handle) = m.receipt_handle() {
                let _ = sqs
                    .delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// A visibility timeout shorter than an invocation hands a record still
    /// in work to a second invocation, which delivers it again: the demo
    /// keeps the template's.
    #[test]
    fn the_notification_queue_keeps_the_template_s_visibility_timeout() {
        let template = include_str!("../../template.yaml");
        let block: Vec<&str> = template
            .lines()
            .skip_while(|l| *l != "  NotificationQueue:")
            .skip(1)
            .take_while(|l| l.trim().is_empty() || l.starts_with("    "))
            .collect();
        let visibility = block
            .iter()
            .find_map(|l| l.trim().strip_prefix("VisibilityTimeout:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        assert_eq!(visibility, Some(super::NOTIFICATION_VISIBILITY_SECONDS));
    }
}
