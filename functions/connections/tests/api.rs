//! The admin API through the handler, with API Gateway v2 events, against
//! moto (the secret store) and the Microsoft simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../shared/tests/common/damaged_item.rs"]
mod damaged_item;

use relay365_harness::*;
use serde_json::json;

/// `POST /connections` with `body`: (status, answer).
async fn create(s: &Stack, body: serde_json::Value) -> (u16, serde_json::Value) {
    call(s, "POST", "/connections", Some(body)).await
}

/// [`create`] that must succeed: the answer.
async fn create_ok(s: &Stack, body: serde_json::Value) -> serde_json::Value {
    let (status, v) = create(s, body).await;
    assert_eq!(status, 201, "{v}");
    v
}

/// Creates a delegated connection `id` that only sends.
async fn create_sending(s: &Stack, id: &str) {
    create_ok(s, json!({"id": id, "auth": "delegated", "scopes": ["Mail.Send"]})).await;
}

/// `DELETE /connections/{id}`: the response itself, as a 204 has no body.
async fn delete(s: &Stack, id: &str) -> lambda_http::Response<lambda_http::Body> {
    connections::handle(
        request("DELETE", &format!("/connections/{id}"), None, &[]),
        &s.services,
    )
    .await
}

async fn call(
    s: &Stack,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let body = body.map(|b| b.to_string());
    let resp = connections::handle(request(method, path, body.as_deref(), &[]), &s.services).await;
    (resp.status().as_u16(), body_json(&resp))
}

#[tokio::test]
async fn delegated_connection_is_created_pending_with_a_connect_link() {
    let s = Stack::start().await;
    let v = create_ok(
        &s,
        json!({
            "id": "support", "auth": "delegated", "scopes": ["Mail.ReadOnly", "Mail.Send"], "mailbox": UPN,
            "subscriptions": [{"resource": "mail", "target": "https://flow.example/hook"}]
        }),
    )
    .await;
    assert_eq!(v["id"], "support");
    assert_eq!(v["status"], "pending_consent");
    assert_eq!(v["auth"], "delegated");
    assert_eq!(v["scopes"], json!(["Mail.ReadOnly", "Mail.Send"]));
    assert_eq!(v["subscriptions"][0]["folder"], "inbox");
    assert!(
        v["connect_url"]
            .as_str()
            .unwrap()
            .starts_with("https://relay.example/oauth/start?link=")
    );
    assert!(v.get("refresh_token").is_none() && v.get("admin_consent_url").is_none());
    let stored = s.stored("support").await.unwrap();
    assert_eq!(stored.tenant_id, TENANT, "defaults to the app's tenant");

    let (status, v) = call(&s, "GET", "/connections/support", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["mailbox"], UPN);
    let (status, v) = call(&s, "GET", "/connections", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["connections"].as_array().unwrap().len(), 1);

    let (status, v) = create(
        &s,
        json!({"id": "support", "auth": "delegated", "scopes": ["Mail.Send"]}),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "conflict");
}

#[tokio::test]
async fn app_only_connection_gets_an_admin_consent_url() {
    let s = Stack::start().await;
    let v = create_ok(
        &s,
        json!({
            "id": "fabrikam", "auth": "app_secret", "scopes": ["Mail.ReadOnly"],
            "mailbox": SHARED_UPN, "tenant_id": CUSTOMER_TENANT
        }),
    )
    .await;
    // The link starts in oauth-callback, which binds the browser before
    // it sends the administrator on to Microsoft.
    let url = url::Url::parse(v["admin_consent_url"].as_str().unwrap()).unwrap();
    assert_eq!(url.path(), "/oauth/admin-consent");
    assert_eq!(url.host_str(), Some("relay.example"));
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert!(q.get("link").is_some_and(|l| !l.is_empty()), "{url}");
    assert!(!url.as_str().contains(CLIENT_ID), "{url}");
    assert!(v.get("connect_url").is_none());
}

#[tokio::test]
async fn delete_removes_the_connection() {
    let s = Stack::start().await;
    create_sending(&s, "gone").await;
    let resp = delete(&s, "gone").await;
    assert_eq!(resp.status(), 204);
    assert!(s.stored("gone").await.is_none());
    let (status, v) = call(&s, "GET", "/connections/gone", None).await;
    assert_eq!(status, 404);
    assert!(v["error"]["message"].as_str().unwrap().contains("gone"));
    let (status, _) = call(&s, "DELETE", "/connections/gone", None).await;
    assert_eq!(status, 404);
}

