//! Access tokens for connections, in the three ways a connection can sign in,
//! with a per-container cache.
//!
//! * delegated: authorization code with PKCE, then the refresh-token grant;
//! * app-only with the client secret (client credentials);
//! * app-only with a certificate (client credentials with a signed assertion).
//!
//! The cache renews a token a few minutes before it expires and lets at most
//! one request per connection go to Microsoft at a time, however many
//! invocations ask at once. Microsoft rotates refresh tokens on every use but
//! keeps the old ones valid, so a rotated token is written back to its secret
//! at most once every ten minutes per connection across all containers
//! (Secrets Manager's guidance for one secret) and kept in memory in between.
//! Every sign-in bumps the connection's `generation`; a token held in memory
//! is used only while the record still has the generation it came from. When
//! Microsoft says the grant is gone (`invalid_grant`: revoked, expired after
//! 90 days idle, password reset) the record and the secret are read again past
//! every cache, and only when no newer sign-in exists is the connection marked
//! `reauth_required`, so nothing keeps hammering a dead grant and a fresh
//! sign-in is never undone.
//!
//! With `RELAY365_TOKEN_KEY_ID` the refresh tokens are sealed with KMS in the
//! state table instead ([`crate::microsoft::sealed_tokens`]), under the same
//! rules; a token secret left by an earlier version is moved there on first
//! use and then scheduled for deletion.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::aws::secret_value::SecretValue;
use crate::aws::secrets::{SecretError, SecretStore, new_request_token};
use crate::aws::store::{ConnectionChange, Store, StoreError, TokenWrite};
use crate::microsoft::aadsts;
use crate::microsoft::certificate::{Certificate, CertificateError};
use crate::microsoft::sealed_tokens::{SealError, SealedTokens};
use crate::model::cloud::Cloud;
use crate::model::connection::{AuthMode, Connection, Status, token_secret_name};
use crate::model::scopes;
use crate::model::sensitive::Sensitive;

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Why no token could be had. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The user must sign in again (revoked, expired, password reset, MFA or consent needed).
    #[error("the mailbox must be connected again: {reason}")]
    ReauthRequired {
        /// The AADSTS code, when Microsoft gave one.
        code: Option<String>,
        /// What happened and what to do, for a person.
        reason: String,
    },
    /// Microsoft refused the app's own credentials: the operator must fix the app secret.
    #[error("Microsoft refused the app's credentials ({code}): {title} {fix}")]
    AppCredentials {
        /// The AADSTS code or OAuth error.
        code: String,
        /// What happened.
        title: String,
        /// What to do.
        fix: String,
    },
    /// Microsoft refused the request for another reason; the explanation says what to change.
    #[error("Microsoft refused the token request ({code}): {title} {fix}")]
    Refused {
        /// The OAuth `error`.
        error: String,
        /// The AADSTS code or OAuth error.
        code: String,
        /// What happened.
        title: String,
        /// What to do.
        fix: String,
    },
    /// The sign-in service could not be reached or failed: retry later.
    #[error("Microsoft's sign-in service is unavailable ({0}); retry later")]
    Unavailable(String),
    /// The deployment's app secret is missing something this connection needs.
    #[error("the app secret is not usable: {0}")]
    Misconfigured(String),
    /// No connection has this id.
    #[error("connection {0} does not exist")]
    UnknownConnection(String),
    /// The connection has not been consented yet.
    #[error("connection {0} is waiting for sign-in or admin consent: open its connect link first")]
    NotConnected(String),
    /// The secret store failed.
    #[error(transparent)]
    Store(#[from] SecretError),
    /// The state table failed.
    #[error(transparent)]
    State(#[from] StoreError),
    /// The sealed refresh token could not be read or written (KMS, or a
    /// token that is not this connection's); the variant says what to do.
    #[error(transparent)]
    Sealed(#[from] SealError),
}

impl TokenError {
    /// True when retrying later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            TokenError::Unavailable(_) => true,
            TokenError::Store(e) => e.is_retryable(),
            TokenError::State(e) => e.is_retryable(),
            TokenError::Sealed(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// The app registration's credentials: the deployment's app secret.
pub struct AppCredentials {
    /// The application (client) id.
    pub client_id: String,
    /// The home tenant of the app registration.
    pub tenant_id: String,
    client_secret: Option<Sensitive>,
    certificate: Option<Certificate>,
}

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredentials")
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .field("has_client_secret", &self.client_secret.is_some())
            .field("certificate", &self.certificate)
            .finish()
    }
}

#[derive(Deserialize)]
struct AppSecretJson {
    client_id: String,
    tenant_id: String,
    #[serde(default)]
    client_secret: Option<Sensitive>,
    #[serde(default)]
    certificate: Option<CertJson>,
}

#[derive(Deserialize)]
struct CertJson {
    pfx_base64: Sensitive,
    #[serde(default)]
    password: Sensitive,
}

/// Which credential proves the app's identity on a token request.
#[derive(Clone, Copy)]
enum Credential<'a> {
    Secret(&'a Sensitive),
    Certificate(&'a Certificate),
}

impl AppCredentials {
    /// Builds credentials directly (tests, local runs).
    pub fn new(
        client_id: String,
        tenant_id: String,
        client_secret: Option<Sensitive>,
        certificate: Option<Certificate>,
    ) -> Self {
        Self {
            client_id,
            tenant_id,
            client_secret,
            certificate,
        }
    }

    /// Parses the app secret's JSON:
    /// `{"client_id", "tenant_id", "client_secret"?, "certificate"?: {"pfx_base64", "password"}}`.
    ///
    /// # Errors
    /// [`TokenError::Misconfigured`] saying which field is wrong.
    pub fn from_secret_json(raw: &str) -> Result<Self, TokenError> {
        let parsed: AppSecretJson = serde_json::from_str(raw).map_err(|e| {
            // serde's message names the field and position, never a value of a string field.
            TokenError::Misconfigured(format!(
                "expected {{\"client_id\", \"tenant_id\", \"client_secret\"?, \"certificate\"?: {{\"pfx_base64\", \"password\"}}}} ({})",
                e.classify_message()
            ))
        })?;
        let certificate = parsed
            .certificate
            .map(|c| Certificate::from_pfx_base64(c.pfx_base64.expose(), c.password.expose()))
            .transpose()
            .map_err(|e: CertificateError| TokenError::Misconfigured(e.to_string()))?;
        let client_secret = parsed.client_secret.filter(|s| !s.is_empty());
        if client_secret.is_none() && certificate.is_none() {
            return Err(TokenError::Misconfigured(
                "it has neither client_secret nor certificate: add one with infra/set-app-secret.sh".into(),
            ));
        }
        if parsed.client_id.trim().is_empty() {
            return Err(TokenError::Misconfigured("client_id is empty".into()));
        }
        Ok(Self {
            client_id: parsed.client_id,
            tenant_id: parsed.tenant_id,
            client_secret,
            certificate,
        })
    }

    fn credential(&self, mode: AuthMode) -> Result<Credential<'_>, TokenError> {
        let secret = self.client_secret.as_ref().map(Credential::Secret);
        let cert = self.certificate.as_ref().map(Credential::Certificate);
        match mode {
            AuthMode::AppSecret => secret.ok_or_else(|| {
                TokenError::Misconfigured(
                    "this connection uses app_secret but the app secret has no client_secret".into(),
                )
            }),
            AuthMode::AppCertificate => cert.ok_or_else(|| {
                TokenError::Misconfigured(
                    "this connection uses app_certificate but the app secret has no certificate".into(),
                )
            }),
            AuthMode::Delegated => secret
                .or(cert)
                .ok_or_else(|| TokenError::Misconfigured("no credential".into())),
        }
    }
}

trait ClassifyMessage {
    fn classify_message(&self) -> String;
}

impl ClassifyMessage for serde_json::Error {
    fn classify_message(&self) -> String {
        format!(
            "{:?} error at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}

/// Tokens Microsoft issued.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// The bearer token for Graph.
    pub access_token: Sensitive,
    /// When it stops working (monotonic clock).
    pub expires_at: Instant,
    /// The new refresh token (delegated only).
    pub refresh_token: Option<Sensitive>,
    /// The permissions granted, as Microsoft reports them.
    pub scopes: Vec<String>,
}

/// Extra parameters of an authorize request.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeOptions {
    /// Pre-fills the account (`login_hint`).
    pub login_hint: Option<String>,
    /// Skips home-realm discovery (`domain_hint`).
    pub domain_hint: Option<String>,
    /// `login`, `consent`, `select_account` or `none`.
    pub prompt: Option<String>,
}

/// An oauth2 client with its authorize and token endpoints set.
type MsClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    BasicTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// Talks to the identity platform's token and authorize endpoints.
#[derive(Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    login_base: String,
    // Re-read with the secret TTL, so a fixed client secret works in warm containers.
    app: Arc<SecretValue<AppCredentials>>,
}

impl std::fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenClient")
            .field("login_base", &self.login_base)
            .finish_non_exhaustive()
    }
}

