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

use crate::aws::kms::{DataKeys, KmsDataKeys};
use crate::aws::sdk::{LazyClient, aws_sdk_config};
use crate::aws::secret_value::SecretValue;
use crate::aws::secrets::{AwsSecretStore, CachedSecretStore, FileSecretStore, SecretError, SecretStore};
use crate::aws::store::Store;
use crate::config::{Config, ConfigError, StoreKind};
use crate::microsoft::graph::{GraphClient, RetryPolicy};
use crate::microsoft::tokens::{AppCredentials, TokenClient, TokenError, TokenProvider};
use crate::model::sensitive::Sensitive;
use crate::web::signing::{Signer, WeakKey};

/// How long secrets are cached in a warm container unless
/// `RELAY365_SECRET_TTL_SECONDS` says less.
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
    /// The deployment's signing key, re-read with the secret TTL (see [`Services::signer`]).
    pub signing: SecretValue<Signer>,
    /// Access tokens for connections.
    pub tokens: Arc<TokenProvider>,
    /// Graph.
    pub graph: GraphClient,
    /// The shared HTTP client (also for delivering events).
    pub http: reqwest::Client,
    /// Slots for Graph subscription writes, kept below Graph's limits.
    pub pacer: Arc<crate::microsoft::pacing::WritePacer>,
}

crate::debug_showing!(Services { config });

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
                config.secret_ttl,
            ))
        }
        StoreKind::File(dir) => Arc::new(CachedSecretStore::new(
            FileSecretStore::new(dir).map_err(|e| StartupError::Directory(e.kind().to_string()))?,
            config.secret_ttl,
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
        Self::with_stores_and_keys(config, store, state, None).await
    }

    /// Like [`Services::with_stores`], with the data keys that seal refresh
    /// tokens given (tests reach KMS through their own client); `None`
    /// builds them from `RELAY365_TOKEN_KEY_ID`, when it is set.
    ///
    /// # Errors
    /// [`StartupError`] naming what to fix.
    pub async fn with_stores_and_keys(
        config: Config,
        store: Arc<dyn SecretStore>,
        state: Store,
        data_keys: Option<Arc<dyn DataKeys>>,
    ) -> Result<Self, StartupError> {
        let signing = SecretValue::load(
            store.clone(),
            &config.signing_key_secret_id,
            config.secret_ttl,
            |raw| Signer::new(&Sensitive::new(raw)).map_err(|e| e.to_string()),
            |raw| Ok::<_, StartupError>(Signer::new(&Sensitive::new(raw))?),
        )
        .await?
        .ok_or(StartupError::Missing(
            config.signing_key_secret_id.clone(),
            "the template generates it",
        ))?;
        let app = SecretValue::load(
            store.clone(),
            &config.app_secret_id,
            config.secret_ttl,
            |raw| AppCredentials::from_secret_json(raw).map_err(|e| e.to_string()),
            |raw| Ok::<_, StartupError>(AppCredentials::from_secret_json(raw)?),
        )
        .await?
        .ok_or(StartupError::Missing(
            config.app_secret_id.clone(),
            "fill it in with infra/set-app-secret.sh (client_id, tenant_id, client_secret or certificate)",
        ))?;
        let http = crate::https::client_for(config.local).map_err(|_| StartupError::Http)?;
        let token_client = TokenClient::new(http.clone(), &config.login_base(config.cloud), Arc::new(app));
        let mut tokens =
            TokenProvider::new(token_client, store.clone(), state.clone(), &config.secret_prefix);
        if let Some(keys) = data_keys.or_else(|| {
            config
                .token_key_id
                .as_deref()
                .map(|id| Arc::new(KmsDataKeys::from_env(id)) as Arc<dyn DataKeys>)
        }) {
            tokens = tokens.with_sealed_tokens(keys, config.secret_ttl);
        }
        let tokens = Arc::new(tokens);
        let graph = GraphClient::new(
            http.clone(),
            &config.graph_base(config.cloud),
            RetryPolicy::default(),
        );
        Ok(Self {
            config,
            store,
            state,
            signing,
            tokens,
            graph,
            http,
            pacer: Arc::default(),
        })
    }

    /// Services for unit tests and local tools: secrets and state in memory,
    /// with the app secret and signing key given. Microsoft is never called
    /// unless a handler does (its hosts come from `env`).
    ///
    /// # Errors
    /// [`StartupError`] naming what to fix.
    pub async fn in_memory(
        env: &[(&str, &str)],
        app_secret: &str,
        signing_key: &str,
    ) -> Result<Self, StartupError> {
        let defaults = [
            ("RELAY365_APP_SECRET_ID", "relay365/app"),
            ("RELAY365_SIGNING_KEY_SECRET_ID", "relay365/signing-key"),
        ];
        let config = Config::from_pairs(&[&defaults[..], env].concat())?;
        let store = Arc::new(crate::aws::secrets::MemorySecretStore::with(&[
            (config.app_secret_id.as_str(), app_secret),
            (config.signing_key_secret_id.as_str(), signing_key),
        ]));
        Self::with_stores(config, store, Store::memory()).await
    }

    /// The signer, the signing key secret re-read when the last read is
    /// older than the TTL, so a rotated key reaches warm containers without
    /// a redeploy.
    pub async fn signer(&self) -> Arc<Signer> {
        self.signing.get().await
    }

    /// The link a person opens to connect (or reconnect) a delegated
    /// connection, good for the connection's current sign-in generation only;
    /// `None` when `RELAY365_PUBLIC_URL` is not set.
    pub fn connect_url(&self, conn: &crate::model::connection::Connection) -> Option<String> {
        self.config
            .public_url
            .as_ref()
            .map(|u| crate::web::links::connect_url(u, &self.signing.now(), &conn.id, conn.generation))
    }

    /// The app registration's client id.
    pub fn client_id(&self) -> String {
        self.tokens.client().app().client_id.clone()
    }
}
