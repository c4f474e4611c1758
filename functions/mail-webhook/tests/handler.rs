//! The webhook through its handler with API Gateway v2 events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use mail_webhook::Webhook;
use relay365::Sensitive;
use relay365::aws::queue::{MemoryQueue, Queue, QueuedNotification, SqsQueue};
use relay365::aws::secrets::AwsSecretStore;
use relay365::web::signing::Signer;
use relay365_harness::{body_json, body_text, request, request_with_headers};

/// A webhook whose store and queue point at a closed port: nothing is reachable.
async fn unreachable_webhook() -> Webhook {
    let dead = "http://127.0.0.1:9"; // discard port: connection refused
    let sdk = relay365_testkit::sdk_config(dead).await;
    let store = Arc::new(AwsSecretStore::new(aws_sdk_secretsmanager::Client::new(&sdk)));
    let queue = Arc::new(SqsQueue::new(
        aws_sdk_sqs::Client::new(&sdk),
        format!("{dead}/123/q.fifo"),
    ));
    Webhook::new(store, "relay365/signing-key".into(), queue)
}

#[tokio::test]
async fn handshake_is_answered_with_nothing_reachable() {
    let w = unreachable_webhook().await;
    let token = "Validation: Testing client application reachability for subscription Request-Id: 3a6b+&%=";
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    for path in ["/notifications", "/notifications/lifecycle"] {
        let req = request_with_headers(
            "POST",
            &format!("{path}?validationToken={encoded}"),
            None,
            &[],
            &[("content-type", "text/plain; charset=utf-8")],
        );
        let resp = mail_webhook::handle(req, &w).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(
            body_text(&resp),
            token,
            "the token comes back URL-decoded, byte for byte"
        );
    }
    // `+` in a query string is a space.
    let resp = mail_webhook::handle(
        request("POST", "/notifications?validationToken=a+b%2Bc", None, &[]),
        &w,
    )
    .await;
    assert_eq!(body_text(&resp), "a b+c");
    // A real notification needs the key: unreachable store means 503, so Graph retries.
    let body = r#"{"value":[{"subscriptionId":"s","clientState":"x.y","changeType":"created"}]}"#;
    let resp = mail_webhook::handle(request("POST", "/notifications", Some(body), &[]), &w).await;
    assert_eq!(resp.status(), 503);
}

fn signer() -> Signer {
    Signer::new(&Sensitive::new(relay365_harness::SIGNING_KEY)).unwrap()
}

#[tokio::test]
async fn only_genuine_items_are_queued_and_forged_ones_are_dropped() {
    let q = Arc::new(MemoryQueue::default());
    let w = Webhook::with_signer(signer(), q.clone());
    let good = signer().client_state("support");
    let body = serde_json::json!({"value": [
        {"subscriptionId": "s1", "clientState": good.expose(), "changeType": "created", "resource": "Users/u/Messages/m1", "resourceData": {"id": "m1"}},
        {"subscriptionId": "s1", "clientState": "support.Zm9yZ2Vk", "changeType": "created", "resource": "Users/u/Messages/m2", "resourceData": {"id": "m2"}},
        {"subscriptionId": "s1", "changeType": "created", "resource": "Users/u/Messages/m3"},
        {"subscriptionId": "s1", "clientState": good.expose(), "lifecycleEvent": "missed"}
    ]});
    let resp = mail_webhook::handle(
        request("POST", "/notifications", Some(&body.to_string()), &[]),
        &w,
    )
    .await;
    assert_eq!(resp.status(), 202);
    let queued = q.sent();
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0].connection_id, "support");
    assert_eq!(queued[0].resource_id.as_deref(), Some("m1"));
    assert_eq!(
        queued[1].lifecycle_event,
        Some(relay365::aws::queue::LifecycleEvent::Missed)
    );
    // All forged: still 202 (Graph must not retry garbage), nothing queued.
    let forged = r#"{"value":[{"subscriptionId":"s","clientState":"support.AAAA","changeType":"created"}]}"#;
    let resp = mail_webhook::handle(request("POST", "/notifications", Some(forged), &[]), &w).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(q.sent().len(), 2);
}

