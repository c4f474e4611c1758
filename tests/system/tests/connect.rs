//! `connect-task:` targets end to end: the Microsoft simulator posts change
//! notifications to the webhook, the webhook queues them in moto's SQS FIFO
//! queue, dispatch (its own container) starts Amazon Connect tasks through
//! the real `aws-sdk-connect` client on the strict, SigV4-checking Connect
//! fake. What Connect holds is read from the fake: every contact started and
//! every call it refused.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};

use connect_fake::Fake;
use graph_sim::Message;
use mail_dispatch::Dispatcher;
use relay365::aws::queue::SqsQueue;
use relay365_harness::*;
use serde_json::{Value, json};

const INSTANCE: &str = "11111111-2222-3333-4444-555555555555";
const FLOW: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

fn task_target() -> String {
    format!("connect-task:{INSTANCE}/{FLOW}")
}

struct Pipe {
    stack: Arc<Stack>,
    fifo: Fifo,
    _gateway: Gateway,
    dispatcher: Dispatcher,
    fake: Fake,
}

impl Pipe {
    async fn start() -> Self {
        let gateway = Gateway::start().await;
        let stack = Arc::new(
            Stack::start_with(Options {
                public_url: Some(gateway.url.clone()),
                ..Default::default()
            })
            .await,
        );
        let fifo = Fifo::create(&stack.aws, 5).await;
        let queue = Arc::new(SqsQueue::new(fifo.client.clone(), fifo.url.clone()));
        common::serve_front(&gateway, &stack, &queue);
        let fake = Fake::start().await;
        fake.add_instance(INSTANCE);
        fake.add_flow(INSTANCE, FLOW, "relay365 tasks");
        let connect = aws_sdk_connect::Client::new(&relay365_testkit::sdk_config(&fake.url()).await);
        // Dispatch runs in its own container; retries wait a second, doubling.
        let dispatcher = Dispatcher::load(stack.container().await)
            .await
            .unwrap()
            .with_queue(queue)
            .with_first_retry(std::time::Duration::from_secs(1))
            .with_connect(connect);
        Self {
            stack,
            fifo,
            _gateway: gateway,
            dispatcher,
            fake,
        }
    }

    /// Creates the delegated connection `support` with these flows and signs in.
    async fn connect(&self, subs: Value) {
        self.connect_with(subs, json!(["Mail.ReadOnly"])).await;
    }

    /// Like [`Pipe::connect`], with these scopes.
    async fn connect_with(&self, subs: Value, scopes: Value) {
        let body = json!({"id": "support", "auth": "delegated", "scopes": scopes, "subscriptions": subs});
        let resp = connections::handle(
            request("POST", "/connections", Some(&body.to_string()), &[]),
            &self.stack.services,
        )
        .await;
        assert_eq!(resp.status(), 201, "{}", body_text(&resp));
        let link = body_json(&resp)["connect_url"].as_str().unwrap().to_string();
        let start = oauth_callback::handle(
            request("GET", &path_and_query(&link), None, &[]),
            &self.stack.services,
        )
        .await;
        let cookie = cookies(&start).remove(0);
        let back = self.stack.follow(&location(&start)).await;
        let done = oauth_callback::handle(
            request("GET", &path_and_query(&back), None, &[&cookie]),
            &self.stack.services,
        )
        .await;
        assert_eq!(done.status(), 200, "{}", body_text(&done));
    }

