//! The report: the Markdown section `make bench` puts into BENCHMARKS.md,
//! one table per memory size, then where the time goes, the targets and the
//! cost at each size, with the figures' helpers (cells, prices).

use std::collections::BTreeMap;

use super::figures::{ms, stats};
use super::options::{BenchOptions, Mode, PathKind, Runtime};
use super::records::{Results, Sample};
use crate::cgroup::lambda_share;

/// The Markdown section `make bench` puts into BENCHMARKS.md.
pub fn report(results: &Results, opts: &BenchOptions, command: &str) -> String {
    let mut out = Vec::new();
    intro(&mut out, results, opts, command);
    for &mb in &opts.memory_sizes {
        memory_size_table(&mut out, results, mb);
    }
    // The rest is at the smallest share, the one whose cold path is slowest.
    let low = opts.memory_sizes.iter().copied().min().unwrap_or(128);
    where_the_time_goes(&mut out, results, low);
    server_latency_note(&mut out, results);
    targets(&mut out, results, opts, low);
    cost_table(&mut out, results, opts);
    out.join("\n") + "\n"
}

impl Results {
    /// The samples of one row, none when it was not measured.
    fn of(&self, mb: u32, mode: Mode, path: PathKind, rt: Runtime) -> &[Sample] {
        self.samples
            .get(&(mb, mode, path, rt))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The title, how the run was made, and what each column means.
fn intro(out: &mut Vec<String>, results: &Results, opts: &BenchOptions, command: &str) {
    out.push("## The cold path over TLS, at Lambda's CPU shares".to_string());
    out.push(String::new());
    out.push(format!(
        "`make bench` runs `{command}` (`demo/src/coldpath/`). Machine: {}; the binaries of `target/{}` ({}); CPU shares through cgroup v1 `cpu.cfs_quota_us` over a 100 ms period. Medians of {} cold starts per row, the worst in parentheses.",
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
}

/// One memory size's table: each path's init, first, cold, warm and peak RSS
/// per runtime, and how much slower the baseline's cold start is.
fn memory_size_table(out: &mut Vec<String>, results: &Results, mb: u32) {
    out.push(String::new());
    out.push(format!(
        "### {mb} MB ({:.1} % of one core)",
        lambda_share(mb) * 100.0
    ));
    out.push(String::new());
    out.push(
        "| path | runtime | init | first | cold (phase-modelled) | cold, fully throttled | warm | peak RSS |"
            .into(),
    );
    out.push("|---|---|---|---|---|---|---|---|".into());
    for path in PathKind::ALL {
        let mut cold = BTreeMap::new();
        for rt in [Runtime::Rust, Runtime::Python] {
            let phased = results.of(mb, Mode::Phased, path, rt);
            let throttled = results.of(mb, Mode::Throttled, path, rt);
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

/// At the smallest share: the TLS handshakes by host, the rest of the first
/// invocation, the CPU time and the calls each path makes.
fn where_the_time_goes(out: &mut Vec<String>, results: &Results, low: u32) {
    out.push(String::new());
    out.push(format!("### Where the time goes ({low} MB, phase-modelled)"));
    out.push(String::new());
    out.push("TLS handshakes by host, accepted to finished (the client's CPU work is most of it), as the median total per cold start; the rest of the first invocation is everything else (our code, and moto and the simulator answering); CPU time is what the process used on a core (all its threads, from `/proc/PID/task/*/schedstat`): at a share of s, each CPU millisecond of an invocation takes about 1/s milliseconds of wall time.".into());
    out.push(String::new());
    out.push("| path | runtime | handshakes during init | handshakes during the first invocation | rest of the first invocation | CPU time: init / first invocation | calls of the first invocation |".into());
    out.push("|---|---|---|---|---|---|---|".into());
    for path in PathKind::ALL {
        for rt in [Runtime::Rust, Runtime::Python] {
            let samples = results.of(low, Mode::Phased, path, rt);
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
}

/// How long the local servers themselves take, when that was measured.
fn server_latency_note(out: &mut Vec<String>, results: &Results) {
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
}

/// The targets, at the smallest share: the webhook and dispatch against the
/// baseline (when it ran), and the highest peak RSS.
fn targets(out: &mut Vec<String>, results: &Results, opts: &BenchOptions, low: u32) {
    let cold = |path, rt, mode| stats(results.of(low, mode, path, rt).iter().map(|s| ms(s.cold())));
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
}

/// Each memory size's cold figures and what a million notifications cost at it.
fn cost_table(out: &mut Vec<String>, results: &Results, opts: &BenchOptions) {
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
        // The phased Rust samples of one path at this memory size, as `f`
        // reads them.
        let of = |path, f: fn(&Sample) -> f64| {
            stats(results.of(mb, Mode::Phased, path, Runtime::Rust).iter().map(f))
        };
        let wh = of(PathKind::Notification, |s| ms(s.cold()));
        let dp = of(PathKind::Dispatch, |s| ms(s.cold()));
        let warm_wh = of(PathKind::Notification, |s| ms(s.warm)).0;
        let warm_dp = of(PathKind::Dispatch, |s| ms(s.warm)).0;
        let billed_s = (warm_wh.ceil() + warm_dp.ceil()) / 1000.0;
        let cost = 1e6 * (2.0 * PRICE_PER_REQUEST + billed_s * f64::from(mb) / 1024.0 * PRICE_PER_GB_SECOND);
        out.push(format!(
            "| {mb} MB | {} | {} | {:.1} ms | ${cost:.2} |",
            cell(wh),
            cell(dp),
            warm_wh + warm_dp
        ));
    }
}

/// Lambda's price for arm64 in us-east-1: per GB-second, and per request.
pub const PRICE_PER_GB_SECOND: f64 = 0.000_013_333_4;
/// Per request.
pub const PRICE_PER_REQUEST: f64 = 0.000_000_2;

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

/// The handshakes of a cell: each host's median, and how many connections
/// it took when more than one.
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
