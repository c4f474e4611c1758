//! `relay365-coldpath`: the cold-path benchmark (`make bench` runs it).
//!
//! ```text
//! relay365-coldpath [--bin-dir target/release] [--reps 5] [--memory 128,1024]
//!                   [--rust-only] [--paths handshake,notification,...]
//!                   [--out BENCHMARKS.coldpath.md]
//! ```

use std::path::PathBuf;

use clap::Parser;
use relay365_demo::coldpath::{self, BenchOptions, PathKind};

/// The cold path over TLS at Lambda's CPU shares, with the Python baseline.
#[derive(Parser)]
#[command(version, long_about = None)]
struct Args {
    /// The release binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Cold starts per path, runtime, memory size and mode.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Memory sizes (MB) whose CPU share to model.
    #[arg(long, value_delimiter = ',', default_value = "128,256,1024")]
    memory: Vec<u32>,
    /// Leave out the Python baseline.
    #[arg(long)]
    rust_only: bool,
    /// Only these paths: handshake, notification, dispatch, send-mail, callback.
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// The virtualenv's Python (boto3, msal, requests).
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Where the Markdown table goes (BENCHMARKS.md includes it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// For the test CA, the logs and the raw figures.
    #[arg(long, default_value = "target/coldpath")]
    work_dir: PathBuf,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let mut paths = Vec::new();
    for name in &args.paths {
        match PathKind::ALL.iter().find(|p| p.name() == name) {
            Some(p) => paths.push(*p),
            None => {
                eprintln!(
                    "relay365-coldpath: --paths takes handshake, notification, dispatch, send-mail or callback, not {name:?}"
                );
                std::process::exit(2);
            }
        }
    }
    if paths.is_empty() {
        paths = PathKind::ALL.to_vec();
    }
    let opts = BenchOptions {
        paths,
        bin_dir: absolute(args.bin_dir),
        python: absolute(args.python),
        baseline: absolute(PathBuf::from("scripts/python_baseline.py")),
        reps: args.reps.max(1),
        memory_sizes: args.memory,
        rust_only: args.rust_only,
        work_dir: absolute(args.work_dir),
    };
    let sizes: Vec<String> = opts.memory_sizes.iter().map(u32::to_string).collect();
    let mut command = format!(
        "relay365-coldpath --reps {} --memory {}",
        opts.reps,
        sizes.join(",")
    );
    if opts.rust_only {
        command.push_str(" --rust-only");
    }
    if opts.paths.len() < PathKind::ALL.len() {
        let names: Vec<&str> = opts.paths.iter().map(|p| p.name()).collect();
        command.push_str(&format!(" --paths {}", names.join(",")));
    }
    let results = match coldpath::run(opts.clone(), |line| eprintln!("{line}")).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay365-coldpath: {e}");
            std::process::exit(1);
        }
    };
    let text = coldpath::report(&results, &opts, &command);
    if let Some(out) = args.out
        && let Err(e) = std::fs::write(&out, &text)
    {
        eprintln!("relay365-coldpath: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    println!("{text}");
}
