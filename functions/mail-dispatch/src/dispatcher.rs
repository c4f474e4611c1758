//! What dispatch needs, built once per container.

use std::sync::Arc;

use relay365::Sensitive;
use relay365::aws::queue::{Queue, SqsQueue};
use relay365::aws::secret_value::SecretValue;
use relay365::services::{Services, StartupError};
use relay365::web::signing::EventSigner;

use crate::destination::TARGET_TIMEOUT;

/// The dispatcher's dependencies.
pub struct Dispatcher {
    /// Shared services.
    pub services: Services,
    /// Signs events with the event signing secret (the flows' key), re-read
    /// with the secret TTL so a rotation reaches warm containers.
    pub(crate) events: SecretValue<EventSigner>,
    /// For `eventbridge:` targets; built on the first event for one.
    pub(crate) eventbridge: relay365::aws::sdk::LazyClient<aws_sdk_eventbridge::Client>,
    /// For `connect-task:` and `connect-email:` targets and the reply path;
    /// built on the first contact
    /// (`AWS_ENDPOINT_URL_CONNECT` names another endpoint).
    pub(crate) connect: relay365::aws::sdk::LazyClient<aws_sdk_connect::Client>,
    /// For the attachments of `connect-email:` contacts, staged in the
    /// attachments bucket (`RELAY365_ATTACHMENTS_BUCKET`); built on first use.
    pub(crate) s3: relay365::aws::sdk::LazyClient<aws_sdk_s3::Client>,
    /// The notification queue itself (`RELAY365_QUEUE_URL`): catch-up steps
    /// queue what they find and their continuation there, and a failed
    /// record is made visible again after its own backoff.
    pub(crate) queue: Option<Arc<dyn Queue>>,
    /// The first retry's wait ([`crate::FIRST_RETRY`]).
    pub(crate) first_retry: std::time::Duration,
}

impl Dispatcher {
    /// Wraps services and the event signer; the EventBridge client is built
    /// only if an event goes to a bus.
    pub fn new(services: Services, events: EventSigner) -> Self {
        Self::with_events(services, SecretValue::fixed(events))
    }

    fn with_events(mut services: Services, events: SecretValue<EventSigner>) -> Self {
        // Dispatch's Graph reads give up sooner than a request's: a record
        // must fit its share of the invocation (crate::STEP_BUDGET).
        services.graph = relay365::microsoft::graph::GraphClient::new(
            services.http.clone(),
            &services.config.graph_base(services.config.cloud),
            relay365::microsoft::graph::RetryPolicy {
                deadline: crate::GRAPH_DEADLINE,
                ..Default::default()
            },
        );
        let first_retry = services.config.first_retry.unwrap_or(crate::FIRST_RETRY);
        let queue = services
            .config
            .queue_url
            .clone()
            .map(|url| Arc::new(SqsQueue::lazy(url)) as Arc<dyn Queue>);
        Self {
            services,
            events,
            eventbridge: relay365::aws::sdk::LazyClient::new(aws_sdk_eventbridge::Client::new),
            connect: relay365::aws::sdk::LazyClient::new(connect_client),
            s3: relay365::aws::sdk::LazyClient::new(aws_sdk_s3::Client::new),
            queue,
            first_retry,
        }
    }

    /// Waits `first` before a failed record's first retry, doubling from
    /// there (tests that make a target fail on purpose, to keep them short).
    pub fn with_first_retry(mut self, first: std::time::Duration) -> Self {
        self.first_retry = first;
        self
    }

    /// Uses this notification queue (tests, tools).
    pub fn with_queue(mut self, queue: Arc<dyn Queue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Sends to EventBridge through this client (tests, tools).
    pub fn with_eventbridge(mut self, client: aws_sdk_eventbridge::Client) -> Self {
        self.eventbridge = relay365::aws::sdk::LazyClient::ready(client);
        self
    }

    /// Starts Amazon Connect tasks through this client (tests, tools).
    pub fn with_connect(mut self, client: aws_sdk_connect::Client) -> Self {
        self.connect = relay365::aws::sdk::LazyClient::ready(client);
        self
    }

    /// Stages Amazon Connect email attachments through this S3 client (tests, tools).
    pub fn with_s3(mut self, client: aws_sdk_s3::Client) -> Self {
        self.s3 = relay365::aws::sdk::LazyClient::ready(client);
        self
    }

    /// Wraps services, reading the event signing secret their settings name.
    ///
    /// # Errors
    /// [`StartupError`] naming the setting or secret to fix.
    pub async fn load(services: Services) -> Result<Self, StartupError> {
        let Some(id) = services.config.event_signing_secret_id.clone() else {
            return Err(StartupError::Config(relay365::config::ConfigError {
                name: "RELAY365_EVENT_SIGNING_SECRET_ID",
                message: "is required by mail-dispatch; the SAM template sets it".into(),
            }));
        };
        let events = SecretValue::load(
            services.store.clone(),
            &id,
            services.config.secret_ttl,
            |raw| EventSigner::from_secret(&Sensitive::new(raw)).map_err(|e| e.to_string()),
            |raw| EventSigner::from_secret(&Sensitive::new(raw)).map_err(StartupError::SigningKey),
        )
        .await?
        .ok_or(StartupError::Missing(id.clone(), "the template generates it"))?;
        Ok(Self::with_events(services, events))
    }

    /// Everything from the environment, once per container.
    ///
    /// # Errors
    /// [`StartupError`] naming what to fix.
    pub async fn from_env() -> Result<Self, StartupError> {
        Self::load(Services::from_env().await?).await
    }
}

/// The Connect client of a container: the SDK configuration's, with a
/// deadline that fits a record's delivery share ([`TARGET_TIMEOUT`]).
fn connect_client(sdk: &aws_config::SdkConfig) -> aws_sdk_connect::Client {
    // The deployment's AWS timeouts, with the whole call cut to the target's share.
    let timeouts = relay365::aws::sdk::timeouts()
        .to_builder()
        .operation_timeout(TARGET_TIMEOUT)
        .build();
    let config = aws_sdk_connect::config::Builder::from(sdk)
        .timeout_config(timeouts)
        .build();
    aws_sdk_connect::Client::from_conf(config)
}
