//! Unit tests of the token module: how Microsoft's answers are classified,
//! how stored tokens and app secrets are read.

use super::*;
use crate::model::connection::AuthMode;

/// Microsoft's error answers as the token endpoint sends them (fixtures in `tests/fixtures/identity`).
#[test]
fn token_endpoint_errors_from_fixtures_are_classified() {
    let parse = |raw: &str| -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(raw).unwrap();
        (
            v["error"].as_str().unwrap().into(),
            v["error_description"].as_str().unwrap().into(),
        )
    };
    let (e, d) = parse(include_str!(
        "../../../../tests/fixtures/identity/error-invalid-grant-50173.json"
    ));
    assert!(
        matches!(classify(&e, &d, false), TokenError::ReauthRequired { code: Some(ref c), .. } if c == "AADSTS50173")
    );
    let (e, d) = parse(include_str!(
        "../../../../tests/fixtures/identity/error-invalid-client-7000215.json"
    ));
    let err = classify(&e, &d, true);
    assert!(matches!(err, TokenError::AppCredentials { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let (e, d) = parse(include_str!(
        "../../../../tests/fixtures/identity/error-expired-secret-7000222.json"
    ));
    let err = classify(&e, &d, true);
    assert!(
        matches!(err, TokenError::AppCredentials { ref code, .. } if code == "AADSTS7000222"),
        "{err:?}"
    );
    assert!(err.to_string().contains("set-app-secret"), "{err}");
}

#[test]
fn an_error_code_that_is_no_identifier_is_not_repeated() {
    let body = br#"{"error": "inv;;;;<b>x</b>", "error_description": "AADSTS7000215: Invalid client secret provided."}"#;
    let Err(e) = token_answer(401, body, true) else {
        panic!("an error answer")
    };
    let words = e.to_string();
    assert!(!words.contains("inv;;;;"), "{words}");
    let known = br#"{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}"#;
    assert!(matches!(
        token_answer(401, known, true),
        Err(TokenError::AppCredentials { .. })
    ));
}

#[test]
fn a_token_answer_fixture_parses_and_is_redacted() {
    let v: serde_json::Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/identity/token-refresh.json"
    ))
    .unwrap();
    let stored = StoredToken {
        refresh_token: Sensitive::new(v["refresh_token"].as_str().unwrap()),
        generation: 3,
    };
    assert!(!format!("{stored:?}").contains("rotated-refresh-token"));
    let back: StoredToken = serde_json::from_str(&serde_json::to_string(&stored).unwrap()).unwrap();
    assert_eq!(
        (back.refresh_token.expose(), back.generation),
        ("0.AXoA-rotated-refresh-token", 3)
    );
}

#[test]
fn invalid_grant_codes_become_reauth_with_words() {
    for (code, words) in [
        ("AADSTS700082", "long time without use"),
        ("AADSTS50173", "password change"),
        ("AADSTS70008", "long time without use"),
    ] {
        match classify(
            "invalid_grant",
            &format!("{code}: The refresh token has expired."),
            false,
        ) {
            TokenError::ReauthRequired { code: c, reason } => {
                assert_eq!(c.as_deref(), Some(code));
                assert!(reason.contains(words), "{reason}");
                assert!(reason.contains("Connect the mailbox again"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn bad_app_secret_is_an_operator_problem() {
    let e = classify(
        "invalid_client",
        "AADSTS7000215: Invalid client secret provided.",
        true,
    );
    assert!(matches!(e, TokenError::AppCredentials { .. }));
    assert!(e.to_string().contains("set-app-secret"), "{e}");
    assert!(classify("temporarily_unavailable", "", true).is_retryable());
}

#[test]
fn app_secret_json_needs_a_credential() {
    let e = AppCredentials::from_secret_json(r#"{"client_id":"c","tenant_id":"t"}"#).unwrap_err();
    assert!(e.to_string().contains("neither client_secret nor certificate"));
    let e = AppCredentials::from_secret_json("{not json").unwrap_err();
    assert!(matches!(e, TokenError::Misconfigured(_)));
    let ok = AppCredentials::from_secret_json(
        r#"{"client_id":"c","tenant_id":"t","client_secret":"s3cr3t-value"}"#,
    )
    .unwrap();
    assert!(!format!("{ok:?}").contains("s3cr3t-value"));
    assert!(ok.credential(AuthMode::AppCertificate).is_err());
    assert!(ok.credential(AuthMode::AppSecret).is_ok());
}
