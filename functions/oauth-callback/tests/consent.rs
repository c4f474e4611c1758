//! Admin consent end to end (moto, the simulator): proven by the
//! application permissions in an app-only token, usable once, and only in
//! the browser that started it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use relay365::model::connection::Status;
use relay365_harness::*;
use serde_json::json;

async fn get(s: &Stack, path: &str, cookies: &[&str]) -> lambda_http::Response<lambda_http::Body> {
    oauth_callback::handle(request("GET", path, None, cookies), &s.services).await
}

/// An app-only connection for Fabrikam's shared mailbox; returns the link of
/// its start step (`/oauth/admin-consent?link=…`).
async fn create(s: &Stack, scopes: serde_json::Value) -> String {
    let body = json!({"id": "fabrikam", "auth": "app_secret", "scopes": scopes, "mailbox": SHARED_UPN,
        "tenant_id": CUSTOMER_TENANT});
    let resp = connections::handle(
        request("POST", "/connections", Some(&body.to_string()), &[]),
        &s.services,
    )
    .await;
    assert_eq!(resp.status(), 201, "{}", body_text(&resp));
    let link = body_json(&resp)["admin_consent_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        link.starts_with("https://relay.example/oauth/admin-consent?link="),
        "{link}"
    );
    path_and_query(&link)
}

/// Opens the start step in a browser: (Microsoft's URL, the cookie set).
async fn start(s: &Stack, link: &str) -> (String, String) {
    let resp = get(s, link, &[]).await;
    assert_eq!(resp.status(), 302, "{}", body_text(&resp));
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/oauth"] {
        assert!(set.contains(attr), "cookie lacks {attr}: {set}");
    }
    (location(&resp), cookies(&resp).remove(0))
}

/// The whole consent in one browser: (status, page).
async fn consent(s: &Stack, link: &str) -> (u16, String) {
    let (microsoft, cookie) = start(s, link).await;
    let back = s.follow(&microsoft).await;
    let resp = get(s, &path_and_query(&back), &[&cookie]).await;
    (resp.status().as_u16(), body_text(&resp))
}

#[tokio::test]
async fn admin_consent_without_the_application_permissions_is_refused_until_they_are_granted() {
    let s = Stack::start().await;
    let link = create(&s, json!(["Mail.ReadOnly", "Mail.Send"])).await;

    // The admin consents, but the app registration asks for no application
    // permission: Entra still issues an app-only token, with no roles.
    s.sim.set_granted_roles(&[]);
    let (status, page) = consent(&s, &link).await;
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("does not include the application permissions Mail.Read, Mail.Send, which connection fabrikam needs"),
        "{page}"
    );
    assert!(page.contains("API permissions"), "{page}");
    assert!(page.contains("Grant admin consent"), "{page}");
    let stored = s.stored("fabrikam").await.unwrap();
    assert_eq!(stored.status, Status::PendingConsent);
    assert!(stored.last_error.unwrap().contains("Mail.Read, Mail.Send"));

    // Half of it granted: the page names what is still missing.
    s.sim.set_granted_roles(&["Mail.Send"]);
    let (status, page) = consent(&s, &link).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("application permission Mail.Read,"), "{page}");
    assert!(!page.contains("Mail.Send,"), "{page}");
    assert_eq!(s.stored("fabrikam").await.unwrap().status, Status::PendingConsent);

    // Granted (Mail.ReadWrite covers Mail.Read): the same link now works.
    s.sim.set_granted_roles(&["Mail.ReadWrite", "Mail.Send"]);
    let (status, page) = consent(&s, &link).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Connection fabrikam for support@fabrikam.com is active"),
        "{page}"
    );
    let stored = s.stored("fabrikam").await.unwrap();
    assert_eq!(stored.status, Status::Active);
    assert!(stored.last_error.is_none());
    assert!(s.services.tokens.token_for("fabrikam").await.is_ok());
}

#[tokio::test]
async fn a_consent_link_works_once_and_only_in_the_browser_that_started_it() {
    let s = Stack::start().await;
    let link = create(&s, json!(["Mail.ReadOnly"])).await;

    // Browser A starts; browser B starts after it (the newer one counts).
    let (microsoft_a, cookie_a) = start(&s, &link).await;
    let back_a = path_and_query(&s.follow(&microsoft_a).await);
    let (microsoft_b, cookie_b) = start(&s, &link).await;
    let back_b = path_and_query(&s.follow(&microsoft_b).await);

    // B's redirect without a cookie, or with A's cookie: another browser.
    for cookies in [vec![], vec![cookie_a.as_str()]] {
        let resp = get(&s, &back_b, &cookies).await;
        assert_eq!(resp.status(), 400);
        assert!(
            body_text(&resp).contains("Finish in the same browser"),
            "{}",
            body_text(&resp)
        );
    }
    // A's own redirect: a newer consent was started since.
    let resp = get(&s, &back_a, &[&cookie_a]).await;
    assert_eq!(resp.status(), 400);
    assert!(
        body_text(&resp).contains("newer one was started"),
        "{}",
        body_text(&resp)
    );
    assert_eq!(s.stored("fabrikam").await.unwrap().status, Status::PendingConsent);

    // B, in its own browser, completes it.
    let resp = get(&s, &back_b, &[&cookie_b]).await;
    assert_eq!(resp.status(), 200, "{}", body_text(&resp));
    assert_eq!(s.stored("fabrikam").await.unwrap().status, Status::Active);

    // Replayed, or the link opened a second time: refused.
    let replay = get(&s, &back_b, &[&cookie_b]).await;
    assert_eq!(replay.status(), 400);
    assert!(
        body_text(&replay).contains("already completed"),
        "{}",
        body_text(&replay)
    );
    let again = get(&s, &link, &[]).await;
    assert_eq!(again.status(), 400);
    assert!(
        body_text(&again).contains("Consent link already used"),
        "{}",
        body_text(&again)
    );
    // Microsoft's redirect for the link as POST /connections gave it (its
    // state is the link itself) goes through the start step, spent as well.
    let legacy = link.replace("?link=", "?admin_consent=True&tenant=x&state=");
    let to_start = get(&s, &legacy, &[]).await;
    assert_eq!(to_start.status(), 302);
    let again = get(&s, &path_and_query(&location(&to_start)), &[]).await;
    assert!(
        body_text(&again).contains("Consent link already used"),
        "{}",
        body_text(&again)
    );
}
