//! Sending mail end to end: the handler against the Microsoft simulator
//! (which checks and records what it receives) and moto (secrets, S3,
//! DynamoDB), with API Gateway v2 events and Amazon Connect events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::{BUCKET, World, error_message};
use relay365_harness::*;
use serde_json::{Value, json};

const SHARED: &str = "helpdesk@contoso.com";

/// A world with the shared mailbox `SHARED`, which app-only connections may
/// send as.
async fn world() -> World {
    let w = World::start_with(vec![("RELAY365_ALLOWED_SENDERS", SHARED.into())]).await;
    w.add_user(SHARED);
    w
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[0] ^ seed)
        .collect()
}

#[tokio::test]
async fn text_and_html_to_several_recipients() {
    let w = world().await;
    w.delegated("support", json!(["Mail.Send"]), json!({})).await;
    let (status, v, _) = w.post(&json!({
        "connection_id": "support",
        "to": ["bo@example.com", {"name": "Cy Lee", "address": "cy@example.com"}],
        "cc": ["dee@example.com"], "bcc": [{"address": "audit@contoso.com"}], "reply_to": ["cases@contoso.com"],
        "subject": "Your case 4411", "body": {"text": "We are on it."}
    }))
    .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["status"], "sent");
    w.post(&json!({"connection_id": "support", "to": ["bo@example.com"], "subject": "HTML", "body": {"html": "<p>Hi</p>"}, "save_to_sent_items": false})).await;
    let sent = w.stack.sim.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].mailbox, UPN);
    assert_eq!(sent[0].to, vec!["bo@example.com", "cy@example.com"]);
    assert_eq!(sent[0].cc, vec!["dee@example.com"]);
    assert_eq!(sent[0].bcc, vec!["audit@contoso.com"]);
    assert_eq!(sent[0].reply_to, vec!["cases@contoso.com"]);
    assert_eq!(
        (sent[0].content_type.as_str(), sent[0].body.as_str()),
        ("text", "We are on it.")
    );
    assert!(sent[0].save_to_sent_items);
    assert_eq!(
        (sent[1].content_type.as_str(), sent[1].body.as_str()),
        ("html", "<p>Hi</p>")
    );
    assert!(!sent[1].save_to_sent_items);
}

#[tokio::test]
async fn send_as_a_shared_mailbox_allowed_and_denied() {
    let w = world().await;
    w.delegated("support", json!(["Mail.Send", "Mail.Send.Shared"]), json!({}))
        .await;
    let req = json!({"connection_id": "support", "from": SHARED, "to": ["bo@example.com"], "subject": "From the helpdesk", "body": {"text": "Hello"}});
    let (status, v, _) = w.post(&req).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "send_as_denied");
    let msg = error_message(&v);
    assert!(
        msg.contains("Send As") && msg.contains(SHARED) && msg.contains("Mail.Send.Shared"),
        "{msg}"
    );
    w.stack.sim.grant_send_as(UPN, SHARED);
    let (status, _, _) = w.post(&req).await;
    assert_eq!(status, 202);
    assert_eq!(w.stack.sim.sent()[0].from.as_deref(), Some(SHARED));

    // Without the Mail.Send.Shared scope it is refused before Microsoft is asked.
    w.delegated("plain", json!(["Mail.Send"]), json!({})).await;
    let mut req = req.clone();
    req["connection_id"] = "plain".into();
    let (status, v, _) = w.post(&req).await;
    assert_eq!(status, 403);
    assert!(error_message(&v).contains("Mail.Send.Shared"));

    // App-only sends through the shared mailbox itself with application Mail.Send.
    w.app_only("app", UPN).await;
    let mut req = req.clone();
    req["connection_id"] = "app".into();
    let (status, v, _) = w.post(&req).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(w.stack.sim.sent().last().unwrap().mailbox, SHARED);

    // ...but not as an address the operator did not allow.
    let sent = w.stack.sim.sent().len();
    req["from"] = "ceo@contoso.com".into();
    let (status, v, _) = w.post(&req).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "send_as_not_allowed");
    assert!(error_message(&v).contains("RELAY365_ALLOWED_SENDERS"), "{v}");
    assert_eq!(w.stack.sim.sent().len(), sent, "nothing reached Microsoft");
}