impl TokenClient {
    /// A client for the login host `login_base` (`https://login.microsoftonline.com`, or an override).
    pub fn new(http: reqwest::Client, login_base: &str, app: Arc<SecretValue<AppCredentials>>) -> Self {
        Self {
            http,
            login_base: login_base.trim_end_matches('/').to_string(),
            app,
        }
    }

    /// The app's credentials in use now.
    pub fn app(&self) -> Arc<AppCredentials> {
        self.app.now()
    }

    /// `{login}/{tenant}/oauth2/v2.0/token`; also the `aud` of certificate assertions.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.login_base)
    }

    /// `{login}/{tenant}/oauth2/v2.0/authorize`.
    pub fn authorize_endpoint(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/authorize", self.login_base)
    }

    /// `{login}/{tenant}/v2.0/adminconsent?client_id=…&scope=…/.default&redirect_uri=…&state=…`.
    pub fn admin_consent_url(&self, tenant: &str, cloud: Cloud, redirect_uri: &str, state: &str) -> String {
        let mut url = match url::Url::parse(&format!("{}/{tenant}/v2.0/adminconsent", self.login_base)) {
            Ok(u) => u,
            Err(_) => return String::new(),
        };
        url.query_pairs_mut()
            .append_pair("client_id", &self.app.now().client_id)
            .append_pair("scope", &cloud.default_scope())
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state);
        url.to_string()
    }

    fn oauth(
        &self,
        app: &AppCredentials,
        tenant: &str,
        credential: Credential<'_>,
    ) -> Result<MsClient, TokenError> {
        let auth = AuthUrl::new(self.authorize_endpoint(tenant))
            .map_err(|_| TokenError::Misconfigured(format!("tenant {tenant:?} makes an invalid URL")))?;
        let token = TokenUrl::new(self.token_url(tenant))
            .map_err(|_| TokenError::Misconfigured(format!("tenant {tenant:?} makes an invalid URL")))?;
        let mut client = BasicClient::new(ClientId::new(app.client_id.clone()))
            .set_auth_uri(auth)
            .set_token_uri(token)
            // Microsoft wants client credentials in the form body, not HTTP Basic.
            .set_auth_type(AuthType::RequestBody);
        if let Credential::Secret(s) = credential {
            client = client.set_client_secret(ClientSecret::new(s.expose().to_string()));
        }
        Ok(client)
    }

    fn assertion(
        &self,
        app: &AppCredentials,
        tenant: &str,
        credential: Credential<'_>,
    ) -> Result<Option<String>, TokenError> {
        match credential {
            Credential::Secret(_) => Ok(None),
            Credential::Certificate(cert) => cert
                .client_assertion(&app.client_id, &self.token_url(tenant), OffsetDateTime::now_utc())
                .map(Some)
                .map_err(|e| TokenError::Misconfigured(e.to_string())),
        }
    }

    /// Builds the authorize URL of a delegated sign-in, with PKCE (S256).
    /// The verifier is returned to be kept server-side; it never goes in a URL.
    ///
    /// # Errors
    /// [`TokenError::Misconfigured`] when the tenant or redirect URI make no valid URL.
    pub fn authorize_url(
        &self,
        tenant: &str,
        redirect_uri: &str,
        scope_param: &str,
        state: &str,
        options: &AuthorizeOptions,
    ) -> Result<(url::Url, PkceCodeVerifier), TokenError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|_| TokenError::Misconfigured("invalid redirect URI".into()))?;
        let client = self
            .oauth(&self.app.now(), tenant, Credential::Secret(&Sensitive::default()))?
            .set_redirect_uri(redirect);
        let state = state.to_string();
        let mut req = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(scope_param.split(' ').map(|s| Scope::new(s.to_string())))
            .set_pkce_challenge(challenge)
            .add_extra_param("response_mode", "query");
        if let Some(h) = &options.login_hint {
            req = req.add_extra_param("login_hint", h.clone());
        }
        if let Some(h) = &options.domain_hint {
            req = req.add_extra_param("domain_hint", h.clone());
        }
        if let Some(p) = &options.prompt {
            req = req.add_extra_param("prompt", p.clone());
        }
        Ok((req.url().0, verifier))
    }

    /// Redeems an authorization code (delegated sign-in).
    ///
    /// # Errors
    /// [`TokenError`] explaining Microsoft's refusal.
    pub async fn exchange_code(
        &self,
        tenant: &str,
        code: &Sensitive,
        verifier: &Sensitive,
        redirect_uri: &str,
        scope_param: &str,
    ) -> Result<TokenSet, TokenError> {
        let app = self.app.get().await;
        let cred = app.credential(AuthMode::Delegated)?;
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|_| TokenError::Misconfigured("invalid redirect URI".into()))?;
        let client = self.oauth(&app, tenant, cred)?.set_redirect_uri(redirect);
        let mut req = client
            .exchange_code(AuthorizationCode::new(code.expose().to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose().to_string()))
            .add_extra_param("scope", scope_param.to_string());
        if let Some(a) = self.assertion(&app, tenant, cred)? {
            req = req
                .add_extra_param("client_assertion_type", CLIENT_ASSERTION_TYPE)
                .add_extra_param("client_assertion", a);
        }
        finish(req.request_async(&self.http).await, false)
    }

    /// Uses a refresh token (delegated).
    ///
    /// # Errors
    /// [`TokenError::ReauthRequired`] when the grant is gone; others as they come.
    pub async fn refresh(
        &self,
        tenant: &str,
        refresh_token: &Sensitive,
        scope_param: &str,
    ) -> Result<TokenSet, TokenError> {
        let app = self.app.get().await;
        let cred = app.credential(AuthMode::Delegated)?;
        let client = self.oauth(&app, tenant, cred)?;
        let rt = RefreshToken::new(refresh_token.expose().to_string());
        let mut req = client
            .exchange_refresh_token(&rt)
            .add_scopes(scope_param.split(' ').map(|s| Scope::new(s.to_string())));
        if let Some(a) = self.assertion(&app, tenant, cred)? {
            req = req
                .add_extra_param("client_assertion_type", CLIENT_ASSERTION_TYPE)
                .add_extra_param("client_assertion", a);
        }
        finish(req.request_async(&self.http).await, false)
    }

    /// Client credentials (app-only) for a tenant, with the secret or the certificate.
    ///
    /// # Errors
    /// [`TokenError::AppCredentials`] when the app's secret or certificate is refused.
    pub async fn client_credentials(
        &self,
        tenant: &str,
        cloud: Cloud,
        mode: AuthMode,
    ) -> Result<TokenSet, TokenError> {
        let app = self.app.get().await;
        let cred = app.credential(mode)?;
        let client = self.oauth(&app, tenant, cred)?;
        let mut req = client
            .exchange_client_credentials()
            .add_scope(Scope::new(scopes::app_only_scope(cloud)));
        if let Some(a) = self.assertion(&app, tenant, cred)? {
            req = req
                .add_extra_param("client_assertion_type", CLIENT_ASSERTION_TYPE)
                .add_extra_param("client_assertion", a);
        }
        finish(req.request_async(&self.http).await, true)
    }
}

