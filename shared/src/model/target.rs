//! Where a subscription's events go, and which URLs relay365 accepts as
//! targets and public URLs: `https://…`, `eventbridge:BUS` and
//! `connect-task:{instance-id}/{contact-flow-id}` (an Amazon Connect task per
//! new mail) and `connect-email:{instance-id}/{contact-flow-id}/{address}`
//! (an Amazon Connect email contact per new mail).

use url::Url;

/// Where events of a subscription go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An HTTPS webhook (or a loopback `http://` URL in local runs).
    Webhook(Url),
    /// An EventBridge bus, by name or ARN.
    EventBridge(String),
    /// An Amazon Connect task per new mail (`StartTaskContact`), run by a
    /// contact flow of an instance.
    ConnectTask {
        /// The instance id (the last part of the instance's ARN).
        instance_id: String,
        /// The contact flow id (the last part of the flow's ARN).
        flow_id: String,
    },
    /// An Amazon Connect email contact per new mail (`StartEmailContact`),
    /// addressed to an email address of the instance and run by a contact
    /// flow.
    ConnectEmail {
        /// The instance id (the last part of the instance's ARN).
        instance_id: String,
        /// The inbound contact flow id (the last part of the flow's ARN).
        flow_id: String,
        /// The instance's email address the contact is addressed to
        /// (`DestinationEmailAddress`).
        address: String,
    },
}

/// The prefix of an Amazon Connect task target.
pub const CONNECT_TASK_PREFIX: &str = "connect-task:";

/// The prefix of an Amazon Connect email target.
pub const CONNECT_EMAIL_PREFIX: &str = "connect-email:";

/// The longest email address Connect accepts (`EmailAddress`, 1 to 255 characters).
pub const CONNECT_EMAIL_ADDRESS_MAX: usize = 255;

/// The longest instance id Connect accepts (`InstanceId`, 1 to 100 characters).
pub const CONNECT_INSTANCE_ID_MAX: usize = 100;

/// The longest contact flow id Connect accepts (`ContactFlowId`, at most 500 characters).
pub const CONNECT_FLOW_ID_MAX: usize = 500;

/// Checks one id of a Connect target: 1 to `max` characters of letters,
/// digits, `-` and `_` (Connect's ids are UUIDs, the last part of an ARN;
/// an ARN or a path would not fit in the IAM resource relay365 is allowed).
fn connect_id(what: &str, id: &str, max: usize) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("the {what} is missing"));
    }
    if id.chars().count() > max {
        return Err(format!("the {what} is longer than {max} characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "the {what} {id:?} has {c:?}: give the id only (the last part of its ARN), letters, digits and -"
        ));
    }
    Ok(())
}

/// Parses what follows `connect-task:`.
fn connect_task(raw: &str, rest: &str) -> Result<Target, String> {
    let hint = "write connect-task:{instance-id}/{contact-flow-id}, the ids as the instance's and the flow's ARNs end, e.g. connect-task:11111111-2222-3333-4444-555555555555/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    let Some((instance_id, flow_id)) = rest.split_once('/') else {
        return Err(format!("target {raw:?}: {hint}"));
    };
    connect_id("instance id", instance_id, CONNECT_INSTANCE_ID_MAX)
        .and_then(|()| connect_id("contact flow id", flow_id, CONNECT_FLOW_ID_MAX))
        .map_err(|e| format!("target {raw:?}: {e}; {hint}"))?;
    Ok(Target::ConnectTask {
        instance_id: instance_id.to_string(),
        flow_id: flow_id.to_string(),
    })
}

/// Parses what follows `connect-email:`.
fn connect_email(raw: &str, rest: &str) -> Result<Target, String> {
    let hint = "write connect-email:{instance-id}/{contact-flow-id}/{connect-email-address}, the ids as the instance's and the flow's ARNs end and an email address of the instance, e.g. connect-email:11111111-2222-3333-4444-555555555555/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee/support@contoso.com";
    let mut parts = rest.splitn(3, '/');
    let (Some(instance_id), Some(flow_id), Some(address)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("target {raw:?}: {hint}"));
    };
    connect_id("instance id", instance_id, CONNECT_INSTANCE_ID_MAX)
        .and_then(|()| connect_id("contact flow id", flow_id, CONNECT_FLOW_ID_MAX))
        .and_then(|()| connect_address(address))
        .map_err(|e| format!("target {raw:?}: {e}; {hint}"))?;
    Ok(Target::ConnectEmail {
        instance_id: instance_id.to_string(),
        flow_id: flow_id.to_string(),
        address: address.to_string(),
    })
}