#[tokio::test]
async fn malformed_input_gets_4xx() {
    let w = Webhook::with_signer(signer(), Arc::new(MemoryQueue::default()));
    for body in [
        "",
        "{",
        "[]",
        "{\"value\": 1}",
        "{\"value\":[{\"x\":1}]}",
        "null",
        "\u{0}",
    ] {
        let resp = mail_webhook::handle(request("POST", "/notifications", Some(body), &[]), &w).await;
        assert_eq!(resp.status(), 400, "{body:?}");
        assert_eq!(body_json(&resp)["error"]["code"], "invalid_request");
    }
    let huge = format!(
        "{{\"value\":[],\"pad\":\"{}\"}}",
        "x".repeat(mail_webhook::MAX_BODY)
    );
    assert_eq!(
        mail_webhook::handle(request("POST", "/notifications", Some(&huge), &[]), &w)
            .await
            .status(),
        413
    );
    assert_eq!(
        mail_webhook::handle(request("GET", "/notifications", None, &[]), &w)
            .await
            .status(),
        405
    );
    assert_eq!(
        mail_webhook::handle(request("POST", "/other", None, &[]), &w)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn the_deployed_webhook_builds_nothing_until_a_real_notification() {
    let dir = std::env::temp_dir().join(format!("relay365-lazy-{}", std::process::id()));
    let env: std::collections::HashMap<String, String> = [
        ("RELAY365_APP_SECRET_ID", "relay365/app".to_string()),
        (
            "RELAY365_SIGNING_KEY_SECRET_ID",
            "relay365/signing-key".to_string(),
        ),
        ("RELAY365_SECRET_STORE", format!("file:{}", dir.display())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = relay365::Config::from_map(&env).unwrap();
    let w = Webhook::lazy(
        config,
        Arc::new(relay365::aws::queue::SqsQueue::lazy(
            "http://127.0.0.1:9/123/q.fifo".into(),
        )),
    );
    let resp = mail_webhook::handle(
        request("POST", "/notifications?validationToken=abc", None, &[]),
        &w,
    )
    .await;
    assert_eq!(
        (resp.status().as_u16(), body_text(&resp)),
        (200, "abc".to_string())
    );
    assert!(!dir.exists(), "the handshake did not even create the store");
    let body = r#"{"value":[{"subscriptionId":"s","clientState":"x.y","changeType":"created"}]}"#;
    let resp = mail_webhook::handle(request("POST", "/notifications", Some(body), &[]), &w).await;
    assert_eq!(
        resp.status(),
        503,
        "no signing key in the store yet: Graph must retry"
    );
    assert!(dir.exists(), "the store was built for the real notification");
    std::fs::remove_dir_all(dir).unwrap();
}

/// An SQS endpoint that accepts connections and never answers: the queue
/// write gives up within its own budget (inside Graph's 3 s), so the webhook
/// answers 5xx and Graph retries, instead of hanging past Graph's patience.
#[tokio::test]
async fn a_queue_that_never_answers_is_given_up_within_the_write_budget() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            keep.lock().unwrap().push(socket);
        }
    });
    let endpoint = format!("http://{addr}");
    let sdk = relay365_testkit::sdk_config(&endpoint).await;
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), format!("{endpoint}/123/q.fifo"));
    let n = QueuedNotification::for_subscription("support", "sub-1");
    // A bound for the test itself, far above the write budget: without the
    // budget the send would hang until the SDK's general timeout or longer.
    let (attempt, whole) = relay365::aws::sdk::QUEUE_WRITE_TIMEOUTS;
    assert!(attempt < whole && whole < std::time::Duration::from_secs(3));
    let sent = tokio::time::timeout(std::time::Duration::from_secs(10), queue.send(&[n]))
        .await
        .expect("the queue write gave up by itself");
    let err = sent.unwrap_err();
    assert_eq!((err.failed, err.total), (1, 1), "{err}");
    assert!(!held.lock().unwrap().is_empty(), "the endpoint was reached");
}
