//! Unit tests of the data keys: the in-memory source and the cache in
//! front of KMS (reuse, expiry, and what a failure leaves behind).

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

fn context(id: &str) -> Context {
    [
        ("relay365:purpose".to_string(), "test".to_string()),
        ("relay365:connection".to_string(), id.to_string()),
    ]
    .into_iter()
    .collect()
}

/// A clock that moves only when the test moves it.
struct ManualClock {
    start: Instant,
    offset_secs: AtomicU64,
}

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            offset_secs: AtomicU64::new(0),
        })
    }

    fn advance(&self, by: Duration) {
        self.offset_secs.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    fn clock(self: &Arc<Self>) -> Clock {
        let me = self.clone();
        Arc::new(move || me.start + Duration::from_secs(me.offset_secs.load(Ordering::SeqCst)))
    }
}

fn cache(policy: KeyCachePolicy) -> (Arc<CountingDataKeys>, Arc<ManualClock>, CachingDataKeys) {
    let inner = Arc::new(CountingDataKeys::default());
    let clock = ManualClock::new();
    let keys = CachingDataKeys::with_clock(inner.clone(), policy, clock.clock());
    (inner, clock, keys)
}

#[tokio::test]
async fn a_second_seal_within_the_age_reuses_the_key_and_another_connection_or_an_old_key_does_not() {
    let policy = KeyCachePolicy::default();
    let (inner, clock, keys) = cache(policy);
    let one = keys.generate(&context("a")).await.unwrap();
    clock.advance(policy.max_age - Duration::from_secs(1));
    let two = keys.generate(&context("a")).await.unwrap();
    assert_eq!(inner.counts(), (1, 0), "the second seal asks KMS nothing");
    assert_eq!(one.encrypted, two.encrypted);
    assert_eq!(one.plaintext.as_slice(), two.plaintext.as_slice());
    assert_eq!(keys.key_id(), "test-key");

    let other = keys.generate(&context("b")).await.unwrap();
    assert_eq!(inner.counts(), (2, 0), "another connection has its own key");
    assert_ne!(other.encrypted, one.encrypted);

    clock.advance(Duration::from_secs(1));
    let three = keys.generate(&context("a")).await.unwrap();
    assert_eq!(inner.counts(), (3, 0), "at max_age a new key");
    assert_ne!(three.encrypted, one.encrypted);
    assert!(!format!("{keys:?}").contains(&format!("{:?}", three.plaintext.as_slice())));
}

#[tokio::test]
async fn a_key_seals_at_most_max_uses_values() {
    let (inner, _clock, keys) = cache(KeyCachePolicy {
        max_uses: 3,
        ..KeyCachePolicy::default()
    });
    let first = keys.generate(&context("a")).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            keys.generate(&context("a")).await.unwrap().encrypted,
            first.encrypted
        );
    }
    assert_eq!(inner.counts(), (1, 0));
    let fourth = keys.generate(&context("a")).await.unwrap();
    assert_eq!(inner.counts(), (2, 0));
    assert_ne!(fourth.encrypted, first.encrypted);
}

#[tokio::test]
async fn opening_a_key_this_container_holds_asks_nothing_and_a_decrypted_key_seals_too() {
    let policy = KeyCachePolicy::default();
    let inner = Arc::new(CountingDataKeys::default());
    let clock = ManualClock::new();
    let here = CachingDataKeys::with_clock(inner.clone(), policy, clock.clock());
    let there = CachingDataKeys::with_clock(inner.clone(), policy, clock.clock());

    let key = here.generate(&context("a")).await.unwrap();
    let back = here.decrypt(&key.encrypted, &context("a")).await.unwrap();
    assert_eq!(back.as_slice(), key.plaintext.as_slice());
    assert_eq!(inner.counts(), (1, 0), "its own key: no Decrypt");

    // Another container decrypts once, then opens and seals with it.
    there.decrypt(&key.encrypted, &context("a")).await.unwrap();
    there.decrypt(&key.encrypted, &context("a")).await.unwrap();
    assert_eq!(inner.counts(), (1, 1));
    let reused = there.generate(&context("a")).await.unwrap();
    assert_eq!(reused.encrypted, key.encrypted);
    assert_eq!(inner.counts(), (1, 1));

    // Past the age, KMS is asked again.
    clock.advance(policy.max_age);
    here.decrypt(&key.encrypted, &context("a")).await.unwrap();
    assert_eq!(inner.counts(), (1, 2));
}

#[tokio::test]
async fn a_cached_key_never_opens_under_another_connections_context() {
    let (inner, _clock, keys) = cache(KeyCachePolicy::default());
    let a = keys.generate(&context("a")).await.unwrap();
    // Connection a's key is cached; its encrypted key presented as b's
    // goes to the key service, which refuses it.
    assert_eq!(
        keys.decrypt(&a.encrypted, &context("b")).await,
        Err(KeyError::Rejected)
    );
    assert_eq!(inner.counts(), (1, 1));
    // Also when b has a key of its own cached.
    keys.generate(&context("b")).await.unwrap();
    assert_eq!(
        keys.decrypt(&a.encrypted, &context("b")).await,
        Err(KeyError::Rejected)
    );
    assert_eq!(inner.counts(), (2, 2));
    // The refusals left a's entry as it was.
    keys.decrypt(&a.encrypted, &context("a")).await.unwrap();
    assert_eq!(inner.counts(), (2, 2));
}

#[tokio::test]
async fn the_cache_keeps_at_most_max_entries_dropping_the_least_recently_used() {
    let (inner, clock, keys) = cache(KeyCachePolicy {
        max_entries: 2,
        ..KeyCachePolicy::default()
    });
    keys.generate(&context("a")).await.unwrap();
    clock.advance(Duration::from_secs(1));
    keys.generate(&context("b")).await.unwrap();
    clock.advance(Duration::from_secs(1));
    keys.generate(&context("a")).await.unwrap();
    clock.advance(Duration::from_secs(1));
    keys.generate(&context("c")).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(inner.counts(), (3, 0));
    keys.generate(&context("a")).await.unwrap();
    assert_eq!(inner.counts(), (3, 0), "a was used more recently than b");
    keys.generate(&context("b")).await.unwrap();
    assert_eq!(inner.counts(), (4, 0), "b was dropped");

    keys.forget(&context("b"));
    assert_eq!(keys.len(), 1);
    let none = CachingDataKeys::new(
        inner.clone(),
        KeyCachePolicy {
            max_entries: 0,
            ..KeyCachePolicy::default()
        },
    );
    none.generate(&context("a")).await.unwrap();
    assert!(none.is_empty());
}
