//! Settings, read once from the environment at cold start.
//!
//! Everything a function needs to know about its deployment comes from here,
//! validated up front: a mistyped cloud or a URL override with a path fails
//! the first invocation with a message that names the variable and the fix,
//! instead of failing later at Microsoft with an opaque error.

use std::collections::HashMap;
use std::path::PathBuf;

use url::Url;

use crate::model::cloud::Cloud;
use crate::model::target::{Target, check_public_url};

/// Where secrets are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// AWS Secrets Manager.
    Aws,
    /// A local directory (`file:DIR`).
    File(PathBuf),
}

/// A setting is missing or invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {name}: {message}")]
pub struct ConfigError {
    /// The environment variable.
    pub name: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The settings of a deployment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `RELAY365_CLOUD`.
    pub cloud: Cloud,
    /// `RELAY365_APP_SECRET_ID`.
    pub app_secret_id: String,
    /// `RELAY365_SIGNING_KEY_SECRET_ID`.
    pub signing_key_secret_id: String,
    /// `RELAY365_EVENT_SIGNING_SECRET_ID`: the event signing secret (mail-dispatch).
    pub event_signing_secret_id: Option<String>,
    /// `RELAY365_SECRET_PREFIX`.
    pub secret_prefix: String,
    /// `RELAY365_PUBLIC_URL`, without a trailing slash.
    pub public_url: Option<Url>,
    /// `RELAY365_QUEUE_URL`.
    pub queue_url: Option<String>,
    /// `RELAY365_SEND_QUEUE_URL`: send-mail's deferred-send queue, for sends
    /// too large to finish within API Gateway's time limit. Unset: every
    /// send is made in the request.
    pub send_queue_url: Option<String>,
    /// `RELAY365_DEFAULT_TARGET`.
    pub default_target: Option<Target>,
    /// `RELAY365_LOGIN_URL`: the identity host override (scheme, host, port).
    pub login_url: Option<Url>,
    /// `RELAY365_GRAPH_URL`: the Graph host override (scheme, host, port).
    pub graph_url: Option<Url>,
    /// `RELAY365_ATTACHMENTS_BUCKET`.
    pub attachments_bucket: Option<String>,
    /// `RELAY365_SECRET_STORE`.
    pub secret_store: StoreKind,
    /// `RELAY365_ALLOWED_SENDERS`: for app-only connections, the addresses
    /// send-mail may send as besides the connection's mailbox (`*@domain`
    /// allows a whole domain), lowercased.
    pub allowed_senders: Vec<String>,
    /// `RELAY365_LOCAL=1`: a local run (the demo, the tests), where loopback
    /// targets and public URLs (and plain `http://` to them) are allowed.
    pub local: bool,
    /// `RELAY365_STATE_TABLE`: the DynamoDB table of connections,
    /// subscriptions, deliveries and idempotency keys. Without it (a local
    /// run with `RELAY365_SECRET_STORE=file:DIR` only) state is kept in memory.
    pub state_table: Option<String>,
    /// `RELAY365_SECRET_TTL_SECONDS` (default and most 300): how long a warm
    /// container trusts what it read from Secrets Manager (the signing keys,
    /// the app secret, tokens) before reading it again.
    pub secret_ttl: std::time::Duration,
    /// The function's own `Timeout` (`RELAY365_FUNCTION_TIMEOUT_SECONDS`, the
    /// template sets it beside `Timeout`): the time an invocation has when
    /// the runtime gives no usable deadline (`cargo lambda watch` sends one
    /// in 1970).
    pub function_timeout: Option<std::time::Duration>,
    /// mail-dispatch: the wait before a failed record's first retry
    /// (`RELAY365_FIRST_RETRY_SECONDS`, 1 to 300; doubled each time, at most
    /// an hour). Unset: 5 seconds.
    pub first_retry: Option<std::time::Duration>,
    /// `RELAY365_TOKEN_KEY_ID`: the KMS key (id, alias or ARN) that seals
    /// delegated refresh tokens in the state table. Unset: one Secrets
    /// Manager secret per delegated connection.
    pub token_key_id: Option<String>,
}

