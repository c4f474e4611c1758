//! One sample: a new process of a function (or of the Python baseline)
//! under its own Runtime API, in the CPU share's cgroup, started cold and
//! invoked twice; what it cost, read from the clock, `/proc` and the TLS
//! fronts' timeline, and what it did, checked against the stack.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::baseline;
use super::bench::Bench;
use super::events::check;
use super::fail::err;
use super::options::{Mode, PathKind, Runtime};
use super::records::Sample;
use crate::cgroup::CpuShare;
use crate::runtime::{CpuPlacement, Function, Spec};

impl Bench {
    /// One cold start of `path` by `runtime` at the share of `mb` MB, and a
    /// warm invocation after it.
    pub(super) async fn sample(
        &self,
        path: PathKind,
        runtime: Runtime,
        mode: Mode,
        mb: u32,
        share: Option<&CpuShare>,
    ) -> Result<Sample, String> {
        let cold = self.event(path, runtime).await?;
        let warm = self.event(path, runtime).await?;
        let f = Function::new(self.spec(path, runtime, mode, mb, share))
            .await
            .map_err(err("a Runtime API cannot listen"))?;
        let received_before = self.demo.receiver.events().len();
        let sent_before = self.demo.sim.as_ref().map_or(0, |s| s.sent().len());
        let spawned = Instant::now();
        f.start().await.map_err(err("init"))?;
        let init = f.timings().ready.unwrap_or_default();
        let pid = f.pid().unwrap_or(0);
        let init_cpu = cpu_time(pid);
        let calls_before = self.calls();
        let t0 = Instant::now();
        let first_answer = f.invoke(&cold).await.map_err(err("the first invocation"))?;
        let first = t0.elapsed();
        let first_calls = self.calls_since(&calls_before);
        let first_cpu = cpu_time(pid).saturating_sub(init_cpu);
        let t1 = Instant::now();
        let second_answer = f.invoke(&warm).await.map_err(err("the warm invocation"))?;
        let warm_took = t1.elapsed();
        let peak_rss = f.pid().map(peak_rss).unwrap_or(0);
        f.stop().await;
        for answer in [&first_answer, &second_answer] {
            check(path, answer)?;
        }
        self.check_effects(path, sent_before, received_before)?;
        Ok(Sample {
            init,
            first,
            warm: warm_took,
            peak_rss,
            init_cpu,
            first_cpu,
            first_calls,
            init_handshakes: self.handshakes(spawned, spawned + init),
            first_handshakes: self.handshakes(t0, t0 + first),
        })
    }

    /// The process of a sample: its program, the bench environment with the
    /// memory size and the runtime's own queue, its log file, and which
    /// phases run in the share's cgroup.
    fn spec(&self, path: PathKind, runtime: Runtime, mode: Mode, mb: u32, share: Option<&CpuShare>) -> Spec {
        let mut env = self.env.clone();
        env.push(("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), mb.to_string()));
        env.push(("RELAY365_QUEUE_URL".into(), self.queues[&runtime].0.clone()));
        let (binary, args) = baseline::process(&self.opts, path, runtime, &mut env);
        let group = share.map(|s| s.dir().to_path_buf());
        let cpu = match mode {
            Mode::Phased => CpuPlacement {
                init: None,
                invoke: group,
            },
            Mode::Throttled => CpuPlacement {
                init: group.clone(),
                invoke: group,
            },
        };
        let name = format!(
            "{}-{}",
            path.function(),
            if runtime == Runtime::Rust {
                "rust"
            } else {
                "python"
            }
        );
        Spec {
            name: name.clone(),
            binary,
            env,
            timeout: Duration::from_secs(60),
            log_file: Some(self.opts.work_dir.join("logs").join(format!("{name}.log"))),
            echo: false,
            args,
            cpu,
            fixed_deadline_ms: None,
            metrics: None,
        }
    }

    /// The calls made since `before` was counted.
    fn calls_since(&self, before: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        let mut calls = self.calls();
        for (k, v) in before {
            if let Some(n) = calls.get_mut(k) {
                *n = n.saturating_sub(*v);
            }
        }
        // The stack's own SQS event sources long-poll all along; no measured
        // path receives from a queue (dispatch is handed its events).
        calls.retain(|k, n| *n > 0 && k != "ReceiveMessage");
        calls
    }

    /// Whether the sample's two invocations did their work beyond answering:
    /// both mails reached Microsoft, both events the flow's target.
    fn check_effects(
        &self,
        path: PathKind,
        sent_before: usize,
        received_before: usize,
    ) -> Result<(), String> {
        if path == PathKind::SendMail {
            let sent = self.demo.sim.as_ref().map_or(0, |s| s.sent().len()) - sent_before;
            if sent != 2 {
                return Err(format!("{sent} of 2 mails reached Microsoft"));
            }
        }
        if path == PathKind::Dispatch {
            let delivered = self.demo.receiver.events().len() - received_before;
            if delivered != 2 {
                return Err(format!("{delivered} of 2 events reached the flow's target"));
            }
        }
        Ok(())
    }

    /// The TLS handshakes accepted from `from` until `to`: (service, accepted to finished).
    fn handshakes(&self, from: Instant, to: Instant) -> Vec<(&'static str, Duration)> {
        self.timeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|c| c.accepted >= from && c.accepted < to)
            .filter_map(|c| c.handshake_done.map(|d| (c.service, d - c.accepted)))
            .collect()
    }
}

/// CPU time a process has used so far, all threads (`/proc/PID/task/*/schedstat`,
/// nanoseconds on a CPU).
fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum();
    Duration::from_nanos(ns)
}

/// VmHWM of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
