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
//! [`Table`] under the one typed layer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::model::connection::{Connection, Status, Subscription};

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
// The table underneath

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
    fn put(mut self, name: &str, value: Option<Value>) -> Self {
        self.set.retain(|(k, _)| k != name);
        self.remove.retain(|k| k != name);
        match value {
            Some(v) => self.set.push((name.into(), v)),
            None => self.remove.push(name.into()),
        }
        self
    }

    /// Adds a condition on the stored item.
    fn expecting(mut self, expect: Expect) -> Self {
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

// ---------------------------------------------------------------------------
// Typed changes

/// The attributes of a connection item one writer changes, and the conditions
/// it needs. Each function owns its attributes: oauth-callback the status,
/// mailbox, granted scopes, nonce and token generation; the token code the
/// token write time and `reauth_required`.
#[derive(Debug, Clone, Default)]
pub struct ConnectionChange {
    update: Update,
}

impl ConnectionChange {
    /// An empty change (only `updated_at` and `version` move).
    pub fn new() -> Self {
        Self::default()
    }
    fn put(self, name: &str, value: Option<Value>) -> Self {
        Self {
            update: self.update.put(name, value),
        }
    }
    fn expecting(self, expect: Expect) -> Self {
        Self {
            update: self.update.expecting(expect),
        }
    }
    /// Sets the status.
    pub fn status(self, status: Status) -> Self {
        self.put("status", serde_json::to_value(status).ok())
    }
    /// Sets the mailbox.
    pub fn mailbox(self, mailbox: &str) -> Self {
        self.put("mailbox", Some(mailbox.into()))
    }
    /// Sets the permissions Microsoft reported as granted.
    pub fn granted_scopes(self, scopes: &[String]) -> Self {
        self.put("granted_scopes", Some(scopes.into()))
    }
    /// Sets or clears the last error.
    pub fn last_error(self, error: Option<&str>) -> Self {
        self.put("last_error", error.map(Value::from))
    }
    /// Sets the token generation.
    pub fn generation(self, generation: u64) -> Self {
        self.put("generation", Some(generation.into()))
    }
    /// Sets or clears the pending sign-in nonce.
    pub fn pending_auth_nonce(self, nonce: Option<&str>) -> Self {
        self.put("pending_auth_nonce", nonce.map(Value::from))
    }
    /// Records when the refresh token was last written (unix seconds).
    pub fn token_written_at(self, at: i64) -> Self {
        self.put("token_written_at", Some(at.into()))
    }
    /// Records the tenant id (`tid`) of the organisation the sign-in was made in.
    pub fn tid(self, tid: &str) -> Self {
        self.put("tid", Some(tid.into()))
    }
    /// Records the object id (`oid`) of the user who signed in.
    pub fn oid(self, oid: &str) -> Self {
        self.put("oid", Some(oid.into()))
    }
    /// Only if this sign-in nonce is still the pending one.
    pub fn if_nonce(self, nonce: &str) -> Self {
        self.expecting(Expect::Equals("pending_auth_nonce".into(), nonce.into()))
    }
    /// Only if the token generation is still this one.
    pub fn if_generation(self, generation: u64) -> Self {
        self.expecting(Expect::Equals("generation".into(), generation.into()))
    }
    /// Only if the item's version is still this one (a read-modify-write).
    pub fn if_version(self, version: u64) -> Self {
        self.expecting(Expect::Equals("version".into(), version.into()))
    }
    /// Only if the refresh token was last written before `at` (unix seconds), or never.
    pub fn if_token_written_before(self, at: i64) -> Self {
        self.expecting(Expect::MissingOrBelow("token_written_at".into(), at.into()))
    }
}

/// The attributes of a subscription item one writer changes: the renewal run
/// owns the Graph id, expiry and last error; dispatch the delta link,
/// watermark and notification and delivery times.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionChange {
    update: Update,
}

