//! `connect-task:` targets end to end: the Microsoft simulator posts change
//! notifications to the webhook, the webhook queues them in moto's SQS FIFO
//! queue, dispatch (its own container) starts Amazon Connect tasks through
//! the real `aws-sdk-connect` client on the strict, SigV4-checking Connect
//! fake. What Connect holds is read from the fake: every contact started and
//! every call it refused.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod connect_common;

use connect_common::{FLOW, INSTANCE, Pipe, Setup};
use graph_sim::Message;
use relay365_harness::*;
use serde_json::json;

fn task_target() -> String {
    format!("connect-task:{INSTANCE}/{FLOW}")
}

/// The pipeline to the instance's task flow.
async fn pipe() -> Pipe {
    Pipe::start(Setup {
        flow_name: "relay365 tasks",
        bucket: None,
        mailbox_address: false,
    })
    .await
}

/// [`pipe`], signed in with a mail flow to the task flow and these scopes.
async fn start(scopes: serde_json::Value) -> Pipe {
    let p = pipe().await;
    p.connect(json!([{"resource": "mail", "target": task_target()}]), scopes)
        .await;
    p
}

fn mail(subject: &str, conversation: &str) -> Message {
    Message {
        subject: subject.into(),
        conversation_id: conversation.into(),
        from: ("Bo Customer".into(), "bo@example.com".into()),
        to: vec![("Support".into(), UPN.into())],
        body_html: format!("<html><body><p>{subject}: my order is late</p><p>Bo</p></body></html>"),
        ..Default::default()
    }
}

/// The request's `field` as a string.
fn field<'a>(c: &'a connect_fake::Contact, field: &str) -> &'a str {
    c.request[field].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_new_mail_starts_exactly_one_task_with_the_mail_s_fields() {
    let p = start(json!(["Mail.ReadOnly"])).await;
    let flow = p.flow().await;
    assert_eq!(flow.target.as_deref(), Some(task_target().as_str()));
    let id = p
        .stack
        .sim
        .deliver_message(UPN, mail("Order 4411 is late", "AAQkconv-1"));
    let contacts = p.pump_until_contacts(1).await;
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    let c = &contacts[0];
    let event_id = mail_dispatch::normalise::event_id(&["support", "mail.received", &id]);
    assert_eq!(c.operation, connect_fake::Operation::StartTaskContact);
    assert_eq!(c.instance_id, INSTANCE);
    assert_eq!(c.contact_flow_id, FLOW);
    assert_eq!(field(c, "Name"), "Order 4411 is late");
    assert_eq!(
        field(c, "Description"),
        "Order 4411 is late: my order is late\nBo"
    );
    assert_eq!(
        field(c, "ClientToken"),
        mail_dispatch::connect::client_token(&event_id, &flow.key)
    );
    assert!(field(c, "ClientToken").starts_with(&event_id));
    let refs = &c.request["References"];
    assert_eq!(
        refs["relay365_event_id"],
        json!({"Value": event_id, "Type": "STRING"})
    );
    assert_eq!(refs["web_link"]["Type"], "URL");
    assert!(
        refs["web_link"]["Value"]
            .as_str()
            .unwrap()
            .starts_with("https://outlook.office365.com/")
    );
    assert_eq!(
        c.request["Attributes"],
        json!({"sender": "bo@example.com", "mailbox": UPN, "conversation_id": "AAQkconv-1", "connection_id": "support"})
    );
    assert_eq!(c.related_contact_id, None);
    let flow = p.flow().await;
    assert_eq!(flow.last_delivery_error, None);
    assert!(flow.last_delivery_at.is_some());
    assert!(p.fake.refused().is_empty(), "{:?}", p.fake.refused());
    assert_eq!(p.fifo.dead_letters().await, 0);
}

#[tokio::test]
async fn a_duplicate_notification_and_a_redelivery_after_a_crash_start_no_second_task() {
    let p = start(json!(["Mail.ReadOnly"])).await;
    let delivery = p
        .duplicate_and_crash_start_one(mail("twice", "AAQkconv-2"), "task")
        .await;
    // It went through Connect again: the ledger holds it once more.
    assert!(
        p.stack
            .services
            .state
            .is_delivered("support", &delivery)
            .await
            .unwrap(),
        "the redelivery was delivered"
    );
}

#[tokio::test]
async fn a_reply_in_the_same_conversation_is_related_to_the_first_task() {
    let p = start(json!(["Mail.ReadOnly"])).await;
    let contacts = p
        .later_mails_relate(
            mail("Order 4411 is late", "AAQkconv-3"),
            vec![
                mail("RE: Order 4411 is late", "AAQkconv-3"),
                mail("RE: RE: Order 4411 is late", "AAQkconv-3"),
                mail("Another matter", "AAQkconv-4"),
            ],
            |c| field(c, "Name"),
            &["RE: Order 4411 is late", "RE: RE: Order 4411 is late"],
            &["Another matter"],
        )
        .await;
    let tokens: std::collections::BTreeSet<&str> = contacts.iter().map(|c| field(c, "ClientToken")).collect();
    assert_eq!(tokens.len(), 4);
}

#[tokio::test]
async fn throttling_is_retried_and_ends_in_exactly_one_task() {
    let p = start(json!(["Mail.ReadOnly"])).await;
    p.throttled_thrice_starts_one(mail("throttled", "AAQkconv-5"))
        .await;
    assert_eq!(p.fifo.dead_letters().await, 0);
}

#[tokio::test]
async fn an_unknown_flow_says_so_on_the_subscription_and_loses_nothing() {
    let p = pipe().await;
    let missing = "bbbbbbbb-0000-0000-0000-000000000000";
    let target = format!("connect-task:{INSTANCE}/{missing}");
    // A person creates the flow: the kept record starts its task, once.
    let contacts = p
        .unknown_target_keeps_the_mail(
            &target,
            json!(["Mail.ReadOnly"]),
            mail("waiting for a flow", "AAQkconv-6"),
            &[missing, &target, "published flow"],
            |fake| fake.add_flow(INSTANCE, missing, "created later"),
        )
        .await;
    assert_eq!(field(&contacts[0], "Name"), "waiting for a flow");
}

#[tokio::test]
async fn the_admin_api_refuses_malformed_task_targets_and_calendar_flows_to_them() {
    let p = start(json!(["Mail.ReadOnly", "Calendar.ReadOnly"])).await;
    p.admin_refuses(
        &[
            (
                "connect-task:only-an-instance".into(),
                "connect-task:{instance-id}/{contact-flow-id}",
            ),
            (
                "connect-task:arn:aws:connect:us-east-1:123456789012:instance/x/y".into(),
                "the last part of its ARN",
            ),
            ("connect-task:/flow".into(), "instance id is missing"),
        ],
        &task_target(),
    )
    .await;
}