/// `RELAY365_TOKEN_KEY_ID`: a key id, `alias/NAME` or an ARN, one word.
fn token_key_id(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    match raw {
        Some(v) if v.chars().any(|c| c.is_whitespace() || c.is_control()) => Err(ConfigError {
            name: "RELAY365_TOKEN_KEY_ID",
            message: "is not a KMS key id, alias/NAME or key ARN (it contains spaces): the SAM template sets it to the token key".into(),
        }),
        other => Ok(other),
    }
}

fn host_override(name: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let bad = |why: &str| ConfigError {
        name,
        message: format!("{raw:?} {why}; give scheme and host (and port) only, e.g. http://127.0.0.1:8443"),
    };
    let url = Url::parse(raw).map_err(|_| bad("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("is not http or https"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("has a path, query or fragment"));
    }
    Ok(url)
}

/// `RELAY365_SECRET_STORE`: Secrets Manager (`aws`, the default) or a
/// folder of files (`file:DIR`, local runs).
fn secret_store(raw: Option<String>) -> Result<StoreKind, ConfigError> {
    match raw.as_deref() {
        None | Some("aws") => Ok(StoreKind::Aws),
        Some(v) => match v.strip_prefix("file:") {
            Some(dir) if !dir.is_empty() => Ok(StoreKind::File(PathBuf::from(dir))),
            _ => Err(ConfigError {
                name: "RELAY365_SECRET_STORE",
                message: format!("{v:?}: use aws or file:DIR"),
            }),
        },
    }
}

/// The local test certificate authority ([`crate::https::LOCAL_CA_SETTING`])
/// is honoured only in a local run, and must be a readable file there.
fn check_local_ca(file: Option<String>, local: bool) -> Result<(), ConfigError> {
    let Some(file) = file else {
        return Ok(());
    };
    let message = if !local {
        "is honoured only in a local run (RELAY365_LOCAL=1): remove it; deployed functions trust the public roots only".to_string()
    } else if std::fs::metadata(&file).is_err() {
        format!("{file:?} cannot be read: give the PEM file of the local test certificate authority")
    } else {
        return Ok(());
    };
    Err(ConfigError {
        name: crate::https::LOCAL_CA_SETTING,
        message,
    })
}

/// A setting in whole seconds within `range`, when set; `hint` ends the
/// error's words.
fn seconds(
    name: &'static str,
    get: impl Fn(&str) -> Option<String>,
    range: std::ops::RangeInclusive<u64>,
    hint: &str,
) -> Result<Option<std::time::Duration>, ConfigError> {
    let Some(raw) = get(name) else {
        return Ok(None);
    };
    match raw.parse::<u64>() {
        Ok(secs) if range.contains(&secs) => Ok(Some(std::time::Duration::from_secs(secs))),
        _ => Err(ConfigError {
            name,
            message: format!(
                "{raw:?} is not a number of seconds from {} to {}{hint}",
                range.start(),
                range.end()
            ),
        }),
    }
}

/// `RELAY365_ALLOWED_SENDERS`: comma-separated addresses or `*@domain`.
fn parse_senders(raw: &str) -> Result<Vec<String>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let address = s.strip_prefix('*').unwrap_or(s);
            let check = if address.starts_with('@') {
                format!("x{address}")
            } else {
                address.to_string()
            };
            if crate::model::address::is_valid(&check) {
                Ok(s.to_ascii_lowercase())
            } else {
                Err(ConfigError {
                    name: "RELAY365_ALLOWED_SENDERS",
                    message: format!("{s:?} is neither an address nor *@domain"),
                })
            }
        })
        .collect()
}

impl Config {
    /// Whether an app-only connection may send as `address` besides its own
    /// mailbox: it is listed in `RELAY365_ALLOWED_SENDERS`, or its domain is
    /// (`*@domain`).
    pub fn sender_allowed(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        self.allowed_senders.iter().any(|a| match a.strip_prefix("*@") {
            Some(domain) => address.rsplit_once('@').is_some_and(|(_, d)| d == domain),
            None => *a == address,
        })
    }

