//! Where the Python baseline (`scripts/python_baseline.py`, boto3, msal and
//! requests) is run differently from the Rust functions: one script serves
//! every path, told which by `BASELINE_FUNCTION`, and it has no
//! `connections` function of its own to start a sign-in with.

use std::path::PathBuf;

use super::bench::Bench;
use super::fail::err;
use super::options::{BenchOptions, PathKind, Runtime};
use crate::{DEMO_CLIENT_ID, DEMO_TENANT};

impl PathKind {
    /// The Python baseline's handler for it.
    fn python_handler(self) -> &'static str {
        match self {
            Self::Handshake | Self::Notification => "webhook",
            Self::Dispatch => "dispatch",
            Self::SendMail => "send-mail",
            Self::Callback => "oauth-callback",
        }
    }
}

/// The program and arguments a sample of `path` starts: the function's
/// release binary, or the virtualenv's Python running the baseline (whose
/// handler it adds to `env`).
pub(super) fn process(
    opts: &BenchOptions,
    path: PathKind,
    runtime: Runtime,
    env: &mut Vec<(String, String)>,
) -> (PathBuf, Vec<String>) {
    match runtime {
        Runtime::Rust => (opts.bin_dir.join(path.function()), Vec::new()),
        Runtime::Python => {
            env.push(("BASELINE_FUNCTION".into(), path.python_handler().into()));
            (opts.python.clone(), vec![opts.baseline.display().to_string()])
        }
    }
}

impl Bench {
    /// The callback URL a browser brings back after consenting at the
    /// simulator's authorize endpoint, for the baseline's sign-in number `n`.
    pub(super) async fn python_sign_in(&self, n: u64) -> Result<String, String> {
        let mut url = url::Url::parse(&format!("{}/{DEMO_TENANT}/oauth2/v2.0/authorize", self.sim_url()))
            .map_err(err("the authorize URL"))?;
        url.query_pairs_mut()
            .append_pair("client_id", DEMO_CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &format!("{}/oauth/callback", self.demo.public_url))
            .append_pair("scope", "offline_access openid profile https://graph.microsoft.com/Mail.ReadWrite https://graph.microsoft.com/Mail.Send")
            .append_pair("state", &format!("py-{n}"));
        let http = relay365::https::client_for(true).map_err(err("an HTTP client"))?;
        crate::browser::consent(&http, url.to_string()).await
    }
}
