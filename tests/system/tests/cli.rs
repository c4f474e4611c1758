//! The `relay365` binary against the demo stack (the real function binaries
//! under their local Runtime APIs, moto, the Microsoft simulator), as an
//! operator runs it: every command, its output and its exit status. The
//! browser step of a sign-in is played by the test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod demo_common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use demo_common::{TempDir, bin_dir};
use relay365_demo::{DEMO_USER, Demo, Options};
use relay365_testkit::{eventually_async, free_port};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The `relay365` binary of this build: in the folder above this test
/// binary's `deps/`, where `cargo build --workspace --bins` puts it.
fn cli_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in a profile's deps/ folder")
        .join("relay365");
    assert!(
        bin.is_file(),
        "{} does not exist: build the binaries first (cargo build --workspace --bins --tests)",
        bin.display()
    );
    bin
}

async fn start(dir: &TempDir, public_url: Option<String>) -> Demo {
    let mut opts = Options::for_tests(bin_dir());
    opts.stack_file = Some(dir.path.join("stack.json"));
    opts.retry_after_seconds = 1;
    opts.public_url = public_url;
    Demo::start(opts).await.expect("the demo stack starts")
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The command exited 0 and its stdout says each of `parts`.
    fn assert_ok_saying(&self, parts: &[&str]) {
        assert_eq!(self.code, 0, "{}{}", self.stdout, self.stderr);
        assert_says(&self.stdout, parts);
    }
}

