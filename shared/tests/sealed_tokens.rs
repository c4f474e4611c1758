//! Refresh tokens sealed with KMS in the state table (`RELAY365_TOKEN_KEY_ID`),
//! end to end: the shared crate against moto (KMS, DynamoDB, Secrets
//! Manager) through the real AWS SDK clients, and the identity simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use relay365::Sensitive;
use relay365::aws::kms::{Context, DataKey, DataKeys, KeyError, KmsDataKeys};
use relay365::aws::sdk::LazyClient;
use relay365::aws::store::{ConnectionChange, SealedTokenItem, Store, TokenWrite};
use relay365::microsoft::sealed_tokens::{self, SealError, SealedTokens};
use relay365::microsoft::tokens::{TokenError, TokenProvider};
use relay365::model::connection::{AuthMode, Status};
use relay365_testkit::LogCapture;

/// KMS data keys of a new key in this world's moto.
async fn kms_keys(w: &World) -> Arc<KmsDataKeys> {
    let sdk = w.aws.sdk_config().await;
    let alias = relay365_testkit::create_token_key(&sdk).await.unwrap();
    Arc::new(KmsDataKeys::new(
        Arc::new(LazyClient::ready(aws_sdk_kms::Client::new(&sdk))),
        &alias,
    ))
}

/// A provider (one container) that seals tokens with `keys`.
fn sealed_provider(w: &World, keys: Arc<dyn DataKeys>) -> TokenProvider {
    w.provider(w.secret_app())
        .with_sealed_tokens(keys, Duration::from_secs(300))
}

/// Signs in against the simulator and stores an active delegated
/// connection `id` at generation 1 with its token sealed (by another
/// container, as oauth-callback does), eleven minutes ago.
async fn connect_sealed(w: &World, keys: Arc<KmsDataKeys>, id: &str) -> Sensitive {
    let tokens = w.sign_in(&w.token_client(w.secret_app()), &FEATURES).await;
    let rt = tokens.refresh_token.unwrap();
    sealed_provider(w, keys).store_sign_in(id, &rt, 1).await.unwrap();
    let mut item = w.state.sealed_token(id).await.unwrap().unwrap();
    item.written_at -= 11 * 60;
    w.state
        .put_sealed_token(id, &item, TokenWrite::SignIn)
        .await
        .unwrap();
    let mut seed = active(id, AuthMode::Delegated, None);
    seed.conn.generation = 1;
    seed.conn.token_written_at = Some(minutes_ago(11));
    w.state.create_connection(&seed.conn).await.unwrap();
    rt
}

/// A world with a KMS key and connection `support` connected with a sealed
/// token (see [`connect_sealed`]); the refresh token of its sign-in.
async fn sealed_world() -> (World, Arc<KmsDataKeys>, Sensitive) {
    let w = World::start().await;
    let keys = kms_keys(&w).await;
    let rt = connect_sealed(&w, keys.clone(), "support").await;
    (w, keys, rt)
}

/// Copies a sealed item into connection `to`'s partition, as a hand edit of
/// the table could.
async fn copy_item(w: &World, item: &SealedTokenItem, to: &str) {
    w.state
        .put_sealed_token(to, item, TokenWrite::IfAbsent)
        .await
        .unwrap();
}

/// Copies `item` to connection `to` and checks that `vault` cannot open it
/// there (the encryption context names the connection); the error.
async fn copy_is_unopenable(w: &World, vault: &SealedTokens, item: &SealedTokenItem, to: &str) -> SealError {
    copy_item(w, item, to).await;
    let err = vault.read(to, 0, true).await.unwrap_err();
    assert!(
        matches!(err, SealError::Unopenable { ref id } if id == to),
        "{err:?}"
    );
    err
}

/// Another container's sign-in of `support` at generation 2 (sealed by
/// `provider`), then the record's `change` as oauth-callback makes it.
async fn sign_in_lands(provider: &TokenProvider, state: &Store, rt: &Sensitive, change: ConnectionChange) {
    provider.store_sign_in("support", rt, 2).await.unwrap();
    state.update_connection("support", change).await.unwrap();
}

/// The sealed token of a connection as the table holds it, opened with `keys`.
async fn stored_sealed(w: &World, keys: Arc<dyn DataKeys>, id: &str) -> Option<(String, u64)> {
    let vault = SealedTokens::new(keys, w.state.clone(), Duration::ZERO);
    vault
        .read(id, 0, true)
        .await
        .unwrap()
        .map(|t| (t.refresh_token.expose().to_string(), t.generation))
}

