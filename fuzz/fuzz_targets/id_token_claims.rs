//! ID tokens from the token endpoint, read into the claims that bind a
//! sign-in (`tid`, `oid`, `aud`, `iss`): any input is an answer or an error,
//! never a panic; what is accepted has a tenant id that its issuer names, and
//! an error never repeats the token.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay365::microsoft::claims;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    match claims::id_token_claims(token) {
        Ok(c) => {
            assert!(claims::is_tenant_id(&c.tid), "an accepted tid is a tenant id");
            assert_eq!(claims::tenant_of_issuer(&c.iss).as_deref(), Some(c.tid.as_str()));
            assert!(!c.oid.is_empty() && !c.aud.is_empty());
        }
        Err(e) => {
            // The messages are fixed words, so a short input can be a piece
            // of them ("is not a"); a token, with its dots, never is.
            let words = e.to_string();
            if token.len() >= 8 && token.contains('.') {
                assert!(!words.contains(token), "the token in an error: {words}");
            }
        }
    }
});
