//! The one HTTP client every function uses for Microsoft and flow targets.
//!
//! rustls with the aws-lc-rs provider (the same crypto the AWS SDK already
//! links, so there is one TLS stack in the binary), Mozilla's roots compiled
//! in (no certificate files read at cold start), redirects off (a token
//! request must never be followed somewhere else), and short timeouts so a
//! stuck Microsoft endpoint fails the invocation, not the Lambda timeout.
//!
//! A local run (`RELAY365_LOCAL=1`) may name a test certificate authority in
//! `RELAY365_LOCAL_CA_FILE`, so the benchmarks can serve the simulator, the
//! flow receiver and moto over real TLS on loopback. Outside a local run the
//! setting is refused at start-up (`Config`), and nothing here reads it.

use std::sync::Arc;
use std::time::Duration;

/// Resolves host names to public addresses only, so a target (or any host)
/// whose name points at a private, link-local, metadata or (outside a local
/// run) loopback address is never connected to, whatever its DNS says at the
/// moment of the call. IP literals do not reach a resolver: they are checked
/// when a target or URL is parsed (`model::target`).
struct PublicOnly {
    local: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let local = self.local;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<std::net::SocketAddr> = found
                .filter(|a| crate::model::target::forbidden_ip(a.ip(), local).is_none())
                .collect();
            if allowed.is_empty() {
                let message =
                    format!("{host} resolves to no public address: relay365 calls public hosts only");
                return Err(Box::<dyn std::error::Error + Send + Sync>::from(message));
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The setting naming a local run's test certificate authority (PEM).
pub const LOCAL_CA_SETTING: &str = "RELAY365_LOCAL_CA_FILE";

/// The PEM text of the test certificate authority a local run trusts, read
/// once per process: `None` unless `RELAY365_LOCAL=1` and
/// [`LOCAL_CA_SETTING`] names a readable file.
pub fn local_ca() -> Option<&'static [u8]> {
    static CA: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        if std::env::var("RELAY365_LOCAL").as_deref() != Ok("1") {
            return None;
        }
        std::fs::read(std::env::var_os(LOCAL_CA_SETTING)?).ok()
    })
    .as_deref()
}

/// The certificates of [`local_ca`], parsed.
fn local_ca_certificates() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    local_ca()
        .map(|pem| {
            rustls::pki_types::CertificateDer::pem_slice_iter(pem)
                .filter_map(Result::ok)
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the shared client for a deployment (`local`: a local run, where
/// loopback names may be resolved). Call once per container.
///
/// # Errors
/// When the TLS configuration cannot be built (does not happen with the
/// compiled-in provider, but is reported rather than panicking).
pub fn client_for(local: bool) -> Result<reqwest::Client, reqwest::Error> {
    client_with_timeout(local, Duration::from_secs(15))
}

/// [`client_for`] with another whole-request timeout (the operator CLI waits
/// for API Gateway's 29 seconds).
///
/// # Errors
/// As [`client_for`].
pub fn client_with_timeout(local: bool, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if local {
        roots.add_parsable_certificates(local_ca_certificates());
    }
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .user_agent(concat!("relay365/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(PublicOnly { local }));
    match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(tls) => builder
            .use_preconfigured_tls(tls.with_root_certificates(roots).with_no_client_auth())
            .build(),
        // Unreachable with aws-lc-rs. reqwest without a process-wide provider
        // would panic, so install ours first and let reqwest build its own config.
        Err(_) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            builder.build()
        }
    }
}

/// [`client_for`] outside a local run.
///
/// # Errors
/// As [`client_for`].
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    client_for(false)
}

/// The most of an answer [`send_and_read`] keeps: far more than a token
/// endpoint's or an OpenID discovery document's answer, far less than what
/// would strain a function's memory.
pub const ANSWER_MAX: usize = 1 << 20;

/// Sends `req` and reads its whole answer, up to [`ANSWER_MAX`] bytes: the
/// status and the body, or a few words for a person saying why there is
/// none ("timed out", "connection failed", "the answer was cut off", "the
/// answer was too large"). The words never carry the URL or anything the
/// request held, so a caller may put them in its error.
///
/// # Errors
/// The words above, when no whole answer came.
pub async fn send_and_read(req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), &'static str> {
    let mut resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            "timed out"
        } else {
            "connection failed"
        }
    })?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| "the answer was cut off")? {
        if body.len() + chunk.len() > ANSWER_MAX {
            return Err("the answer was too large");
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}
