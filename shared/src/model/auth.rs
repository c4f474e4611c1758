//! How a connection authenticates to Microsoft: the one word every layer
//! (scopes, records, tokens, Graph paths) decides on.

use serde::{Deserialize, Serialize};

/// How a connection authenticates to Microsoft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A user signs in (authorization code with PKCE); a refresh token is kept.
    Delegated,
    /// App-only with the app's client secret (client credentials).
    AppSecret,
    /// App-only with the app's certificate (signed client assertion).
    AppCertificate,
}

impl AuthMode {
    /// The API name (`delegated`, `app_secret`, `app_certificate`).
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::Delegated => "delegated",
            AuthMode::AppSecret => "app_secret",
            AuthMode::AppCertificate => "app_certificate",
        }
    }

    /// True for both app-only modes.
    pub fn is_app_only(self) -> bool {
        self != AuthMode::Delegated
    }
}

#[cfg(test)]
mod tests {
    use super::AuthMode;

    #[test]
    fn names_and_kinds() {
        for (mode, name, app_only) in [
            (AuthMode::Delegated, "delegated", false),
            (AuthMode::AppSecret, "app_secret", true),
            (AuthMode::AppCertificate, "app_certificate", true),
        ] {
            assert_eq!(mode.name(), name);
            assert_eq!(mode.is_app_only(), app_only);
            assert_eq!(serde_json::to_value(mode).unwrap(), name);
        }
    }
}
