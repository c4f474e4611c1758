//! What the simulator's tests share: a simulator with one app and one user,
//! an HTTP client, an app-only token and a webhook that answers Graph's
//! validation handshake.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use graph_sim::{App, Sim, User};
use serde_json::Value;

pub(crate) const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
pub(crate) const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub(crate) const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
pub(crate) const UPN: &str = "ann@contoso.com";

/// A simulator with the app (secret `s`) and the user Ann.
pub(crate) async fn sim() -> Sim {
    let sim = Sim::start().await.unwrap();
    sim.register_app(App {
        client_id: CLIENT.into(),
        home_tenant: TENANT.into(),
        client_secret: Some("s".into()),
        certificate_der: None,
        redirect_uris: vec![REDIRECT.into()],
    });
    sim.add_user(User {
        id: "u1".into(),
        upn: UPN.into(),
        display_name: "Ann".into(),
        tenant: TENANT.into(),
    });
    sim
}

/// A client as relay365's own (no redirects followed, its timeouts), built
/// here so that the simulator's tests need none of relay365's crates.
pub(crate) fn client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .unwrap()
}

pub(crate) async fn get_json(url: String) -> Value {
    client().get(url).send().await.unwrap().json().await.unwrap()
}

/// A token request to the tenant's token endpoint, answered as JSON.
pub(crate) async fn token(sim: &Sim, form: &[(&str, &str)]) -> Value {
    token_at(sim, TENANT, form).await
}

/// A token request to the token endpoint of `tenant` (an id, a domain or
/// `organizations`), answered as JSON.
pub(crate) async fn token_at(sim: &Sim, tenant: &str, form: &[(&str, &str)]) -> Value {
    client()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", sim.url()))
        .form(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The URL of the OpenID discovery document of `tenant` (an id, a domain
/// or a multi-tenant name).
pub(crate) fn discovery_url(sim: &Sim, tenant: &str) -> String {
    format!("{}/{tenant}/v2.0/.well-known/openid-configuration", sim.url())
}

/// The authorization code in the redirect an authorize request answered
/// with (a `302` to the app's redirect URI).
pub(crate) fn code_of(redirect: &reqwest::Response) -> String {
    assert_eq!(redirect.status(), 302);
    let back = url::Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
    back.query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .to_string()
}

/// The claims of a JWT (the ID token), unverified.
pub(crate) fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// An app-only access token for the app (client credentials).
pub(crate) async fn app_token(sim: &Sim) -> String {
    let v = token(
        sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", "s"),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    v["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

/// A Graph request with the token: (status, JSON body or Null).
pub(crate) async fn graph(
    sim: &Sim,
    token: &str,
    method: reqwest::Method,
    path_or_url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let url = if path_or_url.starts_with("http") {
        path_or_url.to_string()
    } else {
        format!("{}/v1.0{path_or_url}", sim.url())
    };
    let mut req = client().request(method, url).bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A Graph `GET` with the token and no other header: (status, JSON body or Null).
pub(crate) async fn graph_get(sim: &Sim, token: &str, path_or_url: &str) -> (u16, Value) {
    graph(sim, token, reqwest::Method::GET, path_or_url, &[], None).await
}

/// A notification URL on 127.0.0.1 that answers the validation handshake
/// (echoes `validationToken` as text/plain) and accepts notifications.
pub(crate) async fn webhook() -> String {
    use axum::extract::Query;
    use std::collections::HashMap;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|Query(q): Query<HashMap<String, String>>| async move {
            match q.get("validationToken") {
                Some(t) => (
                    axum::http::StatusCode::OK,
                    [(axum::http::header::CONTENT_TYPE, "text/plain")],
                    t.clone(),
                ),
                None => (
                    axum::http::StatusCode::ACCEPTED,
                    [(axum::http::header::CONTENT_TYPE, "text/plain")],
                    String::new(),
                ),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hook")
}
