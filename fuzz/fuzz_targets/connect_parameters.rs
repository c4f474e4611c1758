//! Amazon Connect's `Details.Parameters` (every value a string chosen in a
//! contact flow), turned into a send-mail request.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(params)) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(v) = send_mail::request::from_connect(&params) {
        // What Connect's parameters become must be a request body send-mail reads.
        let _ = send_mail::request::parse(&v, None, None);
    }
});
