//! The moto the tests run keeps DynamoDB's transaction contract: its
//! launcher replaces moto's whole-table rollback copy with one of the
//! touched items, so a cancelled transaction must still leave every item as
//! it was, and a committed one every change. It also keeps SQS's FIFO
//! contract under concurrent long polls: its launcher replaces moto's long
//! poll, which could hand a group's next message to a second poller.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update};
use relay365_testkit::{Aws, create_state_table};

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn key(pk: &str) -> std::collections::HashMap<String, AttributeValue> {
    [("pk".to_string(), s(pk)), ("sk".to_string(), s("x"))].into()
}

async fn items(ddb: &aws_sdk_dynamodb::Client) -> Vec<(String, Option<String>)> {
    let mut all: Vec<_> = ddb
        .scan()
        .table_name("t")
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            (
                i["pk"].as_s().unwrap().clone(),
                i.get("v").and_then(|v| v.as_s().ok()).cloned(),
            )
        })
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn a_cancelled_transaction_leaves_every_item_as_it_was() {
    let aws = Aws::start().await;
    let sdk = aws.sdk_config().await;
    create_state_table(&sdk, "t").await.unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    for pk in ["a", "b"] {
        ddb.put_item()
            .table_name("t")
            .set_item(Some(key(pk)))
            .item("v", s("1"))
            .send()
            .await
            .unwrap();
    }
    let put_c = TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name("t")
                .set_item(Some(key("c")))
                .build()
                .unwrap(),
        )
        .build();
    let update_a = TransactWriteItem::builder()
        .update(
            Update::builder()
                .table_name("t")
                .set_key(Some(key("a")))
                .update_expression("SET v = :v")
                .expression_attribute_values(":v", s("2"))
                .build()
                .unwrap(),
        )
        .build();
    let delete_b = TransactWriteItem::builder()
        .delete(
            Delete::builder()
                .table_name("t")
                .set_key(Some(key("b")))
                .build()
                .unwrap(),
        )
        .build();
    let missing = TransactWriteItem::builder()
        .condition_check(
            ConditionCheck::builder()
                .table_name("t")
                .set_key(Some(key("nobody")))
                .condition_expression("attribute_exists(pk)")
                .build()
                .unwrap(),
        )
        .build();

    let cancelled = ddb
        .transact_write_items()
        .transact_items(put_c.clone())
        .transact_items(update_a.clone())
        .transact_items(delete_b)
        .transact_items(missing)
        .send()
        .await;
    // Cancelled for the failed condition (the fourth item), not refused
    // before anything was applied.
    let err = cancelled.expect_err("the failed condition cancels the transaction");
    let reasons: Vec<Option<&str>> = err
        .as_service_error()
        .and_then(|e| match e {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
                Some(c.cancellation_reasons().iter().map(|r| r.code()).collect())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("not a TransactionCanceledException: {err:?}"));
    assert_eq!(reasons[3], Some("ConditionalCheckFailed"), "{reasons:?}");
    assert_eq!(
        items(&ddb).await,
        [("a".into(), Some("1".into())), ("b".into(), Some("1".into()))]
    );

    ddb.transact_write_items()
        .transact_items(put_c)
        .transact_items(update_a)
        .send()
        .await
        .unwrap();
    assert_eq!(
        items(&ddb).await,
        [
            ("a".into(), Some("2".into())),
            ("b".into(), Some("1".into())),
            ("c".into(), None)
        ]
    );
}

#[tokio::test]
async fn concurrent_long_polls_never_hold_one_fifo_group_twice() {
    use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
    let aws = Aws::start().await;
    let sqs = aws_sdk_sqs::Client::new(&aws.sdk_config().await);
    let url = sqs
        .create_queue()
        .queue_name("groups.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let poll = || async {
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(1)
            .wait_time_seconds(3)
            .visibility_timeout(60)
            .send()
            .await
            .unwrap();
        out.messages.unwrap_or_default()
    };
    // Both polls wait on the empty queue when the group's two messages come.
    let send = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let entry = |id: &str| {
            SendMessageBatchRequestEntry::builder()
                .id(id)
                .message_body(id)
                .message_group_id("g")
                .message_deduplication_id(id)
                .build()
                .unwrap()
        };
        sqs.send_message_batch()
            .queue_url(&url)
            .entries(entry("first"))
            .entries(entry("second"))
            .send()
            .await
            .unwrap();
    };
    let (a, b, ()) = tokio::join!(poll(), poll(), send);
    let bodies: Vec<String> = a.iter().chain(&b).filter_map(|m| m.body.clone()).collect();
    assert_eq!(bodies, ["first"], "one message of the group at a time, the first");
    // Once the first is deleted, the group's next message is handed out.
    let handle = a.iter().chain(&b).find_map(|m| m.receipt_handle.clone()).unwrap();
    sqs.delete_message()
        .queue_url(&url)
        .receipt_handle(handle)
        .send()
        .await
        .unwrap();
    let next: Vec<String> = poll().await.into_iter().filter_map(|m| m.body).collect();
    assert_eq!(next, ["second"]);
}
