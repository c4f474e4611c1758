//! The `roles` of an app-only access token (the application permissions an
//! admin consent granted), and which of a connection's permissions they miss:
//! never a panic, and a missing permission is always one that was asked for.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay365::microsoft::claims;

const REQUIRED: [&str; 4] = ["Mail.Read", "Mail.ReadWrite", "Mail.Send", "Calendars.Read"];

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(roles) = claims::token_roles(token) {
        let missing = claims::missing_roles(&REQUIRED, &roles);
        for m in &missing {
            assert!(REQUIRED.contains(m));
            assert!(!roles.iter().any(|r| r.eq_ignore_ascii_case(m)), "{m} is granted");
        }
        if missing.is_empty() {
            assert!(REQUIRED.iter().all(|p| {
                roles.iter().any(|r| r.eq_ignore_ascii_case(p))
                    || roles
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(&p.replace(".Read", ".ReadWrite")))
            }));
        }
    }
});
