//! At most once to Graph, end to end: the simulator accepts a send and
//! holds its answer past the client's deadline (or refuses it as a gateway
//! would); send-mail looks for the mail in Sent Items by its extended
//! property before it sends again, and a draft whose send failed is deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{World, error_message};
use relay365_harness::*;
use serde_json::{Value, json};

const RECIPIENT: &str = "cy@contoso.com";
const CALLER: &str = "arn:aws:iam::123456789012:user/ann";

/// A world whose Graph calls give up after 2 s (the simulator holds answers
/// longer), with connection `support` signed in with `scopes`.
async fn world(scopes: Value) -> World {
    let mut w = World::start().await;
    w.add_user(RECIPIENT);
    w.stack.services.graph = w.stack.services.graph.with_deadline(Duration::from_secs(2));
    w.delegated("support", scopes, json!({})).await;
    w
}

/// `mail` posted by `CALLER`, without a key of its own.
async fn send(w: &World, mail: &Value) -> (u16, Value) {
    w.post_as(CALLER, mail, &[]).await
}

/// [`send`] while Graph answers the first send with `refusal`: its status,
/// error code and message.
async fn send_refused_first(w: &World, refusal: (u16, &str, &str), mail: &Value) -> (u16, Value) {
    let (status, code, message) = refusal;
    w.stack.sim.fail_next_send(status, code, message);
    send(w, mail).await
}

/// Graph's refusal when a gateway failed before the send reached Exchange.
const UNAVAILABLE: (u16, &str, &str) = (
    503,
    "ServiceUnavailable",
    "The service is temporarily unavailable.",
);
/// Graph's refusal of a mail it will never send.
const INVALID_RECIPIENTS: (u16, &str, &str) = (
    400,
    "ErrorInvalidRecipients",
    "At least one recipient is not valid.",
);

/// The key a caller gives with the first mail.
const KEY: (&str, &str) = ("idempotency-key", "order-1-shipped");

fn mail(subject: &str) -> Value {
    json!({"connection_id": "support", "to": [RECIPIENT], "subject": subject, "body": {"text": "Your order shipped."}})
}

fn inbox(w: &World, subject: &str) -> usize {
    w.stack
        .sim
        .folder_messages(RECIPIENT, "inbox")
        .iter()
        .filter(|m| m.subject == subject)
        .count()
}

#[tokio::test]
async fn a_send_whose_answer_is_lost_is_found_in_sent_items_and_goes_out_once() {
    let w = world(json!(["Mail.Send", "Mail.ReadOnly"])).await;
    w.stack.sim.stall_next_send_answer(Duration::from_secs(6));
    let (status, v) = w.post_as(CALLER, &mail("Order 1"), &[KEY]).await;
    assert_eq!((status, v["status"].as_str()), (202, Some("sent")), "{v}");
    assert_eq!(inbox(&w, "Order 1"), 1, "in the recipient's inbox once");
    assert_eq!(w.stack.sim.sent().len(), 1);
    // The mail carries its key as relay365's extended property, in Sent Items too.
    let kept = w.stack.sim.folder_messages(UPN, "sentitems");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].extended_properties[0].0, send_mail::once::PROPERTY_ID);
    assert_eq!(
        w.stack.sim.sent()[0].extended_properties,
        kept[0].extended_properties
    );
    // The caller's own retry is answered from the state table.
    let (status, v) = w.post_as(CALLER, &mail("Order 1"), &[KEY]).await;
    assert_eq!(
        (status, v["idempotent_replay"].as_bool()),
        (202, Some(true)),
        "{v}"
    );
    // Without a caller's key one is made for the call: still once.
    w.stack.sim.stall_next_send_answer(Duration::from_secs(6));
    let (status, v) = send(&w, &mail("Order 2")).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(inbox(&w, "Order 2"), 1);
    assert_eq!(w.stack.sim.sent().len(), 2);
}

#[tokio::test]
async fn a_gateway_error_that_sent_nothing_is_sent_again_once() {
    let w = world(json!(["Mail.Send", "Mail.ReadOnly"])).await;
    let (status, v) = send_refused_first(&w, UNAVAILABLE, &mail("Order 3")).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(inbox(&w, "Order 3"), 1, "sent once, after looking");
    assert_eq!(w.stack.sim.sent().len(), 1);
}

#[tokio::test]
async fn a_lost_answer_for_a_mail_not_kept_in_sent_items_is_reported_not_repeated() {
    let w = world(json!(["Mail.Send", "Mail.ReadOnly"])).await;
    w.stack.sim.stall_next_send_answer(Duration::from_secs(6));
    let mut m = mail("Order 4");
    m["save_to_sent_items"] = false.into();
    let (status, v) = send(&w, &m).await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["code"], "send_outcome_unknown");
    assert!(error_message(&v).contains("not sent again"), "{v}");
    assert_eq!(inbox(&w, "Order 4"), 1, "never twice");
}

#[tokio::test]
async fn a_draft_send_that_fails_leaves_no_draft_and_a_lost_one_goes_out_once() {
    let w = world(json!(["Mail.Send", "Mail.Draft", "Mail.ReadOnly"])).await;
    // 3.3 MB inline: a draft, an upload session, then send.
    let big: Vec<u8> = (0..3_300_000u32).map(|i| (i % 251) as u8).collect();
    let with_file = |subject: &str| {
        let mut m = mail(subject);
        m["attachments"] = json!([{"name": "label.pdf", "content_type": "application/pdf",
            "content_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &big)}]);
        m
    };
    let (status, v) = send_refused_first(&w, INVALID_RECIPIENTS, &with_file("Label 1")).await;
    assert_eq!(status, 400, "{v}");
    assert!(w.stack.sim.drafts(UPN).is_empty(), "the failed draft was deleted");
    assert!(w.stack.sim.sent().is_empty());

    // The draft's send is carried out but its answer is lost: found, not repeated.
    w.stack.sim.stall_next_send_answer(Duration::from_secs(6));
    let (status, v) = send(&w, &with_file("Label 2")).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(inbox(&w, "Label 2"), 1);
    assert_eq!(w.stack.sim.sent().len(), 1);
    assert_eq!(w.stack.sim.sent()[0].attachments[0].2, big);
    assert!(w.stack.sim.drafts(UPN).is_empty());
    assert_eq!(
        w.stack.sim.folder_messages(UPN, "sentitems").len(),
        1,
        "the sent copy stays in Sent Items"
    );
}