impl SubscriptionChange {
    /// An empty change.
    pub fn new() -> Self {
        Self::default()
    }
    fn put(self, name: &str, value: Option<Value>) -> Self {
        Self {
            update: self.update.put(name, value),
        }
    }
    /// Sets when the scheduled run next has work for this flow (see
    /// [`Store::due_flows`]); it also files the item in `due-index`.
    pub fn due_at(self, at: OffsetDateTime) -> Self {
        self.put("due_at", Some(rfc3339(at).into()))
            .put("kind", Some(KIND_FLOW.into()))
    }
    /// The scheduled run looks at this flow again in its next run: a change
    /// another writer made (a new Graph subscription or expiry, a pause, a
    /// resume) may change what is due. The run itself sets the time after that.
    fn look_again(self) -> Self {
        self.due_at(OffsetDateTime::UNIX_EPOCH)
    }
    /// Sets Graph's subscription id.
    pub fn graph_id(self, id: &str) -> Self {
        self.put("id", Some(id.into())).look_again()
    }
    /// Sets the id of the signing key its `clientState` was made with.
    pub fn key_id(self, key_id: &str) -> Self {
        self.put("key_id", Some(key_id.into()))
    }
    /// Sets when Graph will delete it unless renewed.
    pub fn expires_at(self, at: Option<OffsetDateTime>) -> Self {
        self.put("expires_at", at.map(|t| rfc3339(t).into())).look_again()
    }
    /// Sets or clears the last error.
    pub fn last_error(self, error: Option<&str>) -> Self {
        self.put("last_error", error.map(Value::from))
    }
    /// Sets the delta link from which a resync starts.
    pub fn delta_link(self, link: &str) -> Self {
        self.put("delta_link", Some(link.into()))
    }
    /// Sets the delta link only if the subscription has none (a recreated
    /// subscription keeps the old one, so the gap is resynced from it).
    pub fn delta_link_if_missing(mut self, link: &str) -> Self {
        self.update
            .set_if_missing
            .push(("delta_link".into(), link.into()));
        self
    }
    /// Records when the last notification arrived.
    pub fn last_notification_at(self, at: OffsetDateTime) -> Self {
        self.put("last_notification_at", Some(rfc3339(at).into()))
    }
    /// Records why the last delivery attempt failed, and when.
    pub fn last_delivery_error(self, why: Option<&str>, at: OffsetDateTime) -> Self {
        self.put("last_delivery_error", why.map(Value::from))
            .put("last_delivery_error_at", Some(rfc3339(at).into()))
    }
    /// Clears the last delivery error (a delivery succeeded).
    pub fn clear_delivery_error(self) -> Self {
        self.put("last_delivery_error", None)
            .put("last_delivery_error_at", None)
    }
    /// Sets how many of its records wait for a retry.
    pub fn waiting(self, n: u64) -> Self {
        self.put("waiting", Some(n.into()))
    }
    /// Records when the sweep ran.
    pub fn last_swept_at(self, at: OffsetDateTime) -> Self {
        self.put("last_swept_at", Some(rfc3339(at).into()))
    }
    /// Sets how many mails the sweep recovered in all.
    pub fn recovered(self, total: u64) -> Self {
        self.put("recovered", Some(total.into()))
    }
    /// Records that the target answered 410 Gone.
    pub fn target_gone_at(self, at: OffsetDateTime) -> Self {
        self.put("target_gone_at", Some(rfc3339(at).into()))
    }
    /// Pauses the flow: nothing is sent to it until it is resumed.
    pub fn paused(self, at: OffsetDateTime, reason: &str) -> Self {
        self.look_again()
            .put("status", Some("paused".into()))
            .put("paused_at", Some(rfc3339(at).into()))
            .put("paused_reason", Some(reason.into()))
    }
    /// Resumes the flow: active again, with its catch-up running from `at`
    /// until [`SubscriptionChange::caught_up`].
    pub fn resumed(self, at: OffsetDateTime) -> Self {
        self.look_again()
            .put("status", Some("active".into()))
            .put("paused_at", None)
            .put("paused_reason", None)
            .put("target_gone_at", None)
            .put("catching_up", Some(rfc3339(at).into()))
    }
    /// The resume's catch-up delivered everything: new notifications are
    /// delivered to the flow again.
    pub fn caught_up(self) -> Self {
        self.put("catching_up", None)
    }
    /// Records when the last event was delivered.
    pub fn last_delivery_at(self, at: OffsetDateTime) -> Self {
        self.put("last_delivery_at", Some(rfc3339(at).into()))
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What the store says about an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time: go ahead and send.
    New,
    /// Sent already with the same request: answer as sent, do not send.
    AlreadySent,
    /// Another send with this key is in progress.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
    /// A deferred send with this key failed for good: its error (as
    /// [`Store::claim_failed`] stored it) is the answer.
    Failed(Value),
}

// ---------------------------------------------------------------------------
// The typed layer

/// The state store: typed operations on the state table.
#[derive(Clone)]
pub struct Store {
    table: Arc<dyn Table>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

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

    /// Whether an item (a Graph immutable id, with the change key for
    /// calendar items) was delivered for this connection.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn is_delivered(&self, id: &str, item: &str) -> Result<bool, StoreError> {
        Ok(self
            .table
            .get(&conn_pk(id), &format!("dlv#{item}"))
            .await?
            .is_some_and(|i| {
                i.get("ttl")
                    .and_then(Value::as_i64)
                    .is_none_or(|t| t >= now_unix())
            }))
    }

