//! `make demo`'s walk-through, scripted: start `relay365-demo` as a user
//! does, wait for its "ready" text, run the very `curl` lines it prints
//! (connect, open the link and accept the consent page as a browser would,
//! send a mail in, see the event, send a reply, subscribe a second flow to
//! the local Amazon Connect with the `relay365` CLI and see the next mail
//! become a task), then Ctrl-C it and check that everything it started is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

/// The commands the walk-through prints (`  $ curl …`, continued with `\`).
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(c) = current.as_mut() {
            c.push(' ');
            c.push_str(line.trim_end_matches('\\').trim());
            if !line.ends_with('\\') {
                out.push(current.take().unwrap());
            }
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            if cmd.ends_with('\\') {
                current = Some(cmd.trim_end_matches('\\').trim().to_string());
            } else {
                out.push(cmd.to_string());
            }
        }
    }
    out
}

fn run(cmd: &str) -> String {
    run_with(cmd, &[])
}

fn run_with(cmd: &str, env: &[(&str, &std::path::Path)]) -> String {
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_walkthrough_works_and_ctrl_c_stops_everything() {
    let logs = std::env::temp_dir().join(format!("relay365-demo-{}", uuid::Uuid::new_v4().simple()));
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_relay365-demo"))
        .args(["--api-port", "0", "--sim-port", "0", "--receiver-port", "0"])
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--log-dir")
        .arg(&logs)
        .env_remove("RELAY365_DEMO_CLIENT_ID")
        .env_remove("RELAY365_PUBLIC_URL")
        .env("RELAY365_DEMO_STACK", logs.join("stack.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    for stream in [
        Box::new(demo.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(demo.stderr.take().unwrap()),
    ] {
        let output = output.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let mut o = output.lock().unwrap();
                o.push_str(&l);
                o.push('\n');
            }
        });
    }
    let text = || output.lock().unwrap().clone();
    assert!(
        eventually(120, || text().contains("Ctrl-C stops everything.")).await,
        "the demo did not get ready:\n{}",
        text()
    );
    let walkthrough = text();
    assert!(walkthrough.contains("relay365 demo: ready in"), "{walkthrough}");
    let cmds = commands(&walkthrough);
    assert_eq!(cmds.len(), 8, "{cmds:#?}");

    // 1. Create the connection.
    let created: Value = serde_json::from_str(&run(&cmds[0])).unwrap();
    assert_eq!(created["status"], "pending_consent", "{created}");
    // 2. Open the link in a "browser" and accept the consent page.
    let (status, page) = sign_in(created["connect_url"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("is connected"), "{page}");
    let conn: Value = serde_json::from_str(&run(&cmds[1])).unwrap();
    assert_eq!(conn["status"], "active", "{conn}");
    assert!(
        !conn["subscriptions"][0]["id"].as_str().unwrap().is_empty(),
        "{conn}"
    );
    // 3. A mail arrives; the event is printed, verified, and listed by the receiver.
    let delivered: Value = serde_json::from_str(&run(&cmds[2])).unwrap();
    let id = delivered["id"].as_str().unwrap().to_string();
    assert!(
        eventually(20, || text()
            .contains("==> flow receiver: mail.received (signature verified)"))
        .await,
        "no event printed:\n{}",
        text()
    );
    let receiver = walkthrough
        .lines()
        .find_map(|l| l.trim().strip_prefix("flow receiver"))
        .unwrap()
        .trim()
        .to_string();
    let events: Value = http().get(&receiver).send().await.unwrap().json().await.unwrap();
    assert_eq!(events["events"][0]["event"]["mail"]["id"], id.as_str());
    assert_eq!(events["events"][0]["signature_ok"], true);
    // 4. Reply with one curl line, and see it in the mailbox's sent mail.
    let sent: Value = serde_json::from_str(&run(&cmds[3])).unwrap();
    assert_eq!(sent["status"], "sent", "{sent}");
    let mailbox: Value = serde_json::from_str(&run(&cmds[4])).unwrap();
    assert_eq!(mailbox["value"][0]["subject"], "Re: Where is my order?");
    assert_eq!(mailbox["value"][0]["body"], "It ships today.");
    // 5. A second flow to the local Amazon Connect, with the CLI; the next mail becomes a task.
    assert!(
        cmds[5].contains("subscribe support mail --target connect-task:"),
        "{}",
        cmds[5]
    );
    let subscribed = run_with(
        &cmds[5],
        &[("RELAY365_DEMO_STACK", logs.join("stack.json").as_path())],
    );
    assert!(subscribed.contains("mail subscription"), "{subscribed}");
    run(&cmds[6]);
    assert!(
        eventually(30, || text().contains("==> Amazon Connect (local): task")).await,
        "no task printed:\n{}",
        text()
    );
    let contacts: Value = serde_json::from_str(&run(&cmds[7])).unwrap();
    assert_eq!(
        contacts["contacts"][0]["name"], "Refund for order 1234",
        "{contacts}"
    );
    assert_eq!(contacts["contacts"][0]["operation"], "StartTaskContact");

    // Ctrl-C stops the demo and everything it started.
    let pid = demo.id().unwrap();
    let started = children(pid);
    assert!(
        started.len() >= 6,
        "expected moto and five functions, found {started:?}"
    );
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), demo.wait())
        .await
        .expect("the demo did not stop on Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        eventually(10, || started.iter().all(|p| !alive(*p))).await,
        "left running: {:?}",
        started.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(logs);
}
