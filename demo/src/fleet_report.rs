//! The fleet benchmark's Markdown section, and its month per mailbox.
//!
//! Kept apart from the measuring ([`crate::fleet`]) because the arithmetic
//! is the part a reader checks: every figure of the cost table is written
//! out from the counts the run measured and the assumptions stated with it.

use std::fmt::Write as _;

use serde_json::Value;

use crate::fleet::{FleetOptions, FleetResults, PHASES, PhaseCounts, WriteRates, percentile};

/// Graph's subscription-write limits (graph.md §14): per app and tenant, per app; per 20 s.
const LIMIT_PER_TENANT: usize = 500;
/// Per app across all tenants, per 20 s.
const LIMIT_PER_APP: usize = 2000;

/// AWS us-east-1 list prices, USD.
struct Prices {
    lambda_gb_s: f64,
    lambda_request: f64,
    wru: f64,
    rru: f64,
    sqs_fifo: f64,
    secret_month: f64,
    secret_call: f64,
    kms_key_month: f64,
    kms_request: f64,
    http_api: f64,
}

fn prices(architecture: &str) -> Prices {
    Prices {
        lambda_gb_s: if architecture == "arm64" {
            0.000_013_333_4
        } else {
            0.000_016_666_7
        },
        lambda_request: 0.20 / 1e6,
        // On demand, since the November 2024 price cut.
        wru: 0.625 / 1e6,
        rru: 0.125 / 1e6,
        sqs_fifo: 0.50 / 1e6,
        secret_month: 0.40,
        secret_call: 0.05 / 1e4,
        kms_key_month: 1.0,
        kms_request: 0.03 / 1e4,
        http_api: 1.00 / 1e6,
    }
}

/// Request units of one phase's DynamoDB operations: (reads, writes). Items
/// are at most 1 KB and reads at most 4 KB (connection, subscription and
/// ledger items; keys-only index pages), so each read request is one RRU and
/// each write one WRU; a transaction counts twice; a batch counts as one
/// request (the proxy does not see its items).
fn capacity(counts: &PhaseCounts) -> (f64, f64) {
    let mut reads = 0.0;
    let mut writes = 0.0;
    for (op, n) in &counts.aws {
        // The proxy names operations by their target header
        // (`DynamoDB_20120810.GetItem`) or service (`dynamodb.GetItem`).
        let Some((service, name)) = op.split_once('.') else {
            continue;
        };
        if !service.to_ascii_lowercase().starts_with("dynamodb") {
            continue;
        }
        let n = f64::from(*n);
        match name {
            "GetItem" | "Query" | "Scan" | "BatchGetItem" => reads += n,
            "TransactGetItems" => reads += 2.0 * n,
            "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" => writes += n,
            "TransactWriteItems" => writes += 2.0 * n,
            _ => {}
        }
    }
    (reads, writes)
}

fn sum_matching(counts: &PhaseCounts, f: impl Fn(&str) -> bool) -> f64 {
    counts
        .aws
        .iter()
        .filter(|(k, _)| f(k))
        .map(|(_, v)| f64::from(*v))
        .sum()
}

/// A count with thousands separators, or a small figure with decimals.
fn num(x: f64) -> String {
    if x != 0.0 && x.abs() < 100.0 && x.fract() != 0.0 {
        return format!("{x:.3}");
    }
    let n = x.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn usd(x: f64) -> String {
    if x < 0.01 {
        format!("${x:.4}")
    } else {
        format!("${x:.2}")
    }
}

fn rates_row(what: &str, r: &WriteRates) -> String {
    let kinds: Vec<String> = r.by_kind.iter().map(|(k, v)| format!("{v} {k}")).collect();
    format!(
        "| {what} | {} | {} / {LIMIT_PER_TENANT} | {} / {LIMIT_PER_APP} |",
        if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(", ")
        },
        r.max_per_tenant,
        r.max_per_app
    )
}

/// The report's keys, flattened to `key: value` (objects one level deep).
fn report_counts(report: &Value) -> String {
    let Some(o) = report.as_object() else {
        return report.to_string();
    };
    let mut out = Vec::new();
    for (k, v) in o {
        match v {
            Value::Array(a) => out.push(format!("{k}: {}", a.len())),
            Value::Object(inner) => {
                let parts: Vec<String> = inner.iter().map(|(ik, iv)| format!("{ik} {iv}")).collect();
                out.push(format!("{k}: {{{}}}", parts.join(", ")));
            }
            other => out.push(format!("{k}: {other}")),
        }
    }
    out.join(", ")
}

/// Per-function invocation figures of one phase: (count, GB-s, records).
fn lambda_of(results: &FleetResults, phase: usize, function: &str) -> (f64, f64, f64) {
    let mb = results.template.memory.get(function).copied().unwrap_or(128) as f64;
    let mut n = 0.0;
    let mut gb_s = 0.0;
    let mut records = 0.0;
    for i in results
        .invocations
        .iter()
        .filter(|i| i.phase == phase && i.function == function)
    {
        n += 1.0;
        gb_s += i.duration.as_secs_f64() * mb / 1024.0;
        records += i.records as f64;
    }
    (n, gb_s, records)
}

