//! The four Microsoft clouds and their hosts.
//!
//! An app registered in one cloud cannot sign in or call Graph in another, and
//! every scope that names the Graph resource must be spelled with that cloud's
//! Graph host (`https://graph.microsoft.us/.default` in GCC High). Keeping the
//! hosts in one table, and deriving scopes from the cloud rather than from a
//! URL override, is what keeps a GCC High or China deployment working
//! (tools that hard-code `.com` fail there).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A Microsoft 365 cloud (national cloud deployment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Cloud {
    /// Office 365, the worldwide cloud (GCC moderate uses it too).
    #[default]
    #[serde(rename = "global")]
    Global,
    /// US Government L4 (GCC High).
    #[serde(rename = "usgov-l4")]
    UsGovL4,
    /// US Government L5 (DoD).
    #[serde(rename = "usgov-l5")]
    UsGovL5,
    /// China, operated by 21Vianet.
    #[serde(rename = "china")]
    China,
}

/// Every cloud, in the order they are listed to people.
pub const ALL_CLOUDS: [Cloud; 4] = [Cloud::Global, Cloud::UsGovL4, Cloud::UsGovL5, Cloud::China];

/// The cloud name given is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown cloud {given:?}: use one of global (Office 365), usgov-l4 (GCC High), usgov-l5 (DoD) or china (21Vianet)"
)]
pub struct UnknownCloud {
    /// What was given.
    pub given: String,
}

impl Cloud {
    /// The name used in settings and API bodies (`global`, `usgov-l4`, …).
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::UsGovL4 => "usgov-l4",
            Cloud::UsGovL5 => "usgov-l5",
            Cloud::China => "china",
        }
    }

    /// The name Microsoft's documentation and portals use for this cloud.
    pub fn display_name(self) -> &'static str {
        match self {
            Cloud::Global => "Office 365 (global)",
            Cloud::UsGovL4 => "US Government L4 (GCC High)",
            Cloud::UsGovL5 => "US Government L5 (DoD)",
            Cloud::China => "China (21Vianet)",
        }
    }

    /// The identity platform host (`https://login.microsoftonline.com`).
    pub fn login_host(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::UsGovL4 | Cloud::UsGovL5 => "https://login.microsoftonline.us",
            // The current Entra national-cloud page names this host;
            // login.chinacloudapi.cn is an older alias of the same service.
            Cloud::China => "https://login.partner.microsoftonline.cn",
        }
    }

    /// The Microsoft Graph service root (`https://graph.microsoft.com`), without version.
    pub fn graph_root(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::UsGovL4 => "https://graph.microsoft.us",
            Cloud::UsGovL5 => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// The Entra admin portal where the app registration lives.
    pub fn portal(self) -> &'static str {
        match self {
            Cloud::Global => "https://portal.azure.com",
            Cloud::UsGovL4 | Cloud::UsGovL5 => "https://portal.azure.us",
            Cloud::China => "https://portal.azure.cn",
        }
    }

    /// The app-only scope for client credentials and admin consent
    /// (`https://graph.microsoft.com/.default`).
    pub fn default_scope(self) -> String {
        format!("{}/.default", self.graph_root())
    }

    /// Spells one Graph permission for this cloud: the short name in the
    /// global cloud (`Mail.Read`), the resource-qualified one elsewhere
    /// (`https://graph.microsoft.us/Mail.Read`), as Microsoft requires for
    /// national clouds. OpenID Connect scopes are never qualified.
    pub fn spell_scope(self, permission: &str) -> String {
        if is_oidc_scope(permission) || self == Cloud::Global {
            permission.to_string()
        } else {
            format!("{}/{}", self.graph_root(), permission)
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cloud {
    type Err = UnknownCloud;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        ALL_CLOUDS
            .into_iter()
            .find(|c| c.name() == wanted)
            .ok_or_else(|| UnknownCloud { given: s.to_string() })
    }
}

/// OpenID Connect scopes: never qualified with a resource host.
const OIDC_SCOPES: [&str; 4] = ["offline_access", "openid", "email", "profile"];

/// True for the OpenID Connect scopes, which belong to no resource.
pub fn is_oidc_scope(scope: &str) -> bool {
    OIDC_SCOPES.contains(&scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cloud_has_its_documented_hosts() {
        let table = [
            (
                Cloud::Global,
                "https://login.microsoftonline.com",
                "https://graph.microsoft.com",
            ),
            (
                Cloud::UsGovL4,
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us",
            ),
            (
                Cloud::UsGovL5,
                "https://login.microsoftonline.us",
                "https://dod-graph.microsoft.us",
            ),
            (
                Cloud::China,
                "https://login.partner.microsoftonline.cn",
                "https://microsoftgraph.chinacloudapi.cn",
            ),
        ];
        for (cloud, login, graph) in table {
            assert_eq!(cloud.login_host(), login);
            assert_eq!(cloud.graph_root(), graph);
            assert_eq!(cloud.default_scope(), format!("{graph}/.default"));
            assert_eq!(cloud.name().parse::<Cloud>().unwrap(), cloud);
        }
    }

    #[test]
    fn names_parse_case_insensitively_and_round_trip_through_json() {
        assert_eq!("USGOV-L4".parse::<Cloud>().unwrap(), Cloud::UsGovL4);
        assert_eq!(serde_json::to_string(&Cloud::UsGovL5).unwrap(), "\"usgov-l5\"");
        assert_eq!(serde_json::from_str::<Cloud>("\"china\"").unwrap(), Cloud::China);
    }

    #[test]
    fn unknown_cloud_lists_the_valid_names() {
        let err = "gcc".parse::<Cloud>().unwrap_err().to_string();
        for name in ["global", "usgov-l4", "usgov-l5", "china"] {
            assert!(err.contains(name), "{err}");
        }
        assert!(err.contains("\"gcc\""));
    }

    #[test]
    fn scopes_are_spelled_for_the_cloud() {
        assert_eq!(Cloud::Global.spell_scope("Mail.Read"), "Mail.Read");
        assert_eq!(
            Cloud::UsGovL4.spell_scope("Mail.Read"),
            "https://graph.microsoft.us/Mail.Read"
        );
        assert_eq!(
            Cloud::UsGovL5.spell_scope("Mail.Send"),
            "https://dod-graph.microsoft.us/Mail.Send"
        );
        assert_eq!(
            Cloud::China.spell_scope("Calendars.Read"),
            "https://microsoftgraph.chinacloudapi.cn/Calendars.Read"
        );
        for cloud in ALL_CLOUDS {
            assert_eq!(cloud.spell_scope("offline_access"), "offline_access");
            assert_eq!(cloud.spell_scope("openid"), "openid");
        }
    }
}
