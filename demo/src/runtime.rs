//! A local Lambda Runtime API, and a function's release binary running under it.
//!
//! A deployed function is a process that asks the Runtime API for the next
//! event (`GET /2018-06-01/runtime/invocation/next`) and posts the answer
//! back (`…/{request-id}/response` or `…/error`). This module serves that
//! API on 127.0.0.1 for one function, starts the function's binary with
//! `AWS_LAMBDA_RUNTIME_API` pointing at it, and turns [`Function::invoke`]
//! into one such round trip. Like Lambda it runs one invocation at a time per
//! sandbox, starts a new process when the last one died (a cold start), and
//! kills the process when an invocation overruns its timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Why an invocation produced no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The function reported an error (`…/error`): Lambda's "Unhandled" error.
    #[error("{function} reported an error: {message}")]
    Function {
        /// The function.
        function: String,
        /// `errorType: errorMessage` as the function posted it.
        message: String,
    },
    /// The process exited (a panic or an init failure) before answering.
    #[error("{function} exited before answering ({why}); its log says why")]
    Exited {
        /// The function.
        function: String,
        /// Exit status, or the init error it posted.
        why: String,
    },
    /// No answer within the function's timeout; the process was killed.
    #[error("{function} did not answer within {0:?}; the process was stopped", .timeout)]
    Timeout {
        /// The function.
        function: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The binary could not be started.
    #[error("{function}: cannot start {path}: {why} (run `make demo`, which builds the release binaries)")]
    Spawn {
        /// The function.
        function: String,
        /// The binary.
        path: String,
        /// The OS error.
        why: String,
    },
}

type Outcome = Result<Vec<u8>, InvokeError>;

struct Invocation {
    id: String,
    payload: Vec<u8>,
    deadline: Instant,
    reply: oneshot::Sender<Outcome>,
}

/// Timings of the current process, for readiness and the benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Process start to its first `GET /next` (init done).
    pub ready: Option<Duration>,
    /// How many processes were started (cold starts).
    pub cold_starts: usize,
}

struct Shared {
    name: String,
    queue: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    inflight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<String>>,
    spawned_at: Mutex<Option<Instant>>,
    timings: Mutex<Timings>,
    ready: tokio::sync::Notify,
    cpu: CpuPlacement,
    pid: Mutex<Option<u32>>,
    fixed_deadline_ms: Option<u64>,
}

impl Shared {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail_inflight(&self, why: &str) {
        let waiting: Vec<_> = Self::lock(&self.inflight).drain().collect();
        for (_, reply) in waiting {
            let _ = reply.send(Err(InvokeError::Exited {
                function: self.name.clone(),
                why: why.to_string(),
            }));
        }
    }
}

/// What to run for a function.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The function's name (`connections`, …): the binary's name too.
    pub name: String,
    /// The release binary.
    pub binary: PathBuf,
    /// Its environment (the process gets nothing else but the Lambda variables).
    pub env: Vec<(String, String)>,
    /// The invocation timeout (the template's `Timeout`).
    pub timeout: Duration,
    /// Where its stdout and stderr go (appended), if anywhere.
    pub log_file: Option<PathBuf>,
    /// Also copy its log lines to this process's stderr, prefixed with the name.
    pub echo: bool,
    /// Arguments after the binary (a Python handler's script).
    pub args: Vec<String>,
    /// CPU-limited cgroups for its processes (the benchmarks), if any.
    pub cpu: CpuPlacement,
    /// A fixed `Lambda-Runtime-Deadline-Ms` for every invocation instead of
    /// the real one, as `cargo lambda watch` sends (600000, in 1970).
    pub fixed_deadline_ms: Option<u64>,
    /// Where its metric lines are kept (what CloudWatch would read), if anywhere.
    pub metrics: Option<Arc<crate::metric_log::MetricLog>>,
}

/// Where a function's process runs, as Lambda shares the CPU: each field is
/// a cgroup v1 `cpu` directory (see [`crate::cgroup`]), or `None` for the
/// whole machine. Lambda gives init (until the first `GET /next`) a burst
/// and each invocation the memory size's share, so a benchmark models it as
/// `init: None, invoke: Some(share)`, or throttles both phases.
#[derive(Debug, Clone, Default)]
pub struct CpuPlacement {
    /// The cgroup the process starts in (it joins before its binary starts).
    pub init: Option<PathBuf>,
    /// The cgroup the process is moved to when it first asks for an event.
    pub invoke: Option<PathBuf>,
}

/// One function: its Runtime API and its process.
pub struct Function {
    spec: Spec,
    addr: SocketAddr,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Invocation>,
    process: tokio::sync::Mutex<Option<oneshot::Sender<()>>>,
    running: Arc<std::sync::atomic::AtomicBool>,
    _stop: oneshot::Sender<()>,
}

