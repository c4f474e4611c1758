//! A mail of any size reaches the flow, and the dispatch binary's memory
//! stays within the function's: a 25 MB and a 50 MB HTML body (inline
//! images, as a sender can make them) go through the real `mail-dispatch`
//! process under the local Lambda Runtime API, with moto and the Graph
//! simulator, followed by a small mail that must not be held up behind them.
//! The process's peak resident memory (`VmHWM`) is read after each large
//! mail and must stay under the template's `MemorySize` (128 MB); the
//! figures are printed (`--nocapture`) for RELIABILITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod demo_common;

use demo_common::*;
use relay365_demo::{Demo, Options};
use serde_json::{Value, json};

/// dispatch's `MemorySize` in template.yaml.
const LAMBDA_MEMORY: u64 = 128 * 1024 * 1024;

/// Peak resident memory of a process, in bytes (`VmHWM` in `/proc/{pid}/status`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/{pid}/status");
    kb * 1024
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// An HTML body of `size` bytes as a mail client writes inline images:
/// markup with quotes and non-ASCII text (escaped or multibyte in the JSON),
/// then an image as a base64 data URL.
fn html_of(size: usize) -> String {
    let head = "<html><body><p class=\"greeting\">Grüße aus Köln — 🚀 «quoted»</p>\r\n<img src=\"data:image/png;base64,";
    let tail = "\"></body></html>";
    let mut html = String::with_capacity(size);
    html.push_str(head);
    let pattern = b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk";
    while html.len() < size - tail.len() {
        let n = pattern.len().min(size - tail.len() - html.len());
        html.push_str(std::str::from_utf8(&pattern[..n]).unwrap());
    }
    html.push_str(tail);
    html
}

/// Creates the `support` connection through the API (signed as the CLI
/// signs) and signs in.
async fn connect(demo: &Demo) {
    let url = format!("{}/connections", demo.api_url);
    let body = json!({"id": "support", "auth": "delegated", "scopes": ["Mail.ReadOnly"],
                      "subscriptions": [{"resource": "mail"}]})
    .to_string();
    let content_type = [("content-type", "application/json")];
    let mut req = http().post(&url).header("content-type", "application/json");
    for (k, v) in signed("POST", &url, &content_type, body.as_bytes()) {
        req = req.header(k, v);
    }
    let resp = req.body(body).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let conn: Value = resp.json().await.unwrap();
    let (status, page) = sign_in(conn["connect_url"].as_str().unwrap()).await;
    assert!(status == 200 && page.contains("is connected"), "{status} {page}");
}

/// Delivers a mail and waits (bounded) for its event at the flow's receiver.
async fn mail_through(demo: &Demo, subject: &str, html: String) -> Value {
    let sim = demo.sim.as_ref().unwrap();
    let id = sim.deliver_message(
        relay365_demo::DEMO_USER,
        graph_sim::Message {
            subject: subject.into(),
            from: ("Sender".into(), "sender@example.org".into()),
            body_html: html,
            ..Default::default()
        },
    );
    let find = || {
        demo.receiver
            .events()
            .into_iter()
            .find(|e| e.event["mail"]["id"] == id.as_str())
    };
    assert!(
        eventually(180, || find().is_some()).await,
        "the event for {subject:?} never reached the flow"
    );
    let got = find().unwrap();
    assert!(got.signature_ok, "{subject}: the signature does not verify");
    assert!(
        got.body.len() <= 1024 * 1024,
        "{subject}: {} bytes",
        got.body.len()
    );
    got.event
}

/// What a large mail's event must say: cut, with the whole length and the link.
fn assert_cut(event: &Value, html: &str) {
    let body = &event["mail"]["body"];
    assert_eq!(body["truncated"], true, "{}", event["mail"]["subject"]);
    assert_eq!(body["original_length"], html.len() as u64);
    assert_eq!(body["content_type"], "html");
    let kept = body["content"].as_str().unwrap();
    assert!(
        kept.len() > 512 * 1024 && html.starts_with(kept),
        "kept {} bytes",
        kept.len()
    );
    assert!(
        event["mail"]["web_link"]
            .as_str()
            .unwrap()
            .starts_with("https://outlook.office365.com/owa/?ItemID="),
        "{event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_25_and_a_50_mb_mail_reach_the_flow_cut_within_the_functions_memory() {
    let demo = Demo::start(Options::for_tests(bin_dir()))
        .await
        .expect("the stack starts");
    connect(&demo).await;
    let dispatch = demo.function("mail-dispatch").unwrap();
    let pid = dispatch.pid().expect("dispatch runs");
    let at_start = peak_rss(pid);

    let mut peaks = Vec::new();
    for size_mb in [25, 50] {
        let html = html_of(size_mb * 1024 * 1024);
        let subject = format!("{size_mb} MB of inline images");
        let event = mail_through(&demo, &subject, html.clone()).await;
        assert_cut(&event, &html);
        // The same process all along: a crash would restart it with a fresh peak.
        assert_eq!(dispatch.pid(), Some(pid), "dispatch was restarted");
        let peak = peak_rss(pid);
        println!(
            "mail-dispatch (debug build) peak RSS after the {size_mb} MB mail: {:.1} MB (at start {:.1} MB)",
            mb(peak),
            mb(at_start)
        );
        assert!(
            peak < LAMBDA_MEMORY,
            "dispatch's peak RSS {:.1} MB exceeds the function's 128 MB",
            mb(peak)
        );
        peaks.push(peak);
    }

    // The mailbox is not held up: the next mail comes through whole.
    let event = mail_through(&demo, "a small one after", "<p>hello</p>".into()).await;
    assert_eq!(event["mail"]["body"]["content"], "<p>hello</p>");
    assert!(event["mail"]["body"].get("truncated").is_none(), "{event}");
    assert_eq!(demo.receiver.events().len(), 3, "each mail once");
    println!(
        "peak RSS: start {:.1} MB, 25 MB mail {:.1} MB, 50 MB mail {:.1} MB (limit {} MB)",
        mb(at_start),
        mb(peaks[0]),
        mb(peaks[1]),
        LAMBDA_MEMORY / (1024 * 1024)
    );
}