    /// Records that an item was delivered as `event_id`. Returns false when it
    /// was recorded already (by another container, or an earlier attempt).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn mark_delivered(&self, id: &str, item: &str, event_id: &str) -> Result<bool, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut record = Item::new();
        record.insert("pk".into(), conn_pk(id).into());
        record.insert("sk".into(), format!("dlv#{item}").into());
        record.insert("event_id".into(), event_id.into());
        record.insert("delivered_at".into(), rfc3339(now).into());
        self.put_once(record, now, DELIVERY_TTL_DAYS).await
    }

    /// Claims an idempotency key for a request fingerprint, for `claim_secs`
    /// (after which another send may take over a claim that never finished).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn claim(&self, key: &str, fingerprint: &str, claim_secs: i64) -> Result<Claim, StoreError> {
        let now = now_unix();
        let mut item = Item::new();
        item.insert("pk".into(), format!("idem#{key}").into());
        item.insert("sk".into(), "idem".into());
        item.insert("status".into(), "pending".into());
        item.insert("fingerprint".into(), fingerprint.into());
        item.insert("ttl".into(), (now + claim_secs).into());
        match self
            .table
            .put_all(vec![item], PutMode::IfAbsentOrExpired(now))
            .await
        {
            Ok(()) => Ok(Claim::New),
            Err(StoreError::Conflict { .. }) => Ok(self
                .claim_status(key, fingerprint)
                .await?
                .unwrap_or(Claim::InProgress)),
            Err(e) => Err(e),
        }
    }

    /// Marks a claimed key as sent, remembered for `keep_secs`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn claim_sent(&self, key: &str, keep_secs: i64) -> Result<(), StoreError> {
        let update = Update {
            set: vec![
                ("status".into(), "sent".into()),
                ("ttl".into(), (now_unix() + keep_secs).into()),
            ],
            ..Update::default()
        };
        self.table.update(&format!("idem#{key}"), "idem", &update).await
    }

    /// What is known of a key without claiming it: `None` when it is free
    /// (never used, or its claim expired), else how it stands for a request
    /// with `fingerprint` (`New` is never returned).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn claim_status(&self, key: &str, fingerprint: &str) -> Result<Option<Claim>, StoreError> {
        let Some(stored) = self.table.get(&format!("idem#{key}"), "idem").await? else {
            return Ok(None);
        };
        if stored
            .get("ttl")
            .and_then(Value::as_i64)
            .is_some_and(|t| t <= now_unix())
        {
            return Ok(None);
        }
        let field = |k: &str| stored.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Ok(Some(if field("fingerprint") != fingerprint {
            Claim::Mismatch
        } else if field("status") == "sent" {
            Claim::AlreadySent
        } else if field("status") == "failed" {
            Claim::Failed(serde_json::from_str(&field("result")).unwrap_or_default())
        } else {
            Claim::InProgress
        }))
    }

    /// Records that the send of a claimed key failed for good, with the
    /// error a repeat of the request gets, kept `keep_secs`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn claim_failed(&self, key: &str, result: &Value, keep_secs: i64) -> Result<(), StoreError> {
        let update = Update {
            set: vec![
                ("status".into(), "failed".into()),
                ("result".into(), result.to_string().into()),
                ("ttl".into(), (now_unix() + keep_secs).into()),
            ],
            ..Update::default()
        };
        self.table.update(&format!("idem#{key}"), "idem", &update).await
    }

    /// Releases a claim (a failed send), so a retry with the key can send.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn claim_release(&self, key: &str) -> Result<(), StoreError> {
        self.table.delete(&format!("idem#{key}"), "idem").await
    }

    /// The Amazon Connect contact a flow started first for a conversation of
    /// this connection (`conn#{id}` / `cx#{flow}#{conversation}`), when it is
    /// remembered and was started in `instance_id`: later mail of the
    /// conversation is related to it.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn conversation_contact(
        &self,
        id: &str,
        flow: &str,
        conversation: &str,
        instance_id: &str,
    ) -> Result<Option<ConversationContact>, StoreError> {
        let Some(item) = self
            .table
            .get(&conn_pk(id), &conversation_contact_sk(flow, conversation))
            .await?
        else {
            return Ok(None);
        };
        let live = item
            .get("ttl")
            .and_then(Value::as_i64)
            .is_none_or(|t| t >= now_unix());
        let same_instance = item.get("instance_id").and_then(Value::as_str) == Some(instance_id);
        let field = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(match (field("contact_id"), live && same_instance) {
            (Some(contact_id), true) => Some(ConversationContact {
                contact_id,
                event_id: field("event_id").unwrap_or_default(),
            }),
            _ => None,
        })
    }

    /// Remembers the first Amazon Connect contact a flow started for a
    /// conversation (started for the relay365 event `contact.event_id`),
    /// for [`CONVERSATION_CONTACT_TTL_DAYS`] days. Returns false when one is
    /// remembered already (the first one stays).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn remember_conversation_contact(
        &self,
        id: &str,
        flow: &str,
        conversation: &str,
        instance_id: &str,
        contact: &ConversationContact,
    ) -> Result<bool, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut record = Item::new();
        record.insert("pk".into(), conn_pk(id).into());
        record.insert("sk".into(), conversation_contact_sk(flow, conversation).into());
        record.insert("instance_id".into(), instance_id.into());
        record.insert("contact_id".into(), contact.contact_id.as_str().into());
        record.insert("event_id".into(), contact.event_id.as_str().into());
        record.insert("started_at".into(), rfc3339(now).into());
        self.put_once(record, now, CONVERSATION_CONTACT_TTL_DAYS).await
    }
}

