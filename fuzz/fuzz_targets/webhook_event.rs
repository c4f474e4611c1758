//! A whole invocation payload of the webhook, as the Lambda runtime hands it
//! over (any JSON): API Gateway events, doubled headers, odd bodies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay365_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let answer = runtime().block_on(mail_webhook::handle_event(event, webhook()));
    check_answer(&answer, &String::from_utf8_lossy(data));
});
