//! `relay365 dlq`: how many notifications (and deferred sends) wait in the
//! dead-letter queues, why deliveries failed last, and `redrive` to move them
//! back once the cause is fixed. Message bodies are never printed: a
//! notification carries its subscription's clientState.

use std::process::ExitCode;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::api::Api;
use crate::error::{CliError, aws_error};
use crate::stack::Stack;
use crate::ui::{self, Mode, s};

/// `relay365 dlq [redrive]`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    /// What to do (default: show what waits).
    #[command(subcommand)]
    pub action: Option<DlqAction>,
}

/// `relay365 dlq redrive`.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Move what waits back to its queue, to be delivered (nothing is delivered twice).
    #[command(after_help = "Example:\n  relay365 dlq redrive\n  relay365 dlq redrive --deferred")]
    Redrive {
        /// The deferred sends' dead-letter queue instead of the notifications'.
        #[arg(long)]
        deferred: bool,
    },
}

/// The two dead-letter queues: (name, its logical id, the queue it feeds).
const QUEUES: [(&str, &str, &str); 2] = [
    (
        "notifications",
        "NotificationDeadLetterQueue",
        "NotificationQueue",
    ),
    (
        "deferred sends",
        "DeferredSendDeadLetterQueue",
        "DeferredSendQueue",
    ),
];

/// How many messages wait in a queue (visible and in flight).
///
/// # Errors
/// When SQS refuses, or answers without either count (a count of 0 would
/// say the dead-letter queue is empty when nobody knows).
pub async fn waiting(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64, CliError> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| aws_error(&format!("SQS GetQueueAttributes {url}"), e))?
        .attributes
        .unwrap_or_default();
    let n = |k: QueueAttributeName| {
        attrs
            .get(&k)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| CliError::Aws(format!("SQS GetQueueAttributes {url} answered without {k}")))
    };
    Ok(n(QueueAttributeName::ApproximateNumberOfMessages)?
        + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?)
}

/// Subscriptions whose last delivery failed: (connection, subscription key, error, when).
pub fn delivery_errors(all: &Value) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for c in all["connections"].as_array().into_iter().flatten() {
        for sub in c["subscriptions"].as_array().into_iter().flatten() {
            if !s(sub, "last_delivery_error").is_empty() {
                out.push((
                    s(c, "id").to_string(),
                    s(sub, "key").to_string(),
                    s(sub, "last_delivery_error").to_string(),
                    s(sub, "last_delivery_error_at").to_string(),
                ));
            }
        }
    }
    out
}

