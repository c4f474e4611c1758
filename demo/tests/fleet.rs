//! A smoke run of the fleet benchmark (`make bench-fleet` runs it at 1,000
//! mailboxes on the release binaries): 50 mailboxes, half delegated, through
//! the same harness on the binaries `make test` built, with a short storm.
//! It checks what a user would see — every mailbox connected, every
//! subscription swept and every due one renewed, every mail delivered once —
//! and that the report carries its tables; it asserts no timing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use relay365_demo::fleet::{self, FleetOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_of_fifty_connects_renews_sweeps_and_loses_no_mail_in_a_storm() {
    let work = std::env::temp_dir().join(format!("relay365-fleet-{}", uuid::Uuid::new_v4().simple()));
    let mut opts = FleetOptions::new(common::bin_dir());
    opts.template = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    opts.mailboxes = 50;
    opts.delegated = 25;
    opts.graph_latency = Duration::from_millis(50);
    opts.storm_rate = 10.0;
    opts.storm_seconds = 12.0;
    opts.max_runs = 5;
    opts.work_dir = work.clone();
    let r = fleet::run(opts.clone(), |_| ()).await.unwrap();

    assert_eq!(r.connected, 50, "{:?}", r.connect_failures);
    assert_eq!(r.subscriptions, 50, "one Graph subscription per mailbox");
    assert!(r.nothing_left, "the runs left work: {:?}", r.runs);
    for run in &r.runs {
        let report = run.report.as_ref().expect("every scheduled run answers a report");
        assert_eq!(report["failed"].as_array().map_or(0, Vec::len), 0, "{report}");
    }
    let reports: Vec<&serde_json::Value> = r.runs.iter().filter_map(|x| x.report.as_ref().ok()).collect();
    let swept: u64 = reports.iter().filter_map(|v| v["swept"].as_u64()).sum();
    assert!(swept >= 50, "every subscription swept: {swept}");
    // `"renew": "all"` makes every subscription due. A scheduled run that
    // reports its `left` counts honours it: then every one is renewed.
    let honours_renew_all = reports.iter().any(|v| v.get("left").is_some());
    if honours_renew_all {
        assert_eq!(r.renewed_at_graph, r.due, "every due subscription renewed");
    }
    assert_eq!(r.mails, 120);
    assert_eq!(r.delivered, r.mails, "lost mail");
    assert_eq!(r.doubled, 0, "a mail delivered twice");
    assert_eq!(r.bad_signatures, 0);

    let text = fleet::report(&r, &opts, "relay365-fleet --mailboxes 50");
    for heading in [
        "### Connecting",
        "### Scheduled run",
        "### Notification storm",
        "### A mailbox's month",
        "| total, tokens sealed with KMS |",
    ] {
        assert!(text.contains(heading), "{heading} missing: {text}");
    }
    let _ = std::fs::remove_dir_all(work);
}
