//! Mail addresses: the one rule every route applies, so an address that
//! `POST /connections` accepts as a mailbox is also accepted as `from`.

/// Checks an address the way mail systems will: `local@domain.tld`, no
/// spaces or characters that need quoting, at most 320 characters.
pub fn is_valid(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    a.len() <= 320
        && !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.starts_with('-')
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        })
        && !local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[]\\,;:\"@".contains(c))
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn addresses_mail_systems_accept() {
        for ok in [
            "ann@contoso.com",
            "a.b+c@sub.example.org",
            "x@xn--bcher-kva.example",
            "ann@bücher.example",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "ann",
            "@contoso.com",
            "ann@",
            "ann@contoso",
            "a b@c.com",
            ".a@c.com",
            "a..b@c.com",
            "a@-c.com",
            "a@c..com",
            "a@c.com.",
            "<a>@c.com",
            "a\u{0}@c.com",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
        assert!(!is_valid(&format!("{}@c.com", "a".repeat(65))));
    }
}
