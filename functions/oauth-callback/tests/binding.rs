//! Who may connect a mailbox, end to end (moto, the simulator): only the
//! mailbox's own account, in the mailbox's organisation, and after the first
//! sign-in only that same account. A refusal stores nothing and leaves the
//! link usable for the right person.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_says, assert_stored, create, through_microsoft};
use graph_sim::{AuthorizeOutcome, User};
use relay365::model::connection::Status;
use relay365_harness::*;
use serde_json::json;

/// Another organisation, with a domain of its own.
const OTHER_TENANT: &str = "0badc0de-0000-4000-8000-00000000e7e0";
const EVE: &str = "eve@fabrikam-labs.com";

/// The whole delegated flow as `upn`; returns the callback's (status, page).
async fn connect_as(s: &Stack, connect_url: &str, upn: &str) -> (u16, String) {
    s.sim
        .set_authorize_outcome(AuthorizeOutcome::ConsentAs(upn.into()));
    let (done, _) = through_microsoft(s, &path_and_query(connect_url)).await;
    (done.status().as_u16(), body_text(&done))
}

/// The whole flow as `upn`, who is not the mailbox's own account: refused
/// with a page that says `words`. The page.
async fn refused_as(s: &Stack, link: &str, upn: &str, words: &str) -> String {
    let (status, page) = connect_as(s, link, upn).await;
    assert_says((status, &page), 403, words);
    page
}

async fn current_link(s: &Stack, id: &str) -> String {
    common::connection(s, id).await.1["connect_url"]
        .as_str()
        .unwrap()
        .to_string()
}

fn user(id: &str, upn: &str, tenant: &str) -> User {
    User {
        id: id.into(),
        upn: upn.into(),
        display_name: id.into(),
        tenant: tenant.into(),
    }
}

#[tokio::test]
async fn a_user_of_another_organisation_whose_mail_is_the_mailbox_cannot_connect_it() {
    let logs = relay365_testkit::LogCapture::start();
    let s = Stack::start().await;
    // Eve's own administrator sets her `mail` to Ann's address ("nOAuth").
    s.sim.add_user(user("u-eve", EVE, OTHER_TENANT));
    s.sim.set_user_mail(EVE, Some(UPN));
    let v = create(
        &s,
        // Multi-tenant sign-in: Microsoft lets a user of any organisation in.
        json!({"id": "support", "auth": "delegated", "scopes": ["Mail.ReadOnly", "Mail.Send"], "mailbox": UPN,
               "tenant_id": "organizations",
               "subscriptions": [{"resource": "mail", "target": "https://flow.example/hook"}]}),
    )
    .await;
    let link = v["connect_url"].as_str().unwrap().to_string();

    let words = format!(
        "This link connects {UPN}, a mailbox of organisation {TENANT}, but you signed in as {EVE} of organisation {OTHER_TENANT}."
    );
    let page = refused_as(&s, &link, EVE, &words).await;
    assert!(page.contains("Nothing was stored"), "{page}");
    let stored = assert_stored(&s, "support", Status::PendingConsent, 0).await;
    assert_eq!((stored.tid.as_deref(), stored.oid.as_deref()), (None, None));
    assert!(
        s.stored_refresh_token("support").await.is_none(),
        "Eve's token was stored"
    );
    // Every subscription create starts with Graph's validation handshake.
    let graph_subscription_calls = || s.sim.stats().handshakes.0;
    assert_eq!(
        graph_subscription_calls(),
        0,
        "a subscription was tried on Eve's mailbox"
    );

    // Ann, with the same link, right after.
    let (status, page) = connect_as(&s, &link, UPN).await;
    assert_eq!(status, 200, "{page}");
    let stored = s.stored("support").await.unwrap();
    assert_eq!(stored.status, Status::Active);
    assert_eq!(stored.tid.as_deref(), Some(TENANT));
    assert_eq!(stored.oid.as_deref(), Some("u-ann"));
    assert_eq!(stored.mailbox.as_deref(), Some(UPN));
    assert!(
        graph_subscription_calls() > 0,
        "Ann's sign-in creates the subscription"
    );

    let text = logs.text();
    assert!(text.contains("sign-in refused"), "the capture works");
    for secret in s.sim.issued_secrets() {
        assert!(!text.contains(&secret), "a token reached the logs");
    }
}

