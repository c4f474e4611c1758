//! What a run records: one cold start ([`Sample`]) and every sample of a
//! run with the conditions it ran under ([`Results`]). The sampling fills
//! them, the run gathers them and the report reads them, so they sit below
//! all three.

use std::collections::BTreeMap;
use std::time::Duration;

use super::options::{Mode, PathKind, Runtime};

/// One cold start and what followed.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Process start to the first `GET /next`.
    pub init: Duration,
    /// The first invocation, handed over to answered.
    pub first: Duration,
    /// The second invocation in the same process.
    pub warm: Duration,
    /// Peak resident memory (VmHWM), bytes.
    pub peak_rss: u64,
    /// CPU time the process used during init (all its threads).
    pub init_cpu: Duration,
    /// CPU time it used during the first invocation.
    pub first_cpu: Duration,
    /// The calls the first invocation made: AWS operations as moto counted
    /// them, and Microsoft's token and Graph requests as the simulator did.
    pub first_calls: BTreeMap<String, u32>,
    /// TLS handshakes during init: (service, accepted to finished).
    pub init_handshakes: Vec<(&'static str, Duration)>,
    /// TLS handshakes during the first invocation.
    pub first_handshakes: Vec<(&'static str, Duration)>,
}

impl Sample {
    /// What the caller of a cold start waits: init, then the first invocation.
    pub fn cold(&self) -> Duration {
        self.init + self.first
    }
}

/// Samples by (memory size, mode, path, runtime).
pub type Samples = BTreeMap<(u32, Mode, PathKind, Runtime), Vec<Sample>>;

/// What a run measured.
#[derive(Debug, Default)]
pub struct Results {
    /// The samples.
    pub samples: Samples,
    /// Why CPU shares could not be applied, when they could not (every
    /// figure is then at the machine's full speed, and the report says so).
    pub unthrottled: Option<String>,
    /// How long the local servers take to answer one call, measured from
    /// the harness over plain HTTP: (what, median milliseconds).
    pub server_latency: Vec<(&'static str, f64)>,
}