#[tokio::test]
async fn kms_seals_and_opens_and_refuses_another_connections_context() {
    let w = World::start().await;
    let keys = kms_keys(&w).await;
    // KMS itself (moto) enforces the encryption context on Decrypt.
    let key = keys.generate(&sealed_tokens::context("a")).await.unwrap();
    assert_eq!(key.plaintext.len(), 32);
    let back = keys
        .decrypt(&key.encrypted, &sealed_tokens::context("a"))
        .await
        .unwrap();
    assert_eq!(back.as_slice(), key.plaintext.as_slice());
    assert_eq!(
        keys.decrypt(&key.encrypted, &sealed_tokens::context("b")).await,
        Err(KeyError::Rejected)
    );
    assert_eq!(
        keys.decrypt(&key.encrypted, &Context::new()).await,
        Err(KeyError::Rejected)
    );

    // Round trip through the table, then the item copied into another connection's partition.
    let vault = SealedTokens::new(keys.clone(), w.state.clone(), Duration::from_secs(300));
    let token = SealedTokens::stored(&Sensitive::new("rt-sealed-secret-value"), 1);
    vault.write("a", &token, TokenWrite::SignIn).await.unwrap();
    let item = w.state.sealed_token("a").await.unwrap().unwrap();
    let opened = vault.open("a", &item).await.unwrap();
    assert_eq!(opened.refresh_token.expose(), "rt-sealed-secret-value");
    let err = copy_is_unopenable(&w, &vault, &item, "b").await;
    assert!(!err.to_string().contains("rt-sealed-secret-value"));
    // The raw item holds nothing readable.
    let raw = format!("{:?}", w.state.sealed_token("a").await.unwrap());
    assert!(!raw.contains("rt-sealed"), "{raw}");
    assert_eq!(w.aws.count("TrentService.GenerateDataKey"), 2);
}

#[tokio::test]
async fn rotation_writes_the_sealed_token_at_most_every_ten_minutes() {
    let (w, keys, rt0) = sealed_world().await;
    let provider = sealed_provider(&w, keys.clone());
    assert_eq!(w.aws.count("TrentService.GenerateDataKey"), 1, "the sign-in");

    provider.token_for("support").await.unwrap();
    let (rt1, generation) = stored_sealed(&w, keys.clone(), "support").await.unwrap();
    assert_ne!(rt1, rt0.expose(), "the rotated refresh token is written back");
    assert_eq!(generation, 1);
    assert_eq!(
        w.aws.count("TrentService.GenerateDataKey"),
        1,
        "the rotated write reuses the data key this container's cold read decrypted"
    );
    // This container's cold read, and the check above: the token it wrote
    // it keeps in memory, without KMS.
    assert_eq!(w.aws.count("TrentService.Decrypt"), 2);

    // An hour later the next refresh uses the newest token, but the last
    // write is recent: no second write.
    w.second_refresh_writes_nothing(
        &provider,
        "support",
        "TrentService.GenerateDataKey",
        "no write within ten minutes (the token below is still the first rotated one)",
    )
    .await;
    assert_eq!(stored_sealed(&w, keys.clone(), "support").await.unwrap().0, rt1);

    // Another container opens the item once and keeps it in memory.
    let other = sealed_provider(&w, keys.clone());
    let decrypts = w.aws.count("TrentService.Decrypt");
    other.token_for("support").await.unwrap();
    w.refresh_an_hour_later(&other, "support").await;
    assert_eq!(w.aws.count("TrentService.Decrypt"), decrypts + 1);
    // Nothing of it touched Secrets Manager but the one look for an old secret at sign-in.
    let secret_calls: u32 = w
        .aws
        .counts()
        .iter()
        .filter(|(op, _)| op.starts_with("secretsmanager.") && !op.ends_with("DeleteSecret"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(secret_calls, 0, "{:?}", w.aws.counts());
}

#[tokio::test]
async fn a_newer_sign_in_is_used_at_once_and_never_undone() {
    let (w, keys, _) = sealed_world().await;
    let a = sealed_provider(&w, keys.clone());
    a.token_for("support").await.unwrap();

    // Another container signs the mailbox in again: generation 2.
    let b = sealed_provider(&w, keys.clone());
    let again = w.sign_in(&w.token_client(w.secret_app()), &FEATURES).await;
    let rt2 = again.refresh_token.unwrap();
    let change = ConnectionChange::new().generation(2).if_generation(1);
    sign_in_lands(&b, &w.state, &rt2, change).await;
    // A sign-in of an older generation, late, changes nothing.
    b.store_sign_in("support", &Sensitive::new("late-old-sign-in"), 1)
        .await
        .unwrap();
    assert_eq!(
        stored_sealed(&w, keys.clone(), "support").await.unwrap(),
        (rt2.expose().to_string(), 2)
    );
    // The first container drops what it holds for generation 1.
    let before = w.sim.stats().by_grant.get("refresh_token").copied().unwrap_or(0);
    a.token_for("support").await.unwrap();
    assert_eq!(w.sim.stats().by_grant["refresh_token"], before + 1);
    assert_eq!(w.get_connection("support").await.status, Status::Active);
}

/// Data keys whose next `generate` first lets a new sign-in (generation 2)
/// land, as another container's would between a rotation's check that the
/// write is due and its conditional write.
struct SignInDuringRotation {
    inner: Arc<dyn DataKeys>,
    other: TokenProvider,
    state: Store,
    armed: AtomicBool,
}

#[async_trait]
impl DataKeys for SignInDuringRotation {
    async fn generate(&self, context: &Context) -> Result<DataKey, KeyError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            let rt = Sensitive::new("the-new-sign-in");
            sign_in_lands(
                &self.other,
                &self.state,
                &rt,
                ConnectionChange::new().generation(2),
            )
            .await;
        }
        self.inner.generate(context).await
    }

    async fn decrypt(
        &self,
        encrypted: &[u8],
        context: &Context,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
        self.inner.decrypt(encrypted, context).await
    }
}

