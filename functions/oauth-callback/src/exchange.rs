//! The code exchange of a delegated sign-in, keeping Microsoft's ID token.
//!
//! The shared token client reads a token answer into a `TokenSet`, which has
//! no place for the `id_token`; a sign-in needs it to know which organisation
//! and which user Microsoft signed in. So the sign-in sends the same request
//! itself (the same form, the same credential: the client secret if the app
//! secret has one, else a certificate assertion), then reads the one answer
//! twice: through `tokens::token_answer`, so tokens and refusals mean exactly
//! what they mean everywhere else, and for its `id_token`.

use relay365::Sensitive;
use relay365::microsoft::certificate::Certificate;
use relay365::microsoft::tokens::{TokenError, TokenSet, token_answer};
use relay365::services::Services;
use serde::Deserialize;

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What a redeemed code gives: the tokens, and the ID token when `openid` was granted.
pub(crate) struct SignInTokens {
    pub(crate) tokens: TokenSet,
    pub(crate) id_token: Option<Sensitive>,
}

#[derive(Deserialize)]
struct AppSecret {
    client_id: String,
    #[serde(default)]
    client_secret: Option<Sensitive>,
    #[serde(default)]
    certificate: Option<CertificateJson>,
}

#[derive(Deserialize)]
struct CertificateJson {
    pfx_base64: Sensitive,
    #[serde(default)]
    password: Sensitive,
}

#[derive(Deserialize)]
struct IdTokenField {
    #[serde(default)]
    id_token: Option<Sensitive>,
}

/// Redeems `code` at the token endpoint of `tenant`.
///
/// # Errors
/// The [`TokenError`] Microsoft's refusal (or an unusable app secret) becomes.
pub(crate) async fn exchange_code(
    s: &Services,
    tenant: &str,
    code: &Sensitive,
    verifier: &Sensitive,
    redirect_uri: &str,
    scope: &str,
) -> Result<SignInTokens, TokenError> {
    let raw = s
        .store
        .get(&s.config.app_secret_id)
        .await?
        .ok_or_else(|| TokenError::Misconfigured("the app secret has no value".into()))?;
    // serde's message would name a position only; no value is repeated.
    let app: AppSecret = serde_json::from_str(&raw).map_err(|_| {
        TokenError::Misconfigured(
            "expected {\"client_id\", \"tenant_id\", \"client_secret\"?, \"certificate\"?}".into(),
        )
    })?;
    let token_url = s.tokens.client().token_url(tenant);
    let mut form: Vec<(&str, String)> = vec![
        ("grant_type", "authorization_code".into()),
        ("client_id", app.client_id.clone()),
        ("code", code.expose().to_string()),
        ("redirect_uri", redirect_uri.to_string()),
        ("code_verifier", verifier.expose().to_string()),
        ("scope", scope.to_string()),
    ];
    // A delegated connection uses the client secret if there is one, else the certificate.
    match (app.client_secret.filter(|c| !c.is_empty()), app.certificate) {
        (Some(secret), _) => form.push(("client_secret", secret.expose().to_string())),
        (None, Some(c)) => {
            let cert = Certificate::from_pfx_base64(c.pfx_base64.expose(), c.password.expose())
                .map_err(|e| TokenError::Misconfigured(e.to_string()))?;
            let assertion = cert
                .client_assertion(&app.client_id, &token_url, time::OffsetDateTime::now_utc())
                .map_err(|e| TokenError::Misconfigured(e.to_string()))?;
            form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE.into()));
            form.push(("client_assertion", assertion));
        }
        (None, None) => {
            return Err(TokenError::Misconfigured(
                "it has neither client_secret nor certificate: add one with infra/set-app-secret.sh".into(),
            ));
        }
    }
    let req = s
        .http
        .post(&token_url)
        .header("accept", "application/json")
        .form(&form);
    let (status, body) = relay365::https::send_and_read(req)
        .await
        .map_err(|why| TokenError::Unavailable(why.into()))?;
    let tokens = token_answer(status, &body, false)?;
    let id_token = serde_json::from_slice::<IdTokenField>(&body)
        .ok()
        .and_then(|f| f.id_token)
        .filter(|t| !t.is_empty());
    Ok(SignInTokens { tokens, id_token })
}
