//! The run: one stack for the whole benchmark, then, for each memory size,
//! every mode, runtime, repetition and path in turn, each a new cold start.

use super::bench::Bench;
use super::figures::ms;
use super::options::{BenchOptions, Mode, Runtime};
use super::records::{Results, Samples};
use crate::cgroup::{CpuShare, lambda_share};

/// Runs every sample and returns them.
///
/// # Errors
/// A sentence saying which step failed (a binary missing, the stack not
/// starting, a path answering wrongly).
pub async fn run(opts: BenchOptions, progress: impl Fn(&str)) -> Result<Results, String> {
    let bench = Bench::start(opts).await?;
    progress("stack ready, mailbox connected, TLS fronts up");
    let mut results = Results {
        server_latency: bench.server_latency().await,
        ..Results::default()
    };
    for &mb in &bench.opts.memory_sizes {
        let share = match CpuShare::create(&format!("bench-{mb}"), lambda_share(mb)) {
            Ok(s) => Some(s),
            Err(why) => {
                progress(&format!("{why}: measuring at full speed"));
                results.unthrottled = Some(why);
                None
            }
        };
        measure_memory_size(&bench, mb, share.as_ref(), &progress, &mut results.samples).await?;
    }
    Ok(results)
}

/// Every sample at one memory size: both modes when its CPU share applies
/// (only the phase-modelled one when it does not), each runtime, `reps`
/// rounds of every path.
async fn measure_memory_size(
    bench: &Bench,
    mb: u32,
    share: Option<&CpuShare>,
    progress: &impl Fn(&str),
    samples: &mut Samples,
) -> Result<(), String> {
    let runtimes: &[Runtime] = if bench.opts.rust_only {
        &[Runtime::Rust]
    } else {
        &[Runtime::Rust, Runtime::Python]
    };
    let modes: &[Mode] = if share.is_some() {
        &[Mode::Phased, Mode::Throttled]
    } else {
        &[Mode::Phased]
    };
    for &mode in modes {
        for &runtime in runtimes {
            for rep in 0..bench.opts.reps {
                for &path in &bench.opts.paths {
                    let sample = bench
                        .sample(path, runtime, mode, mb, share)
                        .await
                        .map_err(|e| format!("{} ({runtime:?}, {mb} MB, {mode:?}): {e}", path.label()))?;
                    progress(&format!(
                        "{mb} MB {mode:?} {runtime:?} #{rep} {}: init {:.1} ms, first {:.1} ms",
                        path.label(),
                        ms(sample.init),
                        ms(sample.first)
                    ));
                    samples.entry((mb, mode, path, runtime)).or_default().push(sample);
                }
            }
        }
    }
    Ok(())
}
