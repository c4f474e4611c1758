//! Cost of turning Graph's message JSON into a relay365 event, signed and
//! serialised as it is sent.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use relay365::model::connection::{AuthMode, Connection};
use relay365::web::signing::EventSigner;
use relay365::{Cloud, Sensitive};

fn bench(c: &mut Criterion) {
    let conn = Connection::new(
        "support".into(),
        AuthMode::Delegated,
        Cloud::Global,
        "t".into(),
        Some("support@contoso.com".into()),
        vec![],
    );
    let message = serde_json::json!({
        "id": "AAMkAGUwNjQ4ZjIxLTQ3Y2Y8AAA=", "internetMessageId": "<BY5PR@contoso.com>", "conversationId": "AAQkAD",
        "subject": "Your case 4411", "from": {"emailAddress": {"name": "Bo", "address": "bo@example.com"}},
        "toRecipients": [{"emailAddress": {"name": "Support", "address": "support@contoso.com"}}],
        "ccRecipients": [], "receivedDateTime": "2026-11-22T18:00:00Z",
        "body": {"contentType": "html", "content": "<p>".to_string() + &"My order is late. ".repeat(100) + "</p>"},
        "bodyPreview": "My order is late.", "hasAttachments": true, "webLink": "https://outlook.office365.com/owa/?ItemID=x"
    });
    let attachments =
        vec![serde_json::json!({"name": "a.pdf", "contentType": "application/pdf", "size": 1234})];
    let signer = EventSigner::from_secret(&Sensitive::new("k".repeat(64))).unwrap();
    c.bench_function(
        "dispatch: normalise + serialise + sign a mail.received event",
        |b| {
            b.iter(|| {
                let event = mail_dispatch::normalise::mail_event(&conn, &message, &attachments);
                let body = serde_json::to_vec(&event).unwrap();
                signer.signature(1_795_000_000, &body)
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
