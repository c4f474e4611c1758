//! The demo's flow endpoint: what a contact-center flow's webhook would be.
//! It checks each event's `Relay365-Signature` the way docs/notifications.md
//! tells recipients to (HMAC-SHA256 of `t.body` with the signing key), keeps
//! every event for `GET /events`, and prints it when asked to.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use relay365::model::sensitive::Sensitive;
use relay365::web::signing::EventSigner;

/// One event as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// The event JSON (or the raw body when it is not JSON).
    pub event: serde_json::Value,
    /// `Relay365-Event-Id`.
    pub event_id: Option<String>,
    /// Whether `Relay365-Signature` matched the body.
    pub signature_ok: bool,
    /// The body byte for byte, as a receiver must verify it.
    pub body: Vec<u8>,
    /// The `Relay365-Signature` header.
    pub signature: Option<String>,
    /// The `X-Amzn-Trace-Id` header: the dispatch invocation's trace.
    pub trace: Option<String>,
}

struct Inner {
    signer: EventSigner,
    events: Mutex<Vec<Received>>,
    print: bool,
}

/// A running receiver; dropping it stops the server.
pub struct Receiver {
    /// Where dispatch delivers (`RELAY365_DEFAULT_TARGET`).
    pub url: String,
    inner: Arc<Inner>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    /// Serves on `127.0.0.1:port` (0 for any).
    ///
    /// # Errors
    /// When the port cannot be bound or the key is too weak.
    pub async fn start(port: u16, event_signing_key: &str, print: bool) -> Result<Self, String> {
        let signer = EventSigner::from_secret(&Sensitive::new(event_signing_key.to_string()))
            .map_err(|e| e.to_string())?;
        let inner = Arc::new(Inner {
            signer,
            events: Mutex::new(Vec::new()),
            print,
        });
        let app = axum::Router::new()
            .route("/events", axum::routing::post(receive).get(list))
            .with_state(inner.clone());
        let (addr, tx) = relay365_testkit::serve_on(port, app)
            .await
            .map_err(|e| format!("the flow receiver cannot listen on 127.0.0.1:{port}: {e}"))?;
        Ok(Self {
            url: format!("http://{addr}/events"),
            inner,
            _stop: tx,
        })
    }

    /// Every event received so far.
    pub fn events(&self) -> Vec<Received> {
        self.inner
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signature_ok = inner
        .signer
        .verify(get("relay365-signature").unwrap_or_default(), &body)
        .is_some();
    let event = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    let received = Received {
        event,
        event_id: get("relay365-event-id").map(str::to_string),
        signature_ok,
        body: body.to_vec(),
        signature: get("relay365-signature").map(str::to_string),
        trace: get("x-amzn-trace-id").map(str::to_string),
    };
    if inner.print {
        let kind = received.event["type"].as_str().unwrap_or("event");
        println!(
            "\n==> flow receiver: {kind} (signature {})\n{}",
            if signature_ok { "verified" } else { "INVALID" },
            serde_json::to_string_pretty(&received.event).unwrap_or_default()
        );
    }
    inner
        .events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(received);
    StatusCode::OK
}

async fn list(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    let events: Vec<serde_json::Value> = inner
        .events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(
            |r| serde_json::json!({"event_id": r.event_id, "signature_ok": r.signature_ok, "event": r.event}),
        )
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "events": events }).to_string(),
    )
}
