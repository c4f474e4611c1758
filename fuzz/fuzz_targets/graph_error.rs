//! Graph's error answers: any body with any status, read into the error a
//! caller sees.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&s, body)) = data.split_first() else {
        return;
    };
    let status = 400 + u16::from(s);
    let e = relay365::microsoft::graph::GraphError::from_answer(status, body, None);
    let _ = e.to_string();
    let _ = e.is_retryable();
    let _ = e.code();
});