/// Requests that cannot work, each refused with the words that say why.
#[tokio::test]
async fn impossible_requests_are_refused_with_the_reason() {
    let s = Stack::start().await;
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (
            json!({"auth": "delegated", "scopes": ["Mail.Read"]}),
            400,
            "valid scopes are Mail.ReadOnly",
        ),
        (
            json!({"auth": "delegated", "scopes": []}),
            400,
            "no scopes requested",
        ),
        (
            json!({"auth": "delegated", "scopes": ["Mail.Send"], "colour": "red"}),
            400,
            "unknown field `colour`",
        ),
        (
            json!({"auth": "password", "scopes": ["Mail.Send"]}),
            400,
            "unknown variant `password`",
        ),
        (json!({"scopes": ["Mail.Send"]}), 400, "missing field `auth`"),
        (
            json!({"id": "Bad Id", "auth": "delegated", "scopes": ["Mail.Send"]}),
            400,
            "lowercase letters",
        ),
        (
            json!({"auth": "app_secret", "scopes": ["Mail.Send"]}),
            400,
            "give the mailbox",
        ),
        (
            json!({"auth": "app_secret", "scopes": ["Mail.Send"], "mailbox": SHARED_UPN, "tenant_id": "organizations"}),
            400,
            "tenant id or domain",
        ),
        (
            json!({"auth": "app_certificate", "scopes": ["Mail.Send.Shared"], "mailbox": SHARED_UPN}),
            400,
            "application Mail.Send",
        ),
        (
            json!({"auth": "delegated", "scopes": ["Mail.Send"], "mailbox": "not-an-address"}),
            400,
            "not an e-mail address",
        ),
        (
            json!({"auth": "delegated", "scopes": ["Mail.Send"], "cloud": "usgov-l4"}),
            400,
            "RELAY365_CLOUD=usgov-l4",
        ),
        (
            json!({"auth": "delegated", "scopes": ["Mail.Send"], "cloud": "mars"}),
            400,
            "unknown variant `mars`",
        ),
        (
            json!({"auth": "delegated", "scopes": ["Mail.ReadOnly"], "mailbox": UPN,
                "subscriptions": [{"resource": "mail", "mailbox": SHARED_UPN, "target": "https://f.example/h"}]}),
            400,
            ".Shared",
        ),
        (
            json!({"auth": "delegated", "scopes": ["Mail.Send"], "subscriptions": [{"resource": "mail", "target": "https://f.example/h"}]}),
            400,
            "add Mail.ReadOnly",
        ),
        (
            json!({"auth": "delegated", "scopes": ["Mail.ReadOnly"], "subscriptions": [{"resource": "mail"}]}),
            400,
            "RELAY365_DEFAULT_TARGET",
        ),
        (
            json!({"auth": "delegated", "scopes": ["Mail.ReadOnly"], "subscriptions": [{"resource": "mail", "target": "http://flow.example/h"}]}),
            400,
            "https://",
        ),
        (
            json!({"auth": "delegated", "scopes": ["Calendar.ReadOnly"], "subscriptions": [{"resource": "calendar", "folder": "inbox", "target": "https://f.example/h"}]}),
            400,
            "mail subscriptions only",
        ),
        (
            json!({"auth": "delegated", "scopes": ["Mail.ReadOnly"], "subscriptions": [{"resource": "contacts", "target": "https://f.example/h"}]}),
            400,
            "unknown variant `contacts`",
        ),
    ];
    for (body, want, words) in cases {
        let (status, v) = create(&s, body.clone()).await;
        assert_eq!(status, want, "{body} -> {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{body} -> {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(words), "{body}: {msg:?} should say {words:?}");
    }
    let (_, v) = call(&s, "GET", "/connections", None).await;
    assert_eq!(v["connections"], json!([]), "nothing was stored");
}

