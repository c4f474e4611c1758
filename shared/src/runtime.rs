//! What a function loads once per container, before its first request:
//! settings, the secret store (with its cache), the state store, the signing
//! key, the app registration's credentials, and the HTTP, token and Graph
//! clients.
//!
//! Loading it all up front means a misconfigured deployment fails its first
//! invocation with a message that names the setting or secret to fix, and a
//! warm container never repeats the work.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError, StoreKind};
use crate::graph::{GraphClient, RetryPolicy};
use crate::secrets::{AwsSecretStore, CachedSecretStore, FileSecretStore, SecretError, SecretStore};
use crate::sensitive::Sensitive;
use crate::signing::{Signer, WeakKey};
use crate::store::Store;
use crate::tokens::{AppCredentials, TokenClient, TokenError, TokenProvider};

/// How long secrets are cached in a warm container.
pub const SECRET_TTL: Duration = Duration::from_secs(300);

/// The function cannot start; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A secret could not be read.
    #[error("could not read a secret at start-up: {0}")]
    Secret(#[from] SecretError),
    /// A required secret is empty or missing.
    #[error("secret {0} has no value: {1}")]
    Missing(String, &'static str),
    /// The signing key is too short.
    #[error("the signing key secret is unusable: {0}")]
    SigningKey(#[from] WeakKey),
    /// The app secret is unusable.
    #[error("the app secret is unusable: {0}")]
    App(#[from] TokenError),
    /// The local secret directory cannot be used.
    #[error("RELAY365_SECRET_STORE directory cannot be used: {0}")]
    Directory(String),
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built")]
    Http,
}

/// The services a handler uses, built once.
pub struct Services {
    /// Settings.
    pub config: Config,
    /// Secrets, cached.
    pub store: Arc<dyn SecretStore>,
    /// Connections, subscriptions, deliveries, idempotency keys: read fresh.
    pub state: Store,
    /// The deployment's signing key.
    pub signer: Signer,
    /// Access tokens for connections.
    pub tokens: Arc<TokenProvider>,
    /// Graph.
    pub graph: GraphClient,
    /// The shared HTTP client (also for delivering events).
    pub http: reqwest::Client,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

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
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    AWS_SDK.get_or_init(|| sdk)
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

/// Builds the secret store the settings name.
///
/// # Errors
/// When the local directory cannot be created.
pub async fn secret_store(config: &Config) -> Result<Arc<dyn SecretStore>, StartupError> {
    Ok(match &config.secret_store {
        StoreKind::Aws => {
            let sdk = aws_sdk_config().await;
            Arc::new(CachedSecretStore::new(
                AwsSecretStore::new(aws_sdk_secretsmanager::Client::new(sdk)),
                SECRET_TTL,
            ))
        }
        StoreKind::File(dir) => Arc::new(CachedSecretStore::new(
            FileSecretStore::new(dir).map_err(|e| StartupError::Directory(e.kind().to_string()))?,
            SECRET_TTL,
        )),
    })
}

/// Builds the state store the settings name: the DynamoDB table, with its
/// client built on first use; in memory for a local run on a secret directory
/// without a table (state then lives as long as the process).
///
/// # Errors
/// When the table is not set for a deployment on AWS.
pub fn state_store(config: &Config) -> Result<Store, StartupError> {
    match (&config.state_table, &config.secret_store) {
        (Some(table), _) => Ok(Store::dynamo(
            Arc::new(LazyClient::new(aws_sdk_dynamodb::Client::new)),
            table.clone(),
        )),
        (None, StoreKind::File(_)) => Ok(Store::memory()),
        (None, StoreKind::Aws) => Err(StartupError::Config(ConfigError {
            name: "RELAY365_STATE_TABLE",
            message: "is required; the SAM template sets it to the state table".into(),
        })),
    }
}

impl Services {
    /// Loads everything from the environment.
    ///
    /// # Errors
    /// [`StartupError`] naming what to fix.
    pub async fn from_env() -> Result<Self, StartupError> {
        let config = Config::from_env()?;
        let store = secret_store(&config).await?;
        let state = state_store(&config)?;
        Self::with_stores(config, store, state).await
    }

    /// Loads everything with given stores (tests, local runs).
    ///
    /// # Errors
    /// [`StartupError`] naming what to fix.
    pub async fn with_stores(
        config: Config,
        store: Arc<dyn SecretStore>,
        state: Store,
    ) -> Result<Self, StartupError> {
        let key = store
            .get(&config.signing_key_secret_id)
            .await?
            .ok_or(StartupError::Missing(
                config.signing_key_secret_id.clone(),
                "the template generates it",
            ))?;
        let signer = Signer::new(&Sensitive::new(key))?;
        let app_raw = store.get(&config.app_secret_id).await?.ok_or(StartupError::Missing(
            config.app_secret_id.clone(),
            "fill it in with infra/set-app-secret.sh (client_id, tenant_id, client_secret or certificate)",
        ))?;
        let app = AppCredentials::from_secret_json(&app_raw)?;
        let http = crate::http::client().map_err(|_| StartupError::Http)?;
        let token_client = TokenClient::new(http.clone(), &config.login_base(config.cloud), Arc::new(app));
        let tokens = Arc::new(TokenProvider::new(
            token_client,
            store.clone(),
            state.clone(),
            &config.secret_prefix,
        ));
        let graph = GraphClient::new(
            http.clone(),
            &config.graph_base(config.cloud),
            RetryPolicy::default(),
        );
        Ok(Self {
            config,
            store,
            state,
            signer,
            tokens,
            graph,
            http,
        })
    }

    /// The app registration's client id.
    pub fn client_id(&self) -> &str {
        &self.tokens.client().app().client_id
    }
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
