//! What the whole-system suites of this crate share: the stack behind a
//! loopback API gateway with its FIFO queue, the HTTP front that routes the
//! gateway's requests to the three HTTP functions as API Gateway routes them
//! in the template, dispatch in its own container, the sign-in a person
//! does, and the event source run until what a test waits for arrived.
// Each suite uses its own part of this module.
#![allow(dead_code)]

use std::sync::Arc;

use mail_dispatch::Dispatcher;
use mail_webhook::Webhook;
use relay365::aws::queue::SqsQueue;
use relay365_harness::*;
use serde_json::Value;

/// A stack behind a loopback API gateway, the notification queue on its
/// moto, and the front that routes the gateway's requests.
pub(crate) struct Front {
    /// The loopback API gateway (Graph's notification URL is behind it).
    pub(crate) gateway: Gateway,
    /// The stack: moto, the simulator and the functions' container.
    pub(crate) stack: Arc<Stack>,
    /// The notification queue and its event source.
    pub(crate) fifo: Fifo,
    /// The webhook behind the gateway.
    pub(crate) webhook: Arc<Webhook>,
}

impl Front {
    /// Starts the stack (its containers with the extra settings `env`) behind
    /// a gateway. The queue hands a record over five times, a second apart;
    /// `as_template` makes it as the template makes it instead (a 540 s
    /// visibility timeout, 36 receives).
    pub(crate) async fn start(env: Vec<(&'static str, String)>, as_template: bool) -> Self {
        let gateway = Gateway::start().await;
        let stack = Arc::new(
            Stack::start_with(Options {
                public_url: Some(gateway.url.clone()),
                env,
                ..Default::default()
            })
            .await,
        );
        let fifo = if as_template {
            Fifo::as_template(&stack.aws, 36).await
        } else {
            Fifo::create(&stack.aws, 5).await
        };
        let queue = Arc::new(SqsQueue::new(fifo.client.clone(), fifo.url.clone()));
        let webhook = serve_front(&gateway, &stack, &queue);
        Self {
            gateway,
            stack,
            fifo,
            webhook,
        }
    }

    /// The notification queue as the functions send to it.
    pub(crate) fn queue(&self) -> Arc<SqsQueue> {
        Arc::new(SqsQueue::new(self.fifo.client.clone(), self.fifo.url.clone()))
    }

    /// Dispatch in its own "container" (its own services and caches),
    /// queueing its retries on the front's queue. Its retries wait a second,
    /// doubling, unless `real_retry_times`.
    pub(crate) async fn dispatcher(&self, real_retry_times: bool) -> Dispatcher {
        let dispatcher = Dispatcher::load(self.stack.container().await)
            .await
            .unwrap()
            .with_queue(self.queue());
        if real_retry_times {
            dispatcher
        } else {
            dispatcher.with_first_retry(std::time::Duration::from_secs(1))
        }
    }
}

/// Routes `gateway`'s requests to the webhook (`/notifications…`), the
/// sign-in (`/oauth…`) and the admin API (the rest, queueing catch-ups on
/// `queue`); returns the webhook, which queues on `queue` too.
pub(crate) fn serve_front(gateway: &Gateway, stack: &Arc<Stack>, queue: &Arc<SqsQueue>) -> Arc<Webhook> {
    let webhook = Arc::new(
        Webhook::new(
            stack.services.store.clone(),
            "relay365/signing-key".into(),
            queue.clone(),
        )
        .with_secret_ttl(stack.config.secret_ttl),
    );
    let (st, hook, q) = (stack.clone(), webhook.clone(), queue.clone());
    gateway.set_handler(move |req| {
        let (st, webhook, q) = (st.clone(), hook.clone(), q.clone());
        async move {
            let path = req.uri().path().to_string();
            if path.starts_with("/notifications") {
                mail_webhook::handle(req, &webhook).await
            } else if path.starts_with("/oauth") {
                oauth_callback::handle(req, &st.services).await
            } else {
                connections::handle_with(req, &st.services, Some(q.as_ref())).await
            }
        }
    });
    webhook
}

/// Creates a connection with `body` through the admin API (which must
/// answer 201) and returns the link its answer has under `link`
/// (`connect_url`, or `admin_consent_url` for an app-only one).
pub(crate) async fn create_connection(stack: &Stack, body: &Value, link: &str) -> String {
    let resp = connections::handle(
        request("POST", "/connections", Some(&body.to_string()), &[]),
        &stack.services,
    )
    .await;
    assert_eq!(resp.status(), 201, "{}", body_text(&resp));
    body_json(&resp)[link].as_str().unwrap().to_string()
}

/// A person opens `link` and signs in (oauth-callback in the stack's
/// container): its start binds the browser, Microsoft asks and sends them
/// back. Returns the status and text of the page they see at the end.
pub(crate) async fn sign_in_page(stack: &Stack, link: &str) -> (u16, String) {
    let start =
        oauth_callback::handle(request("GET", &path_and_query(link), None, &[]), &stack.services).await;
    assert_eq!(start.status(), 302, "{}", body_text(&start));
    let cookie = cookies(&start).remove(0);
    let back = stack.follow(&location(&start)).await;
    let done = oauth_callback::handle(
        request("GET", &path_and_query(&back), None, &[&cookie]),
        &stack.services,
    )
    .await;
    (done.status().as_u16(), body_text(&done))
}

/// Runs the event source until `seen()` holds `n` things (or a while
/// passed), then a little longer, so anything extra would show; returns
/// what `seen()` holds then.
pub(crate) async fn pump_until<T>(
    fifo: &Fifo,
    dispatcher: &Dispatcher,
    n: usize,
    seen: impl Fn() -> Vec<T>,
) -> Vec<T> {
    for _ in 0..100 {
        fifo.pump(|e| mail_dispatch::handle(e, dispatcher)).await;
        if seen().len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        fifo.pump(|e| mail_dispatch::handle(e, dispatcher)).await;
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
    seen()
}

/// Whether the webhook accepted (202) at least two notifications within
/// five seconds: Graph sent one twice.
pub(crate) async fn accepted_twice(stack: &Stack) -> bool {
    eventually(5, || {
        stack
            .sim
            .stats()
            .notification_statuses
            .iter()
            .filter(|s| **s == 202)
            .count()
            >= 2
    })
    .await
}