#[tokio::test]
async fn reply_in_the_thread() {
    let w = world().await;
    w.delegated("support", json!(["Mail.Send", "Mail.Draft"]), json!({}))
        .await;
    let original = w.stack.sim.deliver_message(
        UPN,
        graph_sim::Message {
            subject: "Order late".into(),
            from: ("Bo".into(), "bo@example.com".into()),
            to: vec![("Support".into(), UPN.into())],
            body_html: "<p>Where is it?</p>".into(),
            ..Default::default()
        },
    );
    let (status, v, _) = w.post(&json!({"connection_id": "support", "reply_to_message_id": original, "body": {"html": "<p>Shipped today.</p>"}})).await;
    assert_eq!(status, 202, "{v}");
    let sent = w.stack.sim.sent();
    assert_eq!(sent[0].in_reply_to.as_deref(), Some(original.as_str()));
    assert_eq!(sent[0].to, vec!["bo@example.com"]);
    assert_eq!(sent[0].subject, "RE: Order late");
    // With a large attachment the reply goes createReply + upload + send.
    let big = pattern(3_300_000, 9);
    let (status, v, _) = w.post(&json!({"connection_id": "support", "reply_to_message_id": original, "body": {"text": "Label attached"},
        "attachments": [{"name": "label.pdf", "content_type": "application/pdf", "content_base64": b64(&big)}]})).await;
    assert_eq!(status, 202, "{v}");
    let last = w.stack.sim.sent().pop().unwrap();
    assert_eq!(last.in_reply_to.as_deref(), Some(original.as_str()));
    assert_eq!(last.attachments[0].2, big);
    // An unknown message id is a 404 that says so.
    let (status, v, _) = w
        .post(&json!({"connection_id": "support", "reply_to_message_id": "AAMkNOPE", "body": {"text": "x"}}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "message_not_found");
}

#[tokio::test]
async fn big_attachments_go_through_upload_sessions_and_arrive_intact() {
    let w = world().await;
    w.delegated("support", json!(["Mail.Send", "Mail.Draft"]), json!({}))
        .await;
    let inline = pattern(3_500_000, 1);
    let big = pattern(20 * 1024 * 1024, 2);
    w.put("support/contacts/c-1/recording.wav", big.clone()).await;
    let small = pattern(1000, 3);
    let (status, v, _) = w.post(&json!({
        "connection_id": "support", "to": ["bo@example.com"], "subject": "Files", "body": {"text": "See attached"},
        "attachments": [
            {"name": "scan.pdf", "content_type": "application/pdf", "content_base64": b64(&inline)},
            {"name": "recording.wav", "content_type": "audio/wav", "s3": {"bucket": BUCKET, "key": "support/contacts/c-1/recording.wav"}},
            {"name": "note.txt", "content_type": "text/plain", "content_base64": b64(&small)}
        ]
    }))
    .await;
    assert_eq!(status, 202, "{v}");
    let sent = w.stack.sim.sent();
    assert_eq!(sent.len(), 1);
    let got: Vec<(&str, &str, usize)> = sent[0]
        .attachments
        .iter()
        .map(|(n, c, b)| (n.as_str(), c.as_str(), b.len()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("scan.pdf", "application/pdf", inline.len()),
            ("recording.wav", "audio/wav", big.len()),
            ("note.txt", "text/plain", 1000)
        ]
    );
    assert!(
        sent[0].attachments[0].2 == inline
            && sent[0].attachments[1].2 == big
            && sent[0].attachments[2].2 == small,
        "bytes match"
    );
    // Streamed: no upload range over 4 MiB, and S3 was read range by range, never whole.
    assert!(w.stack.sim.max_upload_chunk() <= 4 * 1024 * 1024);
    let reads = w
        .stack
        .aws
        .count(&format!("GET /{BUCKET}/support/contacts/c-1/recording.wav"));
    assert_eq!(
        reads,
        5,
        "20 MiB read as five 4 MiB ranges: {:?}",
        w.stack.aws.counts()
    );
}

#[tokio::test]
async fn amazon_connect_event_gets_a_flat_answer() {
    let w = world().await;
    w.delegated("support", json!(["Mail.Send"]), json!({})).await;
    let event = json!({
        "Name": "ContactFlowEvent",
        "Details": {
            "ContactData": {"ContactId": "c-123", "Channel": "VOICE", "InitiationMethod": "INBOUND"},
            "Parameters": {"connection_id": "support", "to": "bo@example.com, cy@example.com", "subject": "Your callback", "body_text": "We will call at 3pm."}
        }
    });
    let out = send_mail::handle_event(event, &w.sender()).await;
    assert_eq!(out, json!({"status": "sent"}));
    assert_eq!(w.stack.sim.sent()[0].to, vec!["bo@example.com", "cy@example.com"]);
    let bad = json!({"Details": {"Parameters": {"connection_id": "support", "to": "not-an-address", "body_text": "x"}}});
    let out = send_mail::handle_event(bad, &w.sender()).await;
    assert_eq!(out["status"], "error");
    assert_eq!(out["error_code"], "invalid_request");
    assert!(out["error_message"].as_str().unwrap().contains("to[0]"));
    assert!(
        out.as_object().unwrap().values().all(Value::is_string),
        "Connect needs strings only: {out}"
    );
    // The JSON request itself, invoked directly.
    let direct = json!({"connection_id": "support", "to": ["bo@example.com"], "body": {"text": "direct"}});
    assert_eq!(
        send_mail::handle_event(direct, &w.sender()).await,
        json!({"status": "sent"})
    );
}

#[tokio::test]
async fn an_idempotent_retry_sends_once() {
    let w = world().await;
    w.delegated("support", json!(["Mail.Send"]), json!({})).await;
    let req = json!({"connection_id": "support", "to": ["bo@example.com"], "subject": "once", "body": {"text": "x"}});
    let (s1, v1, _) = w.post_with(&req, &[("idempotency-key", "case-4411-ack")]).await;
    let (s2, v2, _) = w.post_with(&req, &[("idempotency-key", "case-4411-ack")]).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(
        (
            v1["idempotent_replay"].as_bool(),
            v2["idempotent_replay"].as_bool()
        ),
        (Some(false), Some(true))
    );
    assert_eq!(w.stack.sim.sent().len(), 1, "sent once");
    // The same key in the body counts too; for another message it is refused.
    let mut other = req.clone();
    other["subject"] = "different".into();
    other["idempotency_key"] = "case-4411-ack".into();
    let (status, v, _) = w.post(&other).await;
    assert_eq!(status, 422, "{v}");
    // A failed send releases the key, so the retry can send.
    w.stack.sim.throttle_graph(100, Some("30"));
    let (status, _, _) = w.post_with(&req, &[("idempotency-key", "fresh")]).await;
    assert_eq!(status, 429);
    w.stack.sim.throttle_graph(0, None);
    let (status, v, _) = w.post_with(&req, &[("idempotency-key", "fresh")]).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["idempotent_replay"], false);
}