#[tokio::test]
async fn another_user_of_the_same_organisation_cannot_take_over_a_connected_mailbox() {
    let s = Stack::start().await;
    let v = create(
        &s,
        json!({"id": "support", "auth": "delegated", "scopes": ["Mail.ReadOnly"], "mailbox": UPN}),
    )
    .await;
    let (status, page) = connect_as(&s, v["connect_url"].as_str().unwrap(), UPN).await;
    assert_eq!(status, 200, "{page}");
    let before = s.stored_refresh_token("support").await.unwrap();

    // Bob, of Ann's organisation, has Ann's address among his proxy addresses
    // (say, it was moved to his account): he is still not the user who connected it.
    s.sim.add_user(user("u-bob", "bob@contoso.com", TENANT));
    s.sim.set_proxy_addresses(
        "bob@contoso.com",
        &["SMTP:bob@contoso.com", "smtp:ann@contoso.com"],
    );
    let link = current_link(&s, "support").await;
    let words = format!(
        "{UPN} was connected by another account of organisation {TENANT}; you signed in as bob@contoso.com."
    );
    let page = refused_as(&s, &link, "bob@contoso.com", &words).await;
    assert!(page.contains("keeps working"), "{page}");
    let stored = assert_stored(&s, "support", Status::Active, 1).await;
    assert_eq!(stored.oid.as_deref(), Some("u-ann"));
    assert_eq!(s.stored_refresh_token("support").await.unwrap(), before);
    s.services.tokens.invalidate("support").await;
    assert!(
        s.services.tokens.token_for("support").await.is_ok(),
        "the connection stopped working"
    );

    // Ann herself signs in again with the same link.
    let (status, page) = connect_as(&s, &link, UPN).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(s.stored("support").await.unwrap().generation, 2);
}

#[tokio::test]
async fn a_proxy_address_signs_in_and_mail_alone_does_not() {
    let s = Stack::start().await;
    let shared = "support@contoso.com";
    s.sim.add_user(user("u-bob", "bob@contoso.com", TENANT));
    // Bob's `mail` says support@, but the organisation lists it for Ann only.
    s.sim.set_user_mail("bob@contoso.com", Some(shared));
    s.sim
        .set_proxy_addresses(UPN, &["SMTP:ann@contoso.com", "smtp:Support@Contoso.com"]);
    let v = create(
        &s,
        json!({"id": "desk", "auth": "delegated", "scopes": ["Mail.ReadOnly"], "mailbox": shared}),
    )
    .await;
    let link = v["connect_url"].as_str().unwrap().to_string();

    refused_as(
        &s,
        &link,
        "bob@contoso.com",
        &format!("This link connects {shared}, but you signed in as bob@contoso.com."),
    )
    .await;
    assert!(s.stored_refresh_token("desk").await.is_none());

    let (status, page) = connect_as(&s, &link, UPN).await;
    assert_eq!(status, 200, "{page}");
    let stored = s.stored("desk").await.unwrap();
    assert_eq!(
        stored.mailbox.as_deref(),
        Some(shared),
        "the connection keeps its mailbox"
    );
    assert_eq!(stored.oid.as_deref(), Some("u-ann"));
}

#[tokio::test]
async fn a_mailbox_in_a_domain_no_organisation_owns_is_refused() {
    let s = Stack::start().await;
    let v = create(
        &s,
        json!({"id": "lost", "auth": "delegated", "scopes": ["Mail.ReadOnly"], "mailbox": "desk@nobody-owns-this.example",
               "tenant_id": "organizations"}),
    )
    .await;
    let (status, page) = connect_as(&s, v["connect_url"].as_str().unwrap(), UPN).await;
    assert_says(
        (status, &page),
        400,
        "Microsoft knows no organisation that owns the domain nobody-owns-this.example",
    );
    assert_eq!(s.stored("lost").await.unwrap().status, Status::PendingConsent);
    assert!(s.stored_refresh_token("lost").await.is_none());
}

#[tokio::test]
async fn a_tenant_domain_is_resolved_through_discovery() {
    let s = Stack::start().await;
    s.sim.add_domain("contoso.onmicrosoft.com", TENANT);
    let v = create(
        &s,
        json!({"id": "support", "auth": "delegated", "scopes": ["Mail.ReadOnly"], "mailbox": UPN,
               "tenant_id": "contoso.onmicrosoft.com"}),
    )
    .await;
    let (status, page) = connect_as(&s, v["connect_url"].as_str().unwrap(), UPN).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(s.stored("support").await.unwrap().tid.as_deref(), Some(TENANT));
}