type OauthResult = Result<
    BasicTokenResponse,
    RequestTokenError<oauth2::HttpClientError<reqwest::Error>, oauth2::basic::BasicErrorResponse>,
>;

/// What a token endpoint answer (`status`, `body`) means, read the way the
/// OAuth client reads it: a token response on 2xx, Microsoft's error response
/// otherwise. The body itself never reaches an error message.
///
/// # Errors
/// The [`TokenError`] a refusal or a malformed answer becomes.
pub fn token_answer(status: u16, body: &[u8], app_only: bool) -> Result<TokenSet, TokenError> {
    let result: OauthResult = if (200..300).contains(&status) {
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
            .map_err(|e| RequestTokenError::Parse(e, Vec::new()))
    } else {
        match serde_json::from_slice::<oauth2::basic::BasicErrorResponse>(body) {
            Ok(err) => Err(RequestTokenError::ServerResponse(err)),
            Err(_) => Err(RequestTokenError::Other(format!("status {status}"))),
        }
    };
    finish(result, app_only)
}

fn finish(result: OauthResult, app_only: bool) -> Result<TokenSet, TokenError> {
    match result {
        Ok(resp) => Ok(TokenSet {
            access_token: Sensitive::new(resp.access_token().secret().clone()),
            expires_at: Instant::now() + resp.expires_in().unwrap_or(Duration::from_secs(3599)),
            refresh_token: resp.refresh_token().map(|r| Sensitive::new(r.secret().clone())),
            scopes: resp
                .scopes()
                .map(|s| s.iter().map(|x| x.to_string()).collect())
                .unwrap_or_default(),
        }),
        Err(RequestTokenError::ServerResponse(err)) => {
            let description = err.error_description().cloned().unwrap_or_default();
            Err(classify(&error_name(err.error()), &description, app_only))
        }
        Err(RequestTokenError::Request(e)) => Err(TokenError::Unavailable(match &e {
            oauth2::HttpClientError::Reqwest(r) if r.is_timeout() => "timed out".into(),
            oauth2::HttpClientError::Reqwest(r) if r.is_connect() => "connection failed".into(),
            _ => "request failed".into(),
        })),
        // The raw body of a parse error may hold tokens: it is dropped, never shown.
        Err(RequestTokenError::Parse(_, _)) => Err(TokenError::Unavailable(
            "the token endpoint answered something that is not a token response".into(),
        )),
        Err(RequestTokenError::Other(_)) => Err(TokenError::Unavailable(
            "the token endpoint answered with an unexpected status".into(),
        )),
    }
}