/// A table row: its name and the figure it shows of a [`Month`].
type Row = (&'static str, fn(&Month) -> f64);

/// One mailbox's month, by resource.
#[derive(Debug, Default, Clone, Copy)]
struct Month {
    lambda_requests: f64,
    gb_s: f64,
    rru: f64,
    wru: f64,
    sqs: f64,
    secrets_calls: f64,
    kms_calls: f64,
    http_api: f64,
    graph: f64,
}

/// The Markdown section `make bench-fleet` writes (BENCHMARKS.fleet.md).
pub fn report(r: &FleetResults, opts: &FleetOptions, command: &str) -> String {
    report_with_scale(r, opts, command, &[])
}

/// [`report`], followed by the extrapolation from this run and the other
/// sizes measured (`others`) to 10,000 mailboxes.
pub fn report_with_scale(
    r: &FleetResults,
    opts: &FleetOptions,
    command: &str,
    others: &[ScalePoint],
) -> String {
    let mut s = report_of_run(r, opts, command);
    let mut points = others.to_vec();
    points.push(ScalePoint::of(r, opts));
    let timeout = r.template.timeout.get("connections").copied().unwrap_or(0);
    s.push_str(&scale_section(&points, timeout, 10_000));
    s
}

fn report_of_run(r: &FleetResults, opts: &FleetOptions, command: &str) -> String {
    let mut s = String::new();
    what_ran(&mut s, r, opts, command);
    connecting(&mut s, r, opts);
    scheduled_runs(&mut s, r, opts);
    storm(&mut s, r, opts);
    requests_per_phase(&mut s, r);
    let m = months(r, opts);
    a_mailboxs_month(&mut s, r, opts, &m);
    cost_at_scale(&mut s, r, opts, &m);
    s
}

/// The section's heading and what the run was.
fn what_ran(s: &mut String, r: &FleetResults, opts: &FleetOptions, command: &str) {
    let _ = writeln!(s, "## Fleet: {} mailboxes\n", opts.mailboxes);
    let _ = writeln!(
        s,
        "Measured by `make bench-fleet` (`{command}`; `demo/src/fleet.rs`) on {}: the release \
         binaries under the local Runtime API, each HTTP function starting with {} sandboxes and \
         scaling out to {} as Lambda does (it started {}), dispatch invoked by an SQS event \
         source scaling as Lambda's does (5 pollers, one more per 200 ms while batches come \
         full, here up to {}; it reached {}), \
         moto behind its counting proxy (DynamoDB in a moto process of its own), the Microsoft simulator adding {} ms to every Graph \
         request. {} mailboxes in {} tenant(s): {} app-only (admin consent each) and {} delegated \
         (a browser sign-in each), each with one mail subscription.\n",
        crate::coldpath::machine(),
        opts.sandboxes,
        opts.max_sandboxes,
        scale_out(r),
        opts.max_sandboxes.max(5),
        r.pollers,
        opts.graph_latency.as_millis(),
        opts.mailboxes,
        opts.tenants,
        opts.mailboxes - r.delegated,
        r.delegated
    );
}

/// 1. Connecting the fleet and the subscription writes it made.
fn connecting(s: &mut String, r: &FleetResults, opts: &FleetOptions) {
    // 1. Connect.
    let _ = writeln!(s, "### Connecting\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| connected (`POST /connections`, then consent or sign-in), {} at a time | {} of {} in {:.1} s ({:.1} per second) |",
        opts.connect_concurrency,
        r.connected,
        opts.mailboxes,
        r.connect_wall.as_secs_f64(),
        r.connected as f64 / r.connect_wall.as_secs_f64().max(0.001)
    );
    let _ = writeln!(s, "| Graph subscriptions afterwards | {} |", r.subscriptions);
    for f in &r.connect_failures {
        let _ = writeln!(s, "| failed | {} |", f.replace('|', "/"));
    }
    let _ = writeln!(
        s,
        "\nSubscription writes as the simulator saw them (Graph's limits: {LIMIT_PER_TENANT} per 20 s per app and tenant, {LIMIT_PER_APP} per 20 s per app):\n"
    );
    let _ = writeln!(
        s,
        "| phase | writes | most in 20 s, one tenant | most in 20 s, the app |\n|---|---|---|---|"
    );
    let _ = writeln!(s, "{}", rates_row("connect", &r.connect_writes));
    let _ = writeln!(s, "{}", rates_row("renew and sweep", &r.renew_writes));
}

/// 2. The scheduled runs until nothing was left.
fn scheduled_runs(s: &mut String, r: &FleetResults, opts: &FleetOptions) {
    let timeout = r.template.timeout.get("connections").copied().unwrap_or(0);
    // 2. Scheduled runs.
    let _ = writeln!(
        s,
        "\n### Scheduled run: renew every subscription, sweep every one\n\n\
         `connections` invoked with `{{\"detail\": {{\"renew\": \"all\", \"sweep\": \"all\"}}}}` (deadline: \
         its `Timeout` of {timeout} s from template.yaml, passed as Lambda passes it) until its report \
         says nothing is left (at most {} runs).\n",
        opts.max_runs
    );
    let _ = writeln!(s, "| run | duration / Timeout | report |\n|---|---|---|");
    for (i, run) in r.runs.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {:.1} s / {timeout} s | {} |",
            i + 1,
            run.duration.as_secs_f64(),
            match &run.report {
                Ok(v) => report_counts(v),
                Err(e) => format!("error: {}", e.replace('|', "/")),
            }
        );
    }
    if let Some(o) = &r.ordinary {
        let _ = writeln!(
            s,
            "| then an ordinary run (`{{\"sweep\": \"all\"}}`) | {:.1} s / {timeout} s | {} |",
            o.duration.as_secs_f64(),
            match &o.report {
                Ok(v) => report_counts(v),
                Err(e) => format!("error: {}", e.replace('|', "/")),
            }
        );
    }
    let _ = writeln!(
        s,
        "\n- runs needed: **{}**{}; every invocation within its Timeout: **{}**",
        r.runs.len(),
        if r.nothing_left {
            " (the last report left nothing)"
        } else {
            " (the bound was reached with work left, or a run failed)"
        },
        if r.runs
            .iter()
            .all(|x| x.duration.as_secs() < timeout && x.report.is_ok())
        {
            "yes"
        } else {
            "no"
        }
    );
    // A run inside its Timeout can still have failed work: its report's
    // `failed` names each piece, and the run is not a success.
    let failed: Vec<String> = r
        .runs
        .iter()
        .chain(r.ordinary.iter())
        .filter_map(|x| x.report.as_ref().ok())
        .filter_map(|v| v["failed"].as_array())
        .flatten()
        .map(|f| f.as_str().map_or_else(|| f.to_string(), str::to_string))
        .collect();
    if failed.is_empty() {
        let _ = writeln!(s, "- work the runs reported failed: **none**");
    } else {
        let _ = writeln!(
            s,
            "- work the runs reported failed: **{}** (so the run is not a success), first: {}",
            failed.len(),
            failed
                .iter()
                .take(3)
                .map(|f| format!("`{}`", f.replace(['|', '`'], "/")))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        s,
        "- due subscriptions renewed at Graph (a later expiry, or recreated): **{} of {}**",
        r.renewed_at_graph, r.due
    );
    let swept: u64 = r
        .runs
        .iter()
        .filter_map(|x| x.report.as_ref().ok())
        .filter_map(|v| v["swept"].as_u64())
        .sum();
    let _ = writeln!(
        s,
        "- subscriptions swept (sum of the reports' `swept`): **{swept} of {}**",
        r.subscriptions
    );
}

