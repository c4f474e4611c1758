//! The AWS resources `template.yaml` creates, made in moto.
//!
//! They live apart from [`crate::Demo::start`] because each mirrors a piece
//! of the template (names, queue attributes, redrive policies) and must stay
//! checkable against it on its own; the test below reads the template.

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

use crate::{DemoError, setup};

/// Names of the resources the stack created in moto.
#[derive(Debug, Clone)]
pub struct Resources {
    /// The notifications queue (FIFO).
    pub queue_url: String,
    /// Its dead-letter queue.
    pub dlq_url: String,
    /// The deferred-send queue (standard), consumed by send-mail.
    pub deferred_url: String,
    /// Its dead-letter queue.
    pub deferred_dlq_url: String,
    /// The attachments bucket.
    pub bucket: String,
    /// The KMS key that seals delegated refresh tokens (the template's
    /// `TokenKey`), as `RELAY365_TOKEN_KEY_ID` names it.
    pub token_key: String,
    /// The state table.
    pub table: String,
}

/// The notification queue's visibility timeout in template.yaml (six times
/// mail-dispatch's Timeout of 90 s, as Lambda's SQS event source asks).
const NOTIFICATION_VISIBILITY_SECONDS: u32 = 540;

/// What `template.yaml` creates: the three secrets, the notification queue
/// (FIFO) and the deferred-send queue with their dead-letter queues, the
/// state table, the attachments bucket and the token key.
pub(crate) async fn create(
    sdk: &aws_config::SdkConfig,
    app_secret: &str,
    signing_key: &str,
    event_signing_key: &str,
) -> Result<Resources, DemoError> {
    create_secrets(sdk, app_secret, signing_key, event_signing_key).await?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let (queue_url, dlq_url) = create_notification_queues(&sqs).await?;
    let (deferred_url, deferred_dlq_url) = create_deferred_queues(&sqs).await?;
    let table = "relay365-state".to_string();
    relay365_testkit::create_state_table(sdk, &table)
        .await
        .map_err(DemoError::Setup)?;
    let bucket = "relay365-attachments".to_string();
    aws_sdk_s3::Client::new(sdk)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .map_err(setup("the attachments bucket"))?;
    // The template always seals refresh tokens; so does the local stack.
    let token_key = relay365_testkit::create_token_key(sdk)
        .await
        .map_err(DemoError::Setup)?;
    Ok(Resources {
        token_key,
        queue_url,
        dlq_url,
        deferred_url,
        deferred_dlq_url,
        bucket,
        table,
    })
}

/// The app registration, the notification signing key and the flow's event
/// signing key, under the names the functions' environment gives.
async fn create_secrets(
    sdk: &aws_config::SdkConfig,
    app_secret: &str,
    signing_key: &str,
    event_signing_key: &str,
) -> Result<(), DemoError> {
    let sm = aws_sdk_secretsmanager::Client::new(sdk);
    for (name, value) in [
        ("relay365/app", app_secret),
        ("relay365/signing-key", signing_key),
        ("relay365/event-signing-key", event_signing_key),
    ] {
        sm.create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .map_err(setup(name))?;
    }
    Ok(())
}

/// The notifications queue (FIFO) and its dead-letter queue: (queue, DLQ) URLs.
async fn create_notification_queues(sqs: &aws_sdk_sqs::Client) -> Result<(String, String), DemoError> {
    // The template's visibility timeout: 6× dispatch's timeout. A shorter
    // one hands a record that an invocation still works on to a second
    // invocation, which delivers it again. Dispatch makes a failed record
    // visible again after its own backoff (`RELAY365_FIRST_RETRY_SECONDS`,
    // short in the demo so a person sees it happen).
    let queues = QueuePair {
        name: "relay365-notifications.fifo",
        dlq_name: "relay365-dlq.fifo",
        fifo: true,
        visibility_seconds: NOTIFICATION_VISIBILITY_SECONDS,
        max_receive_count: 5,
        what: "the notifications queue",
    };
    create_queue_pair(sqs, &queues).await
}

/// Sends too large for one API request (the template's DeferredSendQueue)
/// and their dead-letter queue: (queue, DLQ) URLs.
async fn create_deferred_queues(sqs: &aws_sdk_sqs::Client) -> Result<(String, String), DemoError> {
    let queues = QueuePair {
        name: "relay365-deferred-sends",
        dlq_name: "relay365-deferred-sends-dlq",
        fifo: false,
        visibility_seconds: 960,
        max_receive_count: 3,
        what: "the deferred-send queue",
    };
    create_queue_pair(sqs, &queues).await
}

/// A queue and the dead-letter queue its records end in, as the template
/// declares them.
struct QueuePair<'a> {
    /// The queue's name (ending in `.fifo` for a FIFO queue).
    name: &'a str,
    /// Its dead-letter queue's name.
    dlq_name: &'a str,
    /// Both are FIFO queues.
    fifo: bool,
    /// The queue's visibility timeout.
    visibility_seconds: u32,
    /// Receives before a record moves to the dead-letter queue.
    max_receive_count: u32,
    /// What the queue is, for a set-up error.
    what: &'a str,
}

/// Creates the dead-letter queue, then the queue that redrives to it:
/// (queue, DLQ) URLs.
async fn create_queue_pair(
    sqs: &aws_sdk_sqs::Client,
    q: &QueuePair<'_>,
) -> Result<(String, String), DemoError> {
    let what_dlq = format!("{}'s dead-letter queue", q.what);
    let fifo = |req: aws_sdk_sqs::operation::create_queue::builders::CreateQueueFluentBuilder| {
        if q.fifo {
            req.attributes(QueueAttributeName::FifoQueue, "true")
        } else {
            req
        }
    };
    let dlq_url = fifo(sqs.create_queue().queue_name(q.dlq_name))
        .send()
        .await
        .map_err(setup(&what_dlq))?
        .queue_url
        .unwrap_or_default();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(setup(&what_dlq))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .unwrap_or_default();
    let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": q.max_receive_count});
    let queue_url = fifo(sqs.create_queue().queue_name(q.name))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            q.visibility_seconds.to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .map_err(setup(q.what))?
        .queue_url
        .unwrap_or_default();
    Ok((queue_url, dlq_url))
}

#[cfg(test)]
mod tests {
    /// A visibility timeout shorter than an invocation hands a record still
    /// in work to a second invocation, which delivers it again: the demo
    /// keeps the template's.
    #[test]
    fn the_notification_queue_keeps_the_template_s_visibility_timeout() {
        let template = include_str!("../../template.yaml");
        let block: Vec<&str> = template
            .lines()
            .skip_while(|l| *l != "  NotificationQueue:")
            .skip(1)
            .take_while(|l| l.trim().is_empty() || l.starts_with("    "))
            .collect();
        let visibility = block
            .iter()
            .find_map(|l| l.trim().strip_prefix("VisibilityTimeout:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        assert_eq!(visibility, Some(super::NOTIFICATION_VISIBILITY_SECONDS));
    }
}