    /// Runs the event source until `n` tasks were started (or a while
    /// passed), then a little longer, so anything extra would show.
    async fn pump_until_tasks(&self, n: usize) -> Vec<connect_fake::Contact> {
        for _ in 0..100 {
            self.fifo
                .pump(|e| mail_dispatch::handle(e, &self.dispatcher))
                .await;
            if self.fake.contacts().len() >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        for _ in 0..5 {
            self.fifo
                .pump(|e| mail_dispatch::handle(e, &self.dispatcher))
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        }
        self.fake.contacts()
    }

    /// The flow `support` has (its first subscription), read fresh.
    async fn flow(&self) -> relay365::model::connection::Subscription {
        self.stack.stored("support").await.unwrap().subscriptions[0].clone()
    }
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
    let p = Pipe::start().await;
    p.connect(json!([{"resource": "mail", "target": task_target()}]))
        .await;
    let flow = p.flow().await;
    assert_eq!(flow.target.as_deref(), Some(task_target().as_str()));
    let id = p
        .stack
        .sim
        .deliver_message(UPN, mail("Order 4411 is late", "AAQkconv-1"));
    let contacts = p.pump_until_tasks(1).await;
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
    let p = Pipe::start().await;
    p.connect(json!([{"resource": "mail", "target": task_target()}]))
        .await;
    let key = p.flow().await.key;
    // Graph sends the notification twice.
    p.stack.sim.set_duplicate_notifications(true);
    let id = p.stack.sim.deliver_message(UPN, mail("twice", "AAQkconv-2"));
    assert!(
        eventually(5, || p
            .stack
            .sim
            .stats()
            .notification_statuses
            .iter()
            .filter(|s| **s == 202)
            .count()
            >= 2)
        .await
    );
    p.stack.sim.set_duplicate_notifications(false);
    // The record is kept as dispatch got it, to be processed again below.
    let kept = Mutex::new(None);
    for _ in 0..50 {
        p.fifo
            .pump(|e| {
                kept.lock().unwrap().get_or_insert_with(|| e.clone());
                mail_dispatch::handle(e, &p.dispatcher)
            })
            .await;
        if !p.fake.contacts().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let contacts = p.pump_until_tasks(2).await;
    assert_eq!(contacts.len(), 1, "Graph sent it twice; one task: {contacts:?}");
    let first = contacts[0].contact_id.clone();

    // A crash after Connect started the task and before the ledger held
    // it: the ledger entry is gone, and the same record comes back.
    let dynamo = aws_sdk_dynamodb::Client::new(&p.stack.aws.sdk_config().await);
    let gone = dynamo
        .delete_item()
        .table_name(STATE_TABLE)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("conn#support".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("dlv#f#{key}#{id}")),
        )
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
        .send()
        .await
        .unwrap();
    assert!(gone.attributes().is_some(), "the ledger held the delivery");
    let record = kept.lock().unwrap().take().expect("a record was dispatched");
    let again = mail_dispatch::handle(record, &p.dispatcher).await;
    assert!(again.batch_item_failures.is_empty(), "{again:?}");
    // It went through Connect again: the ledger holds it once more.
    let back = dynamo
        .get_item()
        .table_name(STATE_TABLE)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("conn#support".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("dlv#f#{key}#{id}")),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(back.item().is_some(), "the redelivery was delivered");
    let contacts = p.fake.contacts();
    assert_eq!(contacts.len(), 1, "the retry found its task by its ClientToken");
    assert_eq!(contacts[0].contact_id, first);
    assert!(p.fake.refused().is_empty(), "{:?}", p.fake.refused());
    assert!(p.flow().await.last_delivery_error.is_none());
}

#[tokio::test]
async fn a_reply_in_the_same_conversation_is_related_to_the_first_task() {
    let p = Pipe::start().await;
    p.connect(json!([{"resource": "mail", "target": task_target()}]))
        .await;
    p.stack
        .sim
        .deliver_message(UPN, mail("Order 4411 is late", "AAQkconv-3"));
    assert_eq!(p.pump_until_tasks(1).await.len(), 1);
    p.stack
        .sim
        .deliver_message(UPN, mail("RE: Order 4411 is late", "AAQkconv-3"));
    p.stack
        .sim
        .deliver_message(UPN, mail("RE: RE: Order 4411 is late", "AAQkconv-3"));
    p.stack
        .sim
        .deliver_message(UPN, mail("Another matter", "AAQkconv-4"));
    let contacts = p.pump_until_tasks(4).await;
    assert_eq!(contacts.len(), 4, "{contacts:?}");
    let first = contacts[0].contact_id.clone();
    let by_name = |n: &str| contacts.iter().find(|c| field(c, "Name") == n).unwrap();
    assert_eq!(
        by_name("RE: Order 4411 is late").related_contact_id.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(
        by_name("RE: RE: Order 4411 is late")
            .related_contact_id
            .as_deref(),
        Some(first.as_str()),
        "every later mail is related to the conversation's first task"
    );
    assert_eq!(by_name("Another matter").related_contact_id, None);
    let tokens: std::collections::BTreeSet<&str> = contacts.iter().map(|c| field(c, "ClientToken")).collect();
    assert_eq!(tokens.len(), 4);
    assert!(p.fake.refused().is_empty(), "{:?}", p.fake.refused());
}

#[tokio::test]
async fn throttling_is_retried_and_ends_in_exactly_one_task() {
    let p = Pipe::start().await;
    p.connect(json!([{"resource": "mail", "target": task_target()}]))
        .await;
    // More than the SDK's own attempts: the record itself comes back.
    p.fake.throttle_next(3);
    p.stack.sim.deliver_message(UPN, mail("throttled", "AAQkconv-5"));
    let contacts = p.pump_until_tasks(1).await;
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    let refused = p.fake.refused();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused.iter().all(|r| r.error == "ThrottlingException"));
    let flow = p.flow().await;
    assert_eq!(flow.last_delivery_error, None, "cleared by the delivery");
    assert_eq!(p.fifo.dead_letters().await, 0);
}

#[tokio::test]
async fn an_unknown_flow_says_so_on_the_subscription_and_loses_nothing() {
    let p = Pipe::start().await;
    let missing = "bbbbbbbb-0000-0000-0000-000000000000";
    let target = format!("connect-task:{INSTANCE}/{missing}");
    p.connect(json!([{"resource": "mail", "target": target}])).await;
    p.stack
        .sim
        .deliver_message(UPN, mail("waiting for a flow", "AAQkconv-6"));
    let mut error = None;
    for _ in 0..50 {
        p.fifo.pump(|e| mail_dispatch::handle(e, &p.dispatcher)).await;
        error = p.flow().await.last_delivery_error;
        if error.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let error = error.expect("the subscription says why nothing arrives");
    assert!(error.contains(missing), "{error}");
    assert!(error.contains(&target), "{error}");
    assert!(error.contains("published flow"), "{error}");
    assert!(p.fake.contacts().is_empty());
    assert!(
        p.fake
            .refused()
            .iter()
            .all(|r| r.error == "ResourceNotFoundException")
    );
    // A person creates the flow: the kept record starts its task, once.
    p.fake.add_flow(INSTANCE, missing, "created later");
    let contacts = p.pump_until_tasks(1).await;
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert_eq!(field(&contacts[0], "Name"), "waiting for a flow");
    assert_eq!(p.flow().await.last_delivery_error, None);
    assert_eq!(p.fifo.dead_letters().await, 0);
}

#[tokio::test]
async fn the_admin_api_refuses_malformed_task_targets_and_calendar_flows_to_them() {
    let p = Pipe::start().await;
    p.connect_with(
        json!([{"resource": "mail", "target": task_target()}]),
        json!(["Mail.ReadOnly", "Calendar.ReadOnly"]),
    )
    .await;
    let add = |body: Value| {
        let services = &p.stack.services;
        async move {
            let resp = connections::handle(
                request(
                    "POST",
                    "/connections/support/subscriptions",
                    Some(&body.to_string()),
                    &[],
                ),
                services,
            )
            .await;
            (resp.status().as_u16(), body_text(&resp))
        }
    };
    for (bad, words) in [
        (
            "connect-task:only-an-instance",
            "connect-task:{instance-id}/{contact-flow-id}",
        ),
        (
            "connect-task:arn:aws:connect:us-east-1:123456789012:instance/x/y",
            "the last part of its ARN",
        ),
        ("connect-task:/flow", "instance id is missing"),
    ] {
        let (status, text) = add(json!({"resource": "mail", "target": bad})).await;
        assert_eq!(status, 400, "{bad}: {text}");
        assert!(text.contains(words), "{bad}: {text}");
    }
    let (status, text) = add(json!({"resource": "calendar", "target": task_target()})).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("calendar changes cannot go there"), "{text}");
    assert!(p.fake.contacts().is_empty());
    assert!(p.fake.refused().is_empty());
}