/// The first Amazon Connect contact a flow started for a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationContact {
    /// Connect's contact id.
    pub contact_id: String,
    /// The relay365 event it was started for.
    pub event_id: String,
}

/// How long the first Amazon Connect contact of a conversation is
/// remembered, so later mail of the conversation is related to it.
pub const CONVERSATION_CONTACT_TTL_DAYS: i64 = 30;

/// The sort key of a conversation's first Amazon Connect contact. A Graph
/// conversation id is at most a few hundred characters; a long one is
/// hashed so the key stays inside DynamoDB's 1,024 bytes.
fn conversation_contact_sk(flow: &str, conversation: &str) -> String {
    let key = format!("cx#{flow}#{conversation}");
    if key.len() <= 900 {
        key
    } else {
        format!(
            "cx#{flow}#sha256:{}",
            crate::digest::sha256_hex(conversation.as_bytes())
        )
    }
}

/// Puts the item's name into NotFound / Conflict errors.
fn rename(e: StoreError, name: &str) -> StoreError {
    match e {
        StoreError::NotFound { .. } => StoreError::NotFound { what: name.into() },
        StoreError::Conflict { .. } => StoreError::Conflict { what: name.into() },
        other => other,
    }
}

// ---------------------------------------------------------------------------
// In memory

/// [`Table`] in memory, with DynamoDB's semantics for the operations used.
#[derive(Debug, Default)]
pub struct MemoryTable {
    items: Mutex<BTreeMap<(String, String), Item>>,
}

fn below(stored: &Value, limit: &Value) -> bool {
    match (stored, limit) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().unwrap_or(0.0) < b.as_f64().unwrap_or(0.0),
        (Value::String(a), Value::String(b)) => a < b,
        _ => false,
    }
}

/// Applies an update to an item; false when a condition fails. Shared by the
/// memory table so its semantics are written once.
pub fn apply_update(item: &mut Item, update: &Update) -> bool {
    for e in &update.expect {
        let ok = match e {
            Expect::Equals(k, v) => item.get(k) == Some(v),
            Expect::MissingOrBelow(k, v) => item.get(k).is_none_or(|s| below(s, v)),
        };
        if !ok {
            return false;
        }
    }
    for (k, v) in &update.set {
        item.insert(k.clone(), v.clone());
    }
    for (k, v) in &update.set_if_missing {
        item.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for k in &update.remove {
        item.remove(k);
    }
    if update.bump_version {
        let v = item.get("version").and_then(Value::as_u64).unwrap_or(0);
        item.insert("version".into(), (v + 1).into());
    }
    true
}

fn key_of(item: &Item) -> (String, String) {
    let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    (s("pk"), s("sk"))
}

#[async_trait]
impl Table for MemoryTable {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        Ok(items.get(&(pk.to_string(), sk.to_string())).cloned())
    }

    async fn query(&self, pk: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        Ok(items
            .range((pk.to_string(), prefix.to_string())..)
            .take_while(|((p, s), _)| p == pk && s.starts_with(prefix))
            .map(|(_, i)| i.clone())
            .collect())
    }

    async fn keys_of_kind(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        Ok(items
            .iter()
            .filter(|(_, i)| i.get("kind").and_then(Value::as_str) == Some(kind))
            .map(|((p, _), _)| p.clone())
            .collect())
    }

    async fn due(&self, kind: &str, until: &str, limit: usize) -> Result<Vec<Item>, StoreError> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let mut due: Vec<Item> = items
            .values()
            .filter(|i| i.get("kind").and_then(Value::as_str) == Some(kind))
            .filter(|i| {
                i.get("due_at")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d <= until)
            })
            .map(|i| {
                ["pk", "sk", "due_at"]
                    .iter()
                    .filter_map(|k| Some(((*k).to_string(), i.get(*k)?.clone())))
                    .collect()
            })
            .collect();
        due.sort_by(|a: &Item, b: &Item| {
            let k = |i: &Item| {
                (
                    i.get("due_at").and_then(Value::as_str).unwrap_or("").to_string(),
                    key_of(i),
                )
            };
            k(a).cmp(&k(b))
        });
        due.truncate(limit);
        Ok(due)
    }

    async fn put_all(&self, new: Vec<Item>, mode: PutMode) -> Result<(), StoreError> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        for item in &new {
            if let Some(old) = items.get(&key_of(item)) {
                let expired = match mode {
                    PutMode::IfAbsent => false,
                    PutMode::IfAbsentOrExpired(now) => {
                        old.get("ttl").and_then(Value::as_i64).is_some_and(|t| t < now)
                    }
                };
                if !expired {
                    return Err(StoreError::Conflict { what: "item".into() });
                }
            }
        }
        for item in new {
            items.insert(key_of(&item), item);
        }
        Ok(())
    }

    async fn update(&self, pk: &str, sk: &str, update: &Update) -> Result<(), StoreError> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let Some(item) = items.get_mut(&(pk.to_string(), sk.to_string())) else {
            return Err(StoreError::NotFound { what: "item".into() });
        };
        let mut changed = item.clone();
        if !apply_update(&mut changed, update) {
            return Err(StoreError::Conflict { what: "item".into() });
        }
        *item = changed;
        Ok(())
    }

    async fn delete(&self, pk: &str, sk: &str) -> Result<(), StoreError> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items.remove(&(pk.to_string(), sk.to_string()));
        Ok(())
    }

    async fn delete_partition(&self, pk: &str) -> Result<(), StoreError> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items.retain(|(p, _), _| p != pk);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// DynamoDB