#[tokio::test]
async fn a_rotated_token_that_lands_after_a_new_sign_in_never_undoes_it() {
    let (w, keys, _) = sealed_world().await;
    let racing = Arc::new(SignInDuringRotation {
        inner: keys.clone(),
        other: sealed_provider(&w, keys.clone()),
        state: w.state.clone(),
        armed: AtomicBool::new(true),
    });
    // A container that holds no data key for the connection yet (it has not
    // read the item; one that has reuses that key and asks KMS nothing, so
    // there would be no moment to race in) finds the rotated write due under
    // generation 1 and asks KMS for a key; the sign-in of generation 2 lands
    // meanwhile, then the rotated write, conditional, fails.
    let vault = SealedTokens::new(racing, w.state.clone(), Duration::from_secs(300));
    let rotated = SealedTokens::stored(&Sensitive::new("the-rotated-token"), 1);
    let written_before = time::OffsetDateTime::now_utc().unix_timestamp() - 10 * 60 + 1;
    assert!(
        !vault
            .write_rotated("support", &rotated, written_before)
            .await
            .unwrap()
    );
    assert_eq!(
        stored_sealed(&w, keys.clone(), "support").await.unwrap(),
        ("the-new-sign-in".to_string(), 2),
        "the new sign-in's token is what stays"
    );
}

#[tokio::test]
async fn two_rotated_writes_in_one_container_make_one_data_key() {
    let (w, keys, _) = sealed_world().await;
    let generated = w.aws.count("TrentService.GenerateDataKey");
    let decrypted = w.aws.count("TrentService.Decrypt");
    // A container that has not read the item (so it holds no key for it).
    let vault = SealedTokens::new(keys.clone(), w.state.clone(), Duration::from_secs(300));
    // Both writes are due: `written_before` past both (as once the interval
    // has passed; the interval itself is the token code's, tested above).
    let due = || time::OffsetDateTime::now_utc().unix_timestamp() + 1;
    let first = SealedTokens::stored(&Sensitive::new("rotated-once"), 1);
    assert!(vault.write_rotated("support", &first, due()).await.unwrap());
    assert_eq!(w.aws.count("TrentService.GenerateDataKey"), generated + 1);
    let one = w.state.sealed_token("support").await.unwrap().unwrap();

    let second = SealedTokens::stored(&Sensitive::new("rotated-twice"), 1);
    assert!(vault.write_rotated("support", &second, due()).await.unwrap());
    assert_eq!(
        w.aws.count("TrentService.GenerateDataKey"),
        generated + 1,
        "the second write reuses the container's data key"
    );
    let two = w.state.sealed_token("support").await.unwrap().unwrap();
    assert_eq!(two.envelope.encrypted_key, one.envelope.encrypted_key);
    assert_ne!(two.envelope.nonce, one.envelope.nonce);
    // This container opens its own item without KMS; another asks once,
    // and moto's KMS opens what the cached key sealed.
    assert_eq!(
        vault.open("support", &two).await.unwrap().refresh_token.expose(),
        "rotated-twice"
    );
    assert_eq!(w.aws.count("TrentService.Decrypt"), decrypted);
    assert_eq!(
        stored_sealed(&w, keys.clone(), "support").await.unwrap(),
        ("rotated-twice".to_string(), 1)
    );
    assert_eq!(w.aws.count("TrentService.Decrypt"), decrypted + 1);

    // The cache keeps the context binding: this container holds support's
    // key, and support's item copied to another connection still fails.
    copy_is_unopenable(&w, &vault, &two, "sales").await;
    assert_eq!(
        w.aws.count("TrentService.Decrypt"),
        decrypted + 2,
        "KMS refused it"
    );
}

