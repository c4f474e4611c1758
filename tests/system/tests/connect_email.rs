//! `connect-email:` targets and the agent reply path end to end: the
//! Microsoft simulator posts change notifications to the webhook, the
//! webhook queues them in moto's SQS FIFO queue, dispatch (its own
//! container) stages attachments in moto S3 and starts Amazon Connect email
//! contacts through the real `aws-sdk-connect` client on the strict,
//! SigV4-checking Connect fake, which downloads the attachments from their
//! presigned URLs. An agent's reply is sent by the fake (from the mailbox's
//! address, in the thread) and its contact event handed to the reply path,
//! which files the copy in the simulator's Sent Items.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod connect_common;

use connect_common::{FLOW, INSTANCE, Pipe, Setup};
use graph_sim::Message;
use mail_dispatch::connect::reply::{Filed, REPLY_PROPERTY, file_reply};
use relay365_harness::*;
use serde_json::{Value, json};

const BUCKET: &str = "relay365-attachments";

/// The mailbox's own address is an email address of the instance.
fn email_target() -> String {
    format!("connect-email:{INSTANCE}/{FLOW}/{UPN}")
}

/// The pipeline to the instance's email flow, staging attachments in
/// [`BUCKET`].
async fn pipe() -> Pipe {
    Pipe::start(Setup {
        flow_name: "relay365 email",
        bucket: Some(BUCKET),
        mailbox_address: true,
    })
    .await
}

/// [`pipe`], signed in (reading mail, and writing the copies of replies)
/// with a mail flow to [`email_target`].
async fn start() -> Pipe {
    let p = pipe().await;
    p.connect(
        json!([{"resource": "mail", "target": email_target()}]),
        json!(["Mail.ReadWrite"]),
    )
    .await;
    p
}

/// A customer's reply in an existing thread, with a Cc.
fn mail(subject: &str, conversation: &str) -> Message {
    Message {
        subject: subject.into(),
        conversation_id: conversation.into(),
        internet_message_id: format!("<{conversation}-{}@example.com>", subject.len()),
        from: ("Bo Customer".into(), "bo@example.com".into()),
        to: vec![("Support".into(), UPN.into())],
        cc: vec![("Cy".into(), "cy@example.com".into())],
        body_html: format!("<html><body><p>{subject}: my order is late</p></body></html>"),
        headers: vec![
            ("In-Reply-To".into(), "<order-4411@contoso.com>".into()),
            (
                "References".into(),
                "<order-4400@contoso.com> <order-4411@contoso.com>".into(),
            ),
        ],
        ..Default::default()
    }
}

fn field<'a>(c: &'a connect_fake::Contact, pointer: &str) -> &'a str {
    c.request
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

const INVOICE: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n";
const NOTES: &[u8] = b"Order 4411\nshipped late, customer waiting\n";
/// Over Connect's 20 MB per attachment.
const SCAN_SIZE: u64 = 21 * 1024 * 1024;

