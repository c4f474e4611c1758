//! What dispatch needs, built once per container.

use relay365::services::Services;

/// The dispatcher's dependencies.
pub struct Dispatcher {
    /// Shared services.
    pub services: Services,
    /// For `eventbridge:` targets; built on the first event for one.
    pub(crate) eventbridge: relay365::aws::sdk::LazyClient<aws_sdk_eventbridge::Client>,
}

impl Dispatcher {
    /// Wraps services; the EventBridge client is built only if an event goes to a bus.
    pub fn new(services: Services) -> Self {
        Self {
            services,
            eventbridge: relay365::aws::sdk::LazyClient::new(aws_sdk_eventbridge::Client::new),
        }
    }

    /// Everything from the environment, once per container.
    ///
    /// # Errors
    /// [`relay365::services::StartupError`] naming what to fix.
    pub async fn from_env() -> Result<Self, relay365::services::StartupError> {
        Ok(Self::new(Services::from_env().await?))
    }
}