    /// Reads the process environment.
    ///
    /// # Errors
    /// The first setting that is missing or invalid, with its fix.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads settings from name and value pairs (a test's, a tool's); a
    /// later pair overrides an earlier one of the same name.
    ///
    /// # Errors
    /// The first setting that is missing or invalid, with its fix.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::from_map(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Reads settings from a map (the environment, or a test's).
    ///
    /// # Errors
    /// The first setting that is missing or invalid, with its fix.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| env.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let required = |k: &'static str| {
            get(k).ok_or(ConfigError {
                name: k,
                message: "is required; the SAM template sets it".into(),
            })
        };
        let cloud = match get("RELAY365_CLOUD") {
            None => Cloud::Global,
            Some(v) => v
                .parse()
                .map_err(|e: crate::model::cloud::UnknownCloud| ConfigError {
                    name: "RELAY365_CLOUD",
                    message: e.to_string(),
                })?,
        };
        let local = match get("RELAY365_LOCAL").as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(v) => {
                return Err(ConfigError {
                    name: "RELAY365_LOCAL",
                    message: format!("{v:?}: use 1 for a local run, or leave it unset"),
                });
            }
        };
        let public_url = get("RELAY365_PUBLIC_URL")
            .map(|raw| {
                let url = Url::parse(raw.trim_end_matches('/')).map_err(|_| ConfigError {
                    name: "RELAY365_PUBLIC_URL",
                    message: format!("{raw:?} is not a URL"),
                })?;
                check_public_url(&url, local).map_err(|m| ConfigError {
                    name: "RELAY365_PUBLIC_URL",
                    message: m,
                })?;
                Ok(url)
            })
            .transpose()?;
        let default_target = get("RELAY365_DEFAULT_TARGET")
            .map(|raw| {
                Target::parse(&raw, local).map_err(|m| ConfigError {
                    name: "RELAY365_DEFAULT_TARGET",
                    message: m,
                })
            })
            .transpose()?;
        let secret_store = secret_store(get("RELAY365_SECRET_STORE"))?;
        check_local_ca(get(crate::https::LOCAL_CA_SETTING), local)?;
        let secret_prefix = get("RELAY365_SECRET_PREFIX").unwrap_or_else(|| "relay365/".into());
        let token_key_id = token_key_id(get("RELAY365_TOKEN_KEY_ID"))?;
        Ok(Self {
            cloud,
            app_secret_id: required("RELAY365_APP_SECRET_ID")?,
            signing_key_secret_id: required("RELAY365_SIGNING_KEY_SECRET_ID")?,
            event_signing_secret_id: get("RELAY365_EVENT_SIGNING_SECRET_ID"),
            secret_prefix,
            token_key_id,
            public_url,
            queue_url: get("RELAY365_QUEUE_URL"),
            send_queue_url: get("RELAY365_SEND_QUEUE_URL"),
            default_target,
            login_url: get("RELAY365_LOGIN_URL")
                .map(|v| host_override("RELAY365_LOGIN_URL", &v))
                .transpose()?,
            graph_url: get("RELAY365_GRAPH_URL")
                .map(|v| host_override("RELAY365_GRAPH_URL", &v))
                .transpose()?,
            attachments_bucket: get("RELAY365_ATTACHMENTS_BUCKET"),
            secret_store,
            state_table: get("RELAY365_STATE_TABLE"),
            allowed_senders: match get("RELAY365_ALLOWED_SENDERS") {
                None => Vec::new(),
                Some(raw) => parse_senders(&raw)?,
            },
            local,
            secret_ttl: seconds("RELAY365_SECRET_TTL_SECONDS", get, 0..=300, "")?
                .unwrap_or(std::time::Duration::from_secs(300)),
            first_retry: seconds("RELAY365_FIRST_RETRY_SECONDS", get, 1..=300, "")?,
            // Lambda's own range: 1 s to 15 minutes.
            function_timeout: seconds(
                "RELAY365_FUNCTION_TIMEOUT_SECONDS",
                get,
                1..=900,
                ": give the function's Timeout",
            )?,
        })
    }

    /// The identity platform base for a cloud: the override, or the cloud's login host.
    pub fn login_base(&self, cloud: Cloud) -> String {
        match &self.login_url {
            Some(u) => u.as_str().trim_end_matches('/').to_string(),
            None => cloud.login_host().to_string(),
        }
    }

    /// The Graph base for a cloud: the override, or the cloud's Graph root.
    pub fn graph_base(&self, cloud: Cloud) -> String {
        match &self.graph_url {
            Some(u) => u.as_str().trim_end_matches('/').to_string(),
            None => cloud.graph_root().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = [
            ("RELAY365_APP_SECRET_ID", "app"),
            ("RELAY365_SIGNING_KEY_SECRET_ID", "key"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    #[test]
    fn defaults() {
        let c = Config::from_map(&env(&[])).unwrap();
        assert_eq!(c.cloud, Cloud::Global);
        assert_eq!(c.secret_prefix, "relay365/");
        assert_eq!(c.secret_store, StoreKind::Aws);
        assert_eq!(c.login_base(Cloud::UsGovL4), "https://login.microsoftonline.us");
        assert_eq!(
            c.graph_base(Cloud::China),
            "https://microsoftgraph.chinacloudapi.cn"
        );
    }

    #[test]
    fn the_deferred_send_queue_is_optional() {
        assert_eq!(Config::from_map(&env(&[])).unwrap().send_queue_url, None);
        let empty = env(&[("RELAY365_SEND_QUEUE_URL", "")]);
        assert_eq!(Config::from_map(&empty).unwrap().send_queue_url, None);
        let url = "https://sqs.us-east-1.amazonaws.com/1/deferred";
        let c = Config::from_map(&env(&[("RELAY365_SEND_QUEUE_URL", url)])).unwrap();
        assert_eq!(c.send_queue_url.as_deref(), Some(url));
    }

    #[test]
    fn overrides_replace_hosts_but_not_scopes() {
        let c = Config::from_map(&env(&[
            ("RELAY365_CLOUD", "usgov-l4"),
            ("RELAY365_LOGIN_URL", "http://127.0.0.1:8443"),
            ("RELAY365_GRAPH_URL", "http://127.0.0.1:8443/"),
        ]))
        .unwrap();
        assert_eq!(c.login_base(c.cloud), "http://127.0.0.1:8443");
        assert_eq!(c.graph_base(c.cloud), "http://127.0.0.1:8443");
        assert_eq!(c.cloud.default_scope(), "https://graph.microsoft.us/.default");
    }

    #[test]
    fn bad_settings_name_the_variable_and_the_fix() {
        let e = Config::from_map(&env(&[("RELAY365_CLOUD", "azure")])).unwrap_err();
        assert_eq!(e.name, "RELAY365_CLOUD");
        assert!(e.message.contains("usgov-l4"));
        let e = Config::from_map(&env(&[("RELAY365_GRAPH_URL", "http://127.0.0.1:1/v1.0")])).unwrap_err();
        assert_eq!(e.name, "RELAY365_GRAPH_URL");
        let e = Config::from_map(&env(&[("RELAY365_PUBLIC_URL", "http://example.com")])).unwrap_err();
        assert!(e.message.contains("https"));
        let e = Config::from_map(&env(&[("RELAY365_SECRET_STORE", "s3")])).unwrap_err();
        assert!(e.message.contains("file:DIR"));
        let mut m = env(&[]);
        m.remove("RELAY365_APP_SECRET_ID");
        assert_eq!(Config::from_map(&m).unwrap_err().name, "RELAY365_APP_SECRET_ID");
    }

    #[test]
    fn a_local_test_ca_is_refused_outside_a_local_run() {
        let ca = std::env::temp_dir().join(format!("relay365-ca-{}.pem", uuid::Uuid::new_v4().simple()));
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let file = ca.display().to_string();
        let e = Config::from_map(&env(&[("RELAY365_LOCAL_CA_FILE", file.as_str())])).unwrap_err();
        assert_eq!(e.name, "RELAY365_LOCAL_CA_FILE");
        assert!(e.message.contains("RELAY365_LOCAL=1"), "{}", e.message);
        let local = [("RELAY365_LOCAL", "1"), ("RELAY365_LOCAL_CA_FILE", file.as_str())];
        assert!(Config::from_map(&env(&local)).is_ok());
        let missing = [
            ("RELAY365_LOCAL", "1"),
            ("RELAY365_LOCAL_CA_FILE", "/nonexistent/ca.pem"),
        ];
        let e = Config::from_map(&env(&missing)).unwrap_err();
        assert!(e.message.contains("cannot be read"), "{}", e.message);
        let _ = std::fs::remove_file(ca);
    }
}
