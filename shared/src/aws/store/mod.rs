//! The state table: connections, their subscriptions, the delivery ledger and
//! send-mail's idempotency keys, in one DynamoDB table (`RELAY365_STATE_TABLE`).
//!
//! Every function reaches state through [`Store`] and nothing else builds key
//! names or parses items. Two rules keep Lambda containers from undoing each
//! other's work:
//!
//! - **Reads are fresh.** Every read is a consistent read; nothing is cached
//!   across requests.
//! - **Writes touch only what the writer owns.** An update names the
//!   attributes it sets ([`ConnectionChange`], [`SubscriptionChange`]) and the
//!   conditions it needs (a nonce still pending, a token generation still
//!   current, a `version` unchanged); every other attribute stays as another
//!   writer left it. A failed condition is [`StoreError::Conflict`], which the
//!   caller answers by reading again.
//!
//! Items (keys `pk` / `sk`): the connection `conn#{id}` / `conn`, one item per
//! subscription `conn#{id}` / `sub#{key}`, one per delivered item
//! `conn#{id}` / `dlv#{item}` (expires after [`DELIVERY_TTL_DAYS`] days), and
//! idempotency keys `idem#{key}` / `idem`. Connection items carry
//! `kind = "connection"`, the key of the sparse `kind-index` through which
//! connections are listed without scanning deliveries. Subscription items
//! carry `kind = "flow"` and `due_at`, the key of `due-index`, through which
//! the scheduled run finds the flows it has work for (a renewal, a sweep, a
//! new key) without reading every connection.
//!
//! The same semantics run on DynamoDB ([`Store::dynamo`]) and in memory
//! ([`Store::memory`], for unit tests and network-free local runs): both are a
//! [`Table`] under the one typed layer. The files:
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Store`]: connections and subscriptions; [`StoreError`]; the key names |
//! | `table.rs` | the port: [`Table`] and the writes it takes ([`Update`], [`Expect`], [`PutMode`]) |
//! | `changes.rs` | the typed changes a writer makes: [`ConnectionChange`], [`SubscriptionChange`] |
//! | `ledger.rs` | the delivery ledger, send-mail's idempotency claims, the conversation memory for Amazon Connect |
//! | `tokens.rs` | sealed refresh tokens (`conn#{id}` / `tok`) |
//! | `memory.rs` | [`MemoryTable`], the adapter in memory |
//! | `dynamo.rs` | the adapter on DynamoDB |

mod changes;
mod dynamo;
mod ledger;
mod memory;
mod table;
mod tokens;

use std::sync::Arc;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::model::connection::{Connection, Subscription};
use crate::model::rfc3339;

pub use changes::{ConnectionChange, SubscriptionChange};
pub use ledger::{CONVERSATION_CONTACT_TTL_DAYS, Claim, ConversationContact};
pub use memory::{MemoryTable, apply_update};
pub use table::{Expect, PutMode, Table, Update};
pub use tokens::{SealedTokenItem, TokenWrite};

use dynamo::DynamoTable;

/// How long a delivery is remembered: longer than Graph retries a
/// notification (4 hours) and than any resync looks back.
pub const DELIVERY_TTL_DAYS: i64 = 14;
/// The name of the sparse index over connection items.
pub const KIND_INDEX: &str = "kind-index";
/// The name of the sparse index over subscription items by the time the
/// scheduled run next has work for them.
pub const DUE_INDEX: &str = "due-index";
const KIND_CONNECTION: &str = "connection";
const KIND_FLOW: &str = "flow";
/// The item of the scheduled run's own state (`fleet` / `run`).
const FLEET_PK: &str = "fleet";
const FLEET_SK: &str = "run";

/// A stored item: attribute names to JSON values (DynamoDB types through serde).
pub type Item = Map<String, Value>;

