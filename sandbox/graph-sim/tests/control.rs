//! The simulator's people-facing parts: the consent page of interactive
//! sign-ins, and the `/_sim/` routes the demo's walk-through uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{CLIENT, REDIRECT, TENANT, claims, client, code_of, discovery_url, get_json, sim, token};
use graph_sim::Sim;
use serde_json::{Value, json};

fn authorize(sim: &Sim, extra: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&format!("{}/{TENANT}/oauth2/v2.0/authorize", sim.url())).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "offline_access Mail.Read")
        .append_pair("state", "st\"<x>")
        .append_pair("login_hint", "ann@contoso.com");
    for (k, v) in extra {
        url.query_pairs_mut().append_pair(k, v);
    }
    url.to_string()
}

#[tokio::test]
async fn an_interactive_sign_in_asks_first_and_cancel_is_a_declined_consent() {
    let sim = sim().await;
    sim.set_interactive_consent(true);
    let page = client().get(authorize(&sim, &[])).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Permissions requested") && html.contains("Mail.Read"),
        "{html}"
    );
    // Request values are escaped, never markup.
    assert!(
        html.contains("st&quot;&lt;x&gt;") && !html.contains("st\"<x>"),
        "{html}"
    );
    assert!(
        html.contains(r#"<option value="ann@contoso.com" selected>"#),
        "{html}"
    );

    let cancel = client()
        .get(authorize(&sim, &[("sim_consent", "deny")]))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 302);
    let to = url::Url::parse(cancel.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(q["error"], "access_denied");
    assert!(q["error_description"].starts_with("AADSTS65004"), "{q:?}");
    assert_eq!(q["state"], "st\"<x>");

    let accept = client()
        .get(authorize(
            &sim,
            &[("sim_consent", "accept"), ("sim_user", "ann@contoso.com")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(accept.status(), 302);
    let to = accept.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with(REDIRECT) && to.contains("code=sim-code-"), "{to}");
}

#[tokio::test]
async fn mail_can_be_delivered_and_sent_mail_read_over_http() {
    let sim = sim().await;
    let base = format!("{}/_sim/mailboxes", sim.url());
    let post = |upn: &str, body: String| {
        client()
            .post(format!("{base}/{upn}/messages"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Refused: (case, mailbox, body, status, what the error message names).
    let refused = [
        (
            "unknown mailbox",
            "nobody@contoso.com",
            json!({"from": "a@b.c", "subject": "s"}).to_string(),
            404,
            None,
        ),
        (
            "no from",
            "ann@contoso.com",
            "{\"subject\": 1}".to_string(),
            400,
            Some("\"from\""),
        ),
        (
            "from not an address",
            "ann@contoso.com",
            json!({"from": "nobody", "subject": "s"}).to_string(),
            400,
            None,
        ),
    ];
    for (case, upn, body, status, names) in refused {
        let resp = post(upn, body).await.unwrap();
        assert_eq!(resp.status(), status, "{case}");
        if let Some(names) = names {
            let err: Value = resp.json().await.unwrap();
            assert!(
                err["error"]["message"].as_str().unwrap().contains(names),
                "{case}: {err}"
            );
        }
    }

    let ok = post(
        "ann@contoso.com",
        json!({"from": "bo@example.org", "subject": "Hello", "body": "<p>Hi</p>"}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 201);
    let id = ok.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("AAMkAD"));

    let sent = get_json(format!("{base}/ann@contoso.com/sent")).await;
    assert_eq!(sent, json!({"value": []}));
}

/// What MSAL and other libraries read: the tenant's OpenID discovery
/// document (on the URL callers reach the simulator at) and an ID token
/// with Microsoft's v2.0 claims.
#[tokio::test]
async fn discovery_and_id_tokens_carry_what_libraries_read() {
    let sim = sim().await;
    sim.set_interactive_consent(false);
    sim.set_advertised_url("https://127.0.0.1:4443/");
    let doc = get_json(discovery_url(&sim, TENANT)).await;
    assert_eq!(
        doc["token_endpoint"],
        format!("https://127.0.0.1:4443/{TENANT}/oauth2/v2.0/token")
    );
    assert_eq!(
        doc["authorization_endpoint"],
        format!("https://127.0.0.1:4443/{TENANT}/oauth2/v2.0/authorize")
    );

    let url = authorize(&sim, &[]).replace("offline_access+Mail.Read", "offline_access+openid+Mail.Read");
    let code = code_of(&client().get(url).send().await.unwrap());
    let token = token(
        &sim,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT),
            ("client_secret", "s"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("scope", "offline_access openid Mail.Read"),
        ],
    )
    .await;
    let id_token = token["id_token"].as_str().unwrap_or_else(|| panic!("{token}"));
    let claims = claims(id_token);
    for claim in ["sub", "oid", "tid", "aud", "iss", "exp", "preferred_username"] {
        assert!(!claims[claim].is_null(), "{claim} missing from {claims}");
    }
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["aud"], CLIENT);
    assert_eq!(claims["oid"], "u1");
    assert_eq!(claims["preferred_username"], "ann@contoso.com");
}