/// 3. The notification storm.
fn storm(s: &mut String, r: &FleetResults, opts: &FleetOptions) {
    // 3. Storm.
    let _ = writeln!(
        s,
        "\n### Notification storm\n\n{} mails created at the simulator in {:.0} s ({} per second requested) in random mailboxes; the simulator POSTs each notification to the webhook as Graph does.\n",
        r.mails,
        r.storm_wall.as_secs_f64(),
        opts.storm_rate
    );
    let _ = writeln!(s, "| | p50 | p99 | max |\n|---|---|---|---|");
    let row = |what: &str, v: &[f64]| {
        format!(
            "| {what} ({} samples) | {:.0} ms | {:.0} ms | {:.0} ms |",
            v.len(),
            percentile(v, 50.0),
            percentile(v, 99.0),
            percentile(v, 100.0)
        )
    };
    let _ = writeln!(s, "{}", row("webhook acknowledgement (POST to 202)", &r.ack_ms));
    let _ = writeln!(
        s,
        "{}",
        row("end to end (notification sent to the flow's 2xx)", &r.e2e_ms)
    );
    let _ = writeln!(
        s,
        "\n- delivered: **{} of {}**; lost: **{}**; doubled: **{}**; bad signatures: {}; notification POSTs not answered 2xx: {}{}",
        r.delivered,
        r.mails,
        r.mails.saturating_sub(r.delivered),
        r.doubled,
        r.bad_signatures,
        r.ack_failures,
        if r.ack_failure_statuses.is_empty() {
            String::new()
        } else {
            let by: Vec<String> = r
                .ack_failure_statuses
                .iter()
                .map(|(status, n)| match status {
                    0 => format!("{n} unanswered within 3 s"),
                    s => format!("{n} answered {s}"),
                })
                .collect();
            format!(" ({}; Graph retries each)", by.join(", "))
        }
    );
    let _ = writeln!(s, "{}", beside_the_anchors(percentile(&r.e2e_ms, 99.0)));
}

