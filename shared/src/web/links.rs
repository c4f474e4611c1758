//! The signed values that carry a connection through sign-in: connect links,
//! OAuth `state`, the browser-binding cookie, and admin-consent `state`.
//!
//! `connections` mints them and `oauth-callback` checks them; keeping both
//! sides here means the purposes, lifetimes and shapes cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::model::connection::Connection;
use crate::web::signing::{SignError, Signer};

/// How long a connect link works (a new one comes with every
/// `GET /connections/{id}` and every `connection.reauth_required` event).
pub const CONNECT_LINK_TTL_SECS: i64 = 24 * 3600;
/// How long a sign-in may take, from `/oauth/start` to the callback.
pub const SIGN_IN_TTL_SECS: i64 = 15 * 60;
/// How long an admin-consent link works.
pub const ADMIN_CONSENT_TTL_SECS: i64 = 7 * 24 * 3600;
/// The cookie that binds a sign-in to the browser that started it.
pub const OAUTH_COOKIE: &str = "relay365_oauth";

/// Signing purpose.
pub const CONNECT_LINK: &str = "connect-link";
/// Signing purpose.
pub const OAUTH_STATE: &str = "oauth-state";
/// Signing purpose.
pub const OAUTH_COOKIE_PURPOSE: &str = "oauth-cookie";
/// Signing purpose.
pub const ADMIN_STATE: &str = "admin-consent-state";

/// What a connect link names.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkBody {
    /// The connection id.
    pub c: String,
    /// The sign-in generation the link was made for: once a sign-in through
    /// it completes, the generation moves on and the link is spent.
    #[serde(default)]
    pub g: u64,
}

/// What the OAuth `state` carries (it travels through Microsoft and the URL bar).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateBody {
    /// The connection id.
    pub c: String,
    /// The sign-in's nonce.
    pub n: String,
}

/// What the encrypted cookie carries (never readable by the browser).
#[derive(Debug, Serialize, Deserialize)]
pub struct CookieBody {
    /// The connection id.
    pub c: String,
    /// The sign-in's nonce.
    pub n: String,
    /// The PKCE verifier.
    pub v: String,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `{public_url}/oauth/start?link=…` for a delegated connection at sign-in
/// generation `generation`.
pub fn connect_url(public_url: &url::Url, signer: &Signer, connection_id: &str, generation: u64) -> String {
    let link = signer.seal(
        CONNECT_LINK,
        &LinkBody {
            c: connection_id.to_string(),
            g: generation,
        },
        now() + CONNECT_LINK_TTL_SECS,
    );
    format!(
        "{}/oauth/start?link={link}",
        public_url.as_str().trim_end_matches('/')
    )
}

/// The redirect URI of delegated sign-in: `{public_url}/oauth/callback`.
pub fn callback_uri(public_url: &url::Url) -> String {
    format!("{}/oauth/callback", public_url.as_str().trim_end_matches('/'))
}

/// The redirect URI of admin consent: `{public_url}/oauth/admin-consent`.
pub fn admin_consent_uri(public_url: &url::Url) -> String {
    format!(
        "{}/oauth/admin-consent",
        public_url.as_str().trim_end_matches('/')
    )
}

/// The admin-consent link of an app-only connection: it starts at
/// `{public_url}/oauth/admin-consent?link=…`, where oauth-callback binds the
/// administrator's browser (a cookie and a nonce) before sending them on to
/// Microsoft, so the link works once and only in that browser.
pub fn admin_consent_url(public_url: &url::Url, signer: &Signer, conn: &Connection) -> String {
    let state = signer.seal(
        ADMIN_STATE,
        &LinkBody {
            c: conn.id.clone(),
            g: conn.generation,
        },
        now() + ADMIN_CONSENT_TTL_SECS,
    );
    let link: String = url::form_urlencoded::byte_serialize(state.as_bytes()).collect();
    format!("{}?link={link}", admin_consent_uri(public_url))
}

/// Checks a connect link.
///
/// # Errors
/// [`SignError`] when forged, altered or expired.
pub fn open_connect_link(signer: &Signer, link: &str) -> Result<LinkBody, SignError> {
    signer.open(CONNECT_LINK, link, now())
}

/// The OAuth `state` of a new sign-in.
pub fn sign_in_state(signer: &Signer, connection_id: &str, nonce: &str) -> String {
    signer.seal(
        OAUTH_STATE,
        &StateBody {
            c: connection_id.into(),
            n: nonce.into(),
        },
        now() + SIGN_IN_TTL_SECS,
    )
}

/// The encrypted cookie value of a new sign-in, carrying the PKCE verifier.
pub fn sign_in_cookie(signer: &Signer, connection_id: &str, nonce: &str, verifier: &str) -> String {
    let body = CookieBody {
        c: connection_id.into(),
        n: nonce.into(),
        v: verifier.into(),
    };
    signer.seal_private(OAUTH_COOKIE_PURPOSE, &body, now() + SIGN_IN_TTL_SECS)
}

/// Checks an OAuth `state`.
///
/// # Errors
/// [`SignError`] when forged, altered or expired.
pub fn open_state(signer: &Signer, state: &str) -> Result<StateBody, SignError> {
    signer.open(OAUTH_STATE, state, now())
}

/// Opens the sign-in cookie.
///
/// # Errors
/// [`SignError`] when forged, altered or expired.
pub fn open_cookie(signer: &Signer, cookie: &str) -> Result<CookieBody, SignError> {
    signer.open_private(OAUTH_COOKIE_PURPOSE, cookie, now())
}

/// Checks an admin-consent `state`.
///
/// # Errors
/// [`SignError`] when forged, altered or expired.
pub fn open_admin_state(signer: &Signer, state: &str) -> Result<LinkBody, SignError> {
    signer.open(ADMIN_STATE, state, now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sensitive::Sensitive;

    #[test]
    fn a_connect_link_opens_for_its_connection_and_nothing_else() {
        let signer = Signer::new(&Sensitive::new(
            "unit-test-signing-key-0123456789abcdef0123456789",
        ))
        .unwrap();
        let public = url::Url::parse("https://relay.example").unwrap();
        let url = url::Url::parse(&connect_url(&public, &signer, "support", 0)).unwrap();
        assert_eq!(url.path(), "/oauth/start");
        let link = url
            .query_pairs()
            .find(|(k, _)| k == "link")
            .unwrap()
            .1
            .into_owned();
        assert_eq!(open_connect_link(&signer, &link).unwrap().c, "support");
        // A link is not a sign-in state, and a state is not a link.
        assert!(open_state(&signer, &link).is_err());
        let state = sign_in_state(&signer, "support", "n1");
        assert!(open_connect_link(&signer, &state).is_err());
        assert_eq!(open_state(&signer, &state).unwrap().n, "n1");
        assert_eq!(callback_uri(&public), "https://relay.example/oauth/callback");
    }
}