/// A failure of the state store; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The item does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What was looked for, e.g. "connection support".
        what: String,
    },
    /// The item exists already.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What was created.
        what: String,
    },
    /// Another writer changed the item since it was read: read again and retry.
    #[error("{what} was changed by someone else meanwhile: read it again and retry")]
    Conflict {
        /// What was written.
        what: String,
    },
    /// A passing failure (throttling, network, service error): retry later.
    #[error("the state table is unavailable ({detail}): retry later")]
    Unavailable {
        /// What failed, without values.
        detail: String,
    },
    /// The function's role may not do this: fix its IAM policy.
    #[error("access to the state table was denied ({detail}): check the function's IAM policy")]
    AccessDenied {
        /// The service's error code.
        detail: String,
    },
    /// The table is missing or not what the deployment expects.
    #[error("the state table cannot be used ({detail}): check RELAY365_STATE_TABLE and the stack")]
    Misconfigured {
        /// What is wrong.
        detail: String,
    },
    /// A stored item cannot be read as what it should be.
    #[error(
        "the stored {what} is damaged ({detail}): delete the connection with DELETE /connections/{id} and create it again"
    )]
    Damaged {
        /// What was read, e.g. "record of connection support".
        what: String,
        /// The connection it belongs to.
        id: String,
        /// What is wrong with it (field names, never values).
        detail: String,
    },
}

impl StoreError {
    /// True when trying again (after reading again, for a conflict) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. } | StoreError::Conflict { .. })
    }
}

// ---------------------------------------------------------------------------
// The typed layer

/// The state store: typed operations on the state table.
#[derive(Clone)]
pub struct Store {
    table: Arc<dyn Table>,
}

crate::debug_showing!(Store {});

