//! Caller ARN matching (`allowed_callers`): a pattern and a caller ARN, split
//! at the first NUL. The fast matcher must agree with a plain
//! dynamic-programming one, and the rules that keep a pattern inside its
//! account must hold for every input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay365::model::callers::{glob, matches, validate_pattern};

/// The slow, obviously right glob: `*` matches any run of bytes.
fn reference(p: &[u8], t: &[u8]) -> bool {
    let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        m[i][0] = m[i - 1][0] && p[i - 1] == b'*';
        for j in 1..=t.len() {
            m[i][j] = if p[i - 1] == b'*' {
                m[i - 1][j] || m[i][j - 1]
            } else {
                m[i - 1][j - 1] && p[i - 1] == t[j - 1]
            };
        }
    }
    m[p.len()][t.len()]
}

/// `arn:partition:service:region:account` of an ARN.
fn head(arn: &str) -> Vec<&str> {
    arn.splitn(6, ':').take(5).collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (pattern, caller) = s.split_once('\0').unwrap_or((s, s));
    if pattern.len() <= 256 && caller.len() <= 256 {
        assert_eq!(
            glob(pattern, caller),
            reference(pattern.as_bytes(), caller.as_bytes()),
            "{pattern:?} / {caller:?}"
        );
    }
    if !pattern.contains('*') && validate_pattern(pattern).is_ok() {
        assert!(matches(pattern, pattern), "a literal pattern names itself: {pattern:?}");
    }
    if matches(pattern, caller) {
        assert!(validate_pattern(pattern).is_ok(), "only a valid pattern names anyone");
        let (p, c) = (head(pattern), head(caller));
        // Never another partition or account.
        assert_eq!(p.get(1), c.get(1), "{pattern:?} / {caller:?}");
        assert_eq!(p.get(4), c.get(4), "{pattern:?} / {caller:?}");
        // A Connect instance only names itself.
        if p.get(2) == Some(&"connect") {
            assert_eq!(pattern, caller);
        }
    }
});
