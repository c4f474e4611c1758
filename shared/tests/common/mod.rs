//! The world the integration tests run in: moto behind a counting proxy,
//! the Graph simulator, and the shared crate wired to both over HTTP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod pfx;

use std::sync::Arc;
use std::time::Duration;

use graph_sim::{App, Sim, User};
use relay365::aws::secrets::{AwsSecretStore, CachedSecretStore, SecretStore};
use relay365::aws::store::Store;
use relay365::microsoft::tokens::{
    AppCredentials, AuthorizeOptions, TokenClient, TokenError, TokenProvider, TokenSet,
};
use relay365::model::connection::{AuthMode, Connection, Status};
use relay365::model::scopes::{self, FeatureScope};
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
    pub(crate) state: Store,
    pub(crate) http: reqwest::Client,
}

/// A connection to seed the state with, and the refresh token its secret holds.
pub(crate) struct Seed {
    pub(crate) conn: Connection,
    pub(crate) refresh: Option<Sensitive>,
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
        let sdk = aws.sdk_config().await;
        let sm = aws_sdk_secretsmanager::Client::new(&sdk);
        let store: Arc<dyn SecretStore> = Arc::new(CachedSecretStore::new(
            AwsSecretStore::new(sm),
            Duration::from_secs(300),
        ));
        relay365_testkit::create_state_table(&sdk, "relay365-state")
            .await
            .unwrap();
        let state = Store::dynamo(
            Arc::new(relay365::aws::sdk::LazyClient::ready(
                aws_sdk_dynamodb::Client::new(&sdk),
            )),
            "relay365-state".into(),
        );
        Self {
            aws,
            sim,
            store,
            state,
            http: relay365::https::client().unwrap(),
        }
    }

    pub(crate) fn token_client(&self, app: AppCredentials) -> TokenClient {
        TokenClient::new(
            self.http.clone(),
            &self.sim.url(),
            Arc::new(relay365::aws::secret_value::SecretValue::fixed(app)),
        )
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
        TokenProvider::new(
            self.token_client(app),
            self.store.clone(),
            self.state.clone(),
            PREFIX,
        )
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
        exchange(client, code, &Sensitive::new(verifier.secret().clone()), &scope)
            .await
            .unwrap()
    }

    /// Signs in against the simulator and stores an active delegated
    /// connection `id` holding the refresh token of the sign-in; when
    /// `token_written_at` is given, the record says the token was written then.
    pub(crate) async fn connect(&self, id: &str, token_written_at: Option<i64>) -> TokenSet {
        let tokens = self
            .sign_in(&self.token_client(self.secret_app()), &FEATURES)
            .await;
        let mut seed = active(id, AuthMode::Delegated, tokens.refresh_token.as_ref());
        if token_written_at.is_some() {
            seed.conn.token_written_at = token_written_at;
        }
        self.put_connection(&seed).await;
        tokens
    }

    /// An hour later: the simulator's access tokens have expired and
    /// `provider` has forgotten the one it held, so its next token for `id`
    /// comes from a refresh.
    pub(crate) async fn refresh_an_hour_later(&self, provider: &TokenProvider, id: &str) {
        self.sim.expire_access_tokens();
        provider.invalidate(id).await;
        provider.token_for(id).await.unwrap();
    }

    /// The second refresh of `id`, an hour after the first: it uses the
    /// newest token, but the last write was recent, so the AWS operation that
    /// writes the token (`write_op`) is still counted once.
    pub(crate) async fn second_refresh_writes_nothing(
        &self,
        provider: &TokenProvider,
        id: &str,
        write_op: &str,
        why: &str,
    ) {
        self.refresh_an_hour_later(provider, id).await;
        assert_eq!(self.sim.stats().by_grant["refresh_token"], 2);
        assert_eq!(self.aws.count(write_op), 1, "{why}");
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

    /// Stores a connection (and, when it has one, its refresh token under generation 1).
    pub(crate) async fn put_connection(&self, seed: &Seed) {
        let mut conn = seed.conn.clone();
        if let Some(rt) = &seed.refresh {
            conn.generation = 1;
            let value = serde_json::json!({"refresh_token": rt.expose(), "generation": 1}).to_string();
            self.store
                .create(&format!("{PREFIX}tokens/{}", conn.id), &value)
                .await
                .unwrap();
        }
        self.state.create_connection(&conn).await.unwrap();
    }

    /// Checks a connection whose grant died: its record asks for a sign-in,
    /// and `provider` no longer calls Microsoft for it. The record.
    pub(crate) async fn assert_grant_stays_dead(&self, provider: &TokenProvider, id: &str) -> Connection {
        let stored = self.get_connection(id).await;
        assert_eq!(stored.status, Status::ReauthRequired);
        let before = self.sim.stats().token_requests;
        assert!(matches!(
            provider.token_for(id).await,
            Err(TokenError::ReauthRequired { .. })
        ));
        assert_eq!(self.sim.stats().token_requests, before);
        stored
    }

    /// What is really stored for a connection.
    pub(crate) async fn get_connection(&self, id: &str) -> Connection {
        self.state.connection(id).await.unwrap().unwrap()
    }

    /// The refresh token in the connection's secret, past the cache.
    pub(crate) async fn stored_refresh(&self, id: &str) -> Option<Sensitive> {
        let sm = aws_sdk_secretsmanager::Client::new(&self.aws.sdk_config().await);
        let raw = AwsSecretStore::new(sm)
            .get(&format!("{PREFIX}tokens/{id}"))
            .await
            .unwrap()?;
        let t: relay365::microsoft::tokens::StoredToken = serde_json::from_str(&raw).unwrap();
        Some(t.refresh_token)
    }
}

pub(crate) fn active(id: &str, auth: AuthMode, refresh: Option<&Sensitive>) -> Seed {
    let mut c = Connection::new(
        id.into(),
        auth,
        Cloud::Global,
        TENANT.into(),
        Some(UPN.into()),
        FEATURES.to_vec(),
    );
    c.status = Status::Active;
    Seed {
        conn: c,
        refresh: refresh.cloned(),
    }
}

/// The PKCE code exchange at the organizations endpoint: `code` with
/// `verifier`, for `scope`, redirected to [`REDIRECT`].
pub(crate) async fn exchange(
    client: &TokenClient,
    code: String,
    verifier: &Sensitive,
    scope: &str,
) -> Result<TokenSet, TokenError> {
    client
        .exchange_code("organizations", &Sensitive::new(code), verifier, REDIRECT, scope)
        .await
}

/// The Unix time `minutes` minutes before now.
pub(crate) fn minutes_ago(minutes: i64) -> i64 {
    (time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes)).unix_timestamp()
}
