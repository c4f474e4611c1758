//! What the store remembers once, for a while: the delivery ledger (one item
//! per delivered mail, so nothing is delivered twice), send-mail's
//! idempotency claims, and the first Amazon Connect contact of a
//! conversation (so later mail of it is related to that contact).

use serde_json::Value;
use time::OffsetDateTime;

use super::table::{PutMode, Update};
use super::{DELIVERY_TTL_DAYS, Item, Store, StoreError, conn_pk, now_unix, rfc3339};

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

impl Store {
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
        for (id, flow, conversation, instance) in [
            ("a", "f", "conv", "j"),
            ("a", "g", "conv", "i"),
            ("a", "f", "other", "i"),
            ("b", "f", "conv", "i"),
        ] {
            assert_eq!(
                store
                    .conversation_contact(id, flow, conversation, instance)
                    .await
                    .unwrap(),
                None,
                "{id} {flow} {conversation} {instance}"
            );
        }
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