/// The storm's end-to-end p99 against relay365's goal and what the tools a
/// contact centre would otherwise use wait by design.
fn beside_the_anchors(p99_ms: f64) -> String {
    format!(
        "- end to end p99 **{:.2} s**: {} relay365's goal of under 2 s from Graph's notification to the \
         target. The tools it replaces poll: Power Automate's polling triggers wait up to an hour \
         between checks (its shared-mailbox trigger runs on a recurrence, a minute in the flows \
         exported), n8n's Outlook trigger polls, a minute apart at the shortest.",
        p99_ms / 1000.0,
        if p99_ms < 2000.0 { "inside" } else { "outside" }
    )
}

/// 4. Every request counted, per phase.
fn requests_per_phase(s: &mut String, r: &FleetResults) {
    // 4. Counts per phase.
    let _ = writeln!(
        s,
        "\n### Requests counted per phase\n\nAWS at moto's counting proxy (every request of the functions and of the harness's SQS pollers), Graph and token requests at the simulator, invocations and their wall time by the harness.\n"
    );
    let mut ops: Vec<String> = r.counts.iter().flat_map(|c| c.aws.keys().cloned()).collect();
    ops.sort();
    ops.dedup();
    let _ = writeln!(
        s,
        "| | {} |\n|---|{}",
        PHASES[..r.counts.len()].join(" | "),
        "---|".repeat(r.counts.len())
    );
    let cells = |f: &dyn Fn(&PhaseCounts) -> String| r.counts.iter().map(f).collect::<Vec<_>>().join(" | ");
    let _ = writeln!(s, "| Graph requests | {} |", cells(&|c| num(f64::from(c.graph))));
    let _ = writeln!(s, "| token requests | {} |", cells(&|c| num(f64::from(c.token))));
    for op in &ops {
        let _ = writeln!(
            s,
            "| {op} | {} |",
            cells(&|c| num(f64::from(c.aws.get(op).copied().unwrap_or(0))))
        );
    }
    for f in ["connections", "oauth-callback", "mail-webhook", "mail-dispatch"] {
        let line: Vec<String> = (0..r.counts.len())
            .map(|ph| {
                let (count, gb_s, _) = lambda_of(r, ph, f);
                format!("{} ({:.2} GB-s)", num(count), gb_s)
            })
            .collect();
        let _ = writeln!(s, "| {f} invocations | {} |", line.join(" | "));
    }
}

/// A mailbox's month: per ordinary run, per renewal, per mail, and their sum.
#[derive(Debug, Clone, Copy)]
struct Months {
    per_run: Month,
    per_renewal: Month,
    per_mail: Month,
    month: Month,
    runs_per_month: f64,
    renewals_per_month: f64,
    mails_per_month: f64,
}

