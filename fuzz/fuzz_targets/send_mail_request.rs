//! The send-mail request body (`POST /mail/send` and JSON invocations),
//! with and without an attachments bucket and an `Idempotency-Key` header.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let bucket = (flags & 1 == 1).then_some("relay365-attachments");
    let key = (flags & 2 == 2).then_some("key-0001");
    if let Ok(req) = send_mail::request::parse(&v, bucket, key) {
        // A checked request can always be turned into Graph's message.
        let _ = req.fingerprint();
        let _ = req.inline_bytes();
    }
});
