//! The AWS SDK configuration, loaded once per container, and clients built
//! on first use from it.

static AWS_SDK: std::sync::OnceLock<aws_config::SdkConfig> = std::sync::OnceLock::new();

/// The AWS SDK configuration, loaded once per container and shared by every
/// AWS client of the function. Each load builds its own HTTPS client, and
/// building one reads and parses the system's root certificates (146 files on
/// the development machine: milliseconds of every cold start), so a second
/// load would pay that again.
pub async fn aws_sdk_config() -> &'static aws_config::SdkConfig {
    if let Some(sdk) = AWS_SDK.get() {
        return sdk;
    }
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts());
    if let Some(client) = local_ca_client() {
        loader = loader.http_client(client);
    }
    let sdk = loader.load().await;
    AWS_SDK.get_or_init(|| sdk)
}

/// How long any AWS call may take: the SDK has no deadline of its own, and
/// a call that hangs would hold a record (or a Graph notification) past its
/// invocation's time. Callers with a tighter budget (the webhook's queue
/// write, which must leave room inside Graph's 3 s) override these per
/// operation ([`QUEUE_WRITE_TIMEOUTS`]).
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .operation_attempt_timeout(std::time::Duration::from_secs(5))
        .operation_timeout(std::time::Duration::from_secs(12))
        .build()
}

/// The webhook's budget for queueing a batch of notifications: each
/// attempt at most 800 ms and all of them 2 s, well inside the 3 s Graph
/// waits for an answer (a slow answer is better refused with a 5xx, which
/// Graph retries, than given after Graph gave up).
pub const QUEUE_WRITE_TIMEOUTS: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_millis(800),
    std::time::Duration::from_secs(2),
);

/// In a local run with a test certificate authority
/// ([`crate::https::local_ca`]), an HTTPS client that trusts that authority
/// only, so the SDK reaches moto through a TLS proxy as it reaches AWS.
fn local_ca_client() -> Option<aws_smithy_runtime_api::client::http::SharedHttpClient> {
    use aws_smithy_http_client::tls;
    let pem = crate::https::local_ca()?;
    let trust = tls::TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(pem.to_vec());
    let context = match tls::TlsContext::builder().with_trust_store(trust).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                "RELAY365_LOCAL_CA_FILE is not a usable PEM certificate ({e}); the AWS SDK trusts the system's roots"
            );
            return None;
        }
    };
    Some(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
            .tls_context(context)
            .build_https(),
    )
}

/// An AWS client built on first use from [`aws_sdk_config`], so a cold start
/// that never needs it (send-mail without S3 attachments or idempotency keys,
/// dispatch without EventBridge targets) does not pay for loading the SDK
/// configuration and its HTTPS client.
pub struct LazyClient<T> {
    cell: tokio::sync::OnceCell<T>,
    make: fn(&aws_config::SdkConfig) -> T,
}

impl<T> LazyClient<T> {
    /// A client `make` builds when first used.
    pub fn new(make: fn(&aws_config::SdkConfig) -> T) -> Self {
        Self {
            cell: tokio::sync::OnceCell::new(),
            make,
        }
    }

    /// A client that is already built (tests, or a custom endpoint).
    pub fn ready(client: T) -> Self {
        Self {
            cell: tokio::sync::OnceCell::new_with(Some(client)),
            make: |_| unreachable_client(),
        }
    }

    /// The client, built now if this is its first use.
    pub async fn get(&self) -> &T {
        self.cell
            .get_or_init(|| async { (self.make)(aws_sdk_config().await) })
            .await
    }

    /// Whether the client has been built.
    pub fn is_built(&self) -> bool {
        self.cell.initialized()
    }
}

impl<T> std::fmt::Debug for LazyClient<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClient")
            .field("built", &self.is_built())
            .finish()
    }
}

/// `LazyClient::ready` is initialised at construction, so its builder never runs.
fn unreachable_client<T>() -> T {
    unreachable!("a ready LazyClient is never built again")
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn every_aws_client_of_a_container_shares_one_sdk_configuration() {
        let first = super::aws_sdk_config().await;
        let second = super::aws_sdk_config().await;
        assert!(
            std::ptr::eq(first, second),
            "the SDK configuration was loaded twice"
        );
    }

    #[tokio::test]
    async fn a_lazy_client_is_built_on_first_use_only() {
        let lazy = super::LazyClient::new(|_| 7u32);
        assert!(!lazy.is_built());
        assert_eq!(*lazy.get().await, 7);
        assert!(lazy.is_built());
        let ready = super::LazyClient::<u32>::ready(3);
        assert!(ready.is_built());
        assert_eq!(*ready.get().await, 3);
    }
}