fn command(dir: &TempDir, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(cli_binary());
    c.arg("--local")
        .args(args)
        .env("RELAY365_DEMO_STACK", dir.path.join("stack.json"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("RELAY365_STACK")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn run(dir: &TempDir, args: &[&str]) -> Out {
    let out = tokio::time::timeout(Duration::from_secs(120), command(dir, args).output())
        .await
        .unwrap_or_else(|_| panic!("relay365 {args:?} did not finish"))
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The lines of a running command's stream.
type Lines = tokio::sync::mpsc::UnboundedReceiver<String>;

/// Lines of a running command's stream, as they come.
fn lines<R: AsyncRead + Unpin + Send + 'static>(r: R) -> Lines {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut l = BufReader::new(r).lines();
        while let Ok(Some(line)) = l.next_line().await {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The lines `rx` has received so far, each added to `into`.
fn drain(rx: &mut Lines, into: &mut String) {
    while let Ok(l) = rx.try_recv() {
        into.push_str(&l);
        into.push('\n');
    }
}

/// `relay365 {args}` started, with the lines of its stdout and its stderr
/// as they come.
fn spawn(dir: &TempDir, args: &[&str]) -> (tokio::process::Child, Lines, Lines) {
    let mut child = command(dir, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    (child, out, err)
}

async fn line_matching(rx: &mut Lines, seen: &mut String, f: impl Fn(&str) -> bool) -> String {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = rx.recv().await {
            seen.push_str(&l);
            seen.push('\n');
            if f(&l) {
                return Some(l);
            }
        }
        None
    })
    .await;
    found
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no such line in:\n{seen}"))
}

/// `relay365 connect` with the browser step played here; returns its output.
async fn connect(dir: &TempDir, args: &[&str]) -> Out {
    let (mut child, mut out, mut err) = spawn(dir, args);
    let mut seen = String::new();
    let link = line_matching(&mut out, &mut seen, |l| l.trim_start().starts_with("http")).await;
    let (status, page) = demo_common::sign_in(link.trim()).await;
    assert_eq!(status, 200, "{page}");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("connect returns once active")
        .unwrap();
    drain(&mut out, &mut seen);
    let mut stderr = String::new();
    drain(&mut err, &mut stderr);
    Out {
        code: status.code().unwrap_or(-1),
        stdout: seen,
        stderr,
    }
}

async fn dlq_depth(demo: &Demo) -> u64 {
    let sqs = aws_sdk_sqs::Client::new(&demo.aws.sdk_config().await);
    relay365_cli::dlq::waiting(&sqs, &demo.resources.dlq_url)
        .await
        .unwrap()
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `relay365 events verify` of the event body in the file `body` with the
/// signature header `signature`.
async fn verify(dir: &TempDir, signature: &str, body: &Path) -> Out {
    run(
        dir,
        &["events", "verify", "--signature", signature, "--body", path(body)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_works_against_the_demo_stack() {
    let dir = TempDir::new();
    let demo = start(&dir, None).await;
    let sim = demo.sim.as_ref().unwrap();
    let mut everything = String::new();

    // Help fits one screen (40 lines of 100 columns) and shows an example.
    for cmd in [
        "",
        "connect",
        "list",
        "show",
        "send",
        "subscribe",
        "resubscribe",
        "pause",
        "resume",
        "disconnect",
        "events",
        "events tail",
        "events verify",
        "dlq",
        "dlq redrive",
        "doctor",
        "status",
    ] {
        let mut args: Vec<&str> = cmd.split_whitespace().collect();
        args.push("--help");
        let out = run(&dir, &args).await;
        assert_eq!(out.code, 0, "{cmd}: {}", out.stderr);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(
            lines.len() <= 40,
            "relay365 {cmd} --help has {} lines",
            lines.len()
        );
        assert!(
            lines.iter().all(|l| l.chars().count() <= 100),
            "relay365 {cmd} --help is wider than 100:\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("Example"),
            "relay365 {cmd} --help shows no example"
        );
        if !cmd.is_empty() && cmd != "events" {
            assert!(
                out.stdout
                    .contains(&format!("relay365 {}", cmd.split(' ').next().unwrap())),
                "{}",
                out.stdout
            );
        }
    }

    // connect: the link is printed, the browser signs in, connect returns once active.
    // Mail.Draft: attachments of 3 MB and more go through a draft.
    let out = connect(
        &dir,
        &[
            "connect",
            DEMO_USER,
            "--subscribe",
            "mail",
            "--scopes",
            "Mail.ReadOnly,Mail.Send,Mail.Draft,Calendar.ReadOnly",
        ],
    )
    .await;
    everything += &out.stdout;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "Connection support created (delegated, Mail.ReadOnly Mail.Draft Mail.Send Calendar.ReadOnly)"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("✔ support is active (support@demo.example)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("✔ mail subscription: ok, expires"),
        "{}",
        out.stdout
    );

    // list and show, for people and for scripts.
    let out = run(&dir, &["list"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("support "))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        row.contains("support@demo.example")
            && row.contains("delegated")
            && row.contains("active")
            && row.contains("mail ✔"),
        "{row}"
    );
    let json: Value = serde_json::from_str(&run(&dir, &["list", "--json"]).await.stdout).unwrap();
    assert_eq!(json["connections"][0]["id"], "support");
    let out = run(&dir, &["show", "support"]).await;
    everything += &out.stdout;
    assert_says(
        &out.stdout,
        &[
            "status       active",
            "mail subscription",
            "✔ ok, expires",
            "signing key",
            "current",
        ],
    );
    let out = run(&dir, &["show", "nobody"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("connection nobody does not exist"),
        "{}",
        out.stderr
    );

    // doctor on a healthy stack: every line ✔, exit 0.
    let out = run(&dir, &["doctor"]).await;
    everything += &out.stdout;
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(!out.stdout.contains('✘'), "{}", out.stdout);
    assert_says(
        &out.stdout,
        &[
            "✔ stack relay365-demo",
            "answers signed requests",
            "app-only token in",
            "roles Mail.Read",
            "notification URL",
            "answers Graph's validation handshake",
            "signing key relay365/signing-key present",
            "event signing secret relay365/event-signing-key present",
            "connection support (support@demo.example) is active",
            "no notifications in the dead-letter queue",
        ],
    );

    // A mail arrives; events verify accepts its real body and header, and refuses a forgery.
    sim.deliver_message(
        DEMO_USER,
        graph_sim::Message {
            from: ("Customer".into(), "customer@example.org".into()),
            subject: "Where is my order?".into(),
            body_html: "<p>Order 1234</p>".into(),
            ..Default::default()
        },
    );
    assert!(relay365_testkit::eventually(30, || !demo.receiver.events().is_empty()).await);
    let got = demo.receiver.events().remove(0);
    // The status screen shows the mail, its latency and the connection's health,
    // from the functions' own metric lines.
    let mut status = String::new();
    for _ in 0..20 {
        status = run(&dir, &["status"]).await.stdout;
        if status.contains("1 delivered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    everything += &status;
    assert!(status.contains("1 delivered"), "{status}");
    assert!(!status.contains("p99 -"), "the latency is shown: {status}");
    assert!(
        status.contains("support@demo.example") && status.contains("mail ✔"),
        "{status}"
    );
    let json_status = run(&dir, &["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json_status.stdout).unwrap();
    assert_eq!(v["figures"]["delivered"], 1.0, "{v}");
    let body = write(&dir, "event.json", &got.body);
    let header = got.signature.clone().unwrap();
    let out = verify(&dir, &header, &body).await;
    out.assert_ok_saying(&["✔ genuine: signed by this stack's event signing key"]);
    let mut changed = got.body.clone();
    changed.extend_from_slice(b" ");
    let forged_body = write(&dir, "forged.json", &changed);
    let out = verify(&dir, &header, &forged_body).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("✘ not genuine"), "{}", out.stdout);
    let forged_header = format!("{},v1={}", header.split(',').next().unwrap(), "0".repeat(64));
    let out = verify(&dir, &forged_header, &body).await;
    assert_eq!(out.code, 1, "{}", out.stdout);

    // send with a 5 MiB attachment: uploaded to the bucket, sent by reference.
    let big: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let file = write(&dir, "recording.wav", &big);
    let send = [
        "send",
        "support",
        "--to",
        "customer@example.org",
        "--subject",
        "Your recording",
        "--text",
        "Attached.",
        "--attach",
        path(&file),
    ];
    let out = run(&dir, &send).await;
    everything += &out.stdout;
    out.assert_ok_saying(&["✔ sent (idempotency key cli-"]);
    let sent = sim.sent();
    let mail = sent.last().unwrap();
    assert_eq!(mail.subject, "Your recording");
    assert_eq!(mail.attachments.len(), 1);
    assert_eq!(mail.attachments[0].0, "recording.wav");
    assert!(mail.attachments[0].2 == big, "the attachment arrived whole");
    let s3 = aws_sdk_s3::Client::new(&demo.aws.sdk_config().await);
    let objects = s3
        .list_objects_v2()
        .bucket(&demo.resources.bucket)
        .prefix("support/relay365-cli/")
        .send()
        .await
        .unwrap();
    let objects = objects.contents.unwrap_or_default();
    assert_eq!(
        objects.len(),
        1,
        "the attachment went by reference through the bucket"
    );
    assert_eq!(objects[0].size, Some(big.len() as i64));
    // The same key again: not sent twice.
    let key = out
        .stdout
        .split("idempotency key ")
        .nth(1)
        .unwrap()
        .trim_end_matches([')', '\n'])
        .to_string();
    let again = run(&dir, &[&send[..], &["--idempotency-key", &key]].concat()).await;
    again.assert_ok_saying(&["already sent earlier"]);
    assert_eq!(sim.sent().len(), sent.len());

    // subscribe the calendar with a target that is down: its notification
    // ends in the dead-letter queue, dlq says so, and redrive delivers it to
    // events tail.
    let port = free_port();
    let target = format!("http://127.0.0.1:{port}/");
    let out = run(&dir, &["subscribe", "support", "calendar", "--target", &target]).await;
    out.assert_ok_saying(&["✔ calendar subscription", "added: ok"]);
    sim.create_event(
        DEMO_USER,
        graph_sim::Event {
            subject: "Second question".into(),
            organizer: ("Ann".into(), DEMO_USER.into()),
            start: "2026-12-03T09:00:00.0000000".into(),
            end: "2026-12-03T09:30:00.0000000".into(),
            time_zone: "UTC".into(),
            ..Default::default()
        },
    );
    if !eventually_async(90, || async { dlq_depth(&demo).await == 1 }).await {
        panic!(
            "the notification for the dead target did not reach the dead-letter queue:\n{}",
            run(&dir, &["show", "support"]).await.stdout
        );
    }
    // The failing target shows in the status screen.
    let status = run(&dir, &["status"]).await.stdout;
    assert!(status.contains("1 dead letters ✘"), "{status}");
    assert!(
        !status.contains(" 0 retried"),
        "the retries are counted: {status}"
    );
    assert!(status.contains("calendar ✘ delivery failing"), "{status}");
    let out = run(&dir, &["dlq"]).await;
    everything += &out.stdout;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_says(
        &out.stdout,
        &[
            "1 notifications wait in the dead-letter queue",
            "Last delivery errors:",
            "support",
            "relay365 dlq redrive",
        ],
    );
    let doctor = run(&dir, &["doctor"]).await;
    assert_eq!(doctor.code, 1);
    assert!(
        doctor
            .stdout
            .contains("✘ 1 notifications wait in the dead-letter queue"),
        "{}",
        doctor.stdout
    );

    let (mut tail, mut tail_out, mut tail_err) = spawn(
        &dir,
        &["events", "tail", "--port", &port.to_string(), "--count", "1"],
    );
    let mut seen = String::new();
    line_matching(&mut tail_err, &mut seen, |l| {
        l.starts_with("Listening on http://127.0.0.1:")
    })
    .await;
    let out = run(&dir, &["dlq", "redrive"]).await;
    out.assert_ok_saying(&["✔ 1 notifications moved back"]);
    let mut printed = String::new();
    let first = line_matching(&mut tail_out, &mut printed, |l| l.starts_with("── ")).await;
    assert!(
        first.contains("calendar.event.created") && first.contains("✔ signature verified"),
        "{first}"
    );
    let status = tokio::time::timeout(Duration::from_secs(30), tail.wait())
        .await
        .expect("tail stops after --count")
        .unwrap();
    assert!(status.success());
    drain(&mut tail_out, &mut printed);
    everything += &printed;
    assert!(printed.contains("Second question"), "{printed}");
    assert!(eventually_async(10, || async { dlq_depth(&demo).await == 0 }).await);

    // pause and resume a flow: named by its key once there are several.
    let shown = run(&dir, &["show", "support", "--json"]).await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let conn: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let subs = conn["subscriptions"].as_array().unwrap().clone();
    let key = subs[0]["key"].as_str().unwrap().to_string();
    if subs.len() > 1 {
        let out = run(&dir, &["pause", "support"]).await;
        assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(&key), "{}", out.stderr);
    }
    let out = run(&dir, &["pause", "support", &key]).await;
    out.assert_ok_saying(&["paused: nothing is sent"]);
    let out = run(&dir, &["show", "support"]).await;
    assert!(out.stdout.contains("paused since"), "{}", out.stdout);
    let out = run(&dir, &["resume", "support", &key]).await;
    out.assert_ok_saying(&["resumed"]);
    let out = run(&dir, &["pause", "support", "no-such-key"]).await;
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("GET /connections/support"), "{}", out.stderr);

    // resubscribe, then disconnect (which asks first).
    let out = run(&dir, &["resubscribe", "support"]).await;
    out.assert_ok_saying(&["✔ every subscription of support created again"]);
    let out = run(&dir, &["disconnect", "support"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("add --yes"), "{}", out.stderr);
    let out = run(&dir, &["disconnect", "support", "--yes"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("✔ support disconnected"), "{}", out.stdout);
    let out = run(&dir, &["list"]).await;
    assert!(out.stdout.contains("No connections yet"), "{}", out.stdout);

    // Nothing printed carries a secret: keys, the app's client secret, tokens, codes.
    let sm = aws_sdk_secretsmanager::Client::new(&demo.aws.sdk_config().await);
    let mut secrets = sim.issued_secrets();
    for id in [
        "relay365/signing-key",
        "relay365/event-signing-key",
        "relay365/app",
    ] {
        let v = sm
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .unwrap()
            .secret_string
            .unwrap();
        let v: Value = serde_json::from_str(&v).unwrap_or(Value::String(v));
        secrets.push(
            v.get("client_secret")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| v.as_str().unwrap().to_string()),
        );
    }
    for s in secrets {
        assert!(!everything.contains(&s), "a secret was printed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn doctor_names_the_fix_for_each_broken_part() {
    // The public URL is a tunnel to the API (as a real tenant needs); it dies later.
    let tunnel = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", tunnel.local_addr().unwrap());
    let (to, target) = tokio::sync::oneshot::channel::<String>();
    let forward = tokio::spawn(async move {
        let api = target.await.unwrap();
        loop {
            let (mut inbound, _) = tunnel.accept().await.unwrap();
            let api = api.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(api).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let dir = TempDir::new();
    let demo = start(&dir, Some(public.clone())).await;
    to.send(demo.api_url.trim_start_matches("http://").to_string())
        .unwrap();
    let sim = demo.sim.as_ref().unwrap();

    let out = connect(&dir, &["connect", DEMO_USER, "--subscribe", "mail"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // The grant is revoked; the next use of it finds out.
    sim.revoke_refresh_tokens(DEMO_USER, 50173);
    sim.expire_access_tokens();
    let out = run(
        &dir,
        &[
            "send",
            "support",
            "--to",
            "a@example.org",
            "--subject",
            "s",
            "--text",
            "t",
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("reauth_required"), "{}", out.stderr);
    // The app secret is replaced by a wrong one, and the tunnel dies.
    let sm = aws_sdk_secretsmanager::Client::new(&demo.aws.sdk_config().await);
    let app = sm
        .get_secret_value()
        .secret_id("relay365/app")
        .send()
        .await
        .unwrap()
        .secret_string
        .unwrap();
    let mut app: Value = serde_json::from_str(&app).unwrap();
    app["client_secret"] = "the-secret-id-not-its-value".into();
    sm.put_secret_value()
        .secret_id("relay365/app")
        .secret_string(app.to_string())
        .send()
        .await
        .unwrap();
    forward.abort();
    let _ = forward.await;

    let out = run(&dir, &["doctor"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_fixes(
        &out.stdout,
        &[
            ("no app-only token", "infra/register-app.sh --client-secret"),
            (
                format!("notification URL {public}/notifications is unreachable").as_str(),
                "from the internet",
            ),
            (
                "connection support (support@demo.example) needs a new sign-in",
                "signs in again",
            ),
        ],
    );
    assert!(out.stdout.contains("AADSTS7000215"), "{}", out.stdout);
    assert!(
        out.stdout.contains("checks failed: each ✘ says what to do"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("the-secret-id-not-its-value"));

    // --json says the same for scripts.
    let json: Value = serde_json::from_str(&run(&dir, &["doctor", "--json"]).await.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert!(
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["ok"] == false && c["fix"].as_str().unwrap_or("").contains("register-app.sh"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_do() {
    let dir = TempDir::new();
    // No demo running and nothing pointing at AWS.
    let out = run(&dir, &["list"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("start it with `make demo`"), "{}", out.stderr);

    // A key API Gateway does not accept: the 403 names the permission and the API.
    let demo = start(&dir, None).await;
    let file = dir.path.join("stack.json");
    let mut desc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    desc["credentials"]["secret_access_key"] = "wrong".into();
    std::fs::write(&file, desc.to_string()).unwrap();
    let out = run(&dir, &["list"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("API Gateway refused the request (403"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("needs `execute-api:Invoke` on arn:aws:execute-api:us-east-1:123456789012:"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("wrong"), "{}", out.stderr);
    drop(demo);

    // A usage mistake exits 2 with clap's sentence.
    let out = run(&dir, &["send", "support", "--subject", "s"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
}

/// The ✘ line naming `failure` and the `→` fix under it.
fn failed_with_fix(stdout: &str, failure: &str) -> String {
    let at = stdout
        .find(failure)
        .unwrap_or_else(|| panic!("{failure:?} not in:\n{stdout}"));
    let line_start = stdout[..at].rfind('\n').map_or(0, |i| i + 1);
    assert!(
        stdout[line_start..].starts_with('✘'),
        "{failure:?} is not a ✘ line:\n{stdout}"
    );
    let fix = stdout[at..].lines().nth(1).unwrap_or("");
    assert!(
        fix.trim_start().starts_with('→'),
        "no fix under {failure:?}:\n{stdout}"
    );
    fix.to_string()
}

/// `text` (a command's output) says each of `parts`.
fn assert_says(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
}

/// For each `(failure, fix)`: `stdout` has the ✘ line naming `failure`,
/// and the `→` line under it says `fix`.
fn assert_fixes(stdout: &str, cases: &[(&str, &str)]) {
    for (failure, fix) in cases {
        let said = failed_with_fix(stdout, failure);
        assert!(said.contains(fix), "{failure:?}: {fix:?} not in {said:?}");
    }
}

/// Sets one parameter of the demo's stack file, as `sam deploy
/// --parameter-overrides` would change a deployed stack's.
fn set_parameter(dir: &TempDir, key: &str, value: &str) {
    let file = dir.path.join("stack.json");
    let mut desc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    desc["parameters"][key] = value.into();
    std::fs::write(&file, desc.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amazon_connect_targets_are_checked_and_doctor_explains_them() {
    use relay365_demo::{DEMO_CONNECT_FLOW_ID as FLOW, DEMO_CONNECT_INSTANCE_ID as INSTANCE};
    let dir = TempDir::new();
    let demo = start(&dir, None).await;
    let task = format!("connect-task:{INSTANCE}/{FLOW}");

    // A malformed Connect target is a usage error naming the shape, before anything is sent.
    for (target, shape) in [
        (
            "connect-task:only-an-instance",
            "connect-task:{instance-id}/{contact-flow-id}",
        ),
        (
            "connect-email:i-1/f-1/not-an-address",
            "connect-email:{instance-id}/{contact-flow-id}/{connect-email-address}",
        ),
        (
            "connect-tasks:i-1/f-1",
            "connect-task:{instance-id}/{contact-flow-id}",
        ),
    ] {
        let out = run(&dir, &["subscribe", "support", "mail", "--target", target]).await;
        assert_eq!(out.code, 2, "{target}: {}", out.stderr);
        assert!(out.stderr.contains(shape), "{target}: {}", out.stderr);
    }
    let out = run(
        &dir,
        &[
            "subscribe",
            "support",
            "mail",
            "--target",
            "connect-task:arn:aws:connect:x/y",
        ],
    )
    .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("give the id only"), "{}", out.stderr);

    // connect-task: accepted at connect and at subscribe; a mail becomes one task.
    let out = connect(
        &dir,
        &["connect", DEMO_USER, "--subscribe", "mail", "--target", &task],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    demo_common::refund_mail_reaches_connect(&demo).await;
    let contacts = demo.connect.contacts();
    assert_eq!(contacts.len(), 1, "{contacts:#?}");
    assert_eq!(contacts[0].contact_flow_id, FLOW);
    assert_eq!(contacts[0].request["Name"], "Refund for order 1234");

    // doctor: every Connect target's permission, instance and flow pass.
    let out = run(&dir, &["doctor"]).await;
    assert_says(
        &out.stdout,
        &[
            format!("✔ {task} (support mail ").as_str(),
            format!("the stack lets mail-dispatch start tasks in instance {INSTANCE}").as_str(),
            format!("✔ Connect instance {INSTANCE} (").as_str(),
            format!("✔ contact flow {FLOW} (relay365 demo inbound) is a published inbound flow").as_str(),
        ],
    );
    assert!(!out.stdout.contains("✘"), "{}", out.stdout);
    assert_eq!(out.code, 0, "{}", out.stdout);

    // A flow that is not there, one of the wrong type, and an instance the stack does not name.
    demo.connect
        .add_flow_of_type(INSTANCE, "whisper-1", "agent whisper", "AGENT_WHISPER");
    for target in [
        format!("connect-task:{INSTANCE}/no-such-flow"),
        format!("connect-task:{INSTANCE}/whisper-1"),
        format!("connect-task:other-instance/{FLOW}"),
    ] {
        let out = run(&dir, &["subscribe", "support", "mail", "--target", &target]).await;
        assert_eq!(out.code, 0, "{target}: {}\n{}", out.stdout, out.stderr);
    }
    let out = run(&dir, &["doctor"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_fixes(
        &out.stdout,
        &[
            (
                format!("contact flow no-such-flow of instance {INSTANCE}").as_str(),
                "published flow of type Contact flow (inbound)",
            ),
            (
                "contact flow whisper-1 (agent whisper) is of type AGENT_WHISPER",
                "Contact flow (inbound)",
            ),
            (
                "mail-dispatch may not start tasks in instance other-instance",
                "--parameter-overrides ConnectInstanceId=other-instance",
            ),
            (
                "Connect instance other-instance: ResourceNotFoundException",
                "last part of the instance ARN",
            ),
        ],
    );
    assert!(out.stdout.contains("ResourceNotFoundException"), "{}", out.stdout);

    // connect-email: through the stack's DefaultTarget (subscriptions without a target):
    // the instance's address passes, another address fails with the fix, and so
    // does a stack whose ConnectEmailAddress is empty.
    let out = run(&dir, &["subscribe", "support", "mail"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    set_parameter(
        &dir,
        "DefaultTarget",
        &format!("connect-email:{INSTANCE}/{FLOW}/{DEMO_USER}"),
    );
    let out = run(&dir, &["doctor"]).await;
    assert!(
        out.stdout.contains(&format!(
            "✔ email address {DEMO_USER} is an address of instance {INSTANCE} (id "
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "the stack lets mail-dispatch start email contacts in instance {INSTANCE}"
        )),
        "{}",
        out.stdout
    );
    set_parameter(
        &dir,
        "DefaultTarget",
        &format!("connect-email:{INSTANCE}/{FLOW}/sales@demo.example"),
    );
    set_parameter(&dir, "ConnectEmailAddress", "");
    let out = run(&dir, &["doctor"]).await;
    assert_fixes(
        &out.stdout,
        &[
            (
                format!("email address sales@demo.example is not an address of instance {INSTANCE}").as_str(),
                "Channels → Email addresses",
            ),
            (
                "mail-dispatch may not start email contacts",
                "ConnectEmailAddress=sales@demo.example",
            ),
        ],
    );

    // --json says the same for scripts.
    let json: Value = serde_json::from_str(&run(&dir, &["doctor", "--json"]).await.stdout).unwrap();
    assert!(json["checks"].as_array().unwrap().iter().any(|c| c["ok"] == false
        && c["check"].as_str().unwrap_or("").contains("no-such-flow")
        && c["fix"].as_str().unwrap_or("").contains("Contact flow (inbound)")));
    // Nothing the doctor did started a contact.
    assert_eq!(demo.connect.contacts().len(), 1);
}