#[tokio::test]
async fn each_error_has_its_status_and_words() {
    let w = world().await;
    w.delegated("support", json!(["Mail.Send"]), json!({})).await;
    let base = |c: &str| json!({"connection_id": c, "to": ["bo@example.com"], "subject": "s", "body": {"text": "x"}});
    // 404 unknown connection
    let (status, v, _) = w.post(&base("nobody")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("not_found")));
    // 409 pending consent
    connections::handle(
        request(
            "POST",
            "/connections",
            Some(r#"{"id":"pending","auth":"delegated","scopes":["Mail.Send"]}"#),
            &[],
        ),
        &w.stack.services,
    )
    .await;
    let (status, v, _) = w.post(&base("pending")).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("connection_pending"))
    );
    // 403 no send permission on the connection
    w.delegated("reader", json!(["Mail.ReadOnly"]), json!({})).await;
    let (status, v, _) = w.post(&base("reader")).await;
    assert_eq!(status, 403);
    assert!(error_message(&v).contains("Mail.Send"));
    // 429 passed through with Retry-After
    w.stack.sim.throttle_graph(100, Some("30"));
    let (status, v, retry) = w.post(&base("support")).await;
    assert_eq!(
        (status, v["error"]["code"].as_str(), retry.as_deref()),
        (429, Some("throttled"), Some("30"))
    );
    w.stack.sim.throttle_graph(0, None);
    // 413 too large for one invocation
    let huge = json!({"connection_id": "support", "to": ["bo@example.com"], "body": {"text": "x".repeat(6 * 1024 * 1024 + 1)}});
    let (status, v, _) = w.post(&huge).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    // 409 re-authorisation, with the link to reconnect
    w.stack.sim.revoke_refresh_tokens(UPN, 50173);
    w.stack.services.tokens.invalidate("support").await;
    let (status, v, _) = w.post(&base("support")).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("reauth_required"))
    );
    assert!(error_message(&v).contains("/oauth/start?link="), "{v}");
    // 502 when Microsoft refuses the app itself
    w.app_only("app", UPN).await;
    w.stack.sim.fail_next_token(
        "invalid_client",
        7000222,
        "The provided client secret keys are expired.",
    );
    let (status, v, _) = w.post(&base("app")).await;
    assert_eq!(status, 502, "{v}");
    assert!(error_message(&v).contains("expired"));
    assert!(w.stack.sim.sent().is_empty());
}

