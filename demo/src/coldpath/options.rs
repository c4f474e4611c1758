//! What a benchmark run is asked for: the options, and the three
//! dimensions every sample is filed under besides the memory size (who runs
//! the path, how the CPU share applies, which path).

use std::path::PathBuf;

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The release binaries.
    pub bin_dir: PathBuf,
    /// The virtualenv's Python, with boto3, msal and requests.
    pub python: PathBuf,
    /// `scripts/python_baseline.py`.
    pub baseline: PathBuf,
    /// Cold starts per path, runtime, share and mode.
    pub reps: usize,
    /// Memory sizes (MB) whose CPU share to model.
    pub memory_sizes: Vec<u32>,
    /// Leave out the Python baseline.
    pub rust_only: bool,
    /// The paths to measure (dispatch takes what the webhook's first
    /// notification queued, so it needs that path too).
    pub paths: Vec<PathKind>,
    /// For the CA, logs and the raw results.
    pub work_dir: PathBuf,
}

/// Who runs a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Runtime {
    /// The release binary.
    Rust,
    /// `scripts/python_baseline.py`.
    Python,
}

/// How the CPU share applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Init with the whole machine (Lambda's init burst), invocations at the share.
    Phased,
    /// Both phases at the share.
    Throttled,
}

/// A measured path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    /// mail-webhook answering Graph's validation handshake.
    Handshake,
    /// mail-webhook's first real notification: the signing key, the SQS send.
    Notification,
    /// mail-dispatch's first event: state, secrets, token, Graph GET, target POST.
    Dispatch,
    /// send-mail's first mail: state, secrets, token, Graph sendMail.
    SendMail,
    /// oauth-callback: token exchange, `/me`, state write, subscription create.
    Callback,
}

impl PathKind {
    /// Every path, in the order a sample round runs them (dispatch takes what
    /// the webhook queued).
    pub const ALL: [Self; 5] = [
        Self::Handshake,
        Self::Notification,
        Self::Dispatch,
        Self::SendMail,
        Self::Callback,
    ];

    /// The function that serves it (the binary's name).
    pub fn function(self) -> &'static str {
        match self {
            Self::Handshake | Self::Notification => "mail-webhook",
            Self::Dispatch => "mail-dispatch",
            Self::SendMail => "send-mail",
            Self::Callback => "oauth-callback",
        }
    }

    /// The name `--paths` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Notification => "notification",
            Self::Dispatch => "dispatch",
            Self::SendMail => "send-mail",
            Self::Callback => "callback",
        }
    }

    /// How the table names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Handshake => "webhook: validation handshake",
            Self::Notification => "webhook: first notification",
            Self::Dispatch => "dispatch: first event delivered",
            Self::SendMail => "send-mail: first mail",
            Self::Callback => "oauth-callback: sign-in",
        }
    }
}
