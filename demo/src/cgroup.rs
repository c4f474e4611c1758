//! CPU shares like Lambda's, for the cold-path benchmark.
//!
//! Lambda gives a function CPU in proportion to its memory size (one vCPU at
//! 1,769 MB). On a machine with cgroup v1's `cpu` controller, a group with
//! `cpu.cfs_quota_us` set to that fraction of `cpu.cfs_period_us` gives a
//! process the same share, enforced per 100 ms period. Creating a group needs
//! root; [`CpuShare::create`] says so when it cannot.

use std::path::{Path, PathBuf};

/// Where cgroup v1 mounts the `cpu` controller.
const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";
/// The kernel's default period.
const PERIOD_US: u64 = 100_000;
/// The memory size at which Lambda gives one full vCPU.
pub const MB_PER_VCPU: f64 = 1769.0;

/// The fraction of one core Lambda gives `memory_mb` (at most 1).
pub fn lambda_share(memory_mb: u32) -> f64 {
    (f64::from(memory_mb) / MB_PER_VCPU).min(1.0)
}

/// A cgroup limited to a fraction of one core; removed when dropped (after
/// its processes have exited).
#[derive(Debug)]
pub struct CpuShare {
    dir: PathBuf,
    fraction: f64,
}

impl CpuShare {
    /// Creates the group `relay365-{name}` with `fraction` of one core.
    ///
    /// # Errors
    /// A sentence saying why the machine does not allow it (no cgroup v1
    /// `cpu` controller, or not root).
    pub fn create(name: &str, fraction: f64) -> Result<Self, String> {
        let root = Path::new(CPU_ROOT);
        if !root.join("cpu.cfs_period_us").is_file() {
            return Err(format!(
                "this machine has no cgroup v1 cpu controller at {CPU_ROOT}, so CPU shares cannot be modelled"
            ));
        }
        let dir = root.join(format!("relay365-{name}"));
        if !dir.is_dir() {
            std::fs::create_dir(&dir).map_err(|e| {
                format!(
                    "cannot create the cgroup {} ({e}): CPU shares need root",
                    dir.display()
                )
            })?;
        }
        let quota = ((fraction * PERIOD_US as f64).round() as u64).max(1000);
        std::fs::write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())
            .and_then(|()| std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string()))
            .map_err(|e| format!("cannot set the CPU quota of {} ({e})", dir.display()))?;
        Ok(Self { dir, fraction })
    }

    /// The group's directory (for [`crate::runtime::CpuPlacement`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fraction of one core it allows.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }
}

impl Drop for CpuShare {
    fn drop(&mut self) {
        // A process killed a moment ago may still be leaving the group.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shares_follow_lambdas_memory_to_cpu_rule() {
        assert!((super::lambda_share(128) - 0.0724).abs() < 0.001);
        assert!((super::lambda_share(1024) - 0.579).abs() < 0.001);
        assert!((super::lambda_share(4096) - 1.0).abs() < f64::EPSILON);
    }
}
