//! Where a subscription's events go, and which URLs relay365 accepts as
//! targets and public URLs.

use url::Url;

/// Where events of a subscription go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An HTTPS webhook (or a loopback `http://` URL in local runs).
    Webhook(Url),
    /// An EventBridge bus, by name or ARN.
    EventBridge(String),
}

impl Target {
    /// Parses `https://…` or `eventbridge:BUS`.
    ///
    /// # Errors
    /// A message that says which forms are accepted.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(bus) = raw.strip_prefix("eventbridge:") {
            if bus.is_empty() || bus.len() > 1600 || bus.chars().any(char::is_whitespace) {
                return Err(format!(
                    "target {raw:?}: name the bus after eventbridge:, e.g. eventbridge:default"
                ));
            }
            return Ok(Target::EventBridge(bus.to_string()));
        }
        let url = Url::parse(raw)
            .map_err(|_| format!("target {raw:?} is neither an https:// URL nor eventbridge:BUS"))?;
        check_public_url(&url).map_err(|e| format!("target {raw:?}: {e}"))?;
        Ok(Target::Webhook(url))
    }

    /// The string form.
    pub fn to_string_form(&self) -> String {
        match self {
            Target::Webhook(u) => u.to_string(),
            Target::EventBridge(b) => format!("eventbridge:{b}"),
        }
    }
}

/// True for `127.0.0.0/8`, `::1` and `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Targets and public URLs must be HTTPS, except loopback hosts for local runs.
///
/// # Errors
/// Why the URL is refused.
pub fn check_public_url(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        _ => Err("must be an https:// URL (plain http is allowed only for 127.0.0.1 or localhost)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_https_or_an_event_bus() {
        assert_eq!(
            Target::parse("eventbridge:default").unwrap(),
            Target::EventBridge("default".into())
        );
        assert!(matches!(
            Target::parse("https://flow.example/hook").unwrap(),
            Target::Webhook(_)
        ));
        for bad in [
            "http://flow.example/hook",
            "ftp://x",
            "eventbridge:",
            "flow.example",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert!(is_loopback(&Url::parse("http://127.0.0.1:9/x").unwrap()));
        assert_eq!(
            Target::parse("eventbridge:b").unwrap().to_string_form(),
            "eventbridge:b"
        );
    }
}
