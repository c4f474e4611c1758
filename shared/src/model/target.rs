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
    /// Parses `https://…` or `eventbridge:BUS`. `local` (a local run,
    /// `RELAY365_LOCAL=1`) also allows loopback hosts and plain `http://` to them.
    ///
    /// # Errors
    /// A message that says which forms are accepted, or why the host is refused.
    pub fn parse(raw: &str, local: bool) -> Result<Self, String> {
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
        check_public_url(&url, local).map_err(|e| format!("target {raw:?}: {e}"))?;
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
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Why an address may not be called with events or tokens: private,
/// link-local (the instance metadata address among them), multicast,
/// unspecified or otherwise reserved, in IPv4 or IPv6 (IPv4-mapped too).
/// Loopback is refused unless `local`. `None` for a public address.
pub fn forbidden_ip(ip: std::net::IpAddr, local: bool) -> Option<&'static str> {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                (!local).then_some("a loopback address")
            } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                Some("a private address")
            } else if v4.is_link_local() {
                Some("a link-local address (the instance metadata service lives there)")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("a multicast or broadcast address")
            } else if v4.is_unspecified() || o[0] == 0 || o[0] >= 240 {
                Some("a reserved address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_ip(IpAddr::V4(v4), local);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                (!local).then_some("a loopback address")
            } else if (first & 0xfe00) == 0xfc00 {
                Some("a private (unique local) address")
            } else if (first & 0xffc0) == 0xfe80 || (first & 0xffc0) == 0xfec0 {
                Some("a link-local address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if v6.is_unspecified() {
                Some("a reserved address")
            } else {
                None
            }
        }
    }
}

/// Targets and public URLs must be `https://` to a public host. A local run
/// (`local`) also allows loopback hosts, with plain `http://` to them. Hosts
/// given as names are checked again when they are resolved (see `https`).
///
/// # Errors
/// Why the URL is refused.
pub fn check_public_url(url: &Url, local: bool) -> Result<(), String> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("has no host".into()),
    };
    if let Some(why) = ip.and_then(|ip| forbidden_ip(ip, local)) {
        return Err(format!(
            "its host is {why}: events and sign-ins only go to public hosts{}",
            if local {
                ""
            } else {
                " (loopback only in a local run, RELAY365_LOCAL=1)"
            }
        ));
    }
    if is_loopback(url) && !local {
        return Err("localhost is allowed only in a local run (RELAY365_LOCAL=1)".into());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if local && is_loopback(url) => Ok(()),
        _ => Err(
            "must be an https:// URL (plain http is allowed only for 127.0.0.1 or localhost in a local run)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_https_or_an_event_bus() {
        assert_eq!(
            Target::parse("eventbridge:default", false).unwrap(),
            Target::EventBridge("default".into())
        );
        assert!(matches!(
            Target::parse("https://flow.example/hook", false).unwrap(),
            Target::Webhook(_)
        ));
        for bad in [
            "http://flow.example/hook",
            "ftp://x",
            "eventbridge:",
            "flow.example",
        ] {
            assert!(Target::parse(bad, false).is_err(), "{bad}");
        }
        assert!(is_loopback(&Url::parse("http://127.0.0.1:9/x").unwrap()));
        assert_eq!(
            Target::parse("eventbridge:b", false).unwrap().to_string_form(),
            "eventbridge:b"
        );
    }

    #[test]
    fn private_and_metadata_hosts_are_refused_in_every_mode() {
        for local in [false, true] {
            for bad in [
                "https://169.254.169.254/latest/meta-data/",
                "https://10.0.0.1/",
                "https://172.16.5.4/",
                "https://192.168.1.1/",
                "https://100.64.0.1/",
                "https://[fd00::1]/",
                "https://[fd00:ec2::254]/",
                "https://[fe80::1]/",
                "https://[::ffff:10.0.0.1]/",
                "https://224.0.0.1/",
                "https://0.0.0.0/",
            ] {
                let e = Target::parse(bad, local).unwrap_err();
                assert!(e.contains("public hosts"), "{bad} (local {local}): {e}");
            }
        }
        for loopback in [
            "https://localhost/",
            "https://127.0.0.1/",
            "http://127.0.0.1:9/x",
            "https://[::1]/",
            "http://localhost:8080/",
        ] {
            assert!(Target::parse(loopback, false).is_err(), "{loopback}");
            assert!(Target::parse(loopback, true).is_ok(), "{loopback}");
        }
        assert!(
            Target::parse("http://flow.example/", true).is_err(),
            "plain http only to loopback"
        );
        assert!(Target::parse("https://8.8.8.8/hook", false).is_ok());
        assert!(Target::parse("https://[2001:4860:4860::8888]/hook", false).is_ok());
    }
}