/// Thirty-odd malformed requests: each a 4xx that names the problem, none a panic.
#[tokio::test]
async fn malformed_requests_are_refused_naming_the_field() {
    let w = world().await;
    w.delegated("support", json!(["Mail.Send"]), json!({})).await;
    let ok =
        json!({"connection_id": "support", "to": ["bo@example.com"], "subject": "s", "body": {"text": "x"}});
    let with = |k: &str, v: Value| {
        let mut r = ok.clone();
        r[k] = v;
        r
    };
    let without = |k: &str| {
        let mut r = ok.clone();
        r.as_object_mut().unwrap().remove(k);
        r
    };
    let att = |a: Value| with("attachments", json!([a]));
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "JSON object"),
        (json!("text"), "JSON object"),
        (without("connection_id"), "connection_id is required"),
        (with("connection_id", json!(5)), "connection_id must be a string"),
        (with("connection_id", json!("Bad/Id")), "connection_id"),
        (with("to", json!([])), "at least one recipient"),
        (without("to"), "at least one recipient"),
        (with("to", json!(["not an address"])), "to[0]"),
        (with("to", json!(["bo@example"])), "to[0]"),
        (with("to", json!(["@example.com"])), "to[0]"),
        (with("to", json!(["bo@@example.com"])), "to[0]"),
        (with("to", json!(["bo@example.com", 7])), "to[1]"),
        (
            with("to", json!([{"name": "Bo"}])),
            "to[0]: \"address\" is required",
        ),
        (
            with("to", json!([{"address": "bo@example.com", "email": "x"}])),
            "unknown field `email`",
        ),
        (with("to", json!("bo@example.com, nope")), "to[1]"),
        (
            with("to", json!({"address": "bo@example.com"})),
            "to must be a list",
        ),
        (with("cc", json!(["cc@bad"])), "cc[0]"),
        (with("bcc", json!([null])), "bcc[0]"),
        (with("reply_to", json!(["x y@z.com"])), "reply_to[0]"),
        (
            with(
                "to",
                json!((0..501).map(|i| format!("u{i}@example.com")).collect::<Vec<_>>()),
            ),
            "at most 500",
        ),
        (with("from", json!("helpdesk")), "from"),
        (without("body"), "body is required"),
        (with("body", json!({"text": "a", "html": "b"})), "not both"),
        (with("body", json!({})), "give {\"text\""),
        (with("body", json!({"markdown": "x"})), "unknown field `markdown`"),
        (with("body", json!("plain")), "body must be an object"),
        (with("body", json!({"text": 5})), "must be a string"),
        (with("subject", json!("line\nbreak")), "subject"),
        (with("subject", json!("x".repeat(1000))), "subject"),
        (with("save_to_sent_items", json!("yes")), "save_to_sent_items"),
        (
            with("reply_to_message_id", json!("../../x")),
            "reply_to_message_id",
        ),
        (with("idempotency_key", json!("")), "idempotency_key"),
        (with("priority", json!("high")), "unknown field `priority`"),
        (with("attachments", json!({})), "attachments must be a list"),
        (
            att(json!({"name": "a.pdf", "content_type": "application/pdf", "content_base64": "***"})),
            "attachments[0].content_base64 is not valid base64",
        ),
        (att(json!({"name": "a.pdf", "content_base64": ""})), "empty"),
        (
            att(json!({"name": "", "content_base64": "aGk="})),
            "attachments[0].name",
        ),
        (
            att(json!({"name": "../etc/passwd", "content_base64": "aGk="})),
            "attachments[0].name",
        ),
        (
            att(json!({"name": "a.pdf", "content_type": "pdf", "content_base64": "aGk="})),
            "attachments[0].content_type",
        ),
        (
            att(json!({"name": "a.pdf"})),
            "content_base64, or an s3 reference",
        ),
        (
            att(json!({"name": "a.pdf", "content_base64": "aGk=", "s3": {"bucket": BUCKET, "key": "k"}})),
            "not both",
        ),
        (
            att(json!({"name": "a.pdf", "s3": {"bucket": "someone-elses", "key": "k"}})),
            "only the deployment's attachments bucket",
        ),
        (
            att(json!({"name": "a.pdf", "s3": {"bucket": BUCKET}})),
            "needs \"bucket\" and \"key\"",
        ),
        (
            att(json!({"name": "a.pdf", "s3": {"bucket": BUCKET, "key": "support/missing.pdf"}})),
            "does not exist",
        ),
        (
            att(json!({"name": "a.pdf", "size": 3, "content_base64": "aGk="})),
            "unknown field `size`",
        ),
        (
            with(
                "attachments",
                json!(
                    (0..101)
                        .map(|i| json!({"name": format!("{i}.txt"), "content_base64": "aGk="}))
                        .collect::<Vec<_>>()
                ),
            ),
            "at most 100",
        ),
    ];
    assert!(cases.len() >= 30);
    for (body, words) in &cases {
        let (status, v, _) = w.post(body).await;
        assert!((400..500).contains(&status), "{body} -> {status} {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(words),
            "{}: {msg:?} should say {words:?}",
            &body.to_string()[..body.to_string().len().min(120)]
        );
    }
    for raw in ["", "{", "nul", "{\"connection_id\":"] {
        let req = request("POST", "/mail/send", Some(raw), &[]);
        let status = send_mail::handle_http(req, &w.sender()).await.status().as_u16();
        assert!((400..500).contains(&status), "{raw:?} -> {status}");
    }
    assert!(w.stack.sim.sent().is_empty(), "nothing malformed was sent");
}

