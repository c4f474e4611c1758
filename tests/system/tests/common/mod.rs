//! What the whole-system suites of this crate share: the HTTP front that
//! routes the gateway's requests to the three HTTP functions, as API Gateway
//! routes them in the template.

use std::sync::Arc;

use mail_webhook::Webhook;
use relay365::aws::queue::SqsQueue;
use relay365_harness::{Gateway, Stack};

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
