//! The app registration's credentials, as the deployment's app secret holds
//! them, and the choice of the one a token request proves the app with: a
//! connection's auth mode decides between the client secret and the
//! certificate.

use serde::Deserialize;

use super::{ClassifyMessage, TokenError};
use crate::microsoft::certificate::{Certificate, CertificateError};
use crate::model::connection::AuthMode;
use crate::model::sensitive::Sensitive;

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
pub(super) enum Credential<'a> {
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

    pub(super) fn credential(&self, mode: AuthMode) -> Result<Credential<'_>, TokenError> {
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
