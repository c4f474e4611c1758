//! `Retry-After` as Graph and the token endpoint send it: seconds or an HTTP date.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_000_000);
    if let Some(d) = relay365::microsoft::graph::parse_retry_after(s, now) {
        // A server cannot make us wait for ever.
        assert!(d <= relay365::microsoft::graph::MAX_RETRY_AFTER, "{s:?} -> {d:?}");
    }
});
