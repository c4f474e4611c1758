//! Cost of the webhook per notification: a 100-item batch through the real
//! handler (parse, constant-time clientState checks, queue entries) with the
//! queue stubbed out, so the figure is our code, not SQS.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relay365::Sensitive;
use relay365::aws::queue::{Queue, QueueError, QueuedNotification};
use relay365::web::signing::Signer;

struct NullQueue;

#[async_trait::async_trait]
impl Queue for NullQueue {
    async fn send(&self, items: &[QueuedNotification]) -> Result<(), QueueError> {
        std::hint::black_box(items.iter().map(QueuedNotification::dedup_id).count());
        Ok(())
    }
}

fn batch(signer: &Signer, n: usize) -> String {
    let cs = signer.client_state("support");
    let items: Vec<_> = (0..n)
        .map(|i| serde_json::json!({
            "id": format!("lsgTZMr9KwAAA{i}"), "subscriptionId": "c6126aa3-0ed8-412f-a988-71e6cee627c4",
            "subscriptionExpirationDateTime": "2026-11-29T03:12:18.2257768Z", "clientState": cs.expose(),
            "changeType": "created", "resource": format!("Users/622eaaff-0683-4862-9de4-f2ec83c2bd98/Messages/AAMkAGUwNjQ4ZjIxAAA{i}="),
            "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
            "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": format!("Users/622eaaff/Messages/AAMk{i}"),
                "@odata.etag": "W/\"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf\"", "id": format!("AAMkAGUwNjQ4ZjIxAAA{i}=")}
        }))
        .collect();
    serde_json::json!({"value": items}).to_string()
}

fn bench(c: &mut Criterion) {
    let signer = Signer::new(&Sensitive::new("k".repeat(64))).unwrap();
    let body = batch(&signer, 100);
    let webhook = mail_webhook::Webhook::with_signer(signer, Arc::new(NullQueue));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut g = c.benchmark_group("webhook");
    g.throughput(Throughput::Elements(100));
    g.bench_function("100-notification batch", |b| {
        b.iter(|| {
            let req = relay365_harness::request("POST", "/notifications", Some(&body), &[]);
            let resp = rt.block_on(mail_webhook::handle(req, &webhook));
            assert_eq!(resp.status(), 202);
        })
    });
    g.bench_function("validation handshake", |b| {
        b.iter(|| {
            let req = relay365_harness::request(
                "POST",
                "/notifications?validationToken=Validation%3A+Testing+client+application+reachability",
                None,
                &[],
            );
            rt.block_on(mail_webhook::handle(req, &webhook))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
