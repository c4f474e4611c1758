//! Graph's contract as the simulator answers it over HTTP: one subscription
//! per app, resource and change type; delta links that expire; page sizes;
//! listing messages by received time; a cloud without message delta; and
//! message bodies of tens of megabytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{app_token, graph, sim, webhook};
use reqwest::Method;
use serde_json::{Value, json};

fn in_an_hour() -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn subscription(resource: &str, change: &str, url: &str) -> Value {
    json!({
        "changeType": change,
        "notificationUrl": url,
        "resource": resource,
        "expirationDateTime": in_an_hour(),
        "clientState": "secret",
    })
}

#[tokio::test]
async fn a_second_subscription_of_the_same_combination_is_a_conflict_naming_the_first() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let hook = webhook().await;
    let post = |body: Value| graph(&sim, &token, Method::POST, "/subscriptions", &[], Some(body));

    let (status, first) = post(subscription(
        "/users/ann@contoso.com/mailFolders('inbox')/messages",
        "created",
        &hook,
    ))
    .await;
    assert_eq!(status, 201, "{first}");
    let id = first["id"].as_str().unwrap().to_string();

    // Graph compares resources without case and with or without the leading '/'.
    for resource in [
        "/users/ann@contoso.com/mailFolders('inbox')/messages",
        "users/ann@contoso.com/mailFolders('inbox')/messages",
        "Users/ANN@contoso.com/MailFolders('Inbox')/Messages",
    ] {
        let (status, err) = post(subscription(resource, "created", &hook)).await;
        assert_eq!(status, 409, "{resource}: {err}");
        assert_eq!(err["error"]["code"], "ObjectIdentifierInUse");
        assert_eq!(
            err["error"]["message"],
            format!("Subscription Id {id} already exists for the requested combination")
        );
        assert!(err["error"]["innerError"]["request-id"].is_string(), "{err}");
        assert!(err["error"]["innerError"]["date"].is_string(), "{err}");
    }
    assert_eq!(sim.stats().subscription_conflicts, 3);
    assert_eq!(sim.subscriptions().len(), 1);

    // Another change type or another resource is another combination.
    let (status, _) = post(subscription(
        "/users/ann@contoso.com/mailFolders('inbox')/messages",
        "created,updated",
        &hook,
    ))
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(subscription("/users/ann@contoso.com/events", "created", &hook)).await;
    assert_eq!(status, 201);
    assert_eq!(sim.stats().subscription_conflicts, 3);

    // Deleting the subscription frees the combination.
    let (status, _) = graph(
        &sim,
        &token,
        Method::DELETE,
        &format!("/subscriptions/{id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, again) = post(subscription(
        "/users/ann@contoso.com/mailFolders('inbox')/messages",
        "created",
        &hook,
    ))
    .await;
    assert_eq!(status, 201, "{again}");

    // A subscription Graph removed silently no longer exists there: it blocks nothing.
    sim.remove_subscription_silently(again["id"].as_str().unwrap());
    let (status, _) = post(subscription(
        "/users/ann@contoso.com/mailFolders('inbox')/messages",
        "created",
        &hook,
    ))
    .await;
    assert_eq!(status, 201);
    assert_eq!(sim.stats().subscription_conflicts, 3);
}