/// 5. The month per mailbox, from the phases' counts.
fn months(r: &FleetResults, opts: &FleetOptions) -> Months {
    let n = opts.mailboxes.max(1) as f64;
    // 5. The month per mailbox.
    let runs_per_month = 30.0 * 24.0 * 60.0 / opts.schedule_minutes.max(1.0);
    let renewals_per_month = 5.0;
    let mails_per_month = opts.mails_per_day * 30.0;
    let phase = |i: usize| r.counts.get(i).cloned().unwrap_or_default();
    let (renew, ordinary, storm) = (phase(1), phase(2), phase(3));
    let mails = r.mails.max(1) as f64;
    let sqs_calls = |c: &PhaseCounts, dispatches: f64| {
        // The pollers' empty receives are the event source's, not per
        // mail: count sends and deletes, and one receive per batch.
        sum_matching(c, |k| {
            k.to_ascii_lowercase().contains("sqs")
                && (k.contains("SendMessage") || k.contains("DeleteMessage"))
        }) + dispatches
    };
    let sm_calls = |c: &PhaseCounts| sum_matching(c, |k| k.starts_with("secretsmanager."));
    // KMS speaks the `TrentService` target at the proxy.
    let kms_calls = |c: &PhaseCounts| sum_matching(c, |k| k.starts_with("TrentService."));
    // Per ordinary run (per mailbox), per renewal (the renew-all phase
    // beyond an ordinary run), per mail.
    let per_run = {
        let (inv, gb_s, _) = lambda_of(r, 2, "connections");
        let (rru, wru) = capacity(&ordinary);
        let (d_inv, d_gb, _) = lambda_of(r, 2, "mail-dispatch");
        Month {
            lambda_requests: (inv + d_inv) / n,
            gb_s: (gb_s + d_gb) / n,
            rru: rru / n,
            wru: wru / n,
            sqs: sqs_calls(&ordinary, d_inv) / n,
            secrets_calls: sm_calls(&ordinary) / n,
            kms_calls: kms_calls(&ordinary) / n,
            http_api: 0.0,
            graph: f64::from(ordinary.graph) / n,
        }
    };
    let per_renewal = {
        let (_, gb_s, _) = lambda_of(r, 1, "connections");
        let (_, o_gb, _) = lambda_of(r, 2, "connections");
        let (rru, wru) = capacity(&renew);
        let (orru, owru) = capacity(&ordinary);
        let runs = r.runs.len().max(1) as f64;
        Month {
            // Extra runs beyond the one the schedule makes anyway.
            lambda_requests: (runs - 1.0) / n,
            gb_s: (gb_s - o_gb).max(0.0) / n,
            rru: (rru - orru).max(0.0) / n,
            wru: (wru - owru).max(0.0) / n,
            sqs: (sqs_calls(&renew, 0.0) - sqs_calls(&ordinary, 0.0)).max(0.0) / n,
            secrets_calls: (sm_calls(&renew) - sm_calls(&ordinary)).max(0.0) / n,
            kms_calls: (kms_calls(&renew) - kms_calls(&ordinary)).max(0.0) / n,
            http_api: 0.0,
            graph: f64::from(renew.graph.saturating_sub(ordinary.graph)) / n,
        }
    };
    let per_mail = {
        let (w_inv, w_gb, _) = lambda_of(r, 3, "mail-webhook");
        let (d_inv, d_gb, d_rec) = lambda_of(r, 3, "mail-dispatch");
        // Dispatch's figures come from the harness's sandboxes (the demo's
        // own event source takes some batches untimed): per record handled.
        let per_record = |x: f64| if d_rec > 0.0 { x / d_rec } else { 0.0 };
        let (rru, wru) = capacity(&storm);
        Month {
            lambda_requests: w_inv / mails + per_record(d_inv),
            gb_s: w_gb / mails + per_record(d_gb),
            rru: rru / mails,
            wru: wru / mails,
            sqs: sqs_calls(&storm, 0.0) / mails + per_record(d_inv),
            secrets_calls: sm_calls(&storm) / mails,
            kms_calls: kms_calls(&storm) / mails,
            http_api: w_inv / mails,
            graph: f64::from(storm.graph) / mails,
        }
    };
    let month = Month {
        lambda_requests: runs_per_month * per_run.lambda_requests
            + renewals_per_month * per_renewal.lambda_requests
            + mails_per_month * per_mail.lambda_requests,
        gb_s: runs_per_month * per_run.gb_s
            + renewals_per_month * per_renewal.gb_s
            + mails_per_month * per_mail.gb_s,
        rru: runs_per_month * per_run.rru
            + renewals_per_month * per_renewal.rru
            + mails_per_month * per_mail.rru,
        wru: runs_per_month * per_run.wru
            + renewals_per_month * per_renewal.wru
            + mails_per_month * per_mail.wru,
        sqs: runs_per_month * per_run.sqs
            + renewals_per_month * per_renewal.sqs
            + mails_per_month * per_mail.sqs,
        secrets_calls: runs_per_month * per_run.secrets_calls
            + renewals_per_month * per_renewal.secrets_calls
            + mails_per_month * per_mail.secrets_calls,
        kms_calls: runs_per_month * per_run.kms_calls
            + renewals_per_month * per_renewal.kms_calls
            + mails_per_month * per_mail.kms_calls,
        http_api: mails_per_month * per_mail.http_api,
        graph: runs_per_month * per_run.graph
            + renewals_per_month * per_renewal.graph
            + mails_per_month * per_mail.graph,
    };
    Months {
        per_run,
        per_renewal,
        per_mail,
        month,
        runs_per_month,
        renewals_per_month,
        mails_per_month,
    }
}

/// 5. The table of a mailbox's month.
fn a_mailboxs_month(s: &mut String, r: &FleetResults, opts: &FleetOptions, m: &Months) {
    let t = &r.template;
    let arch = r.template.architecture.as_str();
    let mem: Vec<String> = t.memory.iter().map(|(k, v)| format!("{k} {v} MB")).collect();
    let _ = writeln!(
        s,
        "\n### A mailbox's month\n\nAssumptions: the schedule runs every {} minutes ({} runs a month), each an ordinary run as measured above (per mailbox: the ordinary run's counts ÷ {}); each subscription is renewed {} times a month (Graph's 7-day lifetime for mail, renewed in its last day), each renewal costing what the renew-all phase cost beyond the ordinary run; {} mails per mailbox per day ({} a month), each costing what the storm cost per mail. Lambda: {arch} (template.yaml), {}; GB-s = measured wall time × memory. DynamoDB: one RRU per read request and one WRU per write request (items ≤ 1 KB, reads ≤ 4 KB, keys-only index pages; strongly consistent reads, so no half units), a transaction twice, a batch once; a sealed refresh token's item is about 2.3 KB, 3 WRU, so each token write is undercounted by 2 WRU ($0.00000125; docs/architecture.md prices it exactly). SQS: sends and deletes as counted, plus one receive per dispatch batch (the event source's empty long polls are a fixed cost of the queue, left out). API Gateway: one request per notification.\n",
        opts.schedule_minutes,
        num(m.runs_per_month),
        opts.mailboxes,
        m.renewals_per_month,
        opts.mails_per_day,
        num(m.mails_per_month),
        mem.join(", ")
    );
    let _ = writeln!(
        s,
        "| per mailbox | per ordinary run | per renewal | per mail | a month |\n|---|---|---|---|---|"
    );
    let rows: [Row; 9] = [
        ("Lambda invocations", |m| m.lambda_requests),
        ("Lambda GB-s", |m| m.gb_s),
        ("DynamoDB RRU", |m| m.rru),
        ("DynamoDB WRU", |m| m.wru),
        ("SQS requests", |m| m.sqs),
        ("Secrets Manager calls", |m| m.secrets_calls),
        ("KMS requests (sealed tokens)", |m| m.kms_calls),
        ("API Gateway requests", |m| m.http_api),
        ("Graph requests", |m| m.graph),
    ];
    for (name, f) in rows {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} |",
            num(f(&m.per_run)),
            num(f(&m.per_renewal)),
            num(f(&m.per_mail)),
            num(f(&m.month))
        );
    }
}

