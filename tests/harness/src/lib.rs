//! The whole stack for end-to-end tests of the functions' handlers: a moto
//! server (Secrets Manager) holding the app secret and signing key, the
//! Microsoft simulator with a registered app and a user, and relay365's
//! `Services` loaded from them exactly as a function loads at cold start.
//!
//! Requests are API Gateway HTTP API (payload 2.0) events written as JSON the
//! way AWS sends them and parsed by lambda_http's own deserializer, so the
//! tests cross the same boundary a deployed function does.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;

use graph_sim::{App, Sim, User};
use lambda_http::{Body, Request, Response};
use relay365::runtime::Services;
use relay365::secrets::{AwsSecretStore, SecretStore};
use relay365_testkit::Aws;

pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CUSTOMER_TENANT: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
pub const CLIENT_SECRET: &str = "harness~client~secret~value~42";
pub const PUBLIC_URL: &str = "https://relay.example";
pub const UPN: &str = "ann@contoso.com";
pub const SHARED_UPN: &str = "support@fabrikam.com";
pub const SIGNING_KEY: &str = "harness-signing-key-0123456789abcdef0123456789";

pub struct Stack {
    pub aws: Aws,
    pub sim: Sim,
    pub services: Services,
    /// The store without the cache: what is really in Secrets Manager.
    pub direct: AwsSecretStore,
}

/// Extra settings for a stack.
#[derive(Default)]
pub struct Options {
    pub env: Vec<(&'static str, String)>,
    /// A certificate (DER) registered on the app, and the app secret's certificate JSON.
    pub certificate: Option<(Vec<u8>, serde_json::Value)>,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Self {
        let aws = Aws::start().await;
        let sim = Sim::start().await.unwrap();
        sim.register_app(App {
            client_id: CLIENT_ID.into(),
            home_tenant: TENANT.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            certificate_der: opts.certificate.as_ref().map(|c| c.0.clone()),
            redirect_uris: vec![
                format!("{PUBLIC_URL}/oauth/callback"),
                format!("{PUBLIC_URL}/oauth/admin-consent"),
            ],
        });
        sim.add_user(User {
            id: "u-ann".into(),
            upn: UPN.into(),
            display_name: "Ann".into(),
            tenant: TENANT.into(),
        });
        sim.add_user(User {
            id: "u-admin".into(),
            upn: "admin@fabrikam.com".into(),
            display_name: "Fabrikam admin".into(),
            tenant: CUSTOMER_TENANT.into(),
        });
        let sm = aws_sdk_secretsmanager::Client::new(&aws.sdk_config().await);
        let direct = AwsSecretStore::new(sm);
        let mut app =
            serde_json::json!({"client_id": CLIENT_ID, "tenant_id": TENANT, "client_secret": CLIENT_SECRET});
        if let Some((_, cert)) = &opts.certificate {
            app["certificate"] = cert.clone();
        }
        direct.create("relay365/app", &app.to_string()).await.unwrap();
        direct.create("relay365/signing-key", SIGNING_KEY).await.unwrap();
        let mut env: HashMap<String, String> = [
            ("RELAY365_APP_SECRET_ID", "relay365/app".to_string()),
            (
                "RELAY365_SIGNING_KEY_SECRET_ID",
                "relay365/signing-key".to_string(),
            ),
            ("RELAY365_PUBLIC_URL", PUBLIC_URL.to_string()),
            ("RELAY365_LOGIN_URL", sim.url()),
            ("RELAY365_GRAPH_URL", sim.url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in opts.env {
            env.insert(k.to_string(), v);
        }
        let config = relay365::Config::from_map(&env).unwrap();
        let store = Arc::new(relay365::secrets::CachedSecretStore::new(
            AwsSecretStore::new(aws_sdk_secretsmanager::Client::new(&aws.sdk_config().await)),
            relay365::runtime::SECRET_TTL,
        ));
        let services = Services::with_store(config, store).await.unwrap();
        Self {
            aws,
            sim,
            services,
            direct,
        }
    }

    /// The stored record of a connection, read past the cache.
    pub async fn stored(&self, id: &str) -> Option<relay365::Connection> {
        let raw = self
            .direct
            .get(&format!("relay365/connections/{id}"))
            .await
            .unwrap()?;
        Some(relay365::Connection::from_json(&raw).unwrap())
    }

    /// A GET through the simulator (authorize, admin consent); returns the redirect target.
    pub async fn follow(&self, url: &str) -> String {
        let resp = self.services.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 302, "expected a redirect from {url}");
        resp.headers()["location"].to_str().unwrap().to_string()
    }
}

/// An API Gateway HTTP API (2.0) event, as AWS sends it, parsed by lambda_http.
pub fn request(method: &str, path_and_query: &str, body: Option<&str>, cookies: &[&str]) -> Request {
    request_with_headers(
        method,
        path_and_query,
        body,
        cookies,
        &[("content-type", "application/json")],
    )
}

pub fn request_with_headers(
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
    cookies: &[&str],
    headers: &[(&str, &str)],
) -> Request {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut hdrs = serde_json::Map::new();
    hdrs.insert("host".into(), "relay.example".into());
    hdrs.insert("user-agent".into(), "relay365-tests".into());
    for (k, v) in headers {
        hdrs.insert(k.to_string(), (*v).into());
    }
    let mut event = serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": hdrs,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "relay.example",
            "domainPrefix": "relay",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "relay365-tests"},
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "22/Nov/2026:19:03:58 +0000",
            "timeEpoch": 1_795_000_000_000u64
        },
        "isBase64Encoded": false
    });
    if !cookies.is_empty() {
        event["cookies"] = serde_json::json!(cookies);
    }
    if let Some(b) = body {
        event["body"] = b.into();
    }
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway v2 event")
}

pub fn body_text(resp: &Response<Body>) -> String {
    match resp.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        Body::Empty => String::new(),
        _ => String::new(),
    }
}

pub fn body_json(resp: &Response<Body>) -> serde_json::Value {
    serde_json::from_str(&body_text(resp)).unwrap_or(serde_json::Value::Null)
}

pub fn location(resp: &Response<Body>) -> String {
    resp.headers()["location"].to_str().unwrap().to_string()
}

/// `name=value` of each `Set-Cookie`, for sending back.
pub fn cookies(resp: &Response<Body>) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect()
}

/// The path and query of a URL (to hand a redirect back to a handler).
pub fn path_and_query(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}
