//! [`MemoryTable`]: the state table in memory, with DynamoDB's semantics for
//! the operations the store uses, for unit tests and network-free local runs.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;

use super::table::{Expect, PutMode, Table, Update};
use super::{Item, StoreError, key_of};

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
}