/// 6. What the month costs at 10, 1,000 and 10,000 mailboxes.
fn cost_at_scale(s: &mut String, r: &FleetResults, opts: &FleetOptions, m: &Months) {
    let n = opts.mailboxes.max(1) as f64;
    let p = prices(&r.template.architecture);
    let Months { month, .. } = *m;
    let share = r.delegated as f64 / n;
    let _ = writeln!(
        s,
        "\nCost a month at N mailboxes ({:.0} % delegated, as measured), us-east-1 list prices. Delegated refresh tokens are sealed with one KMS key in the state table, as the template deploys them ($1 a month, $0.03 per 10,000 requests, the KMS requests measured; their items are in the DynamoDB row). For comparison, the earlier design with one Secrets Manager secret per delegated mailbox ($0.40 a month, $0.05 per 10,000 calls, one call per KMS request measured). The Secrets Manager calls measured are the deployment's own secrets (the app's, the signing keys), in the base:\n",
        share * 100.0
    );
    let _ = writeln!(s, "| | N = 10 | N = 1,000 | N = 10,000 |\n|---|---|---|---|");
    let sizes = [10.0, 1000.0, 10000.0];
    let line = |name: &str, f: &dyn Fn(f64) -> (String, f64)| {
        let cells: Vec<String> = sizes
            .iter()
            .map(|&k| {
                let (how, cost) = f(k);
                format!("{how} = **{}**", usd(cost))
            })
            .collect();
        format!("| {name} | {} |", cells.join(" | "))
    };
    let lambda = |k: f64| {
        let req = k * month.lambda_requests;
        let gb = k * month.gb_s;
        (
            format!(
                "{} req × $0.20/M + {} GB-s × ${}",
                num(req),
                num(gb),
                p.lambda_gb_s
            ),
            req * p.lambda_request + gb * p.lambda_gb_s,
        )
    };
    let dynamo = |k: f64| {
        let (w, rd) = (k * month.wru, k * month.rru);
        (
            format!("{} WRU × $0.625/M + {} RRU × $0.125/M", num(w), num(rd)),
            w * p.wru + rd * p.rru,
        )
    };
    let sqs = |k: f64| {
        let q = k * month.sqs;
        (format!("{} × $0.50/M (FIFO)", num(q)), q * p.sqs_fifo)
    };
    let api = |k: f64| {
        let q = k * month.http_api;
        (format!("{} × $1.00/M", num(q)), q * p.http_api)
    };
    let own_secrets = |k: f64| {
        let calls = k * month.secrets_calls;
        (format!("{} calls × $0.05/10k", num(calls)), calls * p.secret_call)
    };
    let secrets = |k: f64| {
        let secrets = (k * share).round();
        let calls = k * month.kms_calls;
        (
            format!(
                "{} secrets × $0.40 + {} calls × $0.05/10k",
                num(secrets),
                num(calls)
            ),
            secrets * p.secret_month + calls * p.secret_call,
        )
    };
    let kms = |k: f64| {
        let calls = k * month.kms_calls;
        (
            format!("1 key × $1 + {} requests × $0.03/10k", num(calls)),
            p.kms_key_month + calls * p.kms_request,
        )
    };
    let _ = writeln!(s, "{}", line("Lambda", &lambda));
    let _ = writeln!(s, "{}", line("DynamoDB on demand", &dynamo));
    let _ = writeln!(s, "{}", line("SQS", &sqs));
    let _ = writeln!(s, "{}", line("API Gateway HTTP API", &api));
    let _ = writeln!(
        s,
        "{}",
        line("Secrets Manager (the deployment's secrets)", &own_secrets)
    );
    let _ = writeln!(s, "{}", line("tokens sealed with KMS (as deployed)", &kms));
    let _ = writeln!(
        s,
        "{}",
        line("tokens in Secrets Manager (for comparison)", &secrets)
    );
    let total = |with_kms: bool| {
        let cells: Vec<String> = sizes
            .iter()
            .map(|&k| {
                let base = lambda(k).1 + dynamo(k).1 + sqs(k).1 + api(k).1 + own_secrets(k).1;
                let tokens = if with_kms { kms(k).1 } else { secrets(k).1 };
                let all = base + tokens;
                format!("**{}** ({} per mailbox)", usd(all), usd(all / k))
            })
            .collect();
        cells.join(" | ")
    };
    let _ = writeln!(s, "| total, tokens sealed with KMS | {} |", total(true));
    let _ = writeln!(s, "| total, tokens in Secrets Manager | {} |", total(false));
    let _ = writeln!(
        s,
        "\nThe app secret, signing key and event signing secret (3 × $0.40) and the CloudWatch logs and metrics are the same at every N and left out."
    );
}

