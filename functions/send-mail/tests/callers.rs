//! Callers scoped to their connections, end to end: `allowed_callers` as
//! API Gateway's IAM caller and Amazon Connect's instance are checked
//! against them, attachments by reference stay under `{connection_id}/`, and
//! a contact flow's recipients are capped by `connect_max_recipients`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ACCOUNT, BUCKET, World, error_message};
use serde_json::{Value, json};

/// An IAM user with the send route, named in no connection's `allowed_callers`.
const ANN: &str = "arn:aws:iam::123456789012:user/ann";
const INSTANCE: &str = "arn:aws:connect:us-east-1:123456789012:instance/9308c2a1-9bc6-4cea-8290-6c0b4a6d38fa";

fn mail(connection: &str) -> Value {
    json!({"connection_id": connection, "to": ["bo@example.com"], "subject": "Invoice", "body": {"text": "Attached."}})
}

#[tokio::test]
async fn only_allowed_callers_send_from_a_connection() {
    let w = World::start().await;
    let billing_role = format!("arn:aws:iam::{ACCOUNT}:role/billing");
    let ops = format!("arn:aws:iam::{ACCOUNT}:user/ops-*");
    w.delegated(
        "ceo",
        json!(["Mail.Send"]),
        json!({"allowed_callers": [billing_role, ops]}),
    )
    .await;

    // Another service, with the route but not named: refused, its ARN named.
    let intruder = format!("arn:aws:sts::{ACCOUNT}:assumed-role/marketing/lambda-1");
    let (status, v) = w.post_as(&intruder, &mail("ceo"), &[]).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "caller_not_allowed");
    let msg = error_message(&v);
    assert!(
        msg.contains(&intruder) && msg.contains("allowed_callers"),
        "{msg}"
    );
    assert!(w.stack.sim.sent().is_empty(), "nothing reached Microsoft");

    // A session of the allowed role (as API Gateway reports it), and a user matching a pattern.
    let session = format!("arn:aws:sts::{ACCOUNT}:assumed-role/billing/billing-run-42");
    let (status, v) = w.post_as(&session, &mail("ceo"), &[]).await;
    assert_eq!(status, 202, "{v}");
    let (status, v) = w
        .post_as(&format!("arn:aws:iam::{ACCOUNT}:user/ops-ann"), &mail("ceo"), &[])
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(w.stack.sim.sent().len(), 2);

    // The same role name in another account is someone else.
    let (status, _) = w
        .post_as(
            "arn:aws:sts::999999999999:assumed-role/billing/s",
            &mail("ceo"),
            &[],
        )
        .await;
    assert_eq!(status, 403);

    // A direct invocation names no caller: refused for a scoped connection.
    let out = send_mail::handle_event(mail("ceo"), &w.sender()).await;
    assert_eq!(out["error_code"], "caller_not_allowed", "{out}");

    // A connection without allowed_callers: anyone with the route, as before.
    w.delegated("support", json!(["Mail.Send"]), json!({})).await;
    let (status, v) = w.post_as(&intruder, &mail("support"), &[]).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(
        send_mail::handle_event(mail("support"), &w.sender()).await,
        json!({"status": "sent"})
    );
}

#[tokio::test]
async fn connection_settings_are_checked_when_created() {
    let w = World::start().await;
    let base = json!({"id": "x", "auth": "delegated", "scopes": ["Mail.Send"]});
    for (extra, words) in [
        (json!({"allowed_callers": ["*"]}), "allowed_callers"),
        (
            json!({"allowed_callers": ["arn:aws:iam::*:role/billing"]}),
            "12-digit AWS account id",
        ),
        (
            json!({"allowed_callers": ["arn:aws:iam::123456789012:role/team/*"]}),
            "without the role's path",
        ),
        (json!({"allowed_callers": "arn:aws:iam::123456789012:role/x"}), ""),
        (json!({"connect_max_recipients": 0}), "connect_max_recipients"),
        (json!({"connect_max_recipients": 501}), "1 to 500"),
    ] {
        let mut body = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, v) = w.create(&body).await;
        assert_eq!(status, 400, "{body} -> {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(words), "{body}: {msg}");
    }
    let mut ok = base.clone();
    ok["allowed_callers"] = json!([INSTANCE, "arn:aws:iam::123456789012:role/billing-*"]);
    ok["connect_max_recipients"] = json!(3);
    let (status, v) = w.create(&ok).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["allowed_callers"][0], INSTANCE);
    assert_eq!(v["connect_max_recipients"], 3);
}

