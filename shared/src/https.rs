//! The one HTTP client every function uses for Microsoft.
//!
//! rustls with the aws-lc-rs provider (the same crypto the AWS SDK already
//! links, so there is one TLS stack in the binary), Mozilla's roots compiled
//! in (no certificate files read at cold start), redirects off (a token
//! request must never be followed somewhere else), and short timeouts so a
//! stuck Microsoft endpoint fails the invocation, not the Lambda timeout.

use std::sync::Arc;
use std::time::Duration;

/// Builds the shared client. Call once per container.
///
/// # Errors
/// When the TLS configuration cannot be built (does not happen with the
/// compiled-in provider, but is reported rather than panicking).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("relay365/", env!("CARGO_PKG_VERSION")));
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