/// [`Table`] on DynamoDB: consistent reads, conditional writes,
/// `TransactWriteItems` for items that must appear together.
struct DynamoTable {
    client: Arc<crate::aws::sdk::LazyClient<aws_sdk_dynamodb::Client>>,
    name: String,
}

fn to_av(item: &Item) -> Result<HashMap<String, AttributeValue>, StoreError> {
    serde_dynamo::to_item(item).map_err(|e| StoreError::Misconfigured {
        detail: format!("an item could not be encoded ({e})"),
    })
}

fn value_av(v: &Value) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(v).map_err(|e| StoreError::Misconfigured {
        detail: format!("a value could not be encoded ({e})"),
    })
}

fn from_av(item: HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    let pk = item
        .get("pk")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    let id = pk.strip_prefix("conn#").unwrap_or(&pk).to_string();
    serde_dynamo::from_item(item).map_err(|e| StoreError::Damaged {
        what: format!("item {pk}"),
        id,
        detail: e.to_string(),
    })
}

fn map_sdk<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    err: &SdkError<E, R>,
) -> StoreError {
    let code = err.code().unwrap_or_default().to_string();
    match code.as_str() {
        "ConditionalCheckFailedException" => StoreError::Conflict { what: "item".into() },
        "TransactionCanceledException" => {
            let message = err.message().unwrap_or_default();
            if message.contains("ConditionalCheckFailed") {
                StoreError::Conflict { what: "item".into() }
            } else {
                StoreError::Unavailable {
                    detail: "a transaction was cancelled".into(),
                }
            }
        }
        "AccessDeniedException" | "UnrecognizedClientException" => StoreError::AccessDenied { detail: code },
        "ResourceNotFoundException" => StoreError::Misconfigured {
            detail: "the table (or its kind-index) does not exist".into(),
        },
        "ValidationException" => StoreError::Misconfigured {
            detail: format!(
                "DynamoDB refused the request: {}",
                err.message().unwrap_or_default()
            ),
        },
        "" => StoreError::Unavailable {
            detail: match err {
                SdkError::TimeoutError(_) => "timed out",
                SdkError::DispatchFailure(_) => "could not reach DynamoDB",
                SdkError::ResponseError(_) => "unreadable answer",
                SdkError::ConstructionFailure(_) => "request could not be built",
                _ => "service error",
            }
            .into(),
        },
        _ => StoreError::Unavailable { detail: code },
    }
}

/// Expression names and values, numbered.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn name(&mut self, n: &str) -> String {
        let key = format!("#n{}", self.names.len());
        if let Some((k, _)) = self.names.iter().find(|(_, v)| *v == n) {
            return k.clone();
        }
        self.names.insert(key.clone(), n.to_string());
        key
    }
    fn value(&mut self, v: AttributeValue) -> String {
        let key = format!(":v{}", self.values.len());
        self.values.insert(key.clone(), v);
        key
    }
}

impl DynamoTable {
    async fn client(&self) -> &aws_sdk_dynamodb::Client {
        self.client.get().await
    }

    fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_string(), AttributeValue::S(pk.into())),
            ("sk".to_string(), AttributeValue::S(sk.into())),
        ])
    }

    fn put_condition(mode: PutMode, expr: &mut Expr) -> String {
        match mode {
            PutMode::IfAbsent => "attribute_not_exists(pk)".into(),
            PutMode::IfAbsentOrExpired(now) => {
                let ttl = expr.name("ttl");
                let v = expr.value(AttributeValue::N(now.to_string()));
                format!("attribute_not_exists(pk) OR {ttl} < {v}")
            }
        }
    }
}