fn conn_pk(id: &str) -> String {
    format!("conn#{id}")
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn what(id: &str) -> String {
    format!("connection {id}")
}

fn sub_what(id: &str, key: &str) -> String {
    format!("subscription {key} of connection {id}")
}

/// Stamps a change with the time and a new version.
fn stamped(mut update: Update) -> Update {
    update
        .set
        .push(("updated_at".into(), rfc3339(OffsetDateTime::now_utc()).into()));
    update.bump_version = true;
    update
}

fn to_item<T: serde::Serialize>(value: &T) -> Item {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Reads a connection item; a damaged one names the connection.
fn parse_connection(id: &str, mut item: Item) -> Result<Connection, StoreError> {
    for k in ["pk", "sk", "kind"] {
        item.remove(k);
    }
    serde_json::from_value(Value::Object(item)).map_err(|e| StoreError::Damaged {
        what: format!("record of connection {id}"),
        id: id.to_string(),
        detail: field_words(&e),
    })
}

fn parse_subscription(id: &str, mut item: Item) -> Result<Subscription, StoreError> {
    let key = item
        .get("sk")
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("sub#"))
        .unwrap_or("")
        .to_string();
    for k in ["pk", "sk"] {
        item.remove(k);
    }
    let mut sub: Subscription =
        serde_json::from_value(Value::Object(item)).map_err(|e| StoreError::Damaged {
            what: format!("subscription {key} of connection {id}"),
            id: id.to_string(),
            detail: field_words(&e),
        })?;
    sub.key = key;
    Ok(sub)
}

/// serde's message names fields and expected types, never the values it saw
/// beyond the variant name; keep only the first clause.
fn field_words(e: &serde_json::Error) -> String {
    let text = e.to_string();
    text.split(" at line").next().unwrap_or(&text).to_string()
}

impl Store {
    /// A store on any [`Table`].
    pub fn new(table: Arc<dyn Table>) -> Self {
        Self { table }
    }

    /// A store in memory, with the same semantics as DynamoDB: for unit tests
    /// and network-free local runs. Each call is a new, empty table.
    pub fn memory() -> Self {
        Self::new(Arc::new(MemoryTable::default()))
    }

    /// A store on the DynamoDB table `name`, with a client built on first use.
    pub fn dynamo(client: Arc<crate::aws::sdk::LazyClient<aws_sdk_dynamodb::Client>>, name: String) -> Self {
        Self::new(Arc::new(DynamoTable { client, name }))
    }

    /// A connection with its subscriptions, read fresh; `None` when it does not exist.
    ///
    /// # Errors
    /// [`StoreError`]; `Damaged` names the connection.
    pub async fn connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        let pk = conn_pk(id);
        let Some(item) = self.table.get(&pk, "conn").await? else {
            return Ok(None);
        };
        let mut conn = parse_connection(id, item)?;
        if conn.id != id {
            return Err(StoreError::Damaged {
                what: format!("record of connection {id}"),
                id: id.to_string(),
                detail: "its id does not match its key".into(),
            });
        }
        let mut subs = Vec::new();
        for item in self.table.query(&pk, "sub#").await? {
            subs.push(parse_subscription(id, item)?);
        }
        subs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.key.cmp(&b.key)));
        conn.subscriptions = subs;
        Ok(Some(conn))
    }

    /// Like [`Store::connection`], but a missing connection is `NotFound`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn require(&self, id: &str) -> Result<Connection, StoreError> {
        self.connection(id)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: what(id) })
    }

    /// Creates a connection and its subscriptions together; `AlreadyExists`
    /// when the id is taken.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn create_connection(&self, conn: &Connection) -> Result<(), StoreError> {
        let pk = conn_pk(&conn.id);
        let mut item = to_item(conn);
        item.insert("pk".into(), pk.clone().into());
        item.insert("sk".into(), "conn".into());
        item.insert("kind".into(), KIND_CONNECTION.into());
        let mut items = vec![item];
        for sub in &conn.subscriptions {
            items.push(self.subscription_item(&pk, sub));
        }
        self.table
            .put_all(items, PutMode::IfAbsent)
            .await
            .map_err(|e| match e {
                StoreError::Conflict { .. } => StoreError::AlreadyExists { what: what(&conn.id) },
                other => other,
            })
    }

    fn subscription_item(&self, pk: &str, sub: &Subscription) -> Item {
        let mut item = to_item(sub);
        item.remove("key");
        item.insert("pk".into(), pk.into());
        item.insert("sk".into(), format!("sub#{}", sub.key).into());
        // A new flow is due at once: the next scheduled run creates what
        // sign-in could not and takes it into the sweep.
        item.insert("kind".into(), KIND_FLOW.into());
        item.insert("due_at".into(), rfc3339(OffsetDateTime::UNIX_EPOCH).into());
        item
    }

    /// Applies a change to a connection item.
    ///
    /// # Errors
    /// `NotFound`, `Conflict` when a condition of the change failed, or another [`StoreError`].
    pub async fn update_connection(&self, id: &str, change: ConnectionChange) -> Result<(), StoreError> {
        self.table
            .update(&conn_pk(id), "conn", &stamped(change.update))
            .await
            .map_err(|e| rename(e, &what(id)))
    }

    /// The ids of every connection, sorted.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn connection_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = self
            .table
            .keys_of_kind(KIND_CONNECTION)
            .await?
            .into_iter()
            .filter_map(|pk| pk.strip_prefix("conn#").map(str::to_string))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Puts `record`, to expire `days` after `now`, unless an item with its
    /// key is there and not expired: true when this call wrote it.
    async fn put_once(&self, mut record: Item, now: OffsetDateTime, days: i64) -> Result<bool, StoreError> {
        record.insert("ttl".into(), (now.unix_timestamp() + days * 86_400).into());
        match self
            .table
            .put_all(vec![record], PutMode::IfAbsentOrExpired(now.unix_timestamp()))
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The flows the scheduled run has work for by `until`: `(connection id,
    /// subscription key)`, the longest-waiting first, at most `limit`.
    /// `until` of `None` lists every flow filed in `due-index`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn due_flows(
        &self,
        until: Option<OffsetDateTime>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let until = until.map_or_else(|| "9999".to_string(), rfc3339);
        Ok(self
            .table
            .due(KIND_FLOW, &until, limit)
            .await?
            .into_iter()
            .filter_map(|item| {
                let id = item.get("pk")?.as_str()?.strip_prefix("conn#")?.to_string();
                let key = item.get("sk")?.as_str()?.strip_prefix("sub#")?.to_string();
                Some((id, key))
            })
            .collect())
    }

    /// The signing key id every flow's Graph subscription was last found to
    /// use by a complete scheduled run (`fleet` / `run`); `None` before the
    /// first one. A run whose key differs looks at every flow, not only the
    /// due ones.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn fleet_key(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .table
            .get(FLEET_PK, FLEET_SK)
            .await?
            .and_then(|i| i.get("key_id").and_then(Value::as_str).map(str::to_string)))
    }

    /// Records that every flow was looked at under `key_id`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn set_fleet_key(&self, key_id: &str) -> Result<(), StoreError> {
        let update = stamped(Update::default().put("key_id", Some(key_id.into())));
        match self.table.update(FLEET_PK, FLEET_SK, &update).await {
            Err(StoreError::NotFound { .. }) => {
                let mut item = Item::new();
                item.insert("pk".into(), FLEET_PK.into());
                item.insert("sk".into(), FLEET_SK.into());
                item.insert("key_id".into(), key_id.into());
                match self.table.put_all(vec![item], PutMode::IfAbsent).await {
                    // Another run wrote it first: write over it.
                    Err(StoreError::Conflict { .. }) => self.table.update(FLEET_PK, FLEET_SK, &update).await,
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Deletes a connection with its subscriptions and deliveries.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn delete_connection(&self, id: &str) -> Result<(), StoreError> {
        let pk = conn_pk(id);
        // The connection item first: from then on nothing serves it, whatever
        // a failure leaves of the rest (deliveries expire by themselves).
        self.table.delete(&pk, "conn").await?;
        self.table.delete_partition(&pk).await
    }

    /// Adds a subscription to a connection; `AlreadyExists` when its key is taken.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn add_subscription(&self, id: &str, sub: &Subscription) -> Result<(), StoreError> {
        let pk = conn_pk(id);
        self.table
            .put_all(vec![self.subscription_item(&pk, sub)], PutMode::IfAbsent)
            .await
            .map_err(|e| match e {
                StoreError::Conflict { .. } => StoreError::AlreadyExists {
                    what: sub_what(id, &sub.key),
                },
                other => other,
            })
    }

    /// Removes a subscription item (missing is fine).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn remove_subscription(&self, id: &str, key: &str) -> Result<(), StoreError> {
        self.table.delete(&conn_pk(id), &format!("sub#{key}")).await
    }

    /// Applies a change to a subscription item.
    ///
    /// # Errors
    /// `NotFound` when the subscription is gone, or another [`StoreError`].
    pub async fn update_subscription(
        &self,
        id: &str,
        key: &str,
        change: SubscriptionChange,
    ) -> Result<(), StoreError> {
        self.table
            .update(&conn_pk(id), &format!("sub#{key}"), &change.update)
            .await
            .map_err(|e| rename(e, &sub_what(id, key)))
    }

    /// Records a delivery on a subscription: the times in `change`, and the
    /// watermark moved forward to `watermark` if that is newer, in one write
    /// when it is (two when another writer stored a newer watermark meanwhile).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn record_delivery(
        &self,
        id: &str,
        key: &str,
        change: SubscriptionChange,
        watermark: Option<&str>,
    ) -> Result<(), StoreError> {
        let sk = format!("sub#{key}");
        if let Some(w) = watermark {
            let update = change
                .update
                .clone()
                .put("watermark", Some(w.into()))
                .expecting(Expect::MissingOrBelow("watermark".into(), w.into()));
            match self.table.update(&conn_pk(id), &sk, &update).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(rename(e, &sub_what(id, key))),
            }
        }
        self.table
            .update(&conn_pk(id), &sk, &change.update)
            .await
            .map_err(|e| rename(e, &sub_what(id, key)))
    }
}

/// The keys of an item.
fn key_of(item: &Item) -> (String, String) {
    let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    (s("pk"), s("sk"))
}

/// Puts the item's name into NotFound / Conflict errors.
fn rename(e: StoreError, name: &str) -> StoreError {
    match e {
        StoreError::NotFound { .. } => StoreError::NotFound { what: name.into() },
        StoreError::Conflict { .. } => StoreError::Conflict { what: name.into() },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_item_is_damaged_and_names_its_connection() {
        let item: Item = serde_json::from_value(
            serde_json::json!({"pk": "conn#x", "sk": "conn", "id": "x", "auth": "carrier_pigeon"}),
        )
        .unwrap();
        let err = parse_connection("x", item).unwrap_err();
        assert!(matches!(err, StoreError::Damaged { ref id, .. } if id == "x"));
        assert!(err.to_string().contains("DELETE /connections/x"), "{err}");
        assert!(!err.is_retryable());
    }
}
