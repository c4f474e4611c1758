//! Who may send from a connection: its `allowed_callers`, checked against
//! the caller's ARN as API Gateway (IAM authorisation) or Amazon Connect
//! reports it.
//!
//! A pattern is an ARN: an IAM principal (`arn:aws:iam::ACCOUNT:user/NAME`,
//! `…:role/NAME`, `…:root`, or an STS session `arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`),
//! where `*` stands for any run of characters, or an Amazon Connect instance
//! (`arn:aws:connect:REGION:ACCOUNT:instance/ID`), matched exactly. The
//! partition, service and account are always spelt out, so no pattern reaches
//! beyond one account. A role's ARN also matches its sessions: API Gateway
//! reports a caller that assumed role `NAME` as
//! `arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`, without the role's path.
//! That is why a role pattern with a path may not hold a `*`: the session
//! does not say which path its role has.
//!
//! Everything here is pure (no I/O), so it is fuzzed (`fuzz/fuzz_targets/caller_arn.rs`).

/// Most patterns one connection may list.
pub const MAX_CALLERS: usize = 50;
/// Longest pattern accepted (IAM's own ARN limit is 2048).
pub const MAX_PATTERN: usize = 2048;

const PARTITIONS: [&str; 3] = ["aws", "aws-cn", "aws-us-gov"];

/// Why a pattern is refused, in words that say how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Too many patterns.
    #[error(
        "allowed_callers lists {0} callers: at most {MAX_CALLERS}; use a `*` pattern such as arn:aws:iam::123456789012:role/billing-*"
    )]
    TooMany(usize),
    /// Empty, too long, or with spaces or control characters.
    #[error("{0:?} is not an ARN: give 1 to {MAX_PATTERN} characters without spaces")]
    Shape(String),
    /// Not `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
    #[error(
        "{0:?} is not an ARN: write arn:aws:iam::ACCOUNT:role/NAME, arn:aws:iam::ACCOUNT:user/NAME, arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION or arn:aws:connect:REGION:ACCOUNT:instance/ID"
    )]
    NotArn(String),
    /// A partition other than aws, aws-cn, aws-us-gov.
    #[error("{0:?}: the partition must be aws, aws-cn or aws-us-gov, spelt out (no `*`)")]
    Partition(String),
    /// A service other than iam, sts, connect.
    #[error(
        "{0:?}: only IAM principals (iam, sts) and Amazon Connect instances (connect) can call send-mail"
    )]
    Service(String),
    /// The account is not 12 digits.
    #[error("{0:?}: the account must be the 12-digit AWS account id, spelt out (no `*`)")]
    Account(String),
    /// A region where there must be none, or a bad one.
    #[error(
        "{0:?}: IAM and STS ARNs have an empty region (arn:aws:iam::ACCOUNT:…); a Connect ARN names its region (us-east-1)"
    )]
    Region(String),
    /// An IAM or STS resource of another kind.
    #[error("{0:?}: name user/NAME, role/NAME or root (iam), or assumed-role/ROLE/SESSION (sts)")]
    Resource(String),
    /// A character IAM names never hold, or a wildcard other than `*`.
    #[error("{0:?}: only letters, digits, + = , . @ _ - / and the wildcard `*` may appear in the name")]
    Character(String),
    /// A `*` in a role pattern with a path.
    #[error(
        "{0:?}: API Gateway reports a role's sessions without the role's path, so a role pattern with a path cannot hold `*`; name the role (role/path/NAME) or drop the path (role/NAME-*)"
    )]
    RolePath(String),
    /// A Connect ARN that is not an instance, or holds a `*`.
    #[error(
        "{0:?}: an Amazon Connect caller is its instance ARN, arn:aws:connect:REGION:ACCOUNT:instance/ID, without `*`"
    )]
    Connect(String),
}

/// The parts of an ARN: `arn:partition:service:region:account:resource`.
struct Arn<'a> {
    partition: &'a str,
    service: &'a str,
    region: &'a str,
    account: &'a str,
    resource: &'a str,
}

fn split(arn: &str) -> Option<Arn<'_>> {
    let mut parts = arn.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    Some(Arn {
        partition: parts.next()?,
        service: parts.next()?,
        region: parts.next()?,
        account: parts.next()?,
        resource: parts.next()?,
    })
}

