//! What invokes the functions besides the API: Lambda's SQS event source
//! mappings and the EventBridge renewal schedule.
//!
//! Both are AWS services the local stack plays itself, so the events they
//! build ([`sqs_record`], [`scheduled_event`]) are public: the end-to-end
//! tests hand the same shapes to the functions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use serde_json::{Value, json};

use crate::{Function, InvokeError, Resources};

/// The functions by name, as the event sources invoke them.
type Functions = Arc<HashMap<&'static str, Function>>;

/// The template's two SQS event source mappings: mail-dispatch takes the
/// notifications in batches of 10 (unless `dispatch` is off, for a harness
/// that runs its own), send-mail the deferred sends one at a time.
pub(crate) fn start_mappings(
    sdk: &aws_config::SdkConfig,
    resources: &Resources,
    functions: &Functions,
    dispatch: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut tasks = vec![tokio::spawn(event_source(
        sqs.clone(),
        resources.deferred_url.clone(),
        functions.clone(),
        "send-mail",
        1,
    ))];
    if dispatch {
        tasks.push(tokio::spawn(event_source(
            sqs,
            resources.queue_url.clone(),
            functions.clone(),
            "mail-dispatch",
            10,
        )));
    }
    tasks
}

/// The renewal rule: a scheduled run of `connections` every `every`, the
/// first one `every` from now.
pub(crate) fn start_schedule(functions: Functions, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            match renew(&functions).await {
                Ok(report) => eprintln!("renewal schedule: {report}"),
                Err(e) => eprintln!("renewal schedule: {e}"),
            }
        }
    })
}

/// One run of the renewal rule: `connections` with a scheduled event.
pub(crate) async fn renew(functions: &HashMap<&'static str, Function>) -> Result<Value, InvokeError> {
    match functions.get("connections") {
        Some(f) => f.invoke(&scheduled_event()).await,
        None => Ok(Value::Null),
    }
}

/// EventBridge's scheduled event, as the renewal rule sends it.
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": relay365::model::rfc3339(time::OffsetDateTime::now_utc()),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/relay365-renewal"],
        "detail": {}
    })
}

/// One SQS message as the event source mapping hands it to a function,
/// inside an `SqsEvent`'s `Records`.
pub fn sqs_record(m: &Message, queue_arn: &str) -> Value {
    let attributes: serde_json::Map<String, Value> = m
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": m.message_id(),
        "receiptHandle": m.receipt_handle(),
        "body": m.body(),
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": m.md5_of_body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1",
    })
}

/// Lambda's SQS event source mapping (mail-dispatch's notifications in
/// batches of 10, send-mail's deferred sends one at a time): long-poll
/// batches of up to `batch`, hand them over as an `SqsEvent`, delete what
/// succeeded (all of it unless `batchItemFailures` names some), and leave the
/// rest to come back after the visibility timeout (and to the dead-letter
/// queue after its maximum receives).
async fn event_source(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    functions: Functions,
    function: &'static str,
    batch: i32,
) {
    let Some(consumer) = functions.get(function) else {
        return;
    };
    let arn = queue_arn(&queue_url);
    loop {
        let Some(messages) = receive(&sqs, &queue_url, batch).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if messages.is_empty() {
            continue;
        }
        let failed = hand_over(consumer, &messages, &arn).await;
        delete_all_but(&sqs, &queue_url, &messages, &failed).await;
    }
}

/// The ARN of the queue at `queue_url`, as the demo's account spells it.
pub(crate) fn queue_arn(queue_url: &str) -> String {
    format!(
        "arn:aws:sqs:us-east-1:123456789012:{}",
        queue_url.rsplit('/').next().unwrap_or("queue")
    )
}

/// One long poll of up to `batch` messages (none when SQS fails).
pub(crate) async fn receive(sqs: &aws_sdk_sqs::Client, queue_url: &str, batch: i32) -> Option<Vec<Message>> {
    let out = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(batch)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .wait_time_seconds(1)
        .send()
        .await
        .ok()?;
    Some(out.messages.unwrap_or_default())
}

/// Invokes the consumer with the batch and returns the ids of the messages
/// that failed.
async fn hand_over(consumer: &Function, messages: &[Message], queue_arn: &str) -> Vec<String> {
    let records: Vec<Value> = messages.iter().map(|m| sqs_record(m, queue_arn)).collect();
    let answer = consumer.invoke(&json!({ "Records": records })).await;
    if let Err(e) = &answer {
        eprintln!("{e}");
    }
    failed_ids(&answer, messages)
}

/// The ids of a batch's messages that failed: those the consumer's answer
/// names in `batchItemFailures`, or all of them when the invocation itself
/// failed (Lambda's event source treats a failed invocation so).
pub(crate) fn failed_ids<C: FromIterator<String>, E>(answer: &Result<Value, E>, messages: &[Message]) -> C {
    match answer {
        Ok(resp) => resp["batchItemFailures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
            .collect(),
        Err(_) => messages
            .iter()
            .filter_map(|m| m.message_id().map(str::to_string))
            .collect(),
    }
}

/// Deletes every message of the batch but the `failed` ones, in one
/// request, as Lambda's event source deletes a batch (a batch is at most 10,
/// SQS's most per request).
pub(crate) async fn delete_all_but(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[Message],
    failed: &[String],
) {
    let done: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .filter(|m| !failed.iter().any(|f| Some(f.as_str()) == m.message_id()))
        .enumerate()
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle()?)
                .build()
                .ok()
        })
        .collect();
    if !done.is_empty() {
        let _ = sqs
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(done))
            .send()
            .await;
    }
}
