//! The admin API (`/connections…`): a method, a path and a JSON body from an
//! IAM-signed caller. Input: one byte for the method, the path, a newline,
//! the body. State is in memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay365_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let Some((m, rest)) = selector_and_text(data) else {
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
    // Keep the in-memory state small: a connection this input created goes again.
    if answer["statusCode"] == 201
        && let Some(id) = answer["body"]
            .as_str()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .and_then(|v| v["id"].as_str().map(str::to_string))
    {
        let delete = http_event("DELETE", &format!("/connections/{id}"), "", "", None);
        runtime().block_on(connections::handle_event(delete, services()));
    }
});