fn error_name(e: &BasicErrorResponseType) -> String {
    match e {
        BasicErrorResponseType::InvalidClient => "invalid_client".into(),
        BasicErrorResponseType::InvalidGrant => "invalid_grant".into(),
        BasicErrorResponseType::InvalidRequest => "invalid_request".into(),
        BasicErrorResponseType::InvalidScope => "invalid_scope".into(),
        BasicErrorResponseType::UnauthorizedClient => "unauthorized_client".into(),
        BasicErrorResponseType::UnsupportedGrantType => "unsupported_grant_type".into(),
        // An OAuth error code is a short identifier (RFC 6749 5.2); anything
        // else is not repeated to a person.
        BasicErrorResponseType::Extension(s)
            if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            s.clone()
        }
        BasicErrorResponseType::Extension(_) => "unrecognised_error".into(),
    }
}

/// Turns Microsoft's `error` and `error_description` into a [`TokenError`].
pub fn classify(error: &str, description: &str, app_only: bool) -> TokenError {
    let e = aadsts::explain(error, description, &aadsts::Context::default());
    match error {
        "invalid_grant" | "interaction_required" | "consent_required" | "login_required" if !app_only => {
            TokenError::ReauthRequired {
                code: aadsts::code_of(description),
                reason: format!("{} {}", e.title, e.fix),
            }
        }
        "invalid_client" | "unauthorized_client" => TokenError::AppCredentials {
            code: e.code,
            title: e.title,
            fix: e.fix,
        },
        "temporarily_unavailable" | "server_error" => TokenError::Unavailable(e.code),
        _ => TokenError::Refused {
            error: error.to_string(),
            code: e.code,
            title: e.title,
            fix: e.fix,
        },
    }
}

/// A delegated connection's token secret: the refresh token and the sign-in
/// generation it belongs to.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct StoredToken {
    /// The newest refresh token written.
    pub refresh_token: Sensitive,
    /// The sign-in it comes from (the connection record's `generation`).
    pub generation: u64,
}

