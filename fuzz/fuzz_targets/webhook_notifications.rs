//! A body Graph (or anyone) POSTs to `/notifications` or `/lifecycle`:
//! notification collections and lifecycle events. `$CS` in the input becomes
//! a genuine clientState for connection `c1`, so the fuzzer gets past the
//! signature check into the per-notification code.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay365_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let Some((route, body)) = selector_and_text(data) else {
        return;
    };
    let cs = client_state();
    let body = body.replace("$CS", &cs);
    let path = if route & 1 == 0 {
        "/notifications"
    } else {
        "/notifications/lifecycle"
    };
    let event = http_event("POST", path, "", &body, None);
    let answer = runtime().block_on(mail_webhook::handle_event(event, webhook()));
    check_answer(&answer, &body);
    assert!(!answer.to_string().contains(&cs), "a clientState in an answer");
});