#[tokio::test]
async fn attachments_by_reference_stay_under_the_connection_s_prefix() {
    let w = World::start().await;
    w.delegated("support", json!(["Mail.Send", "Mail.Draft"]), json!({}))
        .await;
    w.put("billing/invoice.pdf", b"%PDF-1.7 another service's file".to_vec())
        .await;
    w.put("support/invoice.pdf", b"%PDF-1.7 our file".to_vec()).await;
    let with_key = |k: &str| {
        let mut m = mail("support");
        m["attachments"] = json!([{"name": "invoice.pdf", "content_type": "application/pdf", "s3": {"bucket": BUCKET, "key": k}}]);
        m
    };
    let (status, v) = w.post_as(ANN, &with_key("billing/invoice.pdf"), &[]).await;
    assert_eq!(status, 400, "{v}");
    let msg = error_message(&v);
    assert!(
        msg.contains("key prefix support/") && msg.contains("attachments[0].s3.key"),
        "{msg}"
    );
    assert!(w.stack.sim.sent().is_empty());
    let (status, v) = w.post_as(ANN, &with_key("support/invoice.pdf"), &[]).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(w.stack.sim.sent()[0].attachments[0].2, b"%PDF-1.7 our file");
}

#[tokio::test]
async fn a_contact_flow_sends_to_at_most_connect_max_recipients() {
    let w = World::start().await;
    w.delegated(
        "support",
        json!(["Mail.Send"]),
        json!({"allowed_callers": [INSTANCE]}),
    )
    .await;
    let twelve: Vec<String> = (0..12).map(|i| format!("u{i}@example.com")).collect();
    let params = |to: &str| json!({"connection_id": "support", "to": to, "subject": "Your case", "body_text": "We called."});
    let out = w.contact_flow(INSTANCE, params(&twelve.join(", "))).await;
    assert_eq!(out["status"], "error", "{out}");
    assert_eq!(out["error_code"], "too_many_recipients");
    let msg = out["error_message"].as_str().unwrap();
    assert!(
        msg.contains("12") && msg.contains("at most 10") && msg.contains("connect_max_recipients"),
        "{msg}"
    );
    assert!(
        out.as_object().unwrap().values().all(Value::is_string),
        "Connect needs strings only: {out}"
    );
    assert!(w.stack.sim.sent().is_empty(), "no spam went out");

    let out = w
        .contact_flow(INSTANCE, params("ann@example.com; bo@example.com"))
        .await;
    assert_eq!(out, json!({"status": "sent"}));
    assert_eq!(
        w.stack.sim.sent()[0].to,
        vec!["ann@example.com", "bo@example.com"]
    );

    // Another instance's flow may not use this connection.
    let other = "arn:aws:connect:us-east-1:123456789012:instance/00000000-0000-4000-8000-000000000000";
    let out = w.contact_flow(other, params("ann@example.com")).await;
    assert_eq!(out["error_code"], "caller_not_allowed", "{out}");
    assert!(out["error_message"].as_str().unwrap().contains(other));
    // The HTTP route is not limited by the contact-flow setting.
    let mut many = mail("support");
    many["to"] = json!(twelve);
    w.delegated("open", json!(["Mail.Send"]), json!({})).await;
    many["connection_id"] = "open".into();
    let (status, v) = w.post_as(ANN, &many, &[]).await;
    assert_eq!(status, 202, "{v}");
}
