//! The state store on DynamoDB (moto, through the real SDK) and in memory:
//! the same checks on both, so the in-memory store unit tests rely on has
//! DynamoDB's semantics; and concurrent writers that must not undo each other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/damaged_item.rs"]
mod damaged_item;

use std::sync::Arc;

use relay365::Cloud;
use relay365::aws::sdk::LazyClient;
use relay365::aws::store::{Claim, ConnectionChange, Store, StoreError, SubscriptionChange};
use relay365::model::connection::{AuthMode, Connection, Status, Subscription};
use relay365::model::scopes::{FeatureScope, Resource};
use relay365_testkit::Aws;

const TABLE: &str = "relay365-state";

async fn dynamo(aws: &Aws) -> Store {
    let sdk = aws.sdk_config().await;
    relay365_testkit::create_state_table(&sdk, TABLE).await.unwrap();
    another_container(aws).await
}

/// A store on the state table with a client of its own, as each Lambda
/// container has its own.
async fn another_container(aws: &Aws) -> Store {
    on_table(aws, TABLE).await
}

async fn on_table(aws: &Aws, table: &str) -> Store {
    let sdk = aws.sdk_config().await;
    Store::dynamo(
        Arc::new(LazyClient::ready(aws_sdk_dynamodb::Client::new(&sdk))),
        table.into(),
    )
}

fn connection(id: &str, subs: usize) -> Connection {
    let mut c = Connection::new(
        id.into(),
        AuthMode::Delegated,
        Cloud::Global,
        "organizations".into(),
        Some("ann@contoso.com".into()),
        vec![FeatureScope::MailReadOnly],
    );
    for _ in 0..subs {
        c.subscriptions
            .push(Subscription::new(Resource::Mail, Some("inbox".into()), None));
    }
    c
}

