//! What the token endpoint's answer means: a token set, or a [`TokenError`]
//! that says who must do what. The delivery path and the OAuth client read
//! answers through the same functions, so a refusal reads the same however
//! it arrived.

use std::time::{Duration, Instant};

use oauth2::basic::{BasicErrorResponseType, BasicTokenResponse};
use oauth2::{RequestTokenError, TokenResponse};

use super::{TokenError, TokenSet};
use crate::microsoft::aadsts;
use crate::model::sensitive::Sensitive;

/// What the OAuth client makes of a token request.
pub(super) type OauthResult = Result<
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

pub(super) fn finish(result: OauthResult, app_only: bool) -> Result<TokenSet, TokenError> {
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