#[tokio::test]
async fn a_mail_with_three_attachments_becomes_one_email_contact_with_two_files_and_the_third_named() {
    let p = start().await;
    let mut m = mail("Order 4411 is late", "AAQkconv-e1");
    m.attachments = vec![
        (
            "invoice.pdf".into(),
            "application/pdf".into(),
            INVOICE.len() as u64,
        ),
        ("notes.txt".into(), "text/plain".into(), NOTES.len() as u64),
        ("scan.pdf".into(), "application/pdf".into(), SCAN_SIZE),
    ];
    m.attachment_bytes = vec![INVOICE.to_vec(), NOTES.to_vec()];
    let internet_message_id = m.internet_message_id.clone();
    let id = p.stack.sim.deliver_message(UPN, m);
    let contacts = p.pump_until_contacts(1).await;
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    let c = &contacts[0];
    let key = p.flow().await.key;
    let event_id = mail_dispatch::normalise::event_id(&["support", "mail.received", &id]);
    assert_eq!(c.operation, connect_fake::Operation::StartEmailContact);
    assert_eq!(c.instance_id, INSTANCE);
    assert_eq!(c.contact_flow_id, FLOW);
    assert_eq!(field(c, "/FromEmailAddress/EmailAddress"), "bo@example.com");
    assert_eq!(field(c, "/FromEmailAddress/DisplayName"), "Bo Customer");
    assert_eq!(field(c, "/DestinationEmailAddress"), UPN);
    assert_eq!(
        c.request["AdditionalRecipients"],
        json!({"CcAddresses": [{"EmailAddress": "cy@example.com", "DisplayName": "Cy"}]})
    );
    let raw = &c.request["EmailMessage"]["RawMessage"];
    assert_eq!(raw["Subject"], "Order 4411 is late");
    assert_eq!(raw["ContentType"], "text/html");
    assert!(
        raw["Body"]
            .as_str()
            .unwrap()
            .contains("<p>Order 4411 is late: my order is late</p>")
    );
    assert_eq!(
        raw["Headers"],
        json!({
            "MESSAGE_ID": internet_message_id,
            "IN_REPLY_TO": "<order-4411@contoso.com>",
            "REFERENCES": "<order-4400@contoso.com> <order-4411@contoso.com>",
        })
    );
    assert_eq!(
        field(c, "/ClientToken"),
        mail_dispatch::connect::client_token(&event_id, &key)
    );
    // Two files reached Connect, with the right bytes, from presigned URLs.
    let files: Vec<(&str, &[u8])> = c
        .attachments
        .iter()
        .map(|f| (f.file_name.as_str(), f.bytes.as_slice()))
        .collect();
    assert_eq!(files, vec![("invoice.pdf", INVOICE), ("notes.txt", NOTES)]);
    for a in c.request["Attachments"].as_array().unwrap() {
        let url = a["S3Url"].as_str().unwrap();
        assert!(url.contains("X-Amz-Signature="), "{url}");
        assert!(url.contains(BUCKET), "{url}");
    }
    // The third is named, with the way to open it.
    let description = field(c, "/Description");
    assert!(description.contains("scan.pdf"), "{description}");
    assert!(description.contains("20 MB"), "{description}");
    let web_link = c.request["References"]["web_link"]["Value"].as_str().unwrap();
    assert!(web_link.starts_with("https://outlook.office365.com/"));
    assert!(description.contains(web_link), "{description}");
    assert_eq!(c.request["Attributes"]["connection_id"], "support");
    assert_eq!(c.request["Attributes"]["subject"], "Order 4411 is late");
    assert!(p.fake.refused().is_empty(), "{:?}", p.fake.refused());
    let flow = p.flow().await;
    assert_eq!(flow.last_delivery_error, None);
    assert_eq!(p.fifo.dead_letters().await, 0);
}

#[tokio::test]
async fn a_duplicate_notification_and_a_redelivery_after_a_crash_start_no_second_email_contact() {
    let p = start().await;
    let mut m = mail("twice", "AAQkconv-e2");
    m.attachments = vec![(
        "invoice.pdf".into(),
        "application/pdf".into(),
        INVOICE.len() as u64,
    )];
    m.attachment_bytes = vec![INVOICE.to_vec()];
    p.duplicate_and_crash_start_one(m, "contact").await;
}

#[tokio::test]
async fn the_agent_s_reply_reaches_the_customer_in_the_thread_and_sent_items_holds_it_once() {
    let p = start().await;
    let m = mail("Order 4411 is late", "AAQkconv-e3");
    let internet_message_id = m.internet_message_id.clone();
    p.stack.sim.deliver_message(UPN, m);
    let contacts = p.pump_until_contacts(1).await;
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    let inbound = contacts[0].contact_id.clone();

    // The agent answers from the queue's outbound address: the mailbox's.
    let reply = p
        .fake
        .agent_reply(INSTANCE, &inbound, UPN, "<p>Hello Bo, your order left today.</p>")
        .unwrap();
    let out = p.fake.outbound();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].from, UPN, "the customer sees the mailbox's address");
    assert_eq!(out[0].to, "bo@example.com");
    assert_eq!(out[0].in_reply_to.as_deref(), Some(internet_message_id.as_str()));
    assert_eq!(
        out[0].references.as_deref(),
        Some(format!("<order-4400@contoso.com> <order-4411@contoso.com> {internet_message_id}").as_str()),
        "the reply continues the customer's thread"
    );

    // EventBridge delivers the contact event (at least once: twice here).
    let filed = file_reply(&p.dispatcher, &reply.event).await.unwrap();
    assert_eq!(
        filed,
        Filed::Filed {
            connection: "support".into(),
            contact_id: reply.contact_id.clone()
        }
    );
    assert_eq!(
        file_reply(&p.dispatcher, &reply.event).await.unwrap(),
        Filed::AlreadyFiled
    );
    let sent = p.stack.sim.folder_messages(UPN, "sentitems");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let copy = &sent[0];
    assert!(!copy.is_draft, "an ordinary sent item, not a draft");
    assert_eq!(copy.subject, "RE: Order 4411 is late");
    assert_eq!(
        copy.to,
        vec![("bo@example.com".to_string(), "bo@example.com".to_string())]
    );
    assert!(
        copy.body_html.contains("your order left today"),
        "{}",
        copy.body_html
    );
    assert!(
        copy.extended_properties
            .iter()
            .any(|(id, v)| id == REPLY_PROPERTY && *v == reply.contact_id)
    );

    // A crash after the copy was made and before the ledger held it: the
    // event comes back, Sent Items is searched, and no second copy is made.
    assert!(
        p.forget_ledger_entry(&format!("dlv#reply#{}", reply.contact_id))
            .await,
        "the ledger held the reply"
    );
    assert_eq!(
        file_reply(&p.dispatcher, &reply.event).await.unwrap(),
        Filed::AlreadyFiled
    );
    assert_eq!(p.stack.sim.folder_messages(UPN, "sentitems").len(), 1);
    assert!(p.fake.refused().is_empty(), "{:?}", p.fake.refused());
}

