//! Token flows end to end: the shared crate against moto (Secrets Manager)
//! and the identity simulator, over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pfx::make_pfx;
use common::*;
use relay365::aws::secrets::SecretStore as _;
use relay365::microsoft::tokens::{AppCredentials, AuthorizeOptions, TokenError};
use relay365::model::connection::AuthMode;
use relay365::model::scopes::{self, FeatureScope};
use relay365::{Cloud, Sensitive};
use relay365_testkit::LogCapture;

#[tokio::test]
async fn pkce_authorization_code_exchange_gives_a_refresh_token_once() {
    let w = World::start().await;
    let client = w.token_client(w.secret_app());
    let features = [FeatureScope::MailReadOnly, FeatureScope::MailSend];
    let scope = scopes::delegated_scope_param(Cloud::Global, &features);
    let opts = AuthorizeOptions {
        login_hint: Some(UPN.into()),
        ..Default::default()
    };
    let (url, verifier) = client
        .authorize_url("organizations", REDIRECT, &scope, "state-xyz", &opts)
        .unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["response_mode"], "query");
    assert_eq!(q["login_hint"], UPN);
    assert!(
        !url.as_str().contains(verifier.secret()),
        "the PKCE verifier must never be in a URL"
    );

    let code = w.follow_authorize(url.as_str()).await.unwrap();
    // A wrong verifier is refused, as Microsoft does (and burns the code).
    let wrong = Sensitive::new("x".repeat(43));
    let err = exchange(&client, code, &wrong, &scope).await.unwrap_err();
    assert!(
        err.to_string().contains("AADSTS501481") || matches!(err, TokenError::ReauthRequired { .. }),
        "{err}"
    );

    let code = w.follow_authorize(url.as_str()).await.unwrap();
    let verifier = Sensitive::new(verifier.secret().clone());
    let tokens = exchange(&client, code.clone(), &verifier, &scope).await.unwrap();
    assert!(
        tokens.refresh_token.is_some(),
        "offline_access was asked, so a refresh token comes back"
    );
    assert!(
        tokens.scopes.iter().any(|s| s == "Mail.Read"),
        "{:?}",
        tokens.scopes
    );

    // Codes are single use.
    match exchange(&client, code, &verifier, &scope).await.unwrap_err() {
        TokenError::ReauthRequired { code, reason } => {
            assert_eq!(code.as_deref(), Some("AADSTS54005"));
            assert!(reason.contains("already used"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The token is good at Graph.
    let graph =
        relay365::microsoft::graph::GraphClient::new(w.http.clone(), &w.sim.url(), Default::default());
    let me: serde_json::Value = graph.get_json("/me", &tokens.access_token).await.unwrap();
    assert_eq!(me["userPrincipalName"], UPN);
}

#[tokio::test]
async fn refresh_rotates_and_writes_back_at_most_every_ten_minutes() {
    let w = World::start().await;
    let rt0 = w
        .connect("support", Some(minutes_ago(11)))
        .await
        .refresh_token
        .unwrap();

    let provider = w.provider(w.secret_app());
    provider.token_for("support").await.unwrap();
    let rt1 = w.stored_refresh("support").await.unwrap();
    assert_ne!(rt1, rt0, "the rotated refresh token is written back");
    assert_eq!(w.aws.count("secretsmanager.PutSecretValue"), 1);

    // An hour later (access token expired) the next refresh uses the newest
    // token, but the last write is recent: no second write.
    w.second_refresh_writes_nothing(
        &provider,
        "support",
        "secretsmanager.PutSecretValue",
        "no write-back within ten minutes",
    )
    .await;
    assert_eq!(w.stored_refresh("support").await.unwrap(), rt1);
}

#[tokio::test]
async fn cached_tokens_call_neither_secrets_manager_nor_the_token_endpoint() {
    let w = World::start().await;
    w.connect("support", None).await;
    let provider = w.provider(w.secret_app());
    let token_calls = w.sim.stats().token_requests;
    let gets = w.aws.count("secretsmanager.GetSecretValue");

    let a = provider.token_for("support").await.unwrap();
    let b = provider.token_for("support").await.unwrap();
    let c = provider.token_for("support").await.unwrap();
    assert_eq!(a, b);
    assert_eq!(b, c);
    assert_eq!(
        w.sim.stats().token_requests,
        token_calls + 1,
        "one refresh for three calls"
    );
    // The record was written through the cache at create time, so not even one read reached AWS.
    assert_eq!(w.aws.count("secretsmanager.GetSecretValue"), gets);
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let w = World::start().await;
    w.connect("support", None).await;
    let provider = Arc::new(w.provider(w.secret_app()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let p = provider.clone();
        set.spawn(async move { p.token_for("support").await.unwrap() });
    }
    let tokens = set.join_all().await;
    assert_eq!(tokens.len(), 10);
    assert!(tokens.windows(2).all(|p| p[0] == p[1]));
    assert_eq!(
        w.sim.stats().by_grant["refresh_token"],
        1,
        "ten callers at once, one refresh"
    );
}

#[tokio::test]
async fn client_credentials_with_a_secret() {
    let w = World::start().await;
    w.put_connection(&active("app", AuthMode::AppSecret, None)).await;
    let provider = w.provider(w.secret_app());
    let token = provider.token_for("app").await.unwrap();
    assert!(!token.is_empty());
    assert_eq!(w.sim.stats().by_grant["client_credentials"], 1);
    provider.token_for("app").await.unwrap();
    assert_eq!(w.sim.stats().by_grant["client_credentials"], 1, "cached");

    // A wrong secret is the operator's problem, said so.
    let bad = AppCredentials::new(
        CLIENT_ID.into(),
        TENANT.into(),
        Some(Sensitive::new("wrong")),
        None,
    );
    let err = w.provider(bad).token_for("app").await.unwrap_err();
    assert!(
        matches!(err, TokenError::AppCredentials { ref code, .. } if code == "AADSTS7000215"),
        "{err}"
    );
    assert!(err.to_string().contains("Value (not its Secret ID)"), "{err}");
}

#[tokio::test]
async fn client_credentials_with_a_certificate_assertion() {
    let w = World::start().await;
    let (pfx_b64, cert_der) = make_pfx("pfx-pass-word");
    w.sim.register_app(graph_sim::App {
        client_id: CLIENT_ID.into(),
        home_tenant: TENANT.into(),
        client_secret: None,
        certificate_der: Some(cert_der),
        redirect_uris: vec![REDIRECT.into()],
    });
    let secret_json = serde_json::json!({
        "client_id": CLIENT_ID, "tenant_id": TENANT,
        "certificate": {"pfx_base64": pfx_b64, "password": "pfx-pass-word"}
    })
    .to_string();
    w.put_connection(&active("cert", AuthMode::AppCertificate, None))
        .await;
    let app = AppCredentials::from_secret_json(&secret_json).unwrap();
    let token = w.provider(app).token_for("cert").await.unwrap();
    assert!(!token.is_empty());
    assert_eq!(w.sim.stats().by_grant["client_credentials"], 1);

    // Another certificate than the one uploaded is refused with the reason.
    let (other_b64, _) = make_pfx("x");
    let other = serde_json::json!({"client_id": CLIENT_ID, "tenant_id": TENANT, "certificate": {"pfx_base64": other_b64, "password": "x"}});
    let app = AppCredentials::from_secret_json(&other.to_string()).unwrap();
    let err = w.provider(app).token_for("cert").await.unwrap_err();
    assert!(
        matches!(err, TokenError::AppCredentials { ref code, .. } if code == "AADSTS700027"),
        "{err}"
    );

    // A wrong PFX password is caught before any request.
    let wrong = serde_json::json!({"client_id": CLIENT_ID, "tenant_id": TENANT, "certificate": {"pfx_base64": pfx_b64, "password": "nope"}});
    let err = AppCredentials::from_secret_json(&wrong.to_string()).unwrap_err();
    assert!(err.to_string().contains("password"), "{err}");
}

#[tokio::test]
async fn invalid_grant_requires_reauthorisation_and_stops_using_the_refresh_token() {
    let w = World::start().await;
    w.connect("support", None).await;
    w.sim.revoke_refresh_tokens(UPN, 50173);
    let provider = w.provider(w.secret_app());
    match provider.token_for("support").await.unwrap_err() {
        TokenError::ReauthRequired { code, reason } => {
            assert_eq!(code.as_deref(), Some("AADSTS50173"));
            assert!(reason.contains("password change or reset"), "{reason}");
            assert!(reason.contains("Connect the mailbox again"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // No more calls to Microsoft for a dead grant.
    let stored = w.assert_grant_stays_dead(&provider, "support").await;
    assert!(stored.last_error.unwrap().contains("password"));
}

#[tokio::test]
async fn inactivity_expiry_is_explained() {
    let w = World::start().await;
    w.connect("idle", None).await;
    w.sim.revoke_refresh_tokens(UPN, 700082);
    let err = w.provider(w.secret_app()).token_for("idle").await.unwrap_err();
    assert!(err.to_string().contains("long time without use"), "{err}");
}

#[tokio::test]
async fn graph_429_is_retried_after_retry_after_and_a_storm_gives_up_at_the_deadline() {
    let w = World::start().await;
    let tokens = w.sign_in(&w.token_client(w.secret_app()), &FEATURES).await;
    let policy = relay365::microsoft::graph::RetryPolicy {
        deadline: Duration::from_millis(800),
        max_attempts: 50,
        base_backoff: Duration::from_millis(10),
    };
    let graph = relay365::microsoft::graph::GraphClient::new(w.http.clone(), &w.sim.url(), policy);

    w.sim.throttle_graph(2, Some("0.05"));
    let me: serde_json::Value = graph.get_json("/me", &tokens.access_token).await.unwrap();
    assert_eq!(me["userPrincipalName"], UPN);
    assert_eq!(w.sim.stats().throttled, 2);

    // Without Retry-After: exponential back-off, still succeeds.
    w.sim.throttle_graph(3, None);
    assert!(
        graph
            .get_json::<serde_json::Value>("/me", &tokens.access_token)
            .await
            .is_ok()
    );

    // A storm: Retry-After of 0.3 s against a 0.8 s deadline gives up after a few tries.
    let before = w.sim.stats().graph_requests;
    w.sim.throttle_graph(1000, Some("0.3"));
    match graph
        .get_json::<serde_json::Value>("/me", &tokens.access_token)
        .await
        .unwrap_err()
    {
        relay365::microsoft::graph::GraphError::Throttled {
            status, retry_after, ..
        } => {
            assert_eq!(status, 429);
            assert_eq!(retry_after, Some(Duration::from_millis(300)));
        }
        other => panic!("{other:?}"),
    }
    let attempts = w.sim.stats().graph_requests - before;
    assert!(
        (2..=4).contains(&attempts),
        "{attempts} attempts within the deadline"
    );

    // A Retry-After beyond the deadline is not waited for at all.
    let before = w.sim.stats().graph_requests;
    w.sim.throttle_graph(5, Some("30"));
    let err = graph
        .get_json::<serde_json::Value>("/me", &tokens.access_token)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("retry after 30.0 s"), "{err}");
    assert_eq!(w.sim.stats().graph_requests - before, 1);
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_an_error_message() {
    let logs = LogCapture::start();
    let w = World::start().await;
    let (pfx_b64, cert_der) = make_pfx("pfx-pass-word-42");
    let mut errors: Vec<String> = Vec::new();

    let first = w.connect("support", None).await;
    w.put_connection(&active("app", AuthMode::AppSecret, None)).await;
    w.put_connection(&active("cert", AuthMode::AppCertificate, None))
        .await;
    let provider = w.provider(w.secret_app());
    provider.token_for("support").await.unwrap();
    provider.token_for("app").await.unwrap();
    w.refresh_an_hour_later(&provider, "support").await;
    w.sim.throttle_graph(2, Some("0.01"));
    let graph =
        relay365::microsoft::graph::GraphClient::new(w.http.clone(), &w.sim.url(), Default::default());
    let _ = graph
        .get_json::<serde_json::Value>("/me", &first.access_token)
        .await;
    errors.push(
        graph
            .get_json::<serde_json::Value>("/me", &Sensitive::new("forged"))
            .await
            .unwrap_err()
            .to_string(),
    );

    w.sim.register_app(graph_sim::App {
        client_id: CLIENT_ID.into(),
        home_tenant: TENANT.into(),
        client_secret: Some(CLIENT_SECRET.into()),
        certificate_der: Some(cert_der),
        redirect_uris: vec![REDIRECT.into()],
    });
    let cert_app = serde_json::json!({"client_id": CLIENT_ID, "tenant_id": TENANT, "certificate": {"pfx_base64": pfx_b64, "password": "pfx-pass-word-42"}});
    let cert_provider = w.provider(AppCredentials::from_secret_json(&cert_app.to_string()).unwrap());
    cert_provider.token_for("cert").await.unwrap();
    let bad = AppCredentials::new(
        CLIENT_ID.into(),
        TENANT.into(),
        Some(Sensitive::new("wrong-secret-value-77")),
        None,
    );
    errors.push(w.provider(bad).token_for("app").await.unwrap_err().to_string());
    w.sim.revoke_refresh_tokens(UPN, 700082);
    w.sim.expire_access_tokens();
    provider.invalidate("support").await;
    errors.push(provider.token_for("support").await.unwrap_err().to_string());
    errors.push(format!("{:?}", provider.load("support").await.unwrap()));

    let text = logs.text();
    assert!(
        text.contains("obtained a new access token"),
        "the capture works: {text}"
    );
    let mut secrets = w.sim.issued_secrets();
    secrets.extend([
        CLIENT_SECRET.to_string(),
        "pfx-pass-word-42".into(),
        "wrong-secret-value-77".into(),
        pfx_b64[..40].to_string(),
    ]);
    assert!(secrets.len() > 8, "there is something to look for");
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret reached the logs");
        for e in &errors {
            assert!(
                !e.contains(secret.as_str()),
                "a secret reached an error message: {e}"
            );
        }
    }
}

#[tokio::test]
async fn more_than_four_concurrent_requests_per_mailbox_are_throttled_and_retried() {
    let w = World::start().await;
    let tokens = w.sign_in(&w.token_client(w.secret_app()), &FEATURES).await;
    w.sim.set_latency(Duration::from_millis(300));
    let graph = Arc::new(relay365::microsoft::graph::GraphClient::new(
        w.http.clone(),
        &w.sim.url(),
        Default::default(),
    ));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (g, t) = (graph.clone(), tokens.access_token.clone());
        set.spawn(async move {
            g.get_json::<serde_json::Value>(&format!("/users/{UPN}"), &t)
                .await
                .map(|_| ())
                .or_else(|e| match e.status() {
                    Some(400) | Some(404) => Ok(()),
                    _ => Err(e),
                })
        });
    }
    let results = set.join_all().await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        w.sim.stats().throttled >= 4,
        "four were over the MailboxConcurrency limit: {:?}",
        w.sim.stats()
    );
}

/// A secret store that lets a new sign-in land between a rotated token's
/// claim and its write, the race Secrets Manager cannot prevent by itself.
struct SignInDuringRotation {
    inner: Arc<dyn relay365::aws::secrets::SecretStore>,
    state: relay365::aws::store::Store,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl relay365::aws::secrets::SecretStore for SignInDuringRotation {
    async fn get(&self, name: &str) -> Result<Option<String>, relay365::aws::secrets::SecretError> {
        self.inner.get(name).await
    }
    async fn get_fresh(&self, name: &str) -> Result<Option<String>, relay365::aws::secrets::SecretError> {
        self.inner.get_fresh(name).await
    }
    async fn create(&self, name: &str, value: &str) -> Result<(), relay365::aws::secrets::SecretError> {
        self.inner.create(name, value).await
    }
    async fn put(
        &self,
        name: &str,
        value: &str,
        token: &str,
    ) -> Result<(), relay365::aws::secrets::SecretError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            // The other container's sign-in: its token, then the record.
            let signed_in =
                serde_json::json!({"refresh_token": "the-new-sign-in", "generation": 2}).to_string();
            self.inner
                .put(name, &signed_in, &relay365::aws::secrets::new_request_token())
                .await?;
            self.state
                .update_connection(
                    "support",
                    relay365::aws::store::ConnectionChange::new().generation(2),
                )
                .await
                .unwrap();
        }
        self.inner.put(name, value, token).await
    }
    async fn delete(&self, name: &str) -> Result<(), relay365::aws::secrets::SecretError> {
        self.inner.delete(name).await
    }
    async fn previous(&self, name: &str) -> Result<Option<String>, relay365::aws::secrets::SecretError> {
        self.inner.previous(name).await
    }
}

#[tokio::test]
async fn a_rotated_token_that_lands_after_a_new_sign_in_never_undoes_it() {
    let w = World::start().await;
    w.connect("support", Some(minutes_ago(11))).await;
    let racing = Arc::new(SignInDuringRotation {
        inner: w.store.clone(),
        state: w.state.clone(),
        armed: std::sync::atomic::AtomicBool::new(true),
    });
    let provider = relay365::microsoft::tokens::TokenProvider::new(
        w.token_client(w.secret_app()),
        racing,
        w.state.clone(),
        PREFIX,
    );
    // The refresh rotates the token and claims the write under generation 1;
    // the sign-in of generation 2 lands first, then the rotated write.
    provider.token_for("support").await.unwrap();
    let sm = aws_sdk_secretsmanager::Client::new(&w.aws.sdk_config().await);
    let raw = relay365::aws::secrets::AwsSecretStore::new(sm)
        .get(&format!("{PREFIX}tokens/support"))
        .await
        .unwrap()
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(stored["generation"], 2, "the new sign-in's token is what stays");
    assert_eq!(stored["refresh_token"], "the-new-sign-in");
}
