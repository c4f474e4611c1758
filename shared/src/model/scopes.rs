//! Feature scopes, the Graph permissions they stand for, and the rules about
//! which combinations can work.
//!
//! Callers ask for features (`Mail.ReadOnly`, `Calendar.ReadOnly`, …), the same
//! vocabulary connection tools such as Aurinko use; this module maps them to
//! Microsoft Graph delegated permissions, adds what every delegated sign-in
//! needs, and refuses requests that Microsoft would accept at sign-in but that
//! could never work afterwards (a delegated subscription to someone else's
//! mailbox, `.Shared` permissions for change notifications, app-only without a
//! mailbox). Refusing early, with the reason, beats a connection that looks
//! healthy and never delivers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::auth::AuthMode;
use crate::model::cloud::Cloud;

/// A feature scope of relay365's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeatureScope {
    /// Read mail (Graph `Mail.Read`).
    MailReadOnly,
    /// Read and write mail (Graph `Mail.ReadWrite`).
    MailReadWrite,
    /// Create drafts (Graph `Mail.ReadWrite`).
    MailDraft,
    /// Send mail as the connected mailbox (Graph `Mail.Send`).
    MailSend,
    /// Send as, or on behalf of, a shared mailbox the signed-in user has rights on
    /// (Graph delegated `Mail.Send.Shared`; delegated connections only).
    MailSendShared,
    /// Read calendars (Graph `Calendars.Read`).
    CalendarReadOnly,
    /// Read and write calendars (Graph `Calendars.ReadWrite`).
    CalendarReadWrite,
    /// Read contacts (Graph `Contacts.Read`).
    ContactsReadOnly,
    /// Read and write contacts (Graph `Contacts.ReadWrite`).
    ContactsReadWrite,
    /// Read tasks (Graph `Tasks.Read`).
    TasksReadOnly,
    /// Read and write tasks (Graph `Tasks.ReadWrite`).
    TasksReadWrite,
}

/// Every feature scope with its API name and Graph permission, in the stable
/// order used everywhere scopes are listed.
pub const SCOPE_TABLE: [(FeatureScope, &str, &str); 11] = [
    (FeatureScope::MailReadOnly, "Mail.ReadOnly", "Mail.Read"),
    (FeatureScope::MailReadWrite, "Mail.ReadWrite", "Mail.ReadWrite"),
    (FeatureScope::MailDraft, "Mail.Draft", "Mail.ReadWrite"),
    (FeatureScope::MailSend, "Mail.Send", "Mail.Send"),
    (
        FeatureScope::MailSendShared,
        "Mail.Send.Shared",
        "Mail.Send.Shared",
    ),
    (
        FeatureScope::CalendarReadOnly,
        "Calendar.ReadOnly",
        "Calendars.Read",
    ),
    (
        FeatureScope::CalendarReadWrite,
        "Calendar.ReadWrite",
        "Calendars.ReadWrite",
    ),
    (
        FeatureScope::ContactsReadOnly,
        "Contacts.ReadOnly",
        "Contacts.Read",
    ),
    (
        FeatureScope::ContactsReadWrite,
        "Contacts.ReadWrite",
        "Contacts.ReadWrite",
    ),
    (FeatureScope::TasksReadOnly, "Tasks.ReadOnly", "Tasks.Read"),
    (FeatureScope::TasksReadWrite, "Tasks.ReadWrite", "Tasks.ReadWrite"),
];

/// Scopes every delegated sign-in requests, whatever the features:
/// a refresh token (`offline_access`), the user's identity (`openid email
/// profile User.Read`) and the mailbox settings (time zone, for events).
pub const IMPLICIT_DELEGATED: [&str; 6] = [
    "offline_access",
    "openid",
    "email",
    "profile",
    "User.Read",
    "MailboxSettings.Read",
];

impl FeatureScope {
    /// The API name (`Mail.ReadOnly`).
    pub fn name(self) -> &'static str {
        SCOPE_TABLE
            .iter()
            .find(|row| row.0 == self)
            .map_or("", |row| row.1)
    }

    /// The Microsoft Graph permission this feature needs (`Mail.Read`).
    pub fn graph_permission(self) -> &'static str {
        SCOPE_TABLE
            .iter()
            .find(|row| row.0 == self)
            .map_or("", |row| row.2)
    }

    /// Whether this scope lets the connection read mail (and so subscribe to it).
    pub fn reads_mail(self) -> bool {
        matches!(self, FeatureScope::MailReadOnly | FeatureScope::MailReadWrite)
    }

    /// Whether this scope lets the connection read calendars.
    pub fn reads_calendar(self) -> bool {
        matches!(
            self,
            FeatureScope::CalendarReadOnly | FeatureScope::CalendarReadWrite
        )
    }
}