fn name_chars_ok(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/*".contains(c))
}

/// Checks one `allowed_callers` pattern.
///
/// # Errors
/// [`PatternError`] saying what to write instead.
pub fn validate_pattern(p: &str) -> Result<(), PatternError> {
    let own = || p.to_string();
    if p.is_empty() || p.len() > MAX_PATTERN || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PatternError::Shape(own()));
    }
    let arn = split(p).ok_or_else(|| PatternError::NotArn(own()))?;
    if !PARTITIONS.contains(&arn.partition) {
        return Err(PatternError::Partition(own()));
    }
    if arn.account.len() != 12 || !arn.account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PatternError::Account(own()));
    }
    match arn.service {
        "iam" | "sts" => {
            if !arn.region.is_empty() {
                return Err(PatternError::Region(own()));
            }
            if !name_chars_ok(arn.resource) {
                return Err(PatternError::Character(own()));
            }
            let rest = |prefix: &str| arn.resource.strip_prefix(prefix).filter(|r| !r.is_empty());
            match arn.service {
                "iam" if arn.resource == "root" => Ok(()),
                "iam" if rest("user/").is_some() => Ok(()),
                "iam" => match rest("role/") {
                    Some(r) if r.contains('/') && r.contains('*') => Err(PatternError::RolePath(own())),
                    Some(_) => Ok(()),
                    None => Err(PatternError::Resource(own())),
                },
                _ => match rest("assumed-role/") {
                    Some(_) => Ok(()),
                    None => Err(PatternError::Resource(own())),
                },
            }
        }
        "connect" => {
            let region_ok = !arn.region.is_empty()
                && arn
                    .region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !region_ok {
                return Err(PatternError::Region(own()));
            }
            let id_ok = arn.resource.strip_prefix("instance/").is_some_and(|id| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
            if id_ok {
                Ok(())
            } else {
                Err(PatternError::Connect(own()))
            }
        }
        _ => Err(PatternError::Service(own())),
    }
}

/// Checks a whole `allowed_callers` list (an empty one lets anyone with
/// the route send).
///
/// # Errors
/// The first [`PatternError`].
pub fn validate_list(patterns: &[String]) -> Result<(), PatternError> {
    if patterns.len() > MAX_CALLERS {
        return Err(PatternError::TooMany(patterns.len()));
    }
    patterns.iter().try_for_each(|p| validate_pattern(p))
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters (none included) and everything else for itself, with case.
/// Linear in practice: the classic greedy match with one back-track point.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether the caller `caller` (an ARN as API Gateway or Amazon Connect
/// reports it) is one `pattern` names. A pattern that
/// [`validate_pattern`] refuses names nobody.
pub fn matches(pattern: &str, caller: &str) -> bool {
    if validate_pattern(pattern).is_err() {
        return false;
    }
    if glob(pattern, caller) {
        return true;
    }
    // A role's sessions: arn:P:sts::A:assumed-role/NAME/SESSION.
    let (Some(p), Some(c)) = (split(pattern), split(caller)) else {
        return false;
    };
    let Some(role) = p.resource.strip_prefix("role/").filter(|_| p.service == "iam") else {
        return false;
    };
    let name = role.rsplit('/').next().unwrap_or(role);
    let Some((session_role, session)) = c
        .resource
        .strip_prefix("assumed-role/")
        .and_then(|r| r.split_once('/'))
    else {
        return false;
    };
    c.service == "sts"
        && c.partition == p.partition
        && c.region.is_empty()
        && c.account == p.account
        && !session_role.is_empty()
        && !session.is_empty()
        && !session_role.contains('/')
        && !session.contains('/')
        && glob(name, session_role)
}

/// Whether any of `patterns` names `caller`.
pub fn allowed(patterns: &[String], caller: &str) -> bool {
    patterns.iter().any(|p| matches(p, caller))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCT: &str = "123456789012";

    #[test]
    fn globs_match_runs_of_anything() {
        assert!(glob("a*c", "abbbc"));
        assert!(glob("a*c", "ac"));
        assert!(glob("*", ""));
        assert!(glob("a**", "a"));
        assert!(!glob("a*c", "abd"));
        assert!(!glob("abc", "abcd"));
        assert!(glob("*/x/*", "a/x/b/c"));
        assert!(!glob("Role", "role"), "with case");
    }

    /// The slow, obviously right glob.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        match (p.split_first(), t.split_first()) {
            (None, _) => t.is_empty(),
            (Some((b'*', rest)), _) => reference(rest, t) || (!t.is_empty() && reference(p, &t[1..])),
            (Some((c, rest)), Some((d, trest))) => c == d && reference(rest, trest),
            (Some(_), None) => false,
        }
    }

    #[test]
    fn the_glob_agrees_with_the_reference_on_every_short_input() {
        fn all(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
            let mut out = vec![Vec::new()];
            let mut last = vec![Vec::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|w| {
                        alphabet.iter().map(move |c| {
                            let mut x = w.clone();
                            x.push(*c);
                            x
                        })
                    })
                    .collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        for p in all(b"ab*", 5) {
            for t in all(b"ab", 5) {
                let (ps, ts) = (std::str::from_utf8(&p).unwrap(), std::str::from_utf8(&t).unwrap());
                assert_eq!(glob(ps, ts), reference(&p, &t), "{ps:?} / {ts:?}");
            }
        }
    }

    #[test]
    fn roles_match_themselves_and_their_sessions() {
        let role = format!("arn:aws:iam::{ACCT}:role/billing");
        let path = format!("arn:aws:iam::{ACCT}:role/team/billing");
        let wild = format!("arn:aws:iam::{ACCT}:role/billing-*");
        // A user pattern never matches a session.
        let user = format!("arn:aws:iam::{ACCT}:user/*");
        let session = |role_and_session: &str| format!("arn:aws:sts::{ACCT}:assumed-role/{role_and_session}");
        let cases = [
            (&role, role.clone(), true),
            (&role, session("billing/i-0abc"), true),
            (&role, session("billing-x/s"), false),
            (
                &role,
                "arn:aws:sts::999999999999:assumed-role/billing/s".into(),
                false,
            ),
            (
                &role,
                format!("arn:aws-cn:sts::{ACCT}:assumed-role/billing/s"),
                false,
            ),
            (&role, session("billing/"), false),
            (&role, session("billing/a/b"), false),
            (&path, session("billing/s"), true),
            (&wild, session("billing-eu/s"), true),
            (&wild, session("ceo/s"), false),
            (&user, format!("arn:aws:iam::{ACCT}:user/ann"), true),
            (&user, session("ann/s"), false),
        ];
        for (pattern, caller, expected) in cases {
            assert_eq!(matches(pattern, &caller), expected, "{pattern} against {caller}");
        }
    }

    #[test]
    fn connect_instances_match_exactly() {
        let i = format!("arn:aws:connect:us-east-1:{ACCT}:instance/9308c2a1-9bc6-4cea-8290-6c0b4a6d38fa");
        assert!(matches(&i, &i));
        assert!(!matches(&i, &format!("{i}0")));
        assert!(validate_pattern(&format!("arn:aws:connect:us-east-1:{ACCT}:instance/*")).is_err());
    }

    #[test]
    fn patterns_that_reach_too_far_are_refused() {
        for bad in [
            "*",
            "arn:*",
            "arn:aws:iam::*:role/x",
            "arn:*:iam::123456789012:role/x",
            "arn:aws:*::123456789012:role/x",
            "arn:aws:iam::123456789012:*",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam:us-east-1:123456789012:role/x",
            "arn:aws:iam::123456789012:role/team/*",
            "arn:aws:iam::123456789012:role/x?",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam::123456789012:role/a b",
            "arn:aws:sts::123456789012:federated-user/x",
            "",
        ] {
            assert!(validate_pattern(bad).is_err(), "{bad}");
            assert!(!matches(bad, bad), "{bad} names nobody");
        }
        for ok in [
            "arn:aws:iam::123456789012:root",
            "arn:aws:iam::123456789012:user/ops/ann",
            "arn:aws-us-gov:iam::123456789012:role/billing-*",
            "arn:aws:sts::123456789012:assumed-role/billing/*",
            "arn:aws:connect:eu-west-2:123456789012:instance/abc-123",
        ] {
            assert!(validate_pattern(ok).is_ok(), "{ok}");
        }
        let many: Vec<String> = (0..=MAX_CALLERS)
            .map(|i| format!("arn:aws:iam::123456789012:user/u{i}"))
            .collect();
        assert!(matches!(validate_list(&many), Err(PatternError::TooMany(_))));
    }
}
