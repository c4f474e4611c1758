//! What API Gateway (HTTP API, payload format 2.0) does between a caller and a
//! function: match the route, refuse IAM routes' calls whose SigV4 signature does not
//! verify ([`crate::sigv4`]), turn the
//! HTTP request into the event Lambda receives, and turn the function's
//! answer back into HTTP.
//!
//! The route table is `template.yaml`'s (a test compares the two), and the
//! event has the fields and spelling AWS documents and `aws_lambda_events`'
//! fixtures show (another test compares the shapes): lower-case header names
//! with repeated values joined by commas, cookies moved out of the headers
//! into `cookies`, `queryStringParameters` with repeated values joined by
//! commas, `pathParameters`, the route key, and a binary body in base64.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

/// One route of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'static str,
    /// The path template, with `{name}` parameters.
    pub path: &'static str,
    /// The function it invokes.
    pub function: &'static str,
    /// Whether callers must sign with SigV4 (`AuthorizationType: AWS_IAM`).
    pub iam: bool,
}

impl Route {
    /// `METHOD /path`: API Gateway's route key.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The routes `template.yaml` declares.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/connections",
        function: "connections",
        iam: true,
    },
    Route {
        method: "GET",
        path: "/connections",
        function: "connections",
        iam: true,
    },
    Route {
        method: "GET",
        path: "/connections/{id}",
        function: "connections",
        iam: true,
    },
    Route {
        method: "DELETE",
        path: "/connections/{id}",
        function: "connections",
        iam: true,
    },
    Route {
        method: "POST",
        path: "/connections/{id}/subscriptions",
        function: "connections",
        iam: true,
    },
    Route {
        method: "POST",
        path: "/connections/{id}/resubscribe",
        function: "connections",
        iam: true,
    },
    Route {
        method: "POST",
        path: "/connections/{id}/subscriptions/{key}/pause",
        function: "connections",
        iam: true,
    },
    Route {
        method: "POST",
        path: "/connections/{id}/subscriptions/{key}/resume",
        function: "connections",
        iam: true,
    },
    Route {
        method: "GET",
        path: "/oauth/start",
        function: "oauth-callback",
        iam: false,
    },
    Route {
        method: "GET",
        path: "/oauth/callback",
        function: "oauth-callback",
        iam: false,
    },
    Route {
        method: "GET",
        path: "/oauth/admin-consent",
        function: "oauth-callback",
        iam: false,
    },
    Route {
        method: "POST",
        path: "/notifications",
        function: "mail-webhook",
        iam: false,
    },
    Route {
        method: "POST",
        path: "/notifications/lifecycle",
        function: "mail-webhook",
        iam: false,
    },
    Route {
        method: "POST",
        path: "/mail/send",
        function: "send-mail",
        iam: true,
    },
];

/// Path parameters by name.
pub type Params = Vec<(String, String)>;

/// The route for a request and its path parameters, as API Gateway picks it
/// (a literal segment wins over a parameter; no match is API Gateway's 404).
pub fn find(method: &str, path: &str) -> Option<(Route, Params)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut best: Option<(Route, Params, usize)> = None;
    for route in ROUTES.iter().filter(|r| r.method == method) {
        let tmpl: Vec<&str> = route.path.trim_start_matches('/').split('/').collect();
        if tmpl.len() != segs.len() {
            continue;
        }
        let mut params = Vec::new();
        let mut literal = 0;
        let matched = tmpl.iter().zip(&segs).all(|(t, s)| {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                params.push((name.to_string(), percent_decode(s)));
                !s.is_empty()
            } else {
                literal += 1;
                t == s
            }
        });
        if matched && best.as_ref().is_none_or(|b| literal > b.2) {
            best = Some((*route, params, literal));
        }
    }
    best.map(|(r, p, _)| (r, p))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// An HTTP request as it reached the gateway.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// Path, percent-encoded as received.
    pub path: String,
    /// Query string without `?` (may be empty).
    pub query: String,
    /// Headers in arrival order (names in any case).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// The caller's address.
    pub source_ip: String,
}

