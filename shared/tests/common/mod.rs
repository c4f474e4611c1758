//! The world the integration tests run in: moto behind a counting proxy,
//! the Graph simulator, and the shared crate wired to both over HTTP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use graph_sim::{App, Sim, User};
use relay365::connection::{AuthMode, Connection, Status, secret_name};
use relay365::scopes::{self, FeatureScope};
use relay365::secrets::{AwsSecretStore, CachedSecretStore, SecretStore};
use relay365::tokens::{AppCredentials, AuthorizeOptions, TokenClient, TokenProvider, TokenSet};
use relay365::{Cloud, Sensitive};
use relay365_testkit::Aws;

pub(crate) const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub(crate) const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub(crate) const CLIENT_SECRET: &str = "sim~client~secret~value~0123456789";
pub(crate) const PREFIX: &str = "relay365/";
pub(crate) const REDIRECT: &str = "https://relay.example/oauth/callback";
pub(crate) const UPN: &str = "ann@contoso.com";
/// The features every test connection asks for (and signs in with).
pub(crate) const FEATURES: [FeatureScope; 2] = [FeatureScope::MailReadOnly, FeatureScope::MailSend];

pub(crate) struct World {
    pub(crate) aws: Aws,
    pub(crate) sim: Sim,
    pub(crate) store: Arc<dyn SecretStore>,
    pub(crate) http: reqwest::Client,
}

impl World {
    pub(crate) async fn start() -> Self {
        let aws = Aws::start().await;
        let sim = Sim::start().await.unwrap();
        sim.register_app(App {
            client_id: CLIENT_ID.into(),
            home_tenant: TENANT.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            certificate_der: None,
            redirect_uris: vec![REDIRECT.into()],
        });
        sim.add_user(User {
            id: "u-ann".into(),
            upn: UPN.into(),
            display_name: "Ann".into(),
            tenant: TENANT.into(),
        });
        let sm = aws_sdk_secretsmanager::Client::new(&aws.sdk_config().await);
        let store: Arc<dyn SecretStore> = Arc::new(CachedSecretStore::new(
            AwsSecretStore::new(sm),
            Duration::from_secs(300),
        ));
        Self {
            aws,
            sim,
            store,
            http: relay365::http::client().unwrap(),
        }
    }

    pub(crate) fn token_client(&self, app: AppCredentials) -> TokenClient {
        TokenClient::new(self.http.clone(), &self.sim.url(), Arc::new(app))
    }

    pub(crate) fn secret_app(&self) -> AppCredentials {
        AppCredentials::new(
            CLIENT_ID.into(),
            TENANT.into(),
            Some(Sensitive::new(CLIENT_SECRET)),
            None,
        )
    }

    pub(crate) fn provider(&self, app: AppCredentials) -> TokenProvider {
        TokenProvider::new(self.token_client(app), self.store.clone(), PREFIX)
    }

    /// Runs a real sign-in against the simulator: authorize (302 with a code), then the PKCE exchange.
    pub(crate) async fn sign_in(&self, client: &TokenClient, features: &[FeatureScope]) -> TokenSet {
        let scope = scopes::delegated_scope_param(Cloud::Global, features);
        let (url, verifier) = client
            .authorize_url(
                "organizations",
                REDIRECT,
                &scope,
                "st-1",
                &AuthorizeOptions::default(),
            )
            .unwrap();
        let code = self.follow_authorize(url.as_str()).await.expect("a code");
        client
            .exchange_code(
                "organizations",
                &Sensitive::new(code),
                &Sensitive::new(verifier.secret().clone()),
                REDIRECT,
                &scope,
            )
            .await
            .unwrap()
    }

    /// GETs an authorize URL and returns the `code` of the redirect.
    pub(crate) async fn follow_authorize(&self, url: &str) -> Option<String> {
        let resp = self.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 302, "authorize should redirect");
        let location = resp
            .headers()
            .get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let loc = url::Url::parse(&location).unwrap();
        loc.query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
    }

    pub(crate) async fn put_connection(&self, conn: &Connection) {
        self.store
            .create(&secret_name(PREFIX, &conn.id), &conn.to_json())
            .await
            .unwrap();
    }

    pub(crate) async fn get_connection(&self, id: &str) -> Connection {
        // Read past the cache: what is really stored.
        let sm = aws_sdk_secretsmanager::Client::new(&self.aws.sdk_config().await);
        let raw = AwsSecretStore::new(sm)
            .get(&secret_name(PREFIX, id))
            .await
            .unwrap()
            .unwrap();
        Connection::from_json(&raw).unwrap()
    }
}

pub(crate) fn active(id: &str, auth: AuthMode, refresh: Option<&Sensitive>) -> Connection {
    let mut c = Connection::new(
        id.into(),
        auth,
        Cloud::Global,
        TENANT.into(),
        Some(UPN.into()),
        FEATURES.to_vec(),
    );
    c.status = Status::Active;
    c.refresh_token = refresh.cloned();
    c
}