#[tokio::test]
async fn invalid_grant_reads_the_sealed_token_again_then_asks_for_a_sign_in() {
    let (w, keys, _) = sealed_world().await;
    let a = sealed_provider(&w, keys.clone());
    let stale = w.get_connection("support").await;
    a.token_for("support").await.unwrap();

    // The grant dies; another container reconnects (generation 2) before
    // this one, holding the old record, notices.
    w.sim.revoke_refresh_tokens(UPN, 50173);
    let b = sealed_provider(&w, keys.clone());
    let again = w.sign_in(&w.token_client(w.secret_app()), &FEATURES).await;
    let rt2 = again.refresh_token.unwrap();
    sign_in_lands(&b, &w.state, &rt2, ConnectionChange::new().generation(2)).await;
    a.invalidate("support").await;
    w.sim.expire_access_tokens();
    a.access_token(&stale).await.unwrap();
    assert_eq!(w.get_connection("support").await.status, Status::Active);

    // Now the new grant dies too, with no newer sign-in: reauth, once.
    w.sim.revoke_refresh_tokens(UPN, 50173);
    a.invalidate("support").await;
    let err = a.token_for("support").await.unwrap_err();
    assert!(matches!(err, TokenError::ReauthRequired { .. }), "{err:?}");
    w.assert_grant_stays_dead(&a, "support").await;
}

#[tokio::test]
async fn an_item_copied_to_another_connection_asks_that_connection_for_a_sign_in() {
    let (w, keys, _) = sealed_world().await;
    let provider = sealed_provider(&w, keys.clone());
    let mut other = active("sales", AuthMode::Delegated, None);
    other.conn.generation = 1;
    w.state.create_connection(&other.conn).await.unwrap();
    let item = w.state.sealed_token("support").await.unwrap().unwrap();
    copy_item(&w, &item, "sales").await;

    let logs = LogCapture::start();
    let err = provider.token_for("sales").await.unwrap_err();
    match &err {
        TokenError::ReauthRequired { reason, .. } => {
            assert!(reason.contains("cannot be opened"), "{reason}");
            assert!(reason.contains("connect the mailbox again"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let stored = w.get_connection("sales").await;
    assert_eq!(stored.status, Status::ReauthRequired);
    assert!(stored.last_error.unwrap().contains("cannot be opened"));
    // Support's own token still works, and no token reached a log line.
    provider.token_for("support").await.unwrap();
    let (rt, _) = stored_sealed(&w, keys.clone(), "support").await.unwrap();
    assert!(!logs.text().contains(&rt));
}

#[tokio::test]
async fn an_old_token_secret_moves_into_the_table_on_first_use() {
    let w = World::start().await;
    let keys = kms_keys(&w).await;
    // A connection as the earlier version left it: its token in a secret.
    let first = w.connect("support", Some(minutes_ago(0))).await;
    let rt0 = first.refresh_token.unwrap();
    assert!(w.stored_refresh("support").await.is_some());

    let provider = sealed_provider(&w, keys.clone());
    provider.token_for("support").await.unwrap();
    assert_eq!(
        stored_sealed(&w, keys.clone(), "support").await.unwrap(),
        (rt0.expose().to_string(), 1),
        "moved as it was (no rotation write within ten minutes of the last)"
    );
    assert_eq!(w.aws.count("secretsmanager.DeleteSecret"), 1);
    assert!(
        w.stored_refresh("support").await.is_none(),
        "scheduled for deletion"
    );

    // Another container finds the item; the token still works.
    let reads = w.aws.count("secretsmanager.GetSecretValue");
    let other = sealed_provider(&w, keys.clone());
    w.sim.expire_access_tokens();
    other.token_for("support").await.unwrap();
    assert_eq!(w.aws.count("secretsmanager.GetSecretValue"), reads);

    // Deleting the connection's tokens removes the item (and any secret).
    other.delete_tokens("support").await.unwrap();
    assert!(w.state.sealed_token("support").await.unwrap().is_none());
}

#[tokio::test]
async fn without_a_key_tokens_stay_in_secrets() {
    let w = World::start().await;
    let provider = w.provider(w.secret_app());
    assert!(!provider.seals_tokens());
    let first = w.sign_in(&w.token_client(w.secret_app()), &FEATURES).await;
    provider
        .store_sign_in("support", first.refresh_token.as_ref().unwrap(), 1)
        .await
        .unwrap();
    assert!(w.stored_refresh("support").await.is_some());
    assert!(w.state.sealed_token("support").await.unwrap().is_none());
    assert_eq!(w.aws.count("TrentService.GenerateDataKey"), 0);
}