#[tokio::test]
async fn events_that_are_not_an_agent_s_sent_email_reply_file_nothing() {
    let p = start().await;
    p.stack.sim.deliver_message(UPN, mail("Hello", "AAQkconv-e4"));
    let contacts = p.pump_until_contacts(1).await;
    let reply = p
        .fake
        .agent_reply(INSTANCE, &contacts[0].contact_id, UPN, "<p>Hi</p>")
        .unwrap();
    let mut started = reply.event.clone();
    started["detail"]["eventType"] = "INITIATED".into();
    let mut task = reply.event.clone();
    task["detail"]["channel"] = "TASK".into();
    for e in [
        started,
        task,
        json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}),
    ] {
        assert!(matches!(
            file_reply(&p.dispatcher, &e).await.unwrap(),
            Filed::Ignored(_)
        ));
    }
    assert!(p.stack.sim.folder_messages(UPN, "sentitems").is_empty());
    // Connect sends only from the instance's addresses.
    let refused = p
        .fake
        .agent_reply(
            INSTANCE,
            &contacts[0].contact_id,
            "someone@else.example",
            "<p>x</p>",
        )
        .unwrap_err();
    assert_eq!(refused.kind, "InvalidRequestException");
}

#[tokio::test]
async fn an_unknown_address_says_so_on_the_subscription_and_the_kept_mail_arrives_once_it_exists() {
    let p = pipe().await;
    let address = "help@contoso.com";
    p.unknown_target_keeps_the_mail(
        &format!("connect-email:{INSTANCE}/{FLOW}/{address}"),
        json!(["Mail.ReadWrite"]),
        mail("waiting", "AAQkconv-e5"),
        &[address, "email address one of the instance's"],
        |fake| fake.add_email_address(INSTANCE, "email-help", address, Some(FLOW)),
    )
    .await;
}

#[tokio::test]
async fn throttling_is_retried_and_ends_in_exactly_one_email_contact() {
    let p = start().await;
    p.throttled_thrice_starts_one(mail("throttled", "AAQkconv-e6"))
        .await;
}

#[tokio::test]
async fn the_admin_api_refuses_malformed_email_targets_and_calendar_flows_to_them() {
    let p = pipe().await;
    p.connect(
        json!([{"resource": "mail", "target": email_target()}]),
        json!(["Mail.ReadWrite", "Calendar.ReadOnly"]),
    )
    .await;
    p.admin_refuses(
        &[
            (
                format!("connect-email:{INSTANCE}/{FLOW}"),
                "connect-email:{instance-id}/{contact-flow-id}/{connect-email-address}",
            ),
            (
                format!("connect-email:{INSTANCE}/{FLOW}/support"),
                "is not an address",
            ),
        ],
        &email_target(),
    )
    .await;
}

#[tokio::test]
async fn a_customer_s_next_mail_in_the_conversation_is_related_to_the_first_contact() {
    let p = start().await;
    p.later_mails_relate(
        mail("Order 4411 is late", "AAQkconv-e7"),
        vec![
            mail("RE: Order 4411 is late", "AAQkconv-e7"),
            mail("Another matter", "AAQkconv-e8"),
        ],
        |c| field(c, "/EmailMessage/RawMessage/Subject"),
        &["RE: Order 4411 is late"],
        &["Another matter"],
    )
    .await;
}