/// The API Gateway HTTP API (2.0) event for `req` on `route_key` (`$default` when none).
pub fn event(
    route_key: &str,
    path_params: &[(String, String)],
    req: &HttpRequest,
    iam_access_key: Option<&str>,
    domain: &str,
) -> Value {
    let mut headers: Map<String, Value> = Map::new();
    let mut cookies: Vec<Value> = Vec::new();
    for (k, v) in &req.headers {
        let k = k.to_ascii_lowercase();
        if k == "cookie" {
            cookies.extend(
                v.split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| Value::String(c.to_string())),
            );
            continue;
        }
        match headers.get_mut(&k) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(v);
            }
            _ => {
                headers.insert(k, Value::String(v.clone()));
            }
        }
    }
    let user_agent = headers
        .get("user-agent")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut query: Map<String, Value> = Map::new();
    for (k, v) in url::form_urlencoded::parse(req.query.as_bytes()) {
        match query.get_mut(k.as_ref()) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                query.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let fmt =
        time::macros::format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    let mut context = json!({
        "accountId": "123456789012",
        "apiId": "relay365demo",
        "domainName": domain,
        "domainPrefix": domain.split('.').next().unwrap_or(domain),
        "http": {
            "method": req.method,
            "path": req.path,
            "protocol": "HTTP/1.1",
            "sourceIp": req.source_ip,
            "userAgent": user_agent,
        },
        "requestId": B64.encode(uuid::Uuid::new_v4().as_bytes()).trim_end_matches('=').replace(['+', '/'], "A"),
        "routeKey": route_key,
        "stage": "$default",
        "time": now.format(&fmt).unwrap_or_default(),
        "timeEpoch": now.unix_timestamp_nanos() / 1_000_000,
    });
    if let Some(key) = iam_access_key {
        context["authorizer"] = json!({"iam": {
            "accessKey": key,
            "accountId": "123456789012",
            "callerId": "AIDADEMOCALLER000000",
            "cognitoIdentity": null,
            "principalOrgId": null,
            "userArn": "arn:aws:iam::123456789012:user/demo",
            "userId": "AIDADEMOCALLER000000",
        }});
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": req.path,
        "rawQueryString": req.query,
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::Array(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if !path_params.is_empty() {
        event["pathParameters"] = path_params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>()
            .into();
    }
    if !req.body.is_empty() {
        let content_type = event["headers"]["content-type"].as_str().unwrap_or("");
        match std::str::from_utf8(&req.body) {
            Ok(text) if is_text(content_type) => event["body"] = text.into(),
            _ => {
                event["body"] = B64.encode(&req.body).into();
                event["isBase64Encoded"] = true.into();
            }
        }
    }
    event
}

fn is_text(content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    ct.is_empty()
        || ct.starts_with("text/")
        || ct.contains("json")
        || ct.contains("xml")
        || ct.starts_with("application/x-www-form-urlencoded")
        || ct.starts_with("application/javascript")
}

/// The HTTP answer API Gateway gives for a function's 2.0 response: the
/// status, headers and cookies of a `{"statusCode": …}` object, or, for any
/// other JSON, 200 with that JSON as the body. Only `headers` and `cookies`
/// count: API Gateway ignores `multiValueHeaders` in format 2.0.
pub fn response(payload: &Value) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let Some(status) = payload.get("statusCode").and_then(Value::as_u64) else {
        return (
            200,
            vec![("content-type".into(), "application/json".into())],
            payload.to_string().into_bytes(),
        );
    };
    let mut headers: Vec<(String, String)> = payload["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.to_ascii_lowercase(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if let Some(cookies) = payload["cookies"].as_array() {
        headers.extend(
            cookies
                .iter()
                .filter_map(Value::as_str)
                .map(|c| ("set-cookie".to_string(), c.to_string())),
        );
    }
    let body = match payload["body"].as_str() {
        Some(b) if payload["isBase64Encoded"].as_bool() == Some(true) => B64.decode(b).unwrap_or_default(),
        Some(b) => b.as_bytes().to_vec(),
        None => Vec::new(),
    };
    (u16::try_from(status).unwrap_or(502), headers, body)
}

/// API Gateway's own error answers (`{"message": …}`), for what never reaches a function.
pub fn gateway_error(status: u16) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let message = match status {
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Request Entity Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    };
    (
        status,
        vec![("content-type".into(), "application/json".into())],
        json!({ "message": message }).to_string().into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_and_parameters_match_like_api_gateway() {
        let (r, p) = find("POST", "/connections/sup%20port/subscriptions").unwrap();
        assert_eq!(r.key(), "POST /connections/{id}/subscriptions");
        assert_eq!(p, vec![("id".to_string(), "sup port".to_string())]);
        assert_eq!(find("GET", "/connections").unwrap().0.key(), "GET /connections");
        assert!(find("PUT", "/connections").is_none());
        assert!(find("GET", "/connections/").is_none());
        assert!(find("GET", "/nowhere").is_none());
    }

    #[test]
    fn headers_cookies_and_query_are_folded_as_aws_does() {
        let req = HttpRequest {
            method: "GET".into(),
            path: "/oauth/callback".into(),
            query: "a=1&a=2&b=x%20y".into(),
            headers: vec![
                ("Host".into(), "h".into()),
                ("X-Multi".into(), "1".into()),
                ("x-multi".into(), "2".into()),
                ("Cookie".into(), "c1=v1; c2=v2".into()),
            ],
            body: Vec::new(),
            source_ip: "127.0.0.1".into(),
        };
        let e = event("GET /oauth/callback", &[], &req, None, "h");
        assert_eq!(e["headers"]["x-multi"], "1,2");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["cookies"], json!(["c1=v1", "c2=v2"]));
        assert_eq!(e["queryStringParameters"], json!({"a": "1,2", "b": "x y"}));
        assert!(e.get("body").is_none());
    }

    #[test]
    fn binary_bodies_travel_in_base64_and_come_back_decoded() {
        let req = HttpRequest {
            method: "POST".into(),
            path: "/mail/send".into(),
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: vec![0xff, 0x00, 0x41],
            ..HttpRequest::default()
        };
        let e = event("POST /mail/send", &[], &req, Some("AK"), "h");
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], "/wBB");
        assert_eq!(e["requestContext"]["authorizer"]["iam"]["accessKey"], "AK");
        let (status, headers, body) = response(&json!({
            "statusCode": 201, "headers": {"Content-Type": "x/y"}, "cookies": ["a=b; Path=/"],
            "body": "/wBB", "isBase64Encoded": true, "multiValueHeaders": {"x-ignored": ["1"]}
        }));
        assert_eq!(status, 201);
        assert_eq!(body, vec![0xff, 0x00, 0x41]);
        assert!(headers.contains(&("content-type".into(), "x/y".into())));
        assert!(headers.contains(&("set-cookie".into(), "a=b; Path=/".into())));
        assert!(!headers.iter().any(|(k, _)| k == "x-ignored"));
        let (status, _, body) = response(&json!({"status": "sent"}));
        assert_eq!((status, body), (200, br#"{"status":"sent"}"#.to_vec()));
    }
}
