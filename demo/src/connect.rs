//! The local Amazon Connect (`connect-fake`) as the demo sets it up and
//! shows it.
//!
//! Connect is not in moto, so the demo runs its own: one instance, its
//! published inbound flow and the mailbox's address, accepting the demo's
//! key only. What it records is shown two ways, both from here: the API's
//! `GET /_demo/connect/contacts` and, with printed events, a line per contact.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    DEMO_ACCESS_KEY_ID, DEMO_CONNECT_EMAIL_ID, DEMO_CONNECT_FLOW_ID, DEMO_CONNECT_INSTANCE_ID, DEMO_REGION,
    DEMO_SECRET_ACCESS_KEY, DEMO_USER,
};

/// The local Amazon Connect with the demo's instance, its published inbound
/// flow and the mailbox's address; it accepts the demo's key only.
pub(crate) async fn start() -> connect_fake::Fake {
    let connect = connect_fake::Fake::start_with(connect_fake::Config {
        region: DEMO_REGION.into(),
        access_key_id: DEMO_ACCESS_KEY_ID.into(),
        secret_access_key: DEMO_SECRET_ACCESS_KEY.into(),
    })
    .await;
    connect.add_instance(DEMO_CONNECT_INSTANCE_ID);
    connect.add_flow(
        DEMO_CONNECT_INSTANCE_ID,
        DEMO_CONNECT_FLOW_ID,
        "relay365 demo inbound",
    );
    connect.add_email_address(
        DEMO_CONNECT_INSTANCE_ID,
        DEMO_CONNECT_EMAIL_ID,
        DEMO_USER,
        Some(DEMO_CONNECT_FLOW_ID),
    );
    connect
}

/// A contact the local Connect started, as `GET /_demo/connect/contacts`
/// lists it: what an agent would see of it, and the whole request.
pub fn contact_json(c: &connect_fake::Contact) -> Value {
    let r = &c.request;
    let name = r["Name"]
        .as_str()
        .or_else(|| r["EmailMessage"]["RawMessage"]["Subject"].as_str())
        .unwrap_or("");
    json!({
        "operation": format!("{:?}", c.operation),
        "contact_id": c.contact_id,
        "instance_id": c.instance_id,
        "contact_flow_id": c.contact_flow_id,
        "name": name,
        "related_contact_id": c.related_contact_id,
        "attachments": c.attachments.iter().map(|a| json!({"file_name": a.file_name, "size": a.bytes.len()})).collect::<Vec<_>>(),
        "request": r,
    })
}

/// Prints each contact the local Connect starts, as the receiver prints events.
pub(crate) async fn print_contacts(connect: Arc<connect_fake::Fake>) {
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let contacts = connect.contacts();
        for c in contacts.iter().skip(seen) {
            let what = match c.operation {
                connect_fake::Operation::StartEmailContact => "email contact",
                _ => "task",
            };
            let related = c
                .related_contact_id
                .as_ref()
                .map(|r| format!(", related to {r}"))
                .unwrap_or_default();
            println!(
                "==> Amazon Connect (local): {what} {} started in flow {}{related}: {:?}",
                c.contact_id,
                c.contact_flow_id,
                contact_json(c)["name"].as_str().unwrap_or("")
            );
        }
        seen = contacts.len();
    }
}
