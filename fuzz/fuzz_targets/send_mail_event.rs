//! A whole send-mail invocation: an API Gateway event (the body put into the
//! envelope when the first byte is even) or any other JSON (Amazon Connect,
//! direct calls). State is in memory and empty, so nothing is ever sent.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use relay365_fuzz::*;

fn sender() -> &'static send_mail::Sender<'static> {
    static S: OnceLock<send_mail::Sender<'static>> = OnceLock::new();
    S.get_or_init(|| send_mail::Sender::new(services()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let event = if mode & 1 == 0 {
        let Ok(body) = std::str::from_utf8(rest) else {
            return;
        };
        http_event("POST", "/mail/send", "", body, None)
    } else {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) else {
            return;
        };
        v
    };
    let answer = runtime().block_on(send_mail::handle_event(event, sender()));
    let text = relay365_fuzz::strings(&answer).join("\n");
    let input = String::from_utf8_lossy(rest);
    for secret in [SIGNING_KEY, "fuzz-secret"] {
        assert!(
            input.contains(secret) || !text.contains(secret),
            "a secret in an answer: {text}"
        );
    }
});
