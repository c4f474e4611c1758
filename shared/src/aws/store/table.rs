//! The port under the typed store: the few storage operations it needs,
//! and the shape of a conditional write, which the memory and DynamoDB
//! adapters both implement with DynamoDB's semantics.

use async_trait::async_trait;
use serde_json::Value;

use super::{Item, StoreError};

/// A condition an update needs on the item as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// The attribute equals the value.
    Equals(String, Value),
    /// The attribute is missing or below the value (numbers or strings).
    MissingOrBelow(String, Value),
}

/// What a single write puts, or what an update changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// Attributes to set.
    pub set: Vec<(String, Value)>,
    /// Attributes to set only when the item has none yet.
    pub set_if_missing: Vec<(String, Value)>,
    /// Attributes to remove.
    pub remove: Vec<String>,
    /// Conditions on the stored item.
    pub expect: Vec<Expect>,
    /// Add one to the item's `version`.
    pub bump_version: bool,
}

impl Update {
    /// Sets `name` to `value`, or removes it when there is none; a later
    /// put of the same name replaces the earlier one (DynamoDB refuses an
    /// update naming one attribute twice).
    pub(super) fn put(mut self, name: &str, value: Option<Value>) -> Self {
        self.set.retain(|(k, _)| k != name);
        self.remove.retain(|k| k != name);
        match value {
            Some(v) => self.set.push((name.into(), v)),
            None => self.remove.push(name.into()),
        }
        self
    }

    /// Adds a condition on the stored item.
    pub(super) fn expecting(mut self, expect: Expect) -> Self {
        self.expect.push(expect);
        self
    }
}

/// How a put may replace what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Only when no item has the key.
    IfAbsent,
    /// Only when no item has the key or its `ttl` (unix seconds) is below this.
    IfAbsentOrExpired(i64),
}

/// The storage operations the typed layer needs; DynamoDB and memory implement it.
#[async_trait]
pub trait Table: Send + Sync {
    /// One item, read consistently.
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError>;
    /// The items of a partition whose sort key starts with `prefix`, read consistently.
    async fn query(&self, pk: &str, prefix: &str) -> Result<Vec<Item>, StoreError>;
    /// The `pk` of every item whose `kind` is `kind` (through the sparse index).
    async fn keys_of_kind(&self, kind: &str) -> Result<Vec<String>, StoreError>;
    /// The keys (`pk`, `sk`, `due_at`) of at most `limit` items of `kind`
    /// whose `due_at` is at most `until`, the earliest first (through `due-index`).
    async fn due(&self, kind: &str, until: &str, limit: usize) -> Result<Vec<Item>, StoreError>;
    /// Puts items together, all or none; `Err(Conflict)` when one's condition fails.
    async fn put_all(&self, items: Vec<Item>, mode: PutMode) -> Result<(), StoreError>;
    /// Updates an existing item; `NotFound` when missing, `Conflict` when a condition fails.
    async fn update(&self, pk: &str, sk: &str, update: &Update) -> Result<(), StoreError>;
    /// Deletes one item (missing is fine).
    async fn delete(&self, pk: &str, sk: &str) -> Result<(), StoreError>;
    /// Deletes every item of a partition.
    async fn delete_partition(&self, pk: &str) -> Result<(), StoreError>;
}
