//! The identity platform's authorize and token endpoints: the authorize URL
//! of a delegated sign-in, the code and refresh-token grants, and client
//! credentials. A certificate proves the app with a signed assertion sent
//! next to the request; a client secret goes in the form body.

use std::sync::Arc;

use oauth2::basic::{BasicClient, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, Scope, TokenUrl,
};
use time::OffsetDateTime;

use super::answer::finish;
use super::credentials::Credential;
use super::{AppCredentials, TokenError, TokenSet};
use crate::aws::secret_value::SecretValue;
use crate::model::cloud::Cloud;
use crate::model::connection::AuthMode;
use crate::model::scopes;
use crate::model::sensitive::Sensitive;

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

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

crate::debug_showing!(TokenClient { login_base });

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

    /// The form parameters that authenticate the app with its certificate
    /// (a signed client assertion, made fresh for each request); none for a
    /// secret, which the OAuth client sends itself.
    fn assertion(
        &self,
        app: &AppCredentials,
        tenant: &str,
        credential: Credential<'_>,
    ) -> Result<Vec<(&'static str, String)>, TokenError> {
        match credential {
            Credential::Secret(_) => Ok(Vec::new()),
            Credential::Certificate(cert) => cert
                .client_assertion(&app.client_id, &self.token_url(tenant), OffsetDateTime::now_utc())
                .map(|a| {
                    vec![
                        ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_string()),
                        ("client_assertion", a),
                    ]
                })
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
        for (name, value) in self.assertion(&app, tenant, cred)? {
            req = req.add_extra_param(name, value);
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
        for (name, value) in self.assertion(&app, tenant, cred)? {
            req = req.add_extra_param(name, value);
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
        for (name, value) in self.assertion(&app, tenant, cred)? {
            req = req.add_extra_param(name, value);
        }
        finish(req.request_async(&self.http).await, true)
    }
}
