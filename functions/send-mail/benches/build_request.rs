//! Cost of turning a send-mail request into the Graph request: parse and
//! check the caller's JSON, decode an inline attachment, plan, and build the
//! Graph `sendMail` body.
#![allow(missing_docs, clippy::unwrap_used)]

use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let small = serde_json::json!({
        "connection_id": "support", "from": "helpdesk@contoso.com",
        "to": ["ann@example.com", {"name": "Bo", "address": "bo@example.com"}], "cc": ["cy@example.com"],
        "subject": "Your case 4411", "body": {"html": "<p>".to_string() + &"We are on it. ".repeat(50) + "</p>"},
        "save_to_sent_items": true
    });
    let with_file = {
        let mut v = small.clone();
        v["attachments"] = serde_json::json!([{"name": "a.pdf", "content_type": "application/pdf",
            "content_base64": base64::engine::general_purpose::STANDARD.encode(vec![7u8; 100 * 1024])}]);
        v
    };
    let raw_small = small.to_string();
    let raw_file = with_file.to_string();
    c.bench_function(
        "send-mail: parse + check + build Graph body (HTML, 3 recipients)",
        |b| {
            b.iter(|| {
                let v: serde_json::Value = serde_json::from_str(&raw_small).unwrap();
                let req = send_mail::request::parse(&v, None, None).unwrap();
                serde_json::to_vec(
                    &serde_json::json!({"message": send_mail::graph_message(&req, true, true)}),
                )
                .unwrap()
            })
        },
    );
    c.bench_function("send-mail: same with a 100 KiB inline attachment", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(&raw_file).unwrap();
            let req = send_mail::request::parse(&v, None, None).unwrap();
            assert_eq!(send_mail::plan(&req), send_mail::Plan::Single);
            serde_json::to_vec(&serde_json::json!({"message": send_mail::graph_message(&req, true, true)}))
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
