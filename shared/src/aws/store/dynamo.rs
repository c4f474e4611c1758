//! The state table on DynamoDB: consistent reads, conditional writes, and
//! `TransactWriteItems` for items that must appear together; SDK errors
//! mapped to [`StoreError`]s that say what to do.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use super::table::{Expect, PutMode, Table, Update};
use super::{DUE_INDEX, Item, KIND_INDEX, StoreError, key_of};

/// [`Table`] on DynamoDB: consistent reads, conditional writes,
/// `TransactWriteItems` for items that must appear together.
pub(super) struct DynamoTable {
    pub(super) client: Arc<crate::aws::sdk::LazyClient<aws_sdk_dynamodb::Client>>,
    pub(super) name: String,
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

/// Runs a query page by page and hands each item to `keep`, until the pages
/// end or `keep` answers `false`: the one paginated loop of every query.
async fn each_item(
    req: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    mut keep: impl FnMut(HashMap<String, AttributeValue>) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut pages = req.into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| map_sdk(&e))?;
        for item in page.items.unwrap_or_default() {
            if !keep(item)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

impl DynamoTable {
    /// A query of one of the indexes keyed by `kind`, for the items of
    /// `kind` that `condition` (on `#kind = :kind`) selects.
    async fn kind_query(
        &self,
        index: &str,
        condition: &str,
        kind: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client()
            .await
            .query()
            .table_name(&self.name)
            .index_name(index)
            .key_condition_expression(condition)
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":kind", AttributeValue::S(kind.into()))
    }

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
        each_item(req, |item| {
            items.push(from_av(item)?);
            Ok(true)
        })
        .await?;
        Ok(items)
    }

    async fn keys_of_kind(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let req = self
            .kind_query(KIND_INDEX, "#kind = :kind", kind)
            .await
            .projection_expression("pk");
        each_item(req, |mut item| {
            if let Some(AttributeValue::S(pk)) = item.remove("pk") {
                keys.push(pk);
            }
            Ok(true)
        })
        .await?;
        Ok(keys)
    }

    async fn due(&self, kind: &str, until: &str, limit: usize) -> Result<Vec<Item>, StoreError> {
        let mut due = Vec::new();
        let req = self
            .kind_query(DUE_INDEX, "#kind = :kind AND #due <= :until", kind)
            .await
            .expression_attribute_names("#due", "due_at")
            .expression_attribute_values(":until", AttributeValue::S(until.into()))
            .projection_expression("pk, sk, #due");
        each_item(req, |item| {
            due.push(from_av(item)?);
            Ok(due.len() < limit)
        })
        .await?;
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
