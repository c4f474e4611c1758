//! The cold-path benchmark (`make bench`): what a function's first real
//! request costs in a new Lambda container, over TLS, at Lambda's CPU share.
//!
//! A cold start that answers without the network says little: deployed, a
//! function's first request also builds its HTTPS clients and pays a TLS
//! handshake to every host it calls, on the sliver of CPU a small memory
//! size gets. This harness measures exactly that path on one machine:
//!
//! - the whole stack runs as in `make demo` ([`crate::Demo`]: moto, the
//!   Microsoft simulator, the functions, the flow receiver), and a mailbox is
//!   connected through it;
//! - TLS proxies ([`crate::tls`]) put every host a function calls behind real
//!   TLS with a test CA: Secrets Manager, SQS and DynamoDB (each its own host,
//!   as in AWS), Microsoft's login and Graph hosts, and the flow's target;
//! - each sample starts a new process of the release binary (or of the
//!   Python baseline, `scripts/python_baseline.py`) under a local Runtime API
//!   ([`crate::runtime`]) in a CPU-limited cgroup ([`crate::cgroup`]): either
//!   init with the whole machine and invocations at the share (how Lambda
//!   runs it: init gets a burst), or both phases at the share;
//! - it times init (process start to the first `GET /next`), the first
//!   invocation, a second (warm) one, reads the peak RSS, and records every
//!   TLS handshake the process made, so a slow path shows where its time went.
//!
//! The harness, file by file, from the bottom floor up (each file uses only
//! those before it in this list):
//!
//! - `options`: what a run is asked for ([`BenchOptions`]) and the
//!   dimensions a sample is filed under ([`Runtime`], [`Mode`], [`PathKind`]);
//! - `fail`: how a failed step reads, what was being done and why it failed;
//! - `figures`: milliseconds ([`ms`]) and the median and worst of a set;
//! - `records`: what a run records, one cold start ([`Sample`]) and all of
//!   them with the conditions they ran under ([`Results`]);
//! - `api`: the bench connection's id and the API Gateway events requests to
//!   the stack's public API arrive as;
//! - `bench`: the standing parts set up once (the stack with a connected
//!   mailbox, the TLS fronts, a queue per runtime, the samples' environment);
//! - `events`: each measured path's fresh event, and the answer it must get;
//! - `baseline`: where the Python baseline runs differently;
//! - `sample`: one cold start and a warm invocation, timed and checked;
//! - `runner`: [`run`], one stack for the whole run, then every memory size,
//!   mode, runtime, repetition and path in turn, into [`Results`];
//! - `report`: the Markdown section ([`report`]) and its figures.

mod api;
mod baseline;
mod bench;
mod events;
mod fail;
mod figures;
mod options;
mod records;
mod report;
mod runner;
mod sample;

pub use figures::ms;
pub use options::{BenchOptions, Mode, PathKind, Runtime};
pub use records::{Results, Sample, Samples};
pub use report::{PRICE_PER_GB_SECOND, PRICE_PER_REQUEST, machine, report};
pub use runner::run;
