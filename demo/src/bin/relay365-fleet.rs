//! `relay365-fleet`: the fleet benchmark (`make bench-fleet` runs it).
//!
//! ```text
//! relay365-fleet [--bin-dir target/release] [--mailboxes 1000] [--delegated N]
//!                [--tenants 1] [--graph-latency-ms 150] [--storm-rate 20]
//!                [--storm-seconds 300] [--out BENCHMARKS.fleet.md]
//!                [--scale-out FILE] [--scale-from FILE]...
//! ```
//!
//! Each run leaves its figures in `--scale-out`; a run given the files of
//! runs at other sizes (`--scale-from`) extrapolates to 10,000 mailboxes.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use relay365_demo::fleet::{self, FleetOptions};
use relay365_demo::fleet_report::ScalePoint;

/// N mailboxes connected, renewed and swept, and a storm of mail, with the month's cost.
#[derive(Parser)]
#[command(version, long_about = None)]
struct Args {
    /// The function binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The SAM template (each function's Timeout and MemorySize).
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Mailboxes to connect.
    #[arg(long, env = "FLEET", default_value_t = 1000)]
    mailboxes: usize,
    /// How many of them sign in delegated (default: half); the rest are app-only.
    #[arg(long)]
    delegated: Option<usize>,
    /// Tenants the mailboxes are spread over.
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// Latency the simulator adds to every Graph request, in ms.
    #[arg(long, default_value_t = 150)]
    graph_latency_ms: u64,
    /// Admin-API connects in flight at once.
    #[arg(long, default_value_t = 8)]
    connect_concurrency: usize,
    /// Sandboxes each HTTP function starts with.
    #[arg(long, default_value_t = 4)]
    sandboxes: usize,
    /// How far each HTTP function, and dispatch's event source, scale out.
    #[arg(long, default_value_t = 32)]
    max_sandboxes: usize,
    /// Mails per second across the fleet during the storm.
    #[arg(long, default_value_t = 20.0)]
    storm_rate: f64,
    /// How long the storm lasts, in seconds.
    #[arg(long, default_value_t = 300.0)]
    storm_seconds: f64,
    /// Scheduled invocations at most in the renewal phase.
    #[arg(long, default_value_t = 20)]
    max_runs: usize,
    /// Mails per mailbox per day, for the month's figures.
    #[arg(long, default_value_t = 50.0)]
    mails_per_day: f64,
    /// Where the Markdown section goes (BENCHMARKS.md includes it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// For the function logs.
    #[arg(long, default_value = "target/fleet")]
    work_dir: PathBuf,
    /// Where this run's figures for the extrapolation go (JSON; default
    /// `{work-dir}/fleet-{mailboxes}.json`).
    #[arg(long)]
    scale_out: Option<PathBuf>,
    /// Figures of runs at other sizes (their `--scale-out` files): the
    /// report extrapolates from them and this run to 10,000 mailboxes.
    #[arg(long)]
    scale_from: Vec<PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let mut opts = FleetOptions::new(absolute(args.bin_dir));
    opts.template = absolute(args.template);
    opts.mailboxes = args.mailboxes.max(1);
    opts.delegated = args.delegated.unwrap_or(opts.mailboxes / 2).min(opts.mailboxes);
    opts.tenants = args.tenants.max(1);
    opts.graph_latency = Duration::from_millis(args.graph_latency_ms);
    opts.connect_concurrency = args.connect_concurrency.max(1);
    opts.sandboxes = args.sandboxes.max(1);
    opts.max_sandboxes = args.max_sandboxes.max(opts.sandboxes);
    opts.storm_rate = args.storm_rate;
    opts.storm_seconds = args.storm_seconds;
    opts.max_runs = args.max_runs.max(1);
    opts.mails_per_day = args.mails_per_day;
    opts.work_dir = absolute(args.work_dir);
    let command = format!(
        "relay365-fleet --mailboxes {} --delegated {} --tenants {} --graph-latency-ms {} \
         --connect-concurrency {} --sandboxes {} --max-sandboxes {} --storm-rate {} --storm-seconds {}",
        opts.mailboxes,
        opts.delegated,
        opts.tenants,
        args.graph_latency_ms,
        opts.connect_concurrency,
        opts.sandboxes,
        opts.max_sandboxes,
        opts.storm_rate,
        opts.storm_seconds
    );
    let started = std::time::Instant::now();
    let results = match fleet::run(opts.clone(), |line| {
        eprintln!("[{:>6.1} s] {line}", started.elapsed().as_secs_f64());
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay365-fleet: {e}");
            std::process::exit(1);
        }
    };
    let mut others = Vec::new();
    for path in &args.scale_from {
        let point = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .and_then(|v| ScalePoint::from_json(&v));
        match point {
            Some(p) => others.push(p),
            None => {
                eprintln!(
                    "relay365-fleet: {} is not a --scale-out file of an earlier run",
                    path.display()
                );
                std::process::exit(2);
            }
        }
    }
    let scale_out = args
        .scale_out
        .unwrap_or_else(|| opts.work_dir.join(format!("fleet-{}.json", opts.mailboxes)));
    let point = ScalePoint::of(&results, &opts).to_json();
    if let Err(e) = std::fs::write(&scale_out, format!("{point:#}\n")) {
        eprintln!("relay365-fleet: cannot write {}: {e}", scale_out.display());
    }
    let text = relay365_demo::fleet_report::report_with_scale(&results, &opts, &command, &others);
    if let Some(out) = args.out
        && let Err(e) = std::fs::write(&out, &text)
    {
        eprintln!("relay365-fleet: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    println!("{text}");
}