impl Function {
    /// Serves the Runtime API for `spec` (the process starts on [`Function::start`] or the first invoke).
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn new(spec: Spec) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            name: spec.name.clone(),
            queue: tokio::sync::Mutex::new(rx),
            inflight: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            spawned_at: Mutex::new(None),
            timings: Mutex::new(Timings::default()),
            ready: tokio::sync::Notify::new(),
            cpu: spec.cpu.clone(),
            fixed_deadline_ms: spec.fixed_deadline_ms,
            pid: Mutex::new(None),
        });
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .layer(axum::extract::DefaultBodyLimit::max(7 * 1024 * 1024))
            .with_state(shared.clone());
        let (addr, stop) = relay365_testkit::serve_on(0, app).await?;
        Ok(Self {
            spec,
            addr,
            shared,
            tx,
            process: tokio::sync::Mutex::new(None),
            running: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            _stop: stop,
        })
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The Runtime API's address (`AWS_LAMBDA_RUNTIME_API`).
    pub fn runtime_api(&self) -> SocketAddr {
        self.addr
    }

    /// The running process's id, if one runs.
    pub fn pid(&self) -> Option<u32> {
        *Shared::lock(&self.shared.pid)
    }

    /// Timings of the processes so far.
    pub fn timings(&self) -> Timings {
        *Shared::lock(&self.shared.timings)
    }

    /// Starts the process if none is running, and waits until it asks for
    /// its first event (its init is done) or exits.
    ///
    /// # Errors
    /// When the binary cannot be started or exits during init.
    pub async fn start(&self) -> Result<(), InvokeError> {
        let mut process = self.process.lock().await;
        if self.running.load(Ordering::SeqCst) {
            return Ok(());
        }
        let ready = self.shared.ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        let (kill, exited) = self.spawn().await?;
        *process = Some(kill);
        drop(process);
        tokio::select! {
            () = &mut ready => Ok(()),
            why = exited => Err(InvokeError::Exited {
                function: self.spec.name.clone(),
                why: why.unwrap_or_else(|_| "stopped".into()),
            }),
        }
    }

    async fn spawn(&self) -> Result<(oneshot::Sender<()>, oneshot::Receiver<String>), InvokeError> {
        let spec = &self.spec;
        let mut cmd = match &spec.cpu.init {
            // The shell joins the cgroup and then becomes the binary, so not
            // one instruction of the function runs outside its CPU share.
            Some(group) => {
                let mut c = tokio::process::Command::new("/bin/sh");
                c.arg("-c")
                    .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
                    .arg(group)
                    .arg(&spec.binary);
                c
            }
            None => tokio::process::Command::new(&spec.binary),
        };
        cmd.args(&spec.args);
        cmd.env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", self.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", spec.name))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "demo")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        *Shared::lock(&self.shared.init_error) = None;
        *Shared::lock(&self.shared.spawned_at) = Some(Instant::now());
        Shared::lock(&self.shared.timings).ready = None;
        let mut child = cmd.spawn().map_err(|e| InvokeError::Spawn {
            function: spec.name.clone(),
            path: spec.binary.display().to_string(),
            why: e.to_string(),
        })?;
        Shared::lock(&self.shared.timings).cold_starts += 1;
        *Shared::lock(&self.shared.pid) = child.id();
        self.running.store(true, Ordering::SeqCst);
        let log = open_log(spec).await;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let (log, name, echo) = (log.clone(), spec.name.clone(), spec.echo);
            let metrics = spec.metrics.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(m) = &metrics {
                        m.offer(&line);
                    }
                    if echo {
                        eprintln!("[{name}] {line}");
                    }
                    if let Some(file) = &log {
                        let mut f = file.lock().await;
                        let _ = f.write_all(line.as_bytes()).await;
                        let _ = f.write_all(b"\n").await;
                    }
                }
            });
        }
        let (kill, killed) = oneshot::channel::<()>();
        let (exited_tx, exited_rx) = oneshot::channel::<String>();
        let shared = self.shared.clone();
        let running = self.running.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                _ = killed => {
                    let _ = child.kill().await;
                    "stopped".to_string()
                }
            };
            running.store(false, Ordering::SeqCst);
            let why = Shared::lock(&shared.init_error)
                .take()
                .map(|e| format!("init error: {e}"))
                .unwrap_or(status);
            shared.fail_inflight(&why);
            let _ = exited_tx.send(why);
        });
        Ok((kill, exited_rx))
    }

    /// Stops the process (the next invoke starts a new one: a cold start).
    pub async fn stop(&self) {
        if let Some(kill) = self.process.lock().await.take() {
            let _ = kill.send(());
        }
        for _ in 0..100 {
            if !self.running.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Invokes the function with a JSON event and returns its JSON response.
    ///
    /// # Errors
    /// When it reports an error, dies, overruns its timeout or cannot start.
    pub async fn invoke(&self, event: &serde_json::Value) -> Result<serde_json::Value, InvokeError> {
        let payload = serde_json::to_vec(event).unwrap_or_default();
        let raw = self.invoke_raw(payload).await?;
        serde_json::from_slice(&raw).map_err(|e| InvokeError::Function {
            function: self.spec.name.clone(),
            message: format!("the response is not JSON: {e}"),
        })
    }

    /// [`Function::invoke`] on bytes.
    ///
    /// # Errors
    /// As [`Function::invoke`].
    pub async fn invoke_raw(&self, payload: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        self.start().await?;
        let (reply, answer) = oneshot::channel();
        let invocation = Invocation {
            id: uuid::Uuid::new_v4().to_string(),
            payload,
            deadline: Instant::now() + self.spec.timeout,
            reply,
        };
        let id = invocation.id.clone();
        if self.tx.send(invocation).await.is_err() {
            return Err(InvokeError::Exited {
                function: self.spec.name.clone(),
                why: "the runtime API stopped".into(),
            });
        }
        // Time spent waiting behind other invocations counts, as it does in
        // Lambda for a function limited to one concurrent execution.
        match tokio::time::timeout(self.spec.timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(InvokeError::Exited {
                function: self.spec.name.clone(),
                why: "the invocation was dropped".into(),
            }),
            Err(_) => {
                Shared::lock(&self.shared.inflight).remove(&id);
                self.stop().await;
                Err(InvokeError::Timeout {
                    function: self.spec.name.clone(),
                    timeout: self.spec.timeout,
                })
            }
        }
    }
}

async fn open_log(spec: &Spec) -> Option<Arc<tokio::sync::Mutex<tokio::fs::File>>> {
    let path = spec.log_file.as_ref()?;
    if let Some(dir) = path.parent() {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .ok()?;
    Some(Arc::new(tokio::sync::Mutex::new(file)))
}

async fn next(State(s): State<Arc<Shared>>) -> Response {
    {
        let mut timings = Shared::lock(&s.timings);
        if timings.ready.is_none() {
            timings.ready = Shared::lock(&s.spawned_at).map(|t| t.elapsed());
            // Init is over: from here on the process runs at its share.
            if let (Some(group), Some(pid)) = (&s.cpu.invoke, *Shared::lock(&s.pid)) {
                let _ = std::fs::write(group.join("cgroup.procs"), pid.to_string());
            }
            s.ready.notify_waiters();
        }
    }
    let mut queue = s.queue.lock().await;
    loop {
        let Some(inv) = queue.recv().await else {
            return StatusCode::GONE.into_response();
        };
        let now = Instant::now();
        if inv.deadline <= now || inv.reply.is_closed() {
            continue; // its caller gave up already
        }
        let left = inv.deadline - now;
        let deadline_ms = match s.fixed_deadline_ms {
            Some(fixed) => i128::from(fixed),
            None => {
                time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000 + left.as_millis() as i128
            }
        };
        Shared::lock(&s.inflight).insert(inv.id.clone(), inv.reply);
        let mut headers = HeaderMap::new();
        let mut put = |k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(k, v);
            }
        };
        put("lambda-runtime-aws-request-id", inv.id.clone());
        put("lambda-runtime-deadline-ms", deadline_ms.to_string());
        put(
            "lambda-runtime-invoked-function-arn",
            format!("arn:aws:lambda:us-east-1:123456789012:function:{}", s.name),
        );
        put(
            "lambda-runtime-trace-id",
            format!(
                "Root=1-{:08x}-{}",
                time::OffsetDateTime::now_utc().unix_timestamp(),
                &uuid::Uuid::new_v4().simple().to_string()[..24]
            ),
        );
        put("content-type", "application/json".into());
        return (StatusCode::OK, headers, inv.payload).into_response();
    }
}

async fn response(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    match Shared::lock(&s.inflight).remove(&id) {
        Some(reply) => {
            let _ = reply.send(Ok(body.to_vec()));
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn error(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let message = describe_error(&body);
    match Shared::lock(&s.inflight).remove(&id) {
        Some(reply) => {
            let _ = reply.send(Err(InvokeError::Function {
                function: s.name.clone(),
                message,
            }));
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn init_error(State(s): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    *Shared::lock(&s.init_error) = Some(describe_error(&body));
    StatusCode::ACCEPTED
}

/// `errorType: errorMessage` of the Runtime API's error body.
fn describe_error(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match (v["errorType"].as_str(), v["errorMessage"].as_str()) {
        (Some(t), Some(m)) => format!("{t}: {m}"),
        _ => String::from_utf8_lossy(body).into_owned(),
    }
}
