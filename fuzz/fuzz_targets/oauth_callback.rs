//! The sign-in pages: the query string and the cookie a browser brings to
//! `/oauth/start`, `/oauth/callback` and `/oauth/admin-consent`. Input: one
//! byte for the route, then the raw query, a newline, the cookie header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay365_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let Some((route, rest)) = selector_and_text(data) else {
        return;
    };
    let (query, cookie) = rest.split_once('\n').unwrap_or((rest, ""));
    let path = ["/oauth/start", "/oauth/callback", "/oauth/admin-consent"][usize::from(route % 3)];
    let cookie = (!cookie.is_empty()).then_some(cookie);
    let event = http_event("GET", path, query, "", cookie);
    let answer = runtime().block_on(oauth_callback::handle_event(event, services()));
    check_answer(&answer, rest);
});