/// What both stores must do alike.
async fn semantics(store: &Store) {
    // Create, read back, refuse a second create.
    let conn = connection("support", 2);
    store.create_connection(&conn).await.unwrap();
    assert!(matches!(
        store.create_connection(&conn).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let read = store.require("support").await.unwrap();
    assert_eq!(read.subscriptions.len(), 2);
    assert_eq!(read.status, Status::PendingConsent);
    assert!(store.connection("nobody").await.unwrap().is_none());
    assert!(matches!(
        store
            .update_connection("nobody", ConnectionChange::new().status(Status::Active))
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // A nonce is spent once; the second spend is a conflict.
    store
        .update_connection("support", ConnectionChange::new().pending_auth_nonce(Some("n1")))
        .await
        .unwrap();
    let spend = || ConnectionChange::new().pending_auth_nonce(None).if_nonce("n1");
    store.update_connection("support", spend()).await.unwrap();
    let again = store.update_connection("support", spend()).await.unwrap_err();
    assert!(matches!(again, StoreError::Conflict { .. }), "{again}");
    assert!(again.to_string().contains("connection support"), "{again}");

    // Generations guard sign-ins; versions grow with every write.
    let v = store.require("support").await.unwrap().version;
    store
        .update_connection("support", ConnectionChange::new().generation(1).if_generation(0))
        .await
        .unwrap();
    assert!(matches!(
        store
            .update_connection(
                "support",
                ConnectionChange::new()
                    .status(Status::ReauthRequired)
                    .if_generation(0)
            )
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let now = store.require("support").await.unwrap();
    assert_eq!((now.generation, now.status), (1, Status::PendingConsent));
    assert!(now.version > v);
    assert!(matches!(
        store
            .update_connection("support", ConnectionChange::new().if_version(v))
            .await,
        Err(StoreError::Conflict { .. })
    ));

    // The token write interval is claimed once.
    let claim = |at| {
        ConnectionChange::new()
            .token_written_at(at)
            .if_token_written_before(at - 599)
    };
    store.update_connection("support", claim(10_000)).await.unwrap();
    assert!(store.update_connection("support", claim(10_100)).await.is_err());
    store.update_connection("support", claim(10_700)).await.unwrap();

    // Subscription items: each writer's attributes, and a watermark that only moves forward.
    let key = read.subscriptions[0].key.clone();
    store
        .update_subscription(
            "support",
            &key,
            SubscriptionChange::new()
                .graph_id("g-1")
                .delta_link_if_missing("L1"),
        )
        .await
        .unwrap();
    store
        .update_subscription(
            "support",
            &key,
            SubscriptionChange::new().delta_link_if_missing("L2"),
        )
        .await
        .unwrap();
    // The newer delivery first, then an older one that must not move it back.
    for watermark in ["2026-11-22T18:00:00Z", "2026-11-22T17:00:00Z"] {
        let change = SubscriptionChange::new().last_delivery_at(time::OffsetDateTime::now_utc());
        store
            .record_delivery("support", &key, change, Some(watermark))
            .await
            .unwrap();
    }
    let sub = store
        .require("support")
        .await
        .unwrap()
        .subscriptions
        .into_iter()
        .find(|s| s.key == key)
        .unwrap();
    assert_eq!(sub.id, "g-1");
    assert_eq!(
        sub.delta_link.as_deref(),
        Some("L1"),
        "a recreated subscription keeps its link"
    );
    assert_eq!(sub.watermark.as_deref(), Some("2026-11-22T18:00:00Z"));
    assert!(matches!(
        store
            .update_subscription("support", "nope", SubscriptionChange::new().graph_id("x"))
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // The delivery ledger.
    assert!(!store.is_delivered("support", "AAMk1").await.unwrap());
    assert!(store.mark_delivered("support", "AAMk1", "evt_1").await.unwrap());
    assert!(!store.mark_delivered("support", "AAMk1", "evt_2").await.unwrap());
    assert!(store.is_delivered("support", "AAMk1").await.unwrap());
    assert!(!store.is_delivered("other", "AAMk1").await.unwrap());

    // Idempotency keys.
    assert_eq!(store.claim("k", "f1", 900).await.unwrap(), Claim::New);
    assert_eq!(store.claim("k", "f1", 900).await.unwrap(), Claim::InProgress);
    assert_eq!(store.claim("k", "f2", 900).await.unwrap(), Claim::Mismatch);
    store.claim_sent("k", 86_400).await.unwrap();
    assert_eq!(store.claim("k", "f1", 900).await.unwrap(), Claim::AlreadySent);
    store.claim_release("k").await.unwrap();
    assert_eq!(store.claim("k", "f1", 900).await.unwrap(), Claim::New);
    // An expired claim (a send that died) can be taken over.
    assert_eq!(store.claim("dead", "f", -10).await.unwrap(), Claim::New);
    assert_eq!(store.claim("dead", "f", 900).await.unwrap(), Claim::New);

    // Listing and deleting.
    store.create_connection(&connection("beta", 0)).await.unwrap();
    assert_eq!(store.connection_ids().await.unwrap(), vec!["beta", "support"]);
    store.delete_connection("support").await.unwrap();
    assert!(store.connection("support").await.unwrap().is_none());
    assert!(
        !store.is_delivered("support", "AAMk1").await.unwrap(),
        "deliveries go with it"
    );
    assert_eq!(store.connection_ids().await.unwrap(), vec!["beta"]);
}

#[tokio::test]
async fn memory_store_semantics() {
    semantics(&Store::memory()).await;
}

#[tokio::test]
async fn dynamodb_store_semantics() {
    let aws = Aws::start().await;
    semantics(&dynamo(&aws).await).await;
}

#[tokio::test]
async fn twenty_concurrent_writers_on_one_connection_lose_nothing() {
    let aws = Aws::start().await;
    let setup = dynamo(&aws).await;
    setup.create_connection(&connection("busy", 8)).await.unwrap();
    let keys: Vec<String> = setup
        .require("busy")
        .await
        .unwrap()
        .subscriptions
        .iter()
        .map(|s| s.key.clone())
        .collect();
    let mut writers = tokio::task::JoinSet::new();
    // 8 renewals (one per subscription), 10 deliveries, a reconnect, a token write: 20
    // writers, each with its own client, as 20 Lambda containers would be.
    for (i, key) in keys.iter().enumerate() {
        let (store, key) = (another_container(&aws).await, key.clone());
        writers.spawn(async move {
            let change = SubscriptionChange::new()
                .graph_id(&format!("graph-{i}"))
                .expires_at(Some(time::OffsetDateTime::now_utc() + time::Duration::days(7)))
                .last_error(None);
            store.update_subscription("busy", &key, change).await.unwrap();
        });
    }
    for i in 0..10 {
        let (store, key) = (another_container(&aws).await, keys[i % keys.len()].clone());
        writers.spawn(async move {
            assert!(
                store
                    .mark_delivered("busy", &format!("mail-{i}"), &format!("evt-{i}"))
                    .await
                    .unwrap()
            );
            let at = time::OffsetDateTime::now_utc();
            store
                .update_subscription(
                    "busy",
                    &key,
                    SubscriptionChange::new()
                        .last_delivery_at(at)
                        .delta_link(&format!("link-{i}")),
                )
                .await
                .unwrap();
            store
                .record_delivery(
                    "busy",
                    &key,
                    SubscriptionChange::new().last_delivery_at(time::OffsetDateTime::now_utc()),
                    Some(&format!("2026-11-22T18:00:{i:02}Z")),
                )
                .await
                .unwrap();
        });
    }
    {
        let store = another_container(&aws).await;
        writers.spawn(async move {
            let change = ConnectionChange::new()
                .status(Status::Active)
                .mailbox("support@contoso.com")
                .granted_scopes(&["Mail.Read".to_string()])
                .generation(1)
                .if_generation(0);
            store.update_connection("busy", change).await.unwrap();
        });
    }
    {
        let store = another_container(&aws).await;
        writers.spawn(async move {
            store
                .update_connection("busy", ConnectionChange::new().token_written_at(12_345))
                .await
                .unwrap();
        });
    }
    assert_eq!(writers.len(), 20);
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }

    let conn = setup.require("busy").await.unwrap();
    assert_eq!(conn.status, Status::Active, "the reconnect was lost");
    assert_eq!(conn.mailbox.as_deref(), Some("support@contoso.com"));
    assert_eq!(conn.granted_scopes, vec!["Mail.Read"]);
    assert_eq!(conn.generation, 1);
    assert_eq!(
        conn.token_written_at,
        Some(12_345),
        "the token write time was lost"
    );
    // DynamoDB applies updates to one item one at a time, so `version` is then
    // 2; moto's server does not serialise concurrent updates of an item, so
    // only "it moved" is checked here.
    assert!(conn.version >= 1, "the connection item's version never moved");
    for (i, key) in keys.iter().enumerate() {
        let sub = conn.subscriptions.iter().find(|s| &s.key == key).unwrap();
        assert_eq!(sub.id, format!("graph-{i}"), "renewal {i} was lost");
        assert!(sub.expires_at.is_some(), "renewal {i}'s expiry was lost");
        // Deliveries i and i+8 landed on this subscription.
        let mine: Vec<usize> = (0..10).filter(|d| d % keys.len() == i).collect();
        assert!(
            sub.last_delivery_at.is_some(),
            "delivery time on subscription {i} was lost"
        );
        let newest = mine.iter().max().unwrap();
        assert_eq!(
            sub.watermark.as_deref(),
            Some(format!("2026-11-22T18:00:{newest:02}Z").as_str())
        );
        let link = sub.delta_link.clone().unwrap();
        assert!(mine.iter().any(|d| link == format!("link-{d}")), "{link}");
    }
    for i in 0..10 {
        assert!(
            setup.is_delivered("busy", &format!("mail-{i}")).await.unwrap(),
            "delivery {i} was lost"
        );
    }
}

#[tokio::test]
async fn a_damaged_item_is_named_and_does_not_hide_the_others() {
    let aws = Aws::start().await;
    let store = dynamo(&aws).await;
    store.create_connection(&connection("good", 1)).await.unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&aws.sdk_config().await);
    damaged_item::put_damaged_connection(&ddb, TABLE).await;
    let err = store.connection("broken").await.unwrap_err();
    let words = err.to_string();
    assert!(matches!(err, StoreError::Damaged { .. }), "{words}");
    assert!(words.contains("connection broken"), "{words}");
    assert!(words.contains("DELETE /connections/broken"), "{words}");
    assert!(!err.is_retryable());
    assert_eq!(store.connection_ids().await.unwrap(), vec!["broken", "good"]);
    assert_eq!(store.require("good").await.unwrap().subscriptions.len(), 1);
}

#[tokio::test]
async fn an_unreachable_table_is_a_retryable_error_that_says_so() {
    let aws = Aws::start().await;
    let store = dynamo(&aws).await;
    aws.set_down(true);
    let err = store.connection("support").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("retry"), "{err}");
    aws.set_down(false);
    let missing = on_table(&aws, "no-such-table").await;
    let err = missing.connection("support").await.unwrap_err();
    assert!(matches!(err, StoreError::Misconfigured { .. }), "{err}");
    assert!(err.to_string().contains("RELAY365_STATE_TABLE"), "{err}");
}