impl fmt::Display for FeatureScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FeatureScope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SCOPE_TABLE
            .iter()
            .find(|row| row.1 == s)
            .map(|row| row.0)
            .ok_or_else(|| ScopeError::Unknown { given: s.to_string() })
    }
}

impl Serialize for FeatureScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for FeatureScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The names of every valid feature scope, comma separated, for messages.
pub fn valid_names() -> String {
    SCOPE_TABLE.iter().map(|row| row.1).collect::<Vec<_>>().join(", ")
}

/// A scope request that cannot be honoured, with the reason and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The name is not part of the vocabulary.
    #[error("unknown scope {given:?}: valid scopes are {}", valid_names())]
    Unknown {
        /// What was given.
        given: String,
    },
    /// No scope was requested at all.
    #[error("no scopes requested: name at least one of {}", valid_names())]
    Empty,
    /// The request cannot work; the message says why and what to do instead.
    #[error("{0}")]
    Refused(String),
}

/// Parses feature-scope names, de-duplicating them and putting them in the
/// stable table order.
pub fn parse_scopes<S: AsRef<str>>(names: &[S]) -> Result<Vec<FeatureScope>, ScopeError> {
    if names.is_empty() {
        return Err(ScopeError::Empty);
    }
    let mut out = names
        .iter()
        .map(|n| n.as_ref().parse())
        .collect::<Result<Vec<FeatureScope>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// The Graph permissions for a set of feature scopes, de-duplicated, in table order.
pub fn graph_permissions(features: &[FeatureScope]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (scope, _, permission) in SCOPE_TABLE {
        if features.contains(&scope) && !out.contains(&permission) {
            out.push(permission);
        }
    }
    out
}

/// The `scope` parameter of a delegated authorize or token request: the
/// implicit scopes followed by the features' permissions, each spelled for the
/// cloud, de-duplicated, space separated.
pub fn delegated_scope_param(cloud: Cloud, features: &[FeatureScope]) -> String {
    let mut all: Vec<&str> = IMPLICIT_DELEGATED.to_vec();
    for p in graph_permissions(features) {
        if !all.contains(&p) {
            all.push(p);
        }
    }
    all.iter()
        .map(|p| cloud.spell_scope(p))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The scope of every app-only (client credentials) token request: the
/// cloud's `/.default`. Application permissions are whatever the admin
/// consented to on the app registration; they cannot be requested one by one.
pub fn app_only_scope(cloud: Cloud) -> String {
    cloud.default_scope()
}

/// What a connection is used for; each needs a minimum set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Establish the connection at all.
    Connect,
    /// Receive an event for new mail.
    MailTrigger,
    /// Receive an event for calendar changes.
    CalendarTrigger,
    /// Send mail as the connected mailbox.
    Send,
    /// Send as a shared mailbox.
    SendAsShared,
}

/// The least Graph permissions a capability needs for an auth mode: delegated
/// permissions for `delegated`, application permissions (granted by admin
/// consent) for the app-only modes.
pub fn minimum_permissions(capability: Capability, auth: AuthMode) -> Vec<&'static str> {
    let delegated = auth == AuthMode::Delegated;
    match capability {
        Capability::Connect if delegated => vec!["offline_access", "openid", "User.Read"],
        // App-only has no signed-in user: proving admin consent is a token
        // request, which needs no particular permission.
        Capability::Connect => vec![],
        // The event carries the body, which Mail.ReadBasic does not grant.
        Capability::MailTrigger => vec!["Mail.Read"],
        Capability::CalendarTrigger => vec!["Calendars.Read"],
        Capability::Send => vec!["Mail.Send"],
        Capability::SendAsShared if delegated => vec!["Mail.Send", "Mail.Send.Shared"],
        // Application Mail.Send already sends as any mailbox of the tenant.
        Capability::SendAsShared => vec!["Mail.Send"],
    }
}

/// Checks that a set of feature scopes makes sense for an auth mode.
///
/// # Errors
/// [`ScopeError::Refused`] when Microsoft has no such permission for the mode.
pub fn check_scopes_for_auth(auth: AuthMode, features: &[FeatureScope]) -> Result<(), ScopeError> {
    if auth != AuthMode::Delegated && features.contains(&FeatureScope::MailSendShared) {
        return Err(ScopeError::Refused(
            "Mail.Send.Shared is a delegated permission: an app-only connection already sends as any \
             mailbox of the tenant with application Mail.Send. Ask for Mail.Send instead."
                .into(),
        ));
    }
    Ok(())
}

