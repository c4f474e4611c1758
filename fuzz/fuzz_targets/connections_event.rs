//! The admin API (`/connections…`): a method, a path and a JSON body from an
//! IAM-signed caller. Input: one byte for the method, the path, a newline,
//! the body. State is in memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay365_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let (path, body) = rest.split_once('\n').unwrap_or((rest, ""));
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return;
    }
    let method = ["GET", "POST", "DELETE", "PATCH"][usize::from(m % 4)];
    let event = http_event(method, path, "", body, None);
    let answer = runtime().block_on(connections::handle_event(event, services()));
    check_answer(&answer, rest);
});