#[async_trait]
impl Table for DynamoTable {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.name)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk(&e))?;
        out.item.map(from_av).transpose()
    }

    async fn query(&self, pk: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut req = self
            .client()
            .await
            .query()
            .table_name(&self.name)
            .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
            .consistent_read(true);
        // DynamoDB refuses an empty begins_with: the whole partition is `pk` alone.
        req = if prefix.is_empty() {
            req.key_condition_expression("pk = :pk")
        } else {
            req.key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.into()))
        };
        let mut pages = req.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk(&e))?;
            for item in page.items.unwrap_or_default() {
                items.push(from_av(item)?);
            }
        }
        Ok(items)
    }

    async fn keys_of_kind(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client()
            .await
            .query()
            .table_name(&self.name)
            .index_name(KIND_INDEX)
            .key_condition_expression("#kind = :kind")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":kind", AttributeValue::S(kind.into()))
            .projection_expression("pk")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk(&e))?;
            for item in page.items.unwrap_or_default() {
                if let Some(AttributeValue::S(pk)) = item.get("pk") {
                    keys.push(pk.clone());
                }
            }
        }
        Ok(keys)
    }

    async fn due(&self, kind: &str, until: &str, limit: usize) -> Result<Vec<Item>, StoreError> {
        let mut due = Vec::new();
        let mut pages = self
            .client()
            .await
            .query()
            .table_name(&self.name)
            .index_name(DUE_INDEX)
            .key_condition_expression("#kind = :kind AND #due <= :until")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#due", "due_at")
            .expression_attribute_values(":kind", AttributeValue::S(kind.into()))
            .expression_attribute_values(":until", AttributeValue::S(until.into()))
            .projection_expression("pk, sk, #due")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk(&e))?;
            for item in page.items.unwrap_or_default() {
                due.push(from_av(item)?);
                if due.len() >= limit {
                    return Ok(due);
                }
            }
        }
        Ok(due)
    }

    async fn put_all(&self, items: Vec<Item>, mode: PutMode) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
        if items.len() == 1 {
            let mut expr = Expr::default();
            let condition = Self::put_condition(mode, &mut expr);
            let mut req = self
                .client()
                .await
                .put_item()
                .table_name(&self.name)
                .set_item(Some(to_av(&items[0])?))
                .condition_expression(condition);
            if !expr.names.is_empty() {
                req = req.set_expression_attribute_names(Some(expr.names));
            }
            if !expr.values.is_empty() {
                req = req.set_expression_attribute_values(Some(expr.values));
            }
            return req.send().await.map(|_| ()).map_err(|e| map_sdk(&e));
        }
        let mut writes = Vec::new();
        for item in &items {
            let mut expr = Expr::default();
            let condition = Self::put_condition(mode, &mut expr);
            let put = Put::builder()
                .table_name(&self.name)
                .set_item(Some(to_av(item)?))
                .condition_expression(condition)
                .set_expression_attribute_names((!expr.names.is_empty()).then_some(expr.names))
                .set_expression_attribute_values((!expr.values.is_empty()).then_some(expr.values))
                .build()
                .map_err(|e| StoreError::Misconfigured {
                    detail: format!("a write could not be built ({e})"),
                })?;
            writes.push(TransactWriteItem::builder().put(put).build());
        }
        self.client()
            .await
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk(&e))
    }

    async fn update(&self, pk: &str, sk: &str, update: &Update) -> Result<(), StoreError> {
        let mut expr = Expr::default();
        let mut sets = Vec::new();
        for (k, v) in &update.set {
            let n = expr.name(k);
            let v = expr.value(value_av(v)?);
            sets.push(format!("{n} = {v}"));
        }
        for (k, v) in &update.set_if_missing {
            let n = expr.name(k);
            let v = expr.value(value_av(v)?);
            sets.push(format!("{n} = if_not_exists({n}, {v})"));
        }
        if update.bump_version {
            let n = expr.name("version");
            let zero = expr.value(AttributeValue::N("0".into()));
            let one = expr.value(AttributeValue::N("1".into()));
            sets.push(format!("{n} = if_not_exists({n}, {zero}) + {one}"));
        }
        let mut expression = String::new();
        if !sets.is_empty() {
            expression = format!("SET {}", sets.join(", "));
        }
        if !update.remove.is_empty() {
            let names: Vec<String> = update.remove.iter().map(|k| expr.name(k)).collect();
            expression.push_str(&format!(" REMOVE {}", names.join(", ")));
        }
        let mut conditions = vec!["attribute_exists(pk)".to_string()];
        for e in &update.expect {
            match e {
                Expect::Equals(k, v) => {
                    let n = expr.name(k);
                    let v = expr.value(value_av(v)?);
                    conditions.push(format!("{n} = {v}"));
                }
                Expect::MissingOrBelow(k, v) => {
                    let n = expr.name(k);
                    let v = expr.value(value_av(v)?);
                    conditions.push(format!("(attribute_not_exists({n}) OR {n} < {v})"));
                }
            }
        }
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Self::key(pk, sk)))
            .update_expression(expression.trim())
            .condition_expression(conditions.join(" AND "))
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values((!expr.values.is_empty()).then_some(expr.values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match map_sdk(&e) {
                // Which condition failed: the item's existence, or the writer's own?
                StoreError::Conflict { .. } if self.get(pk, sk).await?.is_none() => {
                    Err(StoreError::NotFound { what: "item".into() })
                }
                other => Err(other),
            },
        }
    }

    async fn delete(&self, pk: &str, sk: &str) -> Result<(), StoreError> {
        self.client()
            .await
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(Self::key(pk, sk)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk(&e))
    }

    async fn delete_partition(&self, pk: &str) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
        let items = self.query(pk, "").await?;
        for chunk in items.chunks(25) {
            let mut requests = Vec::new();
            for item in chunk {
                let (p, s) = key_of(item);
                let del = DeleteRequest::builder()
                    .set_key(Some(Self::key(&p, &s)))
                    .build()
                    .map_err(|e| StoreError::Misconfigured {
                        detail: format!("a delete could not be built ({e})"),
                    })?;
                requests.push(WriteRequest::builder().delete_request(del).build());
            }
            // BatchWriteItem may leave some requests unprocessed under load: retry those, bounded.
            let mut pending = requests;
            for attempt in 0..5 {
                if pending.is_empty() {
                    break;
                }
                let out = self
                    .client()
                    .await
                    .batch_write_item()
                    .request_items(&self.name, pending)
                    .send()
                    .await
                    .map_err(|e| map_sdk(&e))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.name))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
            }
            if !pending.is_empty() {
                return Err(StoreError::Unavailable {
                    detail: "DynamoDB left deletes unprocessed".into(),
                });
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Sealed refresh tokens (with `RELAY365_TOKEN_KEY_ID`)

/// The sort key of a connection's sealed refresh token, in the connection's
/// partition (so deleting the connection deletes it too).
const TOKEN_SK: &str = "tok";

/// A delegated connection's sealed refresh token as the state table keeps
/// it (`conn#{id}` / `tok`): the sign-in generation and write time in the
/// clear (writes are conditional on the generation), the envelope opaque.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedTokenItem {
    /// The sign-in the token belongs to (the connection record's `generation`).
    pub generation: u64,
    /// When it was written (unix seconds).
    pub written_at: i64,
    /// The KMS-encrypted data key, the nonce and the sealed token.
    pub envelope: crate::aws::sealed::Envelope,
}