/// One size the fleet benchmark ran at, as the extrapolation to 10,000
/// mailboxes uses it (`relay365-fleet --scale-out` writes it as JSON, a
/// later run reads it back with `--scale-from`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePoint {
    /// Mailboxes connected.
    pub mailboxes: usize,
    /// Tenants they were spread over.
    pub tenants: usize,
    /// Wall time of connecting them all (s).
    pub connect_s: f64,
    /// Wall time of the renew-and-sweep phase, all its runs together (s).
    pub renew_s: f64,
    /// Scheduled runs the phase took.
    pub renew_runs: usize,
    /// Wall time of the ordinary run that swept every subscription (s).
    pub sweep_s: f64,
    /// The storm's end-to-end p99 (ms).
    pub e2e_p99_ms: f64,
}

impl ScalePoint {
    /// The figures of one run.
    pub fn of(r: &FleetResults, opts: &FleetOptions) -> Self {
        Self {
            mailboxes: opts.mailboxes,
            tenants: opts.tenants,
            connect_s: r.connect_wall.as_secs_f64(),
            renew_s: r.runs.iter().map(|x| x.duration.as_secs_f64()).sum(),
            renew_runs: r.runs.len(),
            sweep_s: r.ordinary.as_ref().map_or(0.0, |o| o.duration.as_secs_f64()),
            e2e_p99_ms: percentile(&r.e2e_ms, 99.0),
        }
    }

    /// As JSON, for `--scale-out`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "mailboxes": self.mailboxes,
            "tenants": self.tenants,
            "connect_s": self.connect_s,
            "renew_s": self.renew_s,
            "renew_runs": self.renew_runs,
            "sweep_s": self.sweep_s,
            "e2e_p99_ms": self.e2e_p99_ms,
        })
    }

    /// Back from [`ScalePoint::to_json`]; `None` when a field is missing.
    pub fn from_json(v: &Value) -> Option<Self> {
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let u = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
        Some(Self {
            mailboxes: u("mailboxes")?,
            tenants: u("tenants")?,
            connect_s: f("connect_s")?,
            renew_s: f("renew_s")?,
            renew_runs: u("renew_runs")?,
            sweep_s: f("sweep_s")?,
            e2e_p99_ms: f("e2e_p99_ms")?,
        })
    }
}

/// The least-squares line `a + b·x` through the points; `None` with fewer
/// than two distinct x.
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if points.len() < 2 || sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let b = sxy / sxx;
    Some((mean_y - b * mean_x, b))
}

/// The section that carries the sizes measured to 10,000 mailboxes: a table
/// of each size's wall times and the fitted line's prediction against the
/// scheduled run's `Timeout`. Empty with fewer than two sizes.
pub fn scale_section(points: &[ScalePoint], timeout_s: u64, target: usize) -> String {
    let mut points = points.to_vec();
    points.sort_by_key(|p| p.mailboxes);
    points.dedup_by_key(|p| p.mailboxes);
    if points.len() < 2 {
        return String::new();
    }
    let mut s = String::new();
    let sizes: Vec<String> = points.iter().map(|p| num(p.mailboxes as f64)).collect();
    let _ = writeln!(
        s,
        "\n### From {} to {} mailboxes\n\nEach size measured by its own run of this benchmark on this machine (the same options but the size; the others' figures read back with `--scale-from`).\n",
        sizes.join(" and "),
        num(target as f64)
    );
    let _ = writeln!(
        s,
        "| mailboxes | tenants | connect | renew and sweep all (runs) | sweep all | end to end p99 |\n|---|---|---|---|---|---|"
    );
    for p in &points {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} s | {:.1} s ({}) | {:.1} s | {:.0} ms |",
            num(p.mailboxes as f64),
            p.tenants,
            p.connect_s,
            p.renew_s,
            p.renew_runs,
            p.sweep_s,
            p.e2e_p99_ms
        );
    }
    let x = target as f64;
    let predict = |f: fn(&ScalePoint) -> f64| {
        let pts: Vec<(f64, f64)> = points.iter().map(|p| (p.mailboxes as f64, f(p))).collect();
        fit_line(&pts).map(|(a, b)| (a, b, a + b * x))
    };
    let _ = writeln!(
        s,
        "\nMethod: each wall time fitted as a + b·N through the measured sizes (least squares), then read at N = {}. The work of both phases is per subscription (one renewal, one delta query), so it grows linearly with N; the renewal is also bound by Graph's write limit as the run paces it, 450 per 20 s per tenant, so it cannot be faster than N ÷ 22.5 s in one tenant.\n",
        num(x)
    );
    let _ = writeln!(
        s,
        "| at N = {} | fitted line | predicted | against the Timeout ({timeout_s} s) |\n|---|---|---|---|",
        num(x)
    );
    type Figure = fn(&ScalePoint) -> f64;
    let rows: [(&str, Figure); 2] = [
        ("renew and sweep every subscription", |p| p.renew_s),
        ("sweep every subscription", |p| p.sweep_s),
    ];
    for (what, f) in rows {
        if let Some((a, b, at)) = predict(f) {
            let verdict = if at <= timeout_s as f64 {
                format!("inside, {:.0} % of it", 100.0 * at / timeout_s.max(1) as f64)
            } else {
                format!(
                    "over: {} runs, each taking up what the last left",
                    (at / timeout_s.max(1) as f64).ceil()
                )
            };
            let _ = writeln!(
                s,
                "| {what} | {a:.1} s + {:.2} ms × N | {at:.0} s | {verdict} |",
                b * 1000.0
            );
        }
    }
    s
}

