//! A smoke run of the cold-path benchmark (`make bench` runs it in full):
//! one cold start of each path, phase-modelled and fully throttled at one
//! CPU share, over TLS with the test CA, on the binaries `make test` built.
//! It checks that every path does its real work (the harness refuses an
//! answer a user would not accept, and dispatch's events must reach the
//! target) and that the report carries every row; it asserts no timing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use relay365_demo::coldpath::{self, BenchOptions, Mode, PathKind, Runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cold_path_bench_runs_every_path_over_tls_and_reports_each() {
    let work = std::env::temp_dir().join(format!("relay365-coldpath-{}", uuid::Uuid::new_v4().simple()));
    let opts = BenchOptions {
        bin_dir: common::bin_dir(),
        python: "unused".into(),
        baseline: "unused".into(),
        reps: 1,
        memory_sizes: vec![1024],
        rust_only: true,
        paths: PathKind::ALL.to_vec(),
        work_dir: work.clone(),
    };
    let results = coldpath::run(opts.clone(), |_| ()).await.unwrap();
    let modes: &[Mode] = if results.unthrottled.is_some() {
        &[Mode::Phased]
    } else {
        &[Mode::Phased, Mode::Throttled]
    };
    for &mode in modes {
        for path in PathKind::ALL {
            let samples = &results.samples[&(1024, mode, path, Runtime::Rust)];
            assert_eq!(samples.len(), 1, "{path:?} {mode:?}");
            let s = &samples[0];
            assert!(s.peak_rss > 0, "{path:?}: no peak RSS was read");
            // Every path but the handshake calls AWS or Microsoft, each call over TLS.
            let handshakes: Vec<&str> = s
                .init_handshakes
                .iter()
                .chain(&s.first_handshakes)
                .map(|(n, _)| *n)
                .collect();
            match path {
                PathKind::Handshake => assert!(handshakes.is_empty(), "{handshakes:?}"),
                PathKind::Notification => {
                    assert!(
                        handshakes.contains(&"secretsmanager") && handshakes.contains(&"sqs"),
                        "{handshakes:?}"
                    );
                }
                PathKind::Dispatch => {
                    for host in ["dynamodb", "login", "graph", "target"] {
                        assert!(handshakes.contains(&host), "{host} missing from {handshakes:?}");
                    }
                }
                PathKind::SendMail | PathKind::Callback => {
                    for host in ["dynamodb", "login", "graph"] {
                        assert!(handshakes.contains(&host), "{host} missing from {handshakes:?}");
                    }
                }
            }
        }
    }
    let report = coldpath::report(&results, &opts, "relay365-coldpath --reps 1");
    for path in PathKind::ALL {
        assert!(report.contains(path.label()), "{report}");
    }
    assert!(report.contains("### 1024 MB"), "{report}");
    assert!(
        report.contains("| 1024 MB |"),
        "the cost table has no row: {report}"
    );
    let _ = std::fs::remove_dir_all(work);
}
