//! The token endpoint's answers (tokens and AADSTS errors), read into what a
//! connection's owner is told. A refresh token in the input never reaches
//! the error's words.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&s, body)) = data.split_first() else {
        return;
    };
    let status = if s & 0x80 == 0 {
        200
    } else {
        400 + u16::from(s & 0x7f)
    };
    let app_only = s & 1 == 1;
    if let Err(e) = relay365::microsoft::tokens::token_answer(status, body, app_only) {
        let words = e.to_string();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            // Microsoft's own description is shown to the person (it names the
            // AADSTS code and the fix); a token never is.
            let described = v["error_description"].as_str().unwrap_or_default();
            for field in ["refresh_token", "access_token"] {
                if let Some(t) = v[field]
                    .as_str()
                    .filter(|t| t.len() >= 8 && !described.contains(*t))
                {
                    assert!(!words.contains(t), "a token in an error: {words}");
                }
            }
        }
    }
});
