//! Admin consent end to end (moto, the simulator): proven by the
//! application permissions in an app-only token, usable once, and only in
//! the browser that started it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_page, assert_says, get, start, through_microsoft};
use relay365::model::connection::Status;
use relay365_harness::*;
use serde_json::json;

/// An app-only connection for Fabrikam's shared mailbox; returns the link of
/// its start step (`/oauth/admin-consent?link=…`).
async fn create(s: &Stack, scopes: serde_json::Value) -> String {
    let body = json!({"id": "fabrikam", "auth": "app_secret", "scopes": scopes, "mailbox": SHARED_UPN,
        "tenant_id": CUSTOMER_TENANT});
    let link = common::create(s, body).await["admin_consent_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        link.starts_with("https://relay.example/oauth/admin-consent?link="),
        "{link}"
    );
    path_and_query(&link)
}

/// The whole consent in one browser: (status, page).
async fn consent(s: &Stack, link: &str) -> (u16, String) {
    let (resp, _) = through_microsoft(s, link).await;
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
    assert_says(
        (status, &page),
        403,
        "does not include the application permissions Mail.Read, Mail.Send, which connection fabrikam needs",
    );
    assert!(page.contains("API permissions"), "{page}");
    assert!(page.contains("Grant admin consent"), "{page}");
    let stored = s.stored("fabrikam").await.unwrap();
    assert_eq!(stored.status, Status::PendingConsent);
    assert!(stored.last_error.unwrap().contains("Mail.Read, Mail.Send"));

    // Half of it granted: the page names what is still missing.
    s.sim.set_granted_roles(&["Mail.Send"]);
    let (status, page) = consent(&s, &link).await;
    assert_says((status, &page), 403, "application permission Mail.Read,");
    assert!(!page.contains("Mail.Send,"), "{page}");
    assert_eq!(s.stored("fabrikam").await.unwrap().status, Status::PendingConsent);

    // Granted (Mail.ReadWrite covers Mail.Read): the same link now works.
    s.sim.set_granted_roles(&["Mail.ReadWrite", "Mail.Send"]);
    let (status, page) = consent(&s, &link).await;
    assert_says(
        (status, &page),
        200,
        "Connection fabrikam for support@fabrikam.com is active",
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
        assert_page(
            &get(&s, &back_b, &cookies).await,
            400,
            "Finish in the same browser",
        );
    }
    // A's own redirect: a newer consent was started since.
    assert_page(
        &get(&s, &back_a, &[&cookie_a]).await,
        400,
        "newer one was started",
    );
    assert_eq!(s.stored("fabrikam").await.unwrap().status, Status::PendingConsent);

    // B, in its own browser, completes it.
    let resp = get(&s, &back_b, &[&cookie_b]).await;
    assert_eq!(resp.status(), 200, "{}", body_text(&resp));
    assert_eq!(s.stored("fabrikam").await.unwrap().status, Status::Active);

    // Replayed, or the link opened a second time: refused.
    assert_page(&get(&s, &back_b, &[&cookie_b]).await, 400, "already completed");
    assert_page(&get(&s, &link, &[]).await, 400, "Consent link already used");
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