#[derive(Default)]
struct Slot {
    /// The access token, its expiry and the generation it was obtained for.
    access: Option<(Sensitive, Instant, u64)>,
    /// The newest rotated refresh token, and the generation it comes from.
    newest_refresh: Option<(Sensitive, u64)>,
}

/// Access tokens for connections, cached per container.
///
/// A cached token (access or rotated refresh token) is used only while the
/// connection record, read fresh by the caller, still has the generation it
/// came from: after a reconnect in any container, every other container
/// drops what it holds and reads the new grant.
pub struct TokenProvider {
    client: TokenClient,
    secrets: Arc<dyn SecretStore>,
    state: Store,
    prefix: String,
    renew_before: Duration,
    write_interval: time::Duration,
    slots: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// With `RELAY365_TOKEN_KEY_ID`: refresh tokens sealed in the state table.
    sealed: Option<SealedTokens>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// A provider with token secrets under `prefix` in `secrets` and
    /// connection records in `state`.
    pub fn new(client: TokenClient, secrets: Arc<dyn SecretStore>, state: Store, prefix: &str) -> Self {
        Self {
            client,
            secrets,
            state,
            prefix: prefix.to_string(),
            renew_before: Duration::from_secs(300),
            write_interval: time::Duration::minutes(10),
            slots: std::sync::Mutex::new(HashMap::new()),
            sealed: None,
        }
    }

    /// Keeps refresh tokens sealed with data keys from `keys` in the state
    /// table instead of token secrets (`RELAY365_TOKEN_KEY_ID`); opened
    /// tokens are trusted from memory for `ttl`. Token secrets an earlier
    /// version wrote are moved on first use.
    pub fn with_sealed_tokens(mut self, keys: Arc<dyn crate::aws::kms::DataKeys>, ttl: Duration) -> Self {
        self.sealed = Some(SealedTokens::new(keys, self.state.clone(), ttl));
        self
    }

    /// Whether refresh tokens are sealed in the state table.
    pub fn seals_tokens(&self) -> bool {
        self.sealed.is_some()
    }

    /// The token client.
    pub fn client(&self) -> &TokenClient {
        &self.client
    }