/// Runs `relay365 dlq`.
///
/// # Errors
/// When SQS or the API fails.
pub async fn run(stack: &Stack, args: &DlqArgs, mode: Mode) -> Result<ExitCode, CliError> {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    if let Some(DlqAction::Redrive { deferred }) = &args.action {
        return redrive(stack, &sqs, *deferred, mode).await;
    }
    let mut counts = Vec::new();
    for (name, dlq, _) in QUEUES {
        let url = stack.resource(dlq)?;
        counts.push((name, waiting(&sqs, url).await?));
    }
    let all = Api::new(stack)?.get("/connections").await?;
    let errors = delivery_errors(&all);
    if mode == Mode::Json {
        ui::json(&json!({
            "notifications": counts[0].1,
            "deferred_sends": counts[1].1,
            "last_delivery_errors": errors.iter().map(|(c, k, e, at)| json!({"connection": c, "subscription": k, "error": e, "at": at})).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    for (name, n) in &counts {
        println!("{n} {name} wait in the dead-letter queue");
    }
    if errors.is_empty() {
        println!("No subscription reports a failed delivery.");
    } else {
        println!("\nLast delivery errors:");
        for (c, k, e, at) in &errors {
            println!("  {c} {k} ({at}): {e}");
        }
    }
    if counts.iter().any(|(_, n)| *n > 0) {
        println!(
            "\nOnce the cause is fixed: `relay365 dlq redrive` (notifications) or `relay365 dlq redrive --deferred`. Nothing is delivered twice."
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, CliError> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| aws_error(&format!("SQS GetQueueAttributes {url}"), e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| CliError::Aws(format!("SQS gave no ARN for {url}")))
}

async fn redrive(
    stack: &Stack,
    sqs: &aws_sdk_sqs::Client,
    deferred: bool,
    mode: Mode,
) -> Result<ExitCode, CliError> {
    let (name, dlq, queue) = QUEUES[usize::from(deferred)];
    let dlq_url = stack.resource(dlq)?.to_string();
    let queue_url = stack.resource(queue)?.to_string();
    let before = waiting(sqs, &dlq_url).await?;
    if before == 0 {
        match mode {
            Mode::Json => ui::json(&json!({"moved": 0})),
            Mode::Human => println!("No {name} wait in the dead-letter queue."),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let bar = ui::spinner(&format!("moving {before} {name} back"));
    let moved = if stack.local {
        move_by_hand(sqs, &dlq_url, &queue_url).await?
    } else {
        move_task(sqs, &dlq_url, &queue_url).await?
    };
    bar.finish_and_clear();
    match mode {
        Mode::Json => ui::json(&json!({"moved": moved})),
        Mode::Human => println!(
            "{}",
            ui::check_line(
                true,
                &format!(
                    "{moved} {name} moved back; they are delivered as the queue hands them over (nothing twice)"
                ),
                None
            )
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// SQS's own redrive (StartMessageMoveTask), waited for.
async fn move_task(sqs: &aws_sdk_sqs::Client, dlq_url: &str, queue_url: &str) -> Result<u64, CliError> {
    let source = arn(sqs, dlq_url).await?;
    let destination = arn(sqs, queue_url).await?;
    sqs.start_message_move_task()
        .source_arn(&source)
        .destination_arn(&destination)
        .send()
        .await
        .map_err(|e| {
            aws_error(
                "SQS StartMessageMoveTask (you need sqs:StartMessageMoveTask on the dead-letter queue)",
                e,
            )
        })?;
    loop {
        let tasks = sqs
            .list_message_move_tasks()
            .source_arn(&source)
            .max_results(1)
            .send()
            .await
            .map_err(|e| aws_error("SQS ListMessageMoveTasks", e))?;
        let Some(task) = tasks.results.unwrap_or_default().into_iter().next() else {
            return Err(CliError::Aws(
                "SQS lists no move task for the dead-letter queue".into(),
            ));
        };
        let moved = u64::try_from(task.approximate_number_of_messages_moved).unwrap_or(0);
        match task.status.as_deref() {
            Some("COMPLETED") => return Ok(moved),
            Some(status @ ("FAILED" | "CANCELLED")) => {
                return Err(CliError::Aws(format!(
                    "the move task ended {status} after {moved} message(s) ({}); run `relay365 dlq redrive` again",
                    task.failure_reason.unwrap_or_default()
                )));
            }
            _ => tokio::time::sleep(Duration::from_secs(3)).await,
        }
    }
}

/// What the move task does, for the demo's moto (which has none): each
/// message sent to the queue again, in its message group, then deleted from
/// the dead-letter queue. A new deduplication id, since SQS would drop a
/// resend within five minutes of the first send under the old one.
async fn move_by_hand(sqs: &aws_sdk_sqs::Client, dlq_url: &str, queue_url: &str) -> Result<u64, CliError> {
    let fifo = queue_url.ends_with(".fifo");
    let mut moved = 0;
    loop {
        let out = sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .visibility_timeout(60)
            .send()
            .await
            .map_err(|e| aws_error("SQS ReceiveMessage", e))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(moved);
        }
        for m in messages {
            let mut send = sqs
                .send_message()
                .queue_url(queue_url)
                .message_body(m.body().unwrap_or_default());
            if fifo {
                let group = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
                    .unwrap_or_else(|| "redrive".into());
                send = send
                    .message_group_id(group)
                    .message_deduplication_id(format!("redrive-{}", uuid::Uuid::new_v4().simple()));
            }
            send.send().await.map_err(|e| aws_error("SQS SendMessage", e))?;
            if let Some(h) = m.receipt_handle() {
                sqs.delete_message()
                    .queue_url(dlq_url)
                    .receipt_handle(h)
                    .send()
                    .await
                    .map_err(|e| aws_error("SQS DeleteMessage", e))?;
            }
            moved += 1;
        }
    }
}