#[tokio::test]
async fn a_send_too_large_for_api_gateway_is_accepted_at_once_and_its_result_learnt_with_its_key() {
    let w = world().await.with_deferred().await;
    w.delegated("support", json!(["Mail.Send", "Mail.Draft"]), json!({}))
        .await;
    let big = pattern(21 * 1024 * 1024, 7);
    w.put("support/calls/long.wav", big.clone()).await;
    let mail = json!({
        "connection_id": "support", "to": ["bo@example.com"], "subject": "The call", "body": {"text": "Attached"},
        "attachments": [{"name": "long.wav", "content_type": "audio/wav", "s3": {"bucket": BUCKET, "key": "support/calls/long.wav"}}]
    });
    // No key given: one is made and returned; nothing is sent inside the request.
    let (status, v, _) = w.post(&mail).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["status"], "accepted", "{v}");
    let key = v["idempotency_key"].as_str().unwrap().to_string();
    assert!(w.stack.sim.sent().is_empty());
    let (status, v, _) = w.post_with(&mail, &[("idempotency-key", &key)]).await;
    assert_eq!((status, v["status"].as_str()), (202, Some("in_progress")), "{v}");
    // The queue hands it to send-mail again, without API Gateway's limit.
    let queue = w.deferred.as_ref().unwrap();
    let sender = w.sender();
    assert_eq!(queue.pump(|e| send_mail::handle_deferred(e, &sender)).await, 1);
    let sent = w.stack.sim.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].attachments[0].2.len(), big.len());
    assert!(sent[0].attachments[0].2 == big, "the attachment arrived intact");
    let (status, v, _) = w.post_with(&mail, &[("idempotency-key", &key)]).await;
    assert_eq!((status, v["status"].as_str()), (202, Some("sent")), "{v}");
    assert_eq!(v["idempotent_replay"], true);
    assert_eq!(w.stack.sim.sent().len(), 1, "asking for the result sends nothing");
    assert_eq!(queue.pump(|e| send_mail::handle_deferred(e, &sender)).await, 0);

    // A lasting failure found in the background is the answer to the repeat.
    let key2 = "deferred-2";
    let (status, v, _) = w.post_with(&mail, &[("idempotency-key", key2)]).await;
    assert_eq!((status, v["status"].as_str()), (202, Some("accepted")), "{v}");
    connections::handle(
        request("DELETE", "/connections/support", None, &[]),
        &w.stack.services,
    )
    .await;
    assert_eq!(queue.pump(|e| send_mail::handle_deferred(e, &sender)).await, 1);
    let (status, v, _) = w.post_with(&mail, &[("idempotency-key", key2)]).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(queue.dead_letters().await, 0);
}