/// Checks the address of a `connect-email:` target by Connect's pattern for
/// an email address (`[^\s@]+@[^\s@]+\.[^\s@]+`, at most 255 characters).
fn connect_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("the email address is missing".into());
    }
    if address.chars().count() > CONNECT_EMAIL_ADDRESS_MAX {
        return Err(format!(
            "the email address is longer than {CONNECT_EMAIL_ADDRESS_MAX} characters"
        ));
    }
    let part = |p: &str| !p.is_empty() && !p.chars().any(|c| c.is_whitespace() || c == '@' || c == '/');
    let ok = address.split_once('@').is_some_and(|(local, domain)| {
        part(local)
            && domain
                .rsplit_once('.')
                .is_some_and(|(host, tld)| part(host) && part(tld))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the email address {address:?} is not an address (name@domain.tld)"
        ))
    }
}

impl Target {
    /// Parses `https://…`, `eventbridge:BUS`,
    /// `connect-task:{instance-id}/{contact-flow-id}` or
    /// `connect-email:{instance-id}/{contact-flow-id}/{connect-email-address}`. `local` (a local run,
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
        if let Some(rest) = raw.strip_prefix(CONNECT_TASK_PREFIX) {
            return connect_task(raw, rest);
        }
        if let Some(rest) = raw.strip_prefix(CONNECT_EMAIL_PREFIX) {
            return connect_email(raw, rest);
        }
        let url = Url::parse(raw).map_err(|_| {
            format!(
                "target {raw:?} is neither an https:// URL, eventbridge:BUS, connect-task:{{instance-id}}/{{contact-flow-id}} nor connect-email:{{instance-id}}/{{contact-flow-id}}/{{connect-email-address}}"
            )
        })?;
        check_public_url(&url, local).map_err(|e| format!("target {raw:?}: {e}"))?;
        Ok(Target::Webhook(url))
    }

    /// The string form.
    pub fn to_string_form(&self) -> String {
        match self {
            Target::Webhook(u) => u.to_string(),
            Target::EventBridge(b) => format!("eventbridge:{b}"),
            Target::ConnectTask { instance_id, flow_id } => {
                format!("{CONNECT_TASK_PREFIX}{instance_id}/{flow_id}")
            }
            Target::ConnectEmail {
                instance_id,
                flow_id,
                address,
            } => format!("{CONNECT_EMAIL_PREFIX}{instance_id}/{flow_id}/{address}"),
        }
    }

    /// Whether the target takes new mail only (an Amazon Connect task or
    /// email contact is started per mail; calendar changes and notices about
    /// the connection have no contact to become).
    pub fn mail_only(&self) -> bool {
        matches!(self, Target::ConnectTask { .. } | Target::ConnectEmail { .. })
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
/// unspecified or otherwise reserved, in IPv4 or IPv6. IPv6 forms that carry
/// an IPv4 address are judged by it: IPv4-mapped (`::ffff:0:0/96`), NAT64
/// (`64:ff9b::/96`) and 6to4 (`2002::/16`); IPv4-compatible (`::/96`,
/// deprecated) and local-use NAT64 (`64:ff9b:1::/48`, where the IPv4 address
/// sits where the network puts it) are refused outright.
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
            let seg = v6.segments();
            let first = seg[0];
            let tail_v4 = || std::net::Ipv4Addr::from((u32::from(seg[6]) << 16) | u32::from(seg[7]));
            // IPv6 forms that carry an IPv4 address: what they reach is that
            // address. Loopback behind them is never a local run's loopback.
            let embedded = |v4: std::net::Ipv4Addr| {
                forbidden_ip(IpAddr::V4(v4), false).map(|_| {
                    "an IPv6 address that carries a private, loopback, link-local or reserved IPv4 address (NAT64, 6to4 or IPv4-compatible)"
                })
            };
            if v6.is_loopback() {
                (!local).then_some("a loopback address")
            } else if v6.is_unspecified() {
                Some("a reserved address")
            } else if seg[..6] == [0; 6] {
                // ::/96, IPv4-compatible (deprecated by RFC 4291): never used for real hosts.
                Some("an IPv4-compatible IPv6 address (::a.b.c.d, deprecated)")
            } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052).
                embedded(tail_v4())
            } else if seg[..3] == [0x64, 0xff9b, 1] {
                // Local-use NAT64 64:ff9b:1::/48 (RFC 8215): where the IPv4
                // address sits depends on the network, so it cannot be checked.
                Some("a local-use NAT64 address (64:ff9b:1::/48)")
            } else if first == 0x2002 {
                // 6to4 2002:AABB:CCDD::/48 carries AA.BB.CC.DD (RFC 3056).
                embedded(std::net::Ipv4Addr::from(
                    (u32::from(seg[1]) << 16) | u32::from(seg[2]),
                ))
            } else if (first & 0xfe00) == 0xfc00 {
                Some("a private (unique local) address")
            } else if (first & 0xffc0) == 0xfe80 || (first & 0xffc0) == 0xfec0 {
                Some("a link-local address")
            } else if v6.is_multicast() {
                Some("a multicast address")
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
    fn connect_task_targets_name_an_instance_and_a_flow() {
        let raw = "connect-task:11111111-2222-3333-4444-555555555555/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
        let t = Target::parse(raw, false).unwrap();
        assert_eq!(
            t,
            Target::ConnectTask {
                instance_id: "11111111-2222-3333-4444-555555555555".into(),
                flow_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into(),
            }
        );
        assert_eq!(t.to_string_form(), raw);
        assert!(t.mail_only());
        assert!(!Target::parse("eventbridge:b", false).unwrap().mail_only());
        let long_instance = format!("connect-task:{}/f", "i".repeat(101));
        let long_flow = format!("connect-task:i/{}", "f".repeat(501));
        for (bad, words) in [
            ("connect-task:", "connect-task:{instance-id}/{contact-flow-id}"),
            ("connect-task:abc", "connect-task:{instance-id}/{contact-flow-id}"),
            ("connect-task:/flow", "instance id is missing"),
            ("connect-task:inst/", "contact flow id is missing"),
            ("connect-task:inst/flow/extra", "has '/'"),
            (
                "connect-task:arn:aws:connect:us-east-1:1:instance/x/flow",
                "has ':'",
            ),
            ("connect-task:in st/flow", "has ' '"),
            (long_instance.as_str(), "longer than 100"),
            (long_flow.as_str(), "longer than 500"),
        ] {
            let e = Target::parse(bad, false).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
        assert!(
            Target::parse(
                &format!("connect-task:{}/{}", "i".repeat(100), "f".repeat(500)),
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn connect_email_targets_name_an_instance_a_flow_and_an_address() {
        let raw = "connect-email:11111111-2222-3333-4444-555555555555/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee/support@contoso.com";
        let t = Target::parse(raw, false).unwrap();
        assert_eq!(
            t,
            Target::ConnectEmail {
                instance_id: "11111111-2222-3333-4444-555555555555".into(),
                flow_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into(),
                address: "support@contoso.com".into(),
            }
        );
        assert_eq!(t.to_string_form(), raw);
        assert!(t.mail_only());
        let long = format!("connect-email:i/f/{}@contoso.com", "a".repeat(250));
        for (bad, words) in [
            (
                "connect-email:",
                "connect-email:{instance-id}/{contact-flow-id}/{connect-email-address}",
            ),
            (
                "connect-email:i/f",
                "connect-email:{instance-id}/{contact-flow-id}/{connect-email-address}",
            ),
            ("connect-email:i/f/", "email address is missing"),
            ("connect-email:/f/a@b.com", "instance id is missing"),
            ("connect-email:i//a@b.com", "contact flow id is missing"),
            ("connect-email:i/f/support", "is not an address"),
            ("connect-email:i/f/a@b.com/x", "is not an address"),
            ("connect-email:i/f/a b@c.com", "is not an address"),
            (long.as_str(), "longer than 255"),
        ] {
            let e = Target::parse(bad, false).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
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

    #[test]
    fn ipv6_forms_that_carry_an_ipv4_address_are_judged_by_it() {
        for local in [false, true] {
            for bad in [
                // NAT64 (64:ff9b::/96) to metadata, private, loopback.
                "https://[64:ff9b::a9fe:a9fe]/",
                "https://[64:ff9b::169.254.169.254]/",
                "https://[64:ff9b::10.0.0.1]/",
                "https://[64:ff9b::127.0.0.1]/",
                "https://[64:ff9b::c0a8:101]/",
                // Local-use NAT64 (64:ff9b:1::/48), whatever it carries.
                "https://[64:ff9b:1::808:808]/",
                "https://[64:ff9b:1:abcd::1]/",
                // 6to4 (2002::/16) around metadata, private, loopback.
                "https://[2002:a9fe:a9fe::1]/",
                "https://[2002:0a00:0001::]/",
                "https://[2002:7f00:1::1]/",
                // IPv4-compatible (::/96), any.
                "https://[::169.254.169.254]/",
                "https://[::10.0.0.1]/",
                "https://[::127.0.0.1]/",
                "https://[::8.8.8.8]/",
                // IPv4-mapped, for completeness.
                "https://[::ffff:169.254.169.254]/",
            ] {
                let e = Target::parse(bad, local).unwrap_err();
                assert!(e.contains("public hosts"), "{bad} (local {local}): {e}");
            }
        }
        // The same forms around a public address reach a public host.
        assert!(Target::parse("https://[64:ff9b::808:808]/hook", false).is_ok());
        assert!(Target::parse("https://[2002:808:808::1]/hook", false).is_ok());
    }
}
