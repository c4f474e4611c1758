//! The app certificate as the operator stores it: a PFX (PKCS#12), base64, with a password.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(n).min(rest.len());
    let (password, pfx) = rest.split_at(split);
    let Ok(password) = std::str::from_utf8(password) else {
        return;
    };
    let _ = relay365::microsoft::certificate::Certificate::from_pfx(pfx, password);
});