impl std::fmt::Debug for SealedTokenItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedTokenItem")
            .field("generation", &self.generation)
            .field("written_at", &self.written_at)
            .finish_non_exhaustive()
    }
}

/// The condition a sealed token write needs, so two containers never undo
/// each other's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenWrite {
    /// Only when the connection has no sealed token yet (moving a token
    /// secret into the table).
    IfAbsent,
    /// A new sign-in: only when there is none or it is of an older or the
    /// same generation (a newer sign-in is never replaced).
    SignIn,
    /// A rotated token: only when the stored one is of the same generation
    /// (a sign-in that landed meanwhile is never replaced) and was written
    /// before `written_before` (unix seconds): the write interval is claimed
    /// by the write itself, so one container writes per interval.
    Rotation {
        /// The stored token must be older than this.
        written_before: i64,
    },
}

const TOKEN_FORMAT: u64 = 1;

fn token_attributes(item: &SealedTokenItem) -> Vec<(String, Value)> {
    use base64::Engine;
    let b64 = |b: &[u8]| Value::from(base64::engine::general_purpose::STANDARD.encode(b));
    vec![
        ("format".into(), TOKEN_FORMAT.into()),
        ("generation".into(), item.generation.into()),
        ("written_at".into(), item.written_at.into()),
        ("data_key".into(), b64(&item.envelope.encrypted_key)),
        ("nonce".into(), b64(&item.envelope.nonce)),
        ("sealed".into(), b64(&item.envelope.ciphertext)),
    ]
}

fn parse_token_item(id: &str, item: &Item) -> Result<SealedTokenItem, StoreError> {
    use base64::Engine;
    let damaged = |detail: &str| StoreError::Damaged {
        what: format!("sealed refresh token of connection {id}"),
        id: id.to_string(),
        detail: detail.to_string(),
    };
    if item.get("format").and_then(Value::as_u64) != Some(TOKEN_FORMAT) {
        return Err(damaged("unknown format"));
    }
    let number = |k: &str| {
        item.get(k)
            .and_then(Value::as_i64)
            .ok_or_else(|| damaged(&format!("no {k}")))
    };
    let bytes = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or_else(|| damaged(&format!("no readable {k}")))
    };
    Ok(SealedTokenItem {
        generation: u64::try_from(number("generation")?).map_err(|_| damaged("negative generation"))?,
        written_at: number("written_at")?,
        envelope: crate::aws::sealed::Envelope {
            encrypted_key: bytes("data_key")?,
            nonce: bytes("nonce")?,
            ciphertext: bytes("sealed")?,
        },
    })
}

fn token_what(id: &str) -> String {
    format!("sealed refresh token of connection {id}")
}

impl Store {
    /// A connection's sealed refresh token, read fresh; `None` when it has none.
    ///
    /// # Errors
    /// [`StoreError`]; `Damaged` names the connection.
    pub async fn sealed_token(&self, id: &str) -> Result<Option<SealedTokenItem>, StoreError> {
        match self.table.get(&conn_pk(id), TOKEN_SK).await? {
            Some(item) => parse_token_item(id, &item).map(Some),
            None => Ok(None),
        }
    }