    fn slot(&self, id: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_string()).or_default().clone()
    }

    fn secret_name(&self, id: &str) -> String {
        token_secret_name(&self.prefix, id)
    }

    /// Forgets the cached access token of a connection (after Graph answered 401).
    pub async fn invalidate(&self, id: &str) {
        self.slot(id).lock().await.access = None;
    }

    /// Reads a connection record fresh from the state table.
    ///
    /// # Errors
    /// [`TokenError::UnknownConnection`] or a store failure.
    pub async fn load(&self, id: &str) -> Result<Connection, TokenError> {
        match self.state.connection(id).await? {
            Some(c) => Ok(c),
            None => Err(TokenError::UnknownConnection(id.to_string())),
        }
    }

    /// Stores the refresh token of a new sign-in under `generation` (the
    /// secret is created on a connection's first sign-in). The record's
    /// generation is moved by the caller afterwards, so a container never sees
    /// a generation whose token is not stored yet.
    ///
    /// # Errors
    /// The secret store's error.
    pub async fn store_sign_in(
        &self,
        id: &str,
        refresh: &Sensitive,
        generation: u64,
    ) -> Result<(), TokenError> {
        let name = self.secret_name(id);
        let token = StoredToken {
            refresh_token: refresh.clone(),
            generation,
        };
        if let Some(sealed) = &self.sealed {
            match sealed.write(id, &token, TokenWrite::SignIn).await {
                Ok(()) => {}
                // A newer sign-in is stored already: this one lost the race,
                // and its caller's move of the record's generation will fail too.
                Err(SealError::State(StoreError::Conflict { .. })) => {}
                Err(e) => return Err(e.into()),
            }
            // A token secret an earlier version left is of an older sign-in.
            self.retire_secret(id).await;
        } else {
            let value = serde_json::to_string(&token).unwrap_or_default();
            match self.secrets.put(&name, &value, &new_request_token()).await {
                Ok(()) => {}
                Err(SecretError::NotFound { .. }) => self.secrets.create(&name, &value).await?,
                Err(e) => return Err(e.into()),
            }
        }
        // This container's rotated token, if any, belongs to the old sign-in.
        let slot = self.slot(id);
        let mut slot = slot.lock().await;
        *slot = Slot::default();
        Ok(())
    }

    /// Deletes a deleted connection's tokens: the sealed token item, if
    /// tokens are sealed, and the token secret, scheduled for deletion
    /// (missing is fine).
    ///
    /// # Errors
    /// The state table's or the secret store's error.
    pub async fn delete_tokens(&self, id: &str) -> Result<(), TokenError> {
        if let Some(sealed) = &self.sealed {
            sealed.delete(id).await?;
        }
        match self.secrets.delete(&self.secret_name(id)).await {
            // Missing, or scheduled for deletion already (a moved token secret).
            Ok(()) | Err(SecretError::NotFound { .. } | SecretError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The stored refresh token for the record's generation; past the cache
    /// when the cached copy is older than the record.
    async fn stored_token(&self, conn: &Connection, fresh: bool) -> Result<Option<StoredToken>, TokenError> {
        if let Some(sealed) = &self.sealed {
            return match sealed.read(&conn.id, conn.generation, fresh).await? {
                Some(t) => Ok(Some(t)),
                None => self.migrate_secret(sealed, conn).await,
            };
        }
        let name = self.secret_name(&conn.id);
        let parse = |raw: Option<String>| -> Result<Option<StoredToken>, TokenError> {
            raw.map(|r| {
                serde_json::from_str::<StoredToken>(&r).map_err(|e| {
                    TokenError::Misconfigured(format!(
                        "the token secret of connection {} is damaged ({}); connect the mailbox again",
                        conn.id,
                        e.classify_message()
                    ))
                })
            })
            .transpose()
        };
        let cached = if fresh {
            None
        } else {
            parse(self.secrets.get(&name).await?)?
        };
        match cached {
            Some(t) if t.generation >= conn.generation => Ok(Some(t)),
            _ => parse(self.secrets.get_fresh(&name).await?),
        }
    }

    /// [`TokenProvider::access_token`] for a connection read fresh by id.
    ///
    /// # Errors
    /// [`TokenError`].
    pub async fn token_for(&self, id: &str) -> Result<Sensitive, TokenError> {
        let conn = self.load(id).await?;
        self.access_token(&conn).await
    }

    /// A valid access token for the connection (as just read from the state
    /// table), from the cache when it has more than the renewal margin left
    /// and comes from the record's generation.
    ///
    /// # Errors
    /// [`TokenError`]; on `ReauthRequired` the connection has already been
    /// marked `reauth_required` (unless a newer sign-in happened meanwhile).
    pub async fn access_token(&self, conn: &Connection) -> Result<Sensitive, TokenError> {
        let slot = self.slot(&conn.id);
        let mut slot = slot.lock().await;
        if let Some((token, expires, generation)) = &slot.access
            && *generation == conn.generation
            && *expires > Instant::now() + self.renew_before
        {
            return Ok(token.clone());
        }
        match conn.status {
            Status::PendingConsent => return Err(TokenError::NotConnected(conn.id.clone())),
            Status::ReauthRequired => {
                return Err(TokenError::ReauthRequired {
                    code: None,
                    reason: conn
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "connect the mailbox again".into()),
                });
            }
            Status::Active => {}
        }
        let (tokens, generation) = if conn.auth.is_app_only() {
            let t = self
                .client
                .client_credentials(&conn.tenant_id, conn.cloud, conn.auth)
                .await?;
            (t, conn.generation)
        } else {
            self.refresh_delegated(conn, &mut slot).await?
        };
        slot.access = Some((tokens.access_token.clone(), tokens.expires_at, generation));
        tracing::info!(connection = %conn.id, "obtained a new access token");
        Ok(tokens.access_token)
    }

    async fn refresh_delegated(
        &self,
        conn: &Connection,
        slot: &mut Slot,
    ) -> Result<(TokenSet, u64), TokenError> {
        let mut conn = conn.clone();
        let mut fresh = false;
        loop {
            let from_memory = slot
                .newest_refresh
                .as_ref()
                .filter(|(_, g)| *g == conn.generation && !fresh)
                .map(|(t, _)| t.clone());
            let stored = match from_memory {
                Some(_) => None,
                None => match self.stored_token(&conn, fresh).await {
                    Err(TokenError::Sealed(SealError::Unopenable { id })) => {
                        let reason = SealError::Unopenable { id }.to_string();
                        return Err(self.mark_reauth(&conn, None, reason).await);
                    }
                    other => Some(other?),
                },
            };
            let rt = match (from_memory, stored) {
                (Some(t), _) => t,
                (None, stored) => match stored.flatten() {
                    Some(t) if t.generation >= conn.generation && !t.refresh_token.is_empty() => {
                        t.refresh_token
                    }
                    _ => {
                        let reason =
                            "no refresh token is stored: connect the mailbox again from its connect link"
                                .to_string();
                        return Err(TokenError::ReauthRequired { code: None, reason });
                    }
                },
            };
            let scope = scopes::delegated_scope_param(conn.cloud, &conn.scopes);
            match self.client.refresh(&conn.tenant_id, &rt, &scope).await {
                Ok(tokens) => {
                    if let Some(new_rt) = &tokens.refresh_token {
                        slot.newest_refresh = Some((new_rt.clone(), conn.generation));
                        self.write_rotated(&conn, new_rt).await;
                    }
                    return Ok((tokens, conn.generation));
                }
                Err(TokenError::ReauthRequired { code, reason }) => {
                    slot.newest_refresh = None;
                    if !fresh {
                        // Someone may have reconnected since this record was
                        // read: look again, past every cache, and try once more
                        // if there is a newer grant.
                        let newer = self.load(&conn.id).await?;
                        let stored = match self.stored_token(&newer, true).await {
                            // Unopenable is no newer grant: the connection is marked below.
                            Err(TokenError::Sealed(SealError::Unopenable { .. })) => None,
                            other => other?,
                        };
                        let changed = newer.generation != conn.generation
                            || stored.as_ref().is_some_and(|t| t.refresh_token != rt);
                        if changed && newer.status == Status::Active {
                            conn = newer;
                            fresh = true;
                            continue;
                        }
                    }
                    tracing::warn!(connection = %conn.id, code = code.as_deref().unwrap_or(""), "the grant is gone; the connection needs a new sign-in");
                    return Err(self.mark_reauth(&conn, code, reason).await);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Marks the connection `reauth_required` with `reason`, unless a newer
    /// sign-in landed meanwhile; returns the error to give the caller.
    async fn mark_reauth(&self, conn: &Connection, code: Option<String>, reason: String) -> TokenError {
        let change = ConnectionChange::new()
            .status(Status::ReauthRequired)
            .last_error(Some(&reason))
            .if_generation(conn.generation);
        match self.state.update_connection(&conn.id, change).await {
            Ok(()) => TokenError::ReauthRequired { code, reason },
            // A newer sign-in landed meanwhile: it is not ours to undo.
            Err(StoreError::Conflict { .. }) => {
                TokenError::Unavailable("the connection was connected again meanwhile".into())
            }
            Err(e) => e.into(),
        }
    }

    /// Moves a token secret an earlier version wrote into the state table:
    /// read it past the cache, seal it, store it only if no sealed token
    /// exists yet, then schedule the secret for deletion. `None` when there
    /// is no secret either.
    async fn migrate_secret(
        &self,
        sealed: &SealedTokens,
        conn: &Connection,
    ) -> Result<Option<StoredToken>, TokenError> {
        let name = self.secret_name(&conn.id);
        let Some(raw) = self.secrets.get_fresh(&name).await? else {
            return Ok(None);
        };
        let token = serde_json::from_str::<StoredToken>(&raw).map_err(|e| {
            TokenError::Misconfigured(format!(
                "the token secret of connection {} is damaged ({}); connect the mailbox again",
                conn.id,
                e.classify_message()
            ))
        })?;
        let token = match sealed.write(&conn.id, &token, TokenWrite::IfAbsent).await {
            Ok(()) => {
                tracing::info!(connection = %conn.id, "moved the token secret into the state table, sealed");
                Some(token)
            }
            // Another container moved it (or a sign-in stored one) first: use that.
            Err(SealError::State(StoreError::Conflict { .. })) => sealed.read(&conn.id, 0, true).await?,
            Err(e) => return Err(e.into()),
        };
        self.retire_secret(&conn.id).await;
        Ok(token)
    }

    /// Schedules the token secret of a connection whose token is sealed for
    /// deletion; a failure is logged and tried again on the next sign-in.
    async fn retire_secret(&self, id: &str) {
        match self.secrets.delete(&self.secret_name(id)).await {
            Ok(()) | Err(SecretError::NotFound { .. } | SecretError::AlreadyExists { .. }) => {}
            Err(e) => {
                tracing::warn!(connection = %id, error = %e, "could not schedule the old token secret for deletion");
            }
        }
    }

    /// Writes a rotated refresh token if none was written in the last
    /// interval, by any container: the interval is claimed in the record
    /// first, conditionally, so only one container writes. The old token
    /// stays valid, so a skipped or failed write loses nothing.
    async fn write_rotated(&self, conn: &Connection, new_rt: &Sensitive) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let written_before = now - self.write_interval.whole_seconds() + 1;
        let token = StoredToken {
            refresh_token: new_rt.clone(),
            generation: conn.generation,
        };
        if let Some(sealed) = &self.sealed {
            // One conditional write claims the interval and stores the token:
            // only if the stored token is of this generation (a sign-in that
            // landed meanwhile keeps its token) and older than the interval.
            match sealed.write_rotated(&conn.id, &token, written_before).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(connection = %conn.id, error = %e, "could not store the rotated refresh token");
                }
            }
            return;
        }
        let claim = ConnectionChange::new()
            .token_written_at(now)
            .if_generation(conn.generation)
            .if_token_written_before(written_before);
        match self.state.update_connection(&conn.id, claim).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => return,
            Err(e) => {
                tracing::warn!(connection = %conn.id, error = %e, "could not claim the refresh-token write");
                return;
            }
        }
        let value = serde_json::to_string(&token).unwrap_or_default();
        let name = self.secret_name(&conn.id);
        if let Err(e) = self.secrets.put(&name, &value, &new_request_token()).await {
            tracing::warn!(connection = %conn.id, error = %e, "could not store the rotated refresh token");
            return;
        }
        self.undo_if_overwrote_a_sign_in(conn, &name).await;
    }

    /// Secrets Manager cannot write conditionally, so a rotated token's
    /// write (claimed under generation G) can land after a new sign-in
    /// stored generation G+1 and moved the record. Once the record says a
    /// newer generation, the secret must hold it: if it holds an older one,
    /// this write overwrote the sign-in's, whose value is the secret's
    /// previous version, and that is put back.
    async fn undo_if_overwrote_a_sign_in(&self, conn: &Connection, name: &str) {
        let record = match self.state.connection(&conn.id).await {
            Ok(Some(c)) => c.generation,
            _ => return,
        };
        if record <= conn.generation {
            return;
        }
        let generation_of = |raw: Option<String>| {
            raw.and_then(|r| serde_json::from_str::<StoredToken>(&r).ok())
                .map(|t| t.generation)
        };
        let now_stored = generation_of(self.secrets.get_fresh(name).await.ok().flatten());
        if now_stored.is_some_and(|g| g >= record) {
            return;
        }
        let Ok(Some(previous)) = self.secrets.previous(name).await else {
            tracing::error!(connection = %conn.id, "a rotated token may have overwritten a newer sign-in's, and no earlier version is left: the connection will ask for a new sign-in");
            return;
        };
        if generation_of(Some(previous.clone())).is_some_and(|g| g >= record) {
            tracing::warn!(connection = %conn.id, "a rotated token landed after a newer sign-in; the sign-in's token is put back");
            if let Err(e) = self.secrets.put(name, &previous, &new_request_token()).await {
                tracing::error!(connection = %conn.id, error = %e, "could not put the newer sign-in's token back");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microsoft's error answers as the token endpoint sends them (fixtures in `tests/fixtures/identity`).
    #[test]
    fn token_endpoint_errors_from_fixtures_are_classified() {
        let parse = |raw: &str| -> (String, String) {
            let v: serde_json::Value = serde_json::from_str(raw).unwrap();
            (
                v["error"].as_str().unwrap().into(),
                v["error_description"].as_str().unwrap().into(),
            )
        };
        let (e, d) = parse(include_str!(
            "../../../tests/fixtures/identity/error-invalid-grant-50173.json"
        ));
        assert!(
            matches!(classify(&e, &d, false), TokenError::ReauthRequired { code: Some(ref c), .. } if c == "AADSTS50173")
        );
        let (e, d) = parse(include_str!(
            "../../../tests/fixtures/identity/error-invalid-client-7000215.json"
        ));
        let err = classify(&e, &d, true);
        assert!(matches!(err, TokenError::AppCredentials { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let (e, d) = parse(include_str!(
            "../../../tests/fixtures/identity/error-expired-secret-7000222.json"
        ));
        let err = classify(&e, &d, true);
        assert!(
            matches!(err, TokenError::AppCredentials { ref code, .. } if code == "AADSTS7000222"),
            "{err:?}"
        );
        assert!(err.to_string().contains("set-app-secret"), "{err}");
    }

    #[test]
    fn an_error_code_that_is_no_identifier_is_not_repeated() {
        let body = br#"{"error": "inv;;;;<b>x</b>", "error_description": "AADSTS7000215: Invalid client secret provided."}"#;
        let Err(e) = token_answer(401, body, true) else {
            panic!("an error answer")
        };
        let words = e.to_string();
        assert!(!words.contains("inv;;;;"), "{words}");
        let known = br#"{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}"#;
        assert!(matches!(
            token_answer(401, known, true),
            Err(TokenError::AppCredentials { .. })
        ));
    }

    #[test]
    fn a_token_answer_fixture_parses_and_is_redacted() {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/identity/token-refresh.json"
        ))
        .unwrap();
        let stored = StoredToken {
            refresh_token: Sensitive::new(v["refresh_token"].as_str().unwrap()),
            generation: 3,
        };
        assert!(!format!("{stored:?}").contains("rotated-refresh-token"));
        let back: StoredToken = serde_json::from_str(&serde_json::to_string(&stored).unwrap()).unwrap();
        assert_eq!(
            (back.refresh_token.expose(), back.generation),
            ("0.AXoA-rotated-refresh-token", 3)
        );
    }

    #[test]
    fn invalid_grant_codes_become_reauth_with_words() {
        for (code, words) in [
            ("AADSTS700082", "long time without use"),
            ("AADSTS50173", "password change"),
            ("AADSTS70008", "long time without use"),
        ] {
            match classify(
                "invalid_grant",
                &format!("{code}: The refresh token has expired."),
                false,
            ) {
                TokenError::ReauthRequired { code: c, reason } => {
                    assert_eq!(c.as_deref(), Some(code));
                    assert!(reason.contains(words), "{reason}");
                    assert!(reason.contains("Connect the mailbox again"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn bad_app_secret_is_an_operator_problem() {
        let e = classify(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
            true,
        );
        assert!(matches!(e, TokenError::AppCredentials { .. }));
        assert!(e.to_string().contains("set-app-secret"), "{e}");
        assert!(classify("temporarily_unavailable", "", true).is_retryable());
    }

    #[test]
    fn app_secret_json_needs_a_credential() {
        let e = AppCredentials::from_secret_json(r#"{"client_id":"c","tenant_id":"t"}"#).unwrap_err();
        assert!(e.to_string().contains("neither client_secret nor certificate"));
        let e = AppCredentials::from_secret_json("{not json").unwrap_err();
        assert!(matches!(e, TokenError::Misconfigured(_)));
        let ok = AppCredentials::from_secret_json(
            r#"{"client_id":"c","tenant_id":"t","client_secret":"s3cr3t-value"}"#,
        )
        .unwrap();
        assert!(!format!("{ok:?}").contains("s3cr3t-value"));
        assert!(ok.credential(AuthMode::AppCertificate).is_err());
        assert!(ok.credential(AuthMode::AppSecret).is_ok());
    }
}
