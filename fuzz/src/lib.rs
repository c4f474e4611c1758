//! What the fuzz targets share: one runtime, in-memory services, and the API
//! Gateway envelope a fuzzed body is put into. Everything here is set up once
//! per process, so an execution costs only the code under test.

use std::sync::{Arc, OnceLock};

use relay365::aws::queue::{Queue, QueueError, QueuedNotification};
use relay365::services::Services;

/// The signing key the in-memory services use (fuzzing only).
pub const SIGNING_KEY: &str = "fuzzing-signing-key-0123456789abcdef0123456789abcdef";
/// The app secret the in-memory services use (fuzzing only).
pub const APP_SECRET: &str = r#"{"client_id":"11111111-2222-3333-4444-555555555555","tenant_id":"contoso.onmicrosoft.com","client_secret":"fuzz-secret"}"#;

/// One current-thread runtime for every execution.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Services with secrets and state in memory. Microsoft's hosts point at a
/// closed loopback port: no target may reach the network.
pub fn services() -> &'static Services {
    static S: OnceLock<Services> = OnceLock::new();
    S.get_or_init(|| {
        runtime()
            .block_on(Services::in_memory(
                &[
                    ("RELAY365_PUBLIC_URL", "https://relay.example.com"),
                    ("RELAY365_STATE_TABLE", "relay365-state"),
                    ("RELAY365_LOCAL", "1"),
                    ("RELAY365_LOGIN_URL", "http://127.0.0.1:9"),
                    ("RELAY365_GRAPH_URL", "http://127.0.0.1:9"),
                ],
                APP_SECRET,
                SIGNING_KEY,
            ))
            .expect("in-memory services")
    })
}

/// A queue that takes everything (the webhook's notifications go nowhere).
pub struct Sink;

#[async_trait::async_trait]
impl Queue for Sink {
    async fn send(&self, _items: &[QueuedNotification]) -> Result<(), QueueError> {
        Ok(())
    }
}

/// The webhook, its signer loaded from [`SIGNING_KEY`].
pub fn webhook() -> &'static mail_webhook::Webhook {
    static W: OnceLock<mail_webhook::Webhook> = OnceLock::new();
    W.get_or_init(|| {
        let signer = relay365::web::signing::Signer::new(&relay365::Sensitive::new(SIGNING_KEY))
            .expect("a long enough key");
        mail_webhook::Webhook::with_signer(signer, Arc::new(Sink))
    })
}

/// A fuzz input as the HTTP targets read it: the first byte, which picks a
/// variant (a route, a method), and the rest as text. `None` for an empty
/// input or one that is not UTF-8, which API Gateway never hands over.
pub fn selector_and_text(data: &[u8]) -> Option<(u8, &str)> {
    let (&first, rest) = data.split_first()?;
    Some((first, std::str::from_utf8(rest).ok()?))
}

/// An API Gateway HTTP API (2.0) event for `method path?query` with `body`.
pub fn http_event(
    method: &str,
    path: &str,
    query: &str,
    body: &str,
    cookie: Option<&str>,
) -> serde_json::Value {
    let mut headers = serde_json::json!({
        "content-type": "application/json",
        "host": "abc123.execute-api.us-east-1.amazonaws.com",
    });
    let mut event = serde_json::json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": query,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "52.159.23.209", "userAgent": "fuzz"},
            "requestId": "fuzz",
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "22/Nov/2026:18:00:00 +0000",
            "timeEpoch": 1763834400000u64
        },
        "body": body,
        "isBase64Encoded": false
    });
    if let Some(c) = cookie {
        event["cookies"] = serde_json::json!([c]);
        headers["cookie"] = c.into();
    }
    event["headers"] = headers;
    event
}

/// Every answer to outside input is a well-formed API Gateway response with a
/// real status; a 5xx would make Graph or a caller retry input that can never
/// succeed, so only the statuses that mean "try later" are allowed. No secret
/// the deployment holds appears in it, unless the input itself carried that
/// text (the handshake echoes its token, as Graph requires).
pub fn check_answer(answer: &serde_json::Value, input: &str) {
    let status = answer["statusCode"]
        .as_u64()
        .expect("an answer with a status code");
    assert!((200..600).contains(&status), "status {status}");
    assert!(
        status < 500 || matches!(status, 502 | 503),
        "outside input answered {status}: {answer}"
    );
    // What a person reads: the body's strings once JSON escapes are undone
    // (an input `\u000cuzz-secret` is not the secret, its escape `\fuzz-secret` looks like it).
    let body = answer["body"].as_str().unwrap_or_default();
    let text = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => strings(&v).join("\n"),
        Err(_) => body.to_string(),
    };
    for secret in [SIGNING_KEY, "fuzz-secret"] {
        assert!(
            input.contains(secret) || !text.contains(secret),
            "a secret in an answer: {text}"
        );
    }
}

/// A genuine clientState for connection `c1` under [`SIGNING_KEY`].
pub fn client_state() -> String {
    static CS: OnceLock<String> = OnceLock::new();
    CS.get_or_init(|| {
        relay365::web::signing::Signer::new(&relay365::Sensitive::new(SIGNING_KEY))
            .expect("a long enough key")
            .client_state("c1")
            .expose()
            .to_string()
    })
    .clone()
}

/// Every string in a JSON value, with strings that hold JSON themselves (an
/// API Gateway answer's `body`) opened too.
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => match serde_json::from_str::<serde_json::Value>(s) {
            Ok(inner @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => strings(&inner),
            _ => vec![s.clone()],
        },
        serde_json::Value::Array(a) => a.iter().flat_map(strings).collect(),
        serde_json::Value::Object(o) => o
            .iter()
            .flat_map(|(k, v)| std::iter::once(k.clone()).chain(strings(v)))
            .collect(),
        _ => Vec::new(),
    }
}