/// Malformed input at every route: always a 4xx JSON error, never a panic or 5xx.
#[tokio::test]
async fn malformed_requests_get_4xx_json_errors() {
    let s = Stack::start().await;
    let bodies = [
        "",
        " ",
        "{",
        "[]",
        "null",
        "42",
        "\"x\"",
        "{\"auth\":",
        "{\"auth\": 1}",
        "{\"scopes\": \"Mail.Send\"}",
        "{\"auth\":\"delegated\",\"scopes\":[1,2]}",
        "\u{0}\u{1}",
        "{\"auth\":\"delegated\",\"scopes\":[\"Mail.Send\"],\"subscriptions\":{}}",
        &"{\"a\":".repeat(300),
        &format!(
            "{{\"id\":\"{}\",\"auth\":\"delegated\",\"scopes\":[\"Mail.Send\"]}}",
            "x".repeat(70)
        ),
        &format!("{{\"junk\":\"{}\"}}", "y".repeat(300_000)),
    ];
    for b in bodies {
        let resp = connections::handle(request("POST", "/connections", Some(b), &[]), &s.services).await;
        let status = resp.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "{:?} -> {status}",
            &b[..b.len().min(40)]
        );
        assert!(
            body_json(&resp)["error"]["code"].is_string(),
            "{:?}",
            &b[..b.len().min(40)]
        );
    }
    let wrong_type = connections::handle(
        request_with_headers(
            "POST",
            "/connections",
            Some("auth=delegated"),
            &[],
            &[("content-type", "application/x-www-form-urlencoded")],
        ),
        &s.services,
    )
    .await;
    assert_eq!(wrong_type.status(), 415);
    for (method, path) in [
        ("GET", "/connections/UPPER"),
        ("GET", "/connections/a%2Fb"),
        ("GET", "/connections/..%2F..%2Fapp"),
        ("GET", "/connections/x/y/z"),
        ("PUT", "/connections"),
        ("PATCH", "/connections/x"),
        ("GET", "/"),
        ("GET", "/nope"),
        ("DELETE", "/connections/%00"),
        ("GET", &format!("/connections/{}", "a".repeat(100))),
    ] {
        let resp = connections::handle(request(method, path, None, &[]), &s.services).await;
        let status = resp.status().as_u16();
        assert!((400..500).contains(&status), "{method} {path} -> {status}");
        assert!(
            body_json(&resp)["error"]["message"].is_string(),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn a_damaged_record_is_named_with_its_fix_and_the_others_are_served() {
    let s = Stack::start().await;
    create_sending(&s, "good").await;
    // An item of the wrong shape: written by hand, or by a future version.
    let ddb = aws_sdk_dynamodb::Client::new(&s.aws.sdk_config().await);
    damaged_item::put_damaged_connection(&ddb, STATE_TABLE).await;
    let (status, v) = call(&s, "GET", "/connections/broken", None).await;
    assert_eq!(status, 500, "{v}");
    assert_eq!(v["error"]["code"], "damaged_record");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("connection broken"), "{message}");
    assert!(message.contains("DELETE /connections/broken"), "{message}");

    let (status, v) = call(&s, "GET", "/connections", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["connections"][0]["id"], "good");
    assert_eq!(v["unreadable"][0]["id"], "broken");

    // The renewal run reports it and goes on.
    let report = connections::handle_event(
        json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}),
        &s.services,
    )
    .await;
    assert_eq!(report["connections"], 1, "{report}");
    assert_eq!(report["failed"][0]["connection"], "broken", "{report}");

    // And the fix the message names works.
    let resp = delete(&s, "broken").await;
    assert_eq!(resp.status(), 204, "{}", body_text(&resp));
    let (_, v) = call(&s, "GET", "/connections", None).await;
    assert!(v.get("unreadable").is_none(), "{v}");
}

#[tokio::test]
async fn targets_on_private_or_metadata_addresses_are_refused_with_the_reason() {
    let s = Stack::start().await;
    for target in [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/",
        "https://[fd00::1]/",
    ] {
        let (status, v) = create(
            &s,
            json!({"id": "support", "auth": "delegated", "scopes": ["Mail.ReadOnly"],
                        "subscriptions": [{"resource": "mail", "target": target}]}),
        )
        .await;
        assert_eq!(status, 400, "{target}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("public hosts"), "{target}: {message}");
    }
    assert!(s.stored("support").await.is_none());
}
