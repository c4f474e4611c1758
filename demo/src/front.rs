//! The HTTP front: API Gateway's role in the local stack.
//!
//! It routes each request as the template's HTTP API does ([`crate::apigw`]),
//! checks SigV4 on the IAM routes itself ([`crate::sigv4`]) so a function
//! never sees an unsigned request, and invokes the function with the 2.0
//! event. Two demo-only routes sit beside the API: the functions' metric
//! lines and the contacts the local Amazon Connect started.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::connect::contact_json;
use crate::{
    DEMO_ACCESS_KEY_ID, DEMO_REGION, DEMO_SECRET_ACCESS_KEY, Function, InvokeError, apigw, metric_log, sigv4,
};

/// API Gateway's payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;

/// An HTTP answer: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// What the front answers from.
pub(crate) struct Front {
    connect: Arc<connect_fake::Fake>,
    functions: Arc<HashMap<&'static str, Function>>,
    domain: String,
    metrics: Arc<metric_log::MetricLog>,
}

impl Front {
    /// The front for functions reached at `public_url` (whose host the
    /// events name as their domain).
    pub(crate) fn new(
        connect: Arc<connect_fake::Fake>,
        functions: Arc<HashMap<&'static str, Function>>,
        metrics: Arc<metric_log::MetricLog>,
        public_url: &str,
    ) -> Self {
        Self {
            connect,
            metrics,
            functions,
            domain: url::Url::parse(public_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "127.0.0.1".into()),
        }
    }
}

/// Serves the front on `listener` until the returned sender is dropped (or
/// the returned task aborted).
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    front: Front,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/_demo/metrics", axum::routing::get(demo_metrics))
        .route("/_demo/connect/contacts", axum::routing::get(demo_contacts))
        .fallback(gateway)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(Arc::new(front));
    let (api_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await;
    });
    (api_stop, task)
}

/// `GET /_demo/metrics?since=MS`: the functions' metric lines since then
/// (what CloudWatch would have made metrics of), for `relay365 status`.
async fn demo_metrics(
    State(front): State<Arc<Front>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> axum::Json<Value> {
    let since = q.get("since").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    axum::Json(json!({"lines": front.metrics.since(since)}))
}

/// `GET /_demo/connect/contacts`: every contact the local Amazon Connect
/// started (tasks and email contacts), oldest first.
async fn demo_contacts(State(front): State<Arc<Front>>) -> axum::Json<Value> {
    let contacts: Vec<Value> = front.connect.contacts().iter().map(contact_json).collect();
    axum::Json(json!({ "contacts": contacts }))
}

/// Every other request: routed, checked and handed to its function as API
/// Gateway would.
async fn gateway(
    State(front): State<Arc<Front>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    req: Request<axum::body::Body>,
) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return answer(apigw::gateway_error(413)),
    };
    let path = parts.uri.path().to_string();
    let Some((route, params)) = apigw::find(parts.method.as_str(), &path) else {
        return answer(apigw::gateway_error(404));
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    let query = parts.uri.query().unwrap_or("").to_string();
    // API Gateway checks the signature itself for AWS_IAM routes: the
    // function never sees a request that is not signed by a known key.
    let access_key = if route.iam {
        let signed = sigv4::Signed {
            method: parts.method.as_str(),
            path: &path,
            query: &query,
            headers: &headers,
            body: &body,
        };
        match signer(&signed) {
            Ok(key) => Some(key),
            Err(refused) => return answer(refused),
        }
    } else {
        None
    };
    let http = apigw::HttpRequest {
        method: parts.method.as_str().to_string(),
        path,
        query,
        headers,
        body: body.to_vec(),
        source_ip: peer.ip().to_string(),
    };
    let event = apigw::event(&route.key(), &params, &http, access_key.as_deref(), &front.domain);
    answer(invoke(&front, route.function, &event).await)
}

/// The access key a request to an IAM route is signed with, or API
/// Gateway's 403 saying why it is refused.
fn signer(signed: &sigv4::Signed<'_>) -> Result<String, Answer> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match sigv4::verify(signed, DEMO_REGION, "execute-api", now, |k| {
        (k == DEMO_ACCESS_KEY_ID).then(|| DEMO_SECRET_ACCESS_KEY.to_string())
    }) {
        Ok(key) => Ok(key),
        Err(sigv4::Refused::Unsigned) => Err(apigw::gateway_error(403)),
        Err(why) => {
            let mut message = why.to_string();
            if let Some(first) = message.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            Err((
                403,
                vec![("content-type".into(), "application/json".into())],
                json!({ "message": format!("{message}.") })
                    .to_string()
                    .into_bytes(),
            ))
        }
    }
}

/// The function's answer to `event`, or API Gateway's own when the function
/// is unknown (500), times out (503) or fails (500).
async fn invoke(front: &Front, function: &str, event: &Value) -> Answer {
    let Some(function) = front.functions.get(function) else {
        return apigw::gateway_error(500);
    };
    match function.invoke(event).await {
        Ok(payload) => apigw::response(&payload),
        Err(InvokeError::Timeout { .. }) => apigw::gateway_error(503),
        Err(e) => {
            eprintln!("{e}");
            apigw::gateway_error(500)
        }
    }
}

/// An answer as the HTTP response axum sends.
fn answer((status, headers, body): Answer) -> Response {
    let mut resp = Response::builder().status(status);
    for (k, v) in headers {
        resp = resp.header(k, v);
    }
    resp.body(axum::body::Body::from(body))
        .unwrap_or_else(|_| axum::http::StatusCode::BAD_GATEWAY.into_response())
}