    /// Writes a connection's sealed refresh token under the condition `mode`.
    ///
    /// # Errors
    /// `Conflict` when the condition failed (read again: another writer was
    /// first or a newer sign-in is stored), or another [`StoreError`].
    pub async fn put_sealed_token(
        &self,
        id: &str,
        token: &SealedTokenItem,
        mode: TokenWrite,
    ) -> Result<(), StoreError> {
        let pk = conn_pk(id);
        let attributes = token_attributes(token);
        let whole = || {
            let mut item: Item = attributes.iter().cloned().collect();
            item.insert("pk".into(), pk.clone().into());
            item.insert("sk".into(), TOKEN_SK.into());
            item
        };
        let replace = |expect: Expect| Update {
            set: attributes.clone(),
            expect: vec![expect],
            ..Update::default()
        };
        let result = match mode {
            TokenWrite::IfAbsent => self.table.put_all(vec![whole()], PutMode::IfAbsent).await,
            TokenWrite::Rotation { written_before } => {
                let mut update = replace(Expect::Equals("generation".into(), token.generation.into()));
                update
                    .expect
                    .push(Expect::MissingOrBelow("written_at".into(), written_before.into()));
                match self.table.update(&pk, TOKEN_SK, &update).await {
                    // Nothing to rotate: deleted meanwhile, or never stored.
                    Err(StoreError::NotFound { .. }) => Err(StoreError::Conflict { what: String::new() }),
                    other => other,
                }
            }
            TokenWrite::SignIn => match self.table.put_all(vec![whole()], PutMode::IfAbsent).await {
                Err(StoreError::Conflict { .. }) => {
                    let update = replace(Expect::MissingOrBelow(
                        "generation".into(),
                        token.generation.saturating_add(1).into(),
                    ));
                    match self.table.update(&pk, TOKEN_SK, &update).await {
                        // Deleted between the two writes: the put is free again.
                        Err(StoreError::NotFound { .. }) => {
                            self.table.put_all(vec![whole()], PutMode::IfAbsent).await
                        }
                        other => other,
                    }
                }
                other => other,
            },
        };
        result.map_err(|e| rename(e, &token_what(id)))
    }

    /// Deletes a connection's sealed refresh token (missing is fine).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn delete_sealed_token(&self, id: &str) -> Result<(), StoreError> {
        self.table.delete(&conn_pk(id), TOKEN_SK).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_apply_only_when_their_conditions_hold() {
        let mut item: Item =
            serde_json::from_value(serde_json::json!({"generation": 1, "status": "active"})).unwrap();
        let stale = Update {
            set: vec![("status".into(), "reauth_required".into())],
            expect: vec![Expect::Equals("generation".into(), 0.into())],
            bump_version: true,
            ..Update::default()
        };
        assert!(!apply_update(&mut item, &stale));
        assert_eq!(item["status"], "active");
        let current = Update {
            expect: vec![Expect::Equals("generation".into(), 1.into())],
            ..stale
        };
        assert!(apply_update(&mut item, &current));
        assert_eq!(
            (item["status"].as_str(), item["version"].as_u64()),
            (Some("reauth_required"), Some(1))
        );
        let forward = |w: &str| Update {
            set: vec![("watermark".into(), w.into())],
            expect: vec![Expect::MissingOrBelow("watermark".into(), w.into())],
            ..Update::default()
        };
        assert!(apply_update(&mut item, &forward("2026-11-22T18:00:00Z")));
        assert!(!apply_update(&mut item, &forward("2026-11-22T17:00:00Z")));
    }

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

#[cfg(test)]
mod conversation_contact_tests {
    use super::*;

    #[tokio::test]
    async fn the_first_contact_of_a_conversation_is_kept_per_flow_and_instance() {
        let store = Store::memory();
        let first = ConversationContact {
            contact_id: "c-1".into(),
            event_id: "evt_1".into(),
        };
        let second = ConversationContact {
            contact_id: "c-2".into(),
            event_id: "evt_2".into(),
        };
        assert_eq!(
            store.conversation_contact("a", "f", "conv", "i").await.unwrap(),
            None
        );
        assert!(
            store
                .remember_conversation_contact("a", "f", "conv", "i", &first)
                .await
                .unwrap()
        );
        assert!(
            !store
                .remember_conversation_contact("a", "f", "conv", "i", &second)
                .await
                .unwrap()
        );
        assert_eq!(
            store.conversation_contact("a", "f", "conv", "i").await.unwrap(),
            Some(first.clone())
        );
        // Another instance, flow, conversation or connection knows nothing of it.
        assert_eq!(
            store.conversation_contact("a", "f", "conv", "j").await.unwrap(),
            None
        );
        assert_eq!(
            store.conversation_contact("a", "g", "conv", "i").await.unwrap(),
            None
        );
        assert_eq!(
            store.conversation_contact("a", "f", "other", "i").await.unwrap(),
            None
        );
        assert_eq!(
            store.conversation_contact("b", "f", "conv", "i").await.unwrap(),
            None
        );
        // A very long conversation id still has a key.
        let long = "c".repeat(2000);
        assert!(
            store
                .remember_conversation_contact("a", "f", &long, "i", &first)
                .await
                .unwrap()
        );
        assert_eq!(
            store.conversation_contact("a", "f", &long, "i").await.unwrap(),
            Some(first)
        );
        // The connection's own record and subscriptions are untouched.
        assert_eq!(store.connection("a").await.unwrap(), None);
    }
}
