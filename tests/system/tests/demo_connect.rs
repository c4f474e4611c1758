//! The demo's local Amazon Connect: a flow subscribed with a
//! `connect-task:` target on the demo's instance and flow turns a mail that
//! arrives at the simulated mailbox into one Connect task, started by the
//! real `mail-dispatch` binary through the SDK (signed with the demo's key,
//! reaching the local Connect through `AWS_ENDPOINT_URL_CONNECT`), and the
//! demo lists it at `GET /_demo/connect/contacts` as the walk-through says.
//! The stack file tells the CLI where that Connect is and which instance the
//! stack may use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod demo_common;

use demo_common::*;
use relay365_demo::{DEMO_CONNECT_FLOW_ID, DEMO_CONNECT_INSTANCE_ID, DEMO_USER, Demo, Options};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_becomes_a_task_in_the_demo_s_amazon_connect() {
    let stack_file = std::env::temp_dir().join(format!(
        "relay365-demo-connect-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    let mut opts = Options::for_tests(bin_dir());
    opts.stack_file = Some(stack_file.clone());
    let demo = Demo::start(opts).await.expect("the demo starts");
    let task = format!("connect-task:{DEMO_CONNECT_INSTANCE_ID}/{DEMO_CONNECT_FLOW_ID}");

    // The stack file names the local Connect and the instance the stack may use.
    let desc: Value = serde_json::from_str(&std::fs::read_to_string(&stack_file).unwrap()).unwrap();
    assert_eq!(desc["endpoints"]["connect"], demo.connect.url().as_str());
    assert_eq!(desc["parameters"]["ConnectInstanceId"], DEMO_CONNECT_INSTANCE_ID);
    assert_eq!(desc["parameters"]["ConnectEmailAddress"], DEMO_USER);

    // A connection whose mail flow goes to Connect, and one to the receiver.
    let url = format!("{}/connections", demo.api_url);
    let body = json!({"id": "support", "auth": "delegated", "scopes": ["Mail.ReadOnly"],
                      "subscriptions": [{"resource": "mail", "target": task}, {"resource": "mail"}]})
    .to_string();
    let mut req = http().post(&url).header("content-type", "application/json");
    for (k, v) in signed(
        "POST",
        &url,
        &[("content-type", "application/json")],
        body.as_bytes(),
    ) {
        req = req.header(k, v);
    }
    let resp = req.body(body).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let conn: Value = resp.json().await.unwrap();
    assert_eq!(conn["subscriptions"][0]["target"], task.as_str(), "{conn}");
    let (status, page) = sign_in(conn["connect_url"].as_str().unwrap()).await;
    assert!(status == 200 && page.contains("is connected"), "{status} {page}");

    let id = refund_mail_reaches_connect(&demo).await;
    // The other flow got the event as before.
    assert!(
        eventually(30, || demo
            .receiver
            .events()
            .iter()
            .any(|e| e.event["mail"]["id"] == id.as_str()))
        .await
    );

    // What a person sees at the URL the walk-through prints.
    let listed: Value = http()
        .get(format!("{}/_demo/connect/contacts", demo.api_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contacts = listed["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 1, "{listed:#}");
    let c = &contacts[0];
    assert_eq!(c["operation"], "StartTaskContact");
    assert_eq!(c["instance_id"], DEMO_CONNECT_INSTANCE_ID);
    assert_eq!(c["contact_flow_id"], DEMO_CONNECT_FLOW_ID);
    assert_eq!(c["name"], "Refund for order 1234");
    assert!(
        c["request"]["Description"]
            .as_str()
            .unwrap()
            .contains("Please refund the broken kettle."),
        "{c:#}"
    );
    assert_eq!(c["request"]["Attributes"]["sender"], "customer@example.org");
    assert_eq!(c["request"]["Attributes"]["mailbox"], DEMO_USER);
    assert!(demo.connect.refused().is_empty(), "{:?}", demo.connect.refused());
    drop(demo);
    assert!(!stack_file.exists(), "the stack file outlived the demo");
}
