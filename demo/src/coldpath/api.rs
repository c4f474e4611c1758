//! How the harness speaks to the stack's public API: the bench connection's
//! id and the API Gateway events its requests arrive as. The standing parts
//! use them to connect the bench mailbox and the measured paths to make
//! their events, so they sit below both.

use serde_json::Value;

use crate::apigw::{self, HttpRequest};

/// The bench connection's id: every path but the callback uses it.
pub(super) const CONNECTION: &str = "bench";

/// An API Gateway (2.0) event for a request to the stack's public API.
/// `iam`: the access key of a SigV4-signed caller, for the IAM routes.
pub(super) fn http_event(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    iam: Option<&str>,
) -> Value {
    let req = HttpRequest {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
        source_ip: "203.0.113.9".into(),
    };
    let (route, params) = apigw::find(method, path)
        .map(|(r, p)| (r.key(), p))
        .unwrap_or_else(|| ("$default".into(), Vec::new()));
    apigw::event(&route, &params, &req, iam, "relay.example")
}