/// Which mailbox resource a subscription watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// Messages in a mail folder.
    Mail,
    /// Events of the primary calendar.
    Calendar,
}

impl Resource {
    /// Every resource, in the order they are listed.
    pub const ALL: [Resource; 2] = [Resource::Mail, Resource::Calendar];

    /// The API's name for it (`mail`, `calendar`), as it is serialized.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Mail => "mail",
            Resource::Calendar => "calendar",
        }
    }

    /// The resource an API name stands for, if any.
    pub fn from_name(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Checks that a connection may subscribe to a resource.
///
/// `own_mailbox` says whether the mailbox to watch is the signed-in user's own
/// (always true for app-only, where the connection *is* the mailbox).
///
/// # Errors
/// [`ScopeError::Refused`] with the reason and the fix.
pub fn check_subscription(
    auth: AuthMode,
    features: &[FeatureScope],
    resource: Resource,
    mailbox: Option<&str>,
    own_mailbox: bool,
) -> Result<(), ScopeError> {
    if auth == AuthMode::Delegated && !own_mailbox {
        return Err(ScopeError::Refused(format!(
            "a delegated connection can only subscribe to the signed-in user's own mailbox, not to {}: \
             Microsoft's .Shared permissions (Mail.Read.Shared, Calendars.Read.Shared) do not support change \
             notifications. Create an app-only connection (auth app_secret or app_certificate) for that \
             mailbox, with the application permission {} and admin consent.",
            mailbox.unwrap_or("another mailbox"),
            if resource == Resource::Mail {
                "Mail.Read"
            } else {
                "Calendars.Read"
            }
        )));
    }
    let ok = match resource {
        Resource::Mail => features.iter().any(|f| f.reads_mail()),
        Resource::Calendar => features.iter().any(|f| f.reads_calendar()),
    };
    if !ok {
        let (need, perm) = match resource {
            Resource::Mail => ("Mail.ReadOnly", "Mail.Read"),
            Resource::Calendar => ("Calendar.ReadOnly", "Calendars.Read"),
        };
        let kind = if auth == AuthMode::Delegated {
            "delegated"
        } else {
            "application"
        };
        return Err(ScopeError::Refused(format!(
            "a {} subscription needs read access: add {need} to the connection's scopes (Graph {kind} \
             permission {perm}); write or send permissions do not allow subscriptions",
            resource.name()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_the_scope_table_maps_to_its_graph_permission() {
        let expected = [
            ("Mail.ReadOnly", "Mail.Read"),
            ("Mail.ReadWrite", "Mail.ReadWrite"),
            ("Mail.Draft", "Mail.ReadWrite"),
            ("Mail.Send", "Mail.Send"),
            ("Calendar.ReadOnly", "Calendars.Read"),
            ("Calendar.ReadWrite", "Calendars.ReadWrite"),
            ("Contacts.ReadOnly", "Contacts.Read"),
            ("Contacts.ReadWrite", "Contacts.ReadWrite"),
            ("Tasks.ReadOnly", "Tasks.Read"),
            ("Tasks.ReadWrite", "Tasks.ReadWrite"),
            ("Mail.Send.Shared", "Mail.Send.Shared"),
        ];
        for (name, permission) in expected {
            let scope: FeatureScope = name.parse().unwrap();
            assert_eq!(scope.graph_permission(), permission, "{name}");
            assert_eq!(scope.name(), name);
            assert_eq!(graph_permissions(&[scope]), vec![permission]);
        }
    }

    #[test]
    fn resource_names_are_their_serialized_names() {
        for r in Resource::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name());
            assert_eq!(Resource::from_name(r.name()), Some(r));
        }
        assert_eq!(Resource::from_name("contacts"), None);
    }

    #[test]
    fn unknown_scope_lists_every_valid_name() {
        let err = parse_scopes(&["Mail.Read"]).unwrap_err().to_string();
        assert!(err.contains("\"Mail.Read\""), "{err}");
        for (_, name, _) in SCOPE_TABLE {
            assert!(err.contains(name), "{err} lacks {name}");
        }
        assert_eq!(parse_scopes::<&str>(&[]).unwrap_err(), ScopeError::Empty);
    }

    #[test]
    fn scopes_are_deduplicated_in_a_stable_order() {
        let a = parse_scopes(&["Mail.Send", "Mail.ReadOnly", "Mail.Send", "Calendar.ReadOnly"]).unwrap();
        let b = parse_scopes(&["Calendar.ReadOnly", "Mail.ReadOnly", "Mail.Send"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a,
            vec![
                FeatureScope::MailReadOnly,
                FeatureScope::MailSend,
                FeatureScope::CalendarReadOnly
            ]
        );
        // Mail.ReadWrite and Mail.Draft both need Mail.ReadWrite: asked once.
        let both = parse_scopes(&["Mail.Draft", "Mail.ReadWrite"]).unwrap();
        assert_eq!(graph_permissions(&both), vec!["Mail.ReadWrite"]);
    }

    #[test]
    fn delegated_requests_carry_the_implicit_scopes_first() {
        let features = parse_scopes(&["Mail.Send", "Mail.ReadOnly"]).unwrap();
        assert_eq!(
            delegated_scope_param(Cloud::Global, &features),
            "offline_access openid email profile User.Read MailboxSettings.Read Mail.Read Mail.Send"
        );
    }

    #[test]
    fn delegated_requests_are_spelled_for_each_cloud() {
        let features = parse_scopes(&["Mail.ReadOnly"]).unwrap();
        for (cloud, host) in [
            (Cloud::UsGovL4, "https://graph.microsoft.us"),
            (Cloud::UsGovL5, "https://dod-graph.microsoft.us"),
            (Cloud::China, "https://microsoftgraph.chinacloudapi.cn"),
        ] {
            assert_eq!(
                delegated_scope_param(cloud, &features),
                format!(
                    "offline_access openid email profile {host}/User.Read {host}/MailboxSettings.Read {host}/Mail.Read"
                )
            );
            assert_eq!(app_only_scope(cloud), format!("{host}/.default"));
        }
        assert_eq!(
            app_only_scope(Cloud::Global),
            "https://graph.microsoft.com/.default"
        );
    }

    #[test]
    fn minimum_sets_per_capability() {
        use AuthMode::*;
        use Capability::*;
        assert_eq!(
            minimum_permissions(Connect, Delegated),
            vec!["offline_access", "openid", "User.Read"]
        );
        assert!(minimum_permissions(Connect, AppSecret).is_empty());
        assert_eq!(minimum_permissions(MailTrigger, Delegated), vec!["Mail.Read"]);
        assert_eq!(
            minimum_permissions(MailTrigger, AppCertificate),
            vec!["Mail.Read"]
        );
        assert_eq!(
            minimum_permissions(CalendarTrigger, Delegated),
            vec!["Calendars.Read"]
        );
        assert_eq!(minimum_permissions(Send, AppSecret), vec!["Mail.Send"]);
        assert_eq!(
            minimum_permissions(SendAsShared, Delegated),
            vec!["Mail.Send", "Mail.Send.Shared"]
        );
        assert_eq!(minimum_permissions(SendAsShared, AppSecret), vec!["Mail.Send"]);
    }

    #[test]
    fn delegated_subscription_to_another_mailbox_is_refused_with_the_fix() {
        let features = parse_scopes(&["Mail.ReadOnly"]).unwrap();
        let err = check_subscription(
            AuthMode::Delegated,
            &features,
            Resource::Mail,
            Some("shared@contoso.com"),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("shared@contoso.com"), "{err}");
        assert!(err.contains(".Shared"), "{err}");
        assert!(err.contains("app-only"), "{err}");
        assert!(check_subscription(AuthMode::Delegated, &features, Resource::Mail, None, true).is_ok());
        assert!(
            check_subscription(
                AuthMode::AppSecret,
                &features,
                Resource::Mail,
                Some("x@y.z"),
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn subscription_without_read_permission_is_refused() {
        let features = parse_scopes(&["Mail.Send"]).unwrap();
        let err = check_subscription(AuthMode::Delegated, &features, Resource::Mail, None, true).unwrap_err();
        assert!(err.to_string().contains("add Mail.ReadOnly"), "{err}");
        let err =
            check_subscription(AuthMode::AppSecret, &features, Resource::Calendar, None, true).unwrap_err();
        assert!(err.to_string().contains("Calendar.ReadOnly"), "{err}");
        assert!(
            err.to_string().contains("application permission Calendars.Read"),
            "{err}"
        );
    }

    #[test]
    fn shared_send_is_delegated_only() {
        let features = parse_scopes(&["Mail.Send.Shared"]).unwrap();
        assert!(check_scopes_for_auth(AuthMode::Delegated, &features).is_ok());
        let err = check_scopes_for_auth(AuthMode::AppCertificate, &features)
            .unwrap_err()
            .to_string();
        assert!(err.contains("application Mail.Send"), "{err}");
    }
}