/// "mail-webhook 12, oauth-callback 4, …": the sandboxes each pool started.
fn scale_out(r: &FleetResults) -> String {
    if r.sandboxes_started.is_empty() {
        return "no figures".into();
    }
    r.sandboxes_started
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(n: usize, renew_s: f64, sweep_s: f64) -> ScalePoint {
        ScalePoint {
            mailboxes: n,
            tenants: 1,
            connect_s: 0.0,
            renew_s,
            renew_runs: 1,
            sweep_s,
            e2e_p99_ms: 900.0,
        }
    }

    #[test]
    fn the_line_through_two_sizes_predicts_the_third() {
        let (a, b) = fit_line(&[(1000.0, 50.0), (3000.0, 140.0)]).unwrap();
        assert!((a - 5.0).abs() < 1e-9 && (b - 0.045).abs() < 1e-12, "{a} {b}");
        assert_eq!(fit_line(&[(1000.0, 50.0)]), None);
        assert_eq!(fit_line(&[(1000.0, 50.0), (1000.0, 60.0)]), None);
    }

    #[test]
    fn the_scale_section_says_whether_10000_fit_in_one_run() {
        let s = scale_section(&[point(3000, 140.0, 30.0), point(1000, 50.0, 10.0)], 900, 10_000);
        assert!(s.contains("### From 1,000 and 3,000 to 10,000 mailboxes"), "{s}");
        assert!(
            s.contains(
                "| renew and sweep every subscription | 5.0 s + 45.00 ms × N | 455 s | inside, 51 % of it |"
            ),
            "{s}"
        );
        let over = scale_section(&[point(1000, 100.0, 10.0), point(3000, 300.0, 30.0)], 900, 10_000);
        assert!(over.contains("| 1000 s | over: 2 runs"), "{over}");
        assert_eq!(scale_section(&[point(1000, 50.0, 10.0)], 900, 10_000), "");
    }

    #[test]
    fn a_scale_point_survives_its_file() {
        let p = point(3000, 140.5, 30.25);
        assert_eq!(ScalePoint::from_json(&p.to_json()), Some(p));
        assert_eq!(ScalePoint::from_json(&serde_json::json!({"mailboxes": 3})), None);
    }

    #[test]
    fn a_run_with_failed_work_says_so_beside_its_time() {
        use crate::fleet::ScheduledRun;
        let opts = FleetOptions::new("bin".into());
        let run = |failed: serde_json::Value| ScheduledRun {
            duration: std::time::Duration::from_secs(12),
            report: Ok(serde_json::json!({"renewed": 3, "swept": 3, "failed": failed})),
        };
        let mut r = FleetResults {
            runs: vec![run(serde_json::json!([]))],
            ..FleetResults::default()
        };
        assert!(report(&r, &opts, "x").contains("- work the runs reported failed: **none**"));
        r.runs
            .push(run(serde_json::json!(["renew conn#support: Graph answered 500"])));
        let text = report(&r, &opts, "x");
        assert!(
            text.contains(
                "- work the runs reported failed: **1** (so the run is not a success), first: \
                 `renew conn#support: Graph answered 500`"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_storm_p99_is_set_beside_the_goal_and_the_polling_tools() {
        let inside = beside_the_anchors(1065.0);
        assert!(
            inside.starts_with("- end to end p99 **1.06 s**: inside relay365's goal"),
            "{inside}"
        );
        assert!(
            inside.contains("Power Automate") && inside.contains("n8n"),
            "{inside}"
        );
        assert!(beside_the_anchors(2500.0).contains("**2.50 s**: outside"));
    }
}
