//! The small HTTP vocabulary every function speaks: one JSON error shape,
//! query parsing from the raw query string, body limits, HTML pages with
//! everything escaped, and cookies.
//!
//! Functions route on the method and the raw path, so the same binary works
//! behind API Gateway, a Function URL and `cargo lambda watch`.

use lambda_http::{Body, Request, RequestExt, Response};
use serde::de::DeserializeOwned;

/// A response ready to return.
pub type HttpResponse = Response<Body>;

/// Bodies larger than this are refused with 413 before parsing.
pub const MAX_JSON_BODY: usize = 256 * 1024;

fn build(status: u16, content_type: &str, body: Body) -> HttpResponse {
    let mut resp = Response::new(body);
    *resp.status_mut() = lambda_http::http::StatusCode::from_u16(status)
        .unwrap_or(lambda_http::http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = lambda_http::http::HeaderValue::from_str(content_type) {
        resp.headers_mut()
            .insert(lambda_http::http::header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(
        lambda_http::http::header::CACHE_CONTROL,
        lambda_http::http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// `{"error": {"code", "message"}}` with a status.
pub fn error(status: u16, code: &str, message: impl Into<String>) -> HttpResponse {
    let body = serde_json::json!({"error": {"code": code, "message": message.into()}});
    build(status, "application/json", Body::Text(body.to_string()))
}

/// A JSON body with a status.
pub fn json(status: u16, value: &serde_json::Value) -> HttpResponse {
    build(status, "application/json", Body::Text(value.to_string()))
}

/// An empty response (204).
pub fn empty(status: u16) -> HttpResponse {
    let mut resp = build(status, "text/plain", Body::Empty);
    resp.headers_mut().remove(lambda_http::http::header::CONTENT_TYPE);
    resp
}

/// A plain-text body.
pub fn text(status: u16, body: impl Into<String>) -> HttpResponse {
    build(status, "text/plain; charset=utf-8", Body::Text(body.into()))
}

/// A redirect (302) with optional `Set-Cookie` values.
pub fn redirect(location: &str, cookies: &[String]) -> HttpResponse {
    let mut resp = build(302, "text/plain; charset=utf-8", Body::Empty);
    if let Ok(v) = lambda_http::http::HeaderValue::from_str(location) {
        resp.headers_mut().insert(lambda_http::http::header::LOCATION, v);
    }
    with_cookies(resp, cookies)
}

/// Adds `Set-Cookie` headers (a value that is not a valid header is skipped).
fn with_cookies(mut resp: HttpResponse, cookies: &[String]) -> HttpResponse {
    for c in cookies {
        if let Ok(v) = lambda_http::http::HeaderValue::from_str(c) {
            resp.headers_mut()
                .append(lambda_http::http::header::SET_COOKIE, v);
        }
    }
    resp
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A small, self-contained HTML page. `title` and each paragraph are escaped here.
pub fn html_page(status: u16, title: &str, paragraphs: &[String], cookies: &[String]) -> HttpResponse {
    let body: String = paragraphs
        .iter()
        .map(|p| format!("<p>{}</p>\n", escape_html(p)))
        .collect();
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t} · relay365</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}\
         code{{background:#f3f3f3;padding:0 .2em}}</style></head>\n<body><h1>{t}</h1>\n{body}</body></html>\n",
        t = escape_html(title)
    );
    let resp = build(status, "text/html; charset=utf-8", Body::Text(page));
    with_cookies(resp, cookies)
}

/// The raw path, without an API Gateway stage prefix.
pub fn path(req: &Request) -> String {
    let raw = req.raw_http_path();
    if raw.is_empty() {
        req.uri().path().to_string()
    } else {
        raw.to_string()
    }
}

/// The query string decoded as `application/x-www-form-urlencoded` (`+` is a space, `%XX` a byte).
pub fn query(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The first value of a query parameter.
pub fn query_param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A cookie's value from the `Cookie` header(s).
pub fn cookie(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(lambda_http::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Parses a JSON body, refusing a wrong content type, an oversize or empty
/// body, and malformed JSON, each with a 4xx that says what to fix.
///
/// # Errors
/// The response to send back.
#[allow(clippy::result_large_err)]
pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, HttpResponse> {
    json_body_limited(req, MAX_JSON_BODY)
}

/// [`json_body`] with another size limit (send-mail takes up to Lambda's 6 MB).
///
/// # Errors
/// The response to send back.
#[allow(clippy::result_large_err)]
pub fn json_body_limited<T: DeserializeOwned>(req: &Request, limit: usize) -> Result<T, HttpResponse> {
    let ct = req
        .headers()
        .get(lambda_http::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.is_empty() && !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(error(
            415,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > limit {
        return Err(error(
            413,
            "body_too_large",
            format!("the body is larger than {limit} bytes"),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(error(
            400,
            "invalid_request",
            "the body is empty: send a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                )
            }
            _ => format!("the body does not have the expected fields: {e}"),
        };
        error(400, "invalid_request", what)
    })
}

/// A cookie header value: `HttpOnly; Secure; SameSite=Lax`, scoped to `path`.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age_secs: i64) -> String {
    format!("{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite=Lax")
}

/// The API Gateway HTTP API (2.0) response JSON for a response: what
/// lambda_http sends back for API Gateway events, for functions that take
/// more than one kind of event.
pub fn to_apigw_v2(resp: HttpResponse) -> serde_json::Value {
    let (parts, body) = resp.into_parts();
    let mut headers = serde_json::Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let Ok(v) = value.to_str() else { continue };
        if name == lambda_http::http::header::SET_COOKIE {
            cookies.push(serde_json::Value::String(v.to_string()));
        } else {
            headers.insert(name.as_str().to_string(), v.into());
        }
    }
    use base64::Engine;
    let (body, b64) = match body {
        Body::Empty => (String::new(), false),
        Body::Text(t) => (t, false),
        Body::Binary(b) => (base64::engine::general_purpose::STANDARD.encode(b), true),
        _ => (String::new(), false),
    };
    serde_json::json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "cookies": cookies,
        "body": body,
        "isBase64Encoded": b64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
        let page = html_page(400, "<b>", &["<img src=x onerror=alert(1)>".into()], &[]);
        let Body::Text(t) = page.body() else { panic!() };
        assert!(!t.contains("<img"), "{t}");
        assert!(!t.contains("<b>"), "{t}");
    }

    #[test]
    fn errors_have_the_contract_shape() {
        let r = error(404, "not_found", "no such connection");
        assert_eq!(r.status(), 404);
        let Body::Text(t) = r.body() else { panic!() };
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "no such connection");
    }
}

/// An API Gateway HTTP API (2.0) event as a request, or the 400 that says why
/// it is not one. lambda_http (1.3.2, `into_api_gateway_v2_request`) unwraps
/// the URI it builds from the host, the raw path and the raw query string,
/// and panics when they make no URI: a `host` header such as
/// `a.example, b.example` (two Host headers joined by a comma), or a control
/// character in `rawQueryString` (found by fuzzing). Under `panic = "abort"`
/// that would kill the sandbox, so the same URI is built and checked here
/// first.
///
/// # Errors
/// A 400 response naming what is wrong.
#[allow(clippy::result_large_err)]
pub fn http_event(payload: &serde_json::Value) -> Result<Request, HttpResponse> {
    // Header names arrive in any case; lambda_http looks them up without case.
    let header = |name: &str| -> Vec<&str> {
        payload
            .get("headers")
            .and_then(serde_json::Value::as_object)
            .map(|h| {
                h.iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .filter_map(|(_, v)| v.as_str())
                    .collect()
            })
            .unwrap_or_default()
    };
    let hosts = header("host");
    if hosts.len() > 1 {
        return Err(error(
            400,
            "invalid_request",
            "the request has more than one Host header",
        ));
    }
    let host = hosts.first().copied().or_else(|| {
        payload
            .pointer("/requestContext/domainName")
            .and_then(serde_json::Value::as_str)
    });
    let sound = |h: &str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    };
    if host.is_some_and(|h| !sound(h)) {
        return Err(error(
            400,
            "invalid_request",
            "the Host header is not one host name",
        ));
    }
    let text = |p: &str| payload.pointer(p).and_then(serde_json::Value::as_str);
    let protos = header("x-forwarded-proto");
    let scheme = protos.first().copied().unwrap_or("https");
    let path = match text("/requestContext/stage") {
        None | Some("$default") => text("/rawPath").unwrap_or("").to_string(),
        Some(stage) if text("/rawPath").unwrap_or("").starts_with(&format!("/{stage}/")) => {
            text("/rawPath").unwrap_or("").to_string()
        }
        Some(stage) => format!("/{stage}{}", text("/rawPath").unwrap_or("")),
    };
    if !uri_is_sound(scheme, host, &path, text("/rawQueryString").unwrap_or("")) {
        return Err(error(
            400,
            "invalid_request",
            "the request's path or query string is not a valid URI: percent-encode it",
        ));
    }
    lambda_http::request::from_str(&payload.to_string())
        .map_err(|_| error(400, "invalid_request", "unreadable HTTP event"))
}

/// Whether lambda_http can build its request URI from these parts, by its
/// own steps: a URL of scheme, host and path (only the path without a
/// host), then `?` and the raw query.
fn uri_is_sound(scheme: &str, host: Option<&str>, path: &str, query: &str) -> bool {
    let url = match host {
        Some(host) => url::Url::parse(&format!("{scheme}://{host}{path}")).map(|u| u.to_string()),
        None => url::Url::parse(&format!("http://localhost{path}")).map(|u| u.path().to_string()),
    };
    let Ok(mut uri) = url else {
        return false;
    };
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(query);
    }
    uri.parse::<lambda_http::http::Uri>().is_ok()
}

#[cfg(test)]
mod event_tests {
    use super::*;

    fn event(host: &str) -> serde_json::Value {
        serde_json::json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/x", "rawQueryString": "",
            "headers": {"host": host},
            "requestContext": {"accountId": "1", "apiId": "a", "domainName": host, "domainPrefix": "a",
                "http": {"method": "GET", "path": "/x", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "t"},
                "requestId": "r", "routeKey": "$default", "stage": "$default", "time": "t", "timeEpoch": 0},
            "isBase64Encoded": false
        })
    }

    #[test]
    fn a_doubled_host_header_is_a_400_not_a_panic() {
        assert!(http_event(&event("relay.example")).is_ok());
        for bad in ["a.example, b.example", "a b", "", "a/b"] {
            let resp = http_event(&event(bad)).unwrap_err();
            assert_eq!(resp.status(), 400, "{bad}");
        }
    }

    #[test]
    fn a_query_string_that_makes_no_uri_is_a_400_not_a_panic() {
        // The input the fuzzer found: a control character in the raw query.
        let mut e = event("relay.example");
        e["rawQueryString"] = "link=eyJhbGciOi.x.9&promp\u{1}\u{0}t=login".into();
        assert_eq!(http_event(&e).unwrap_err().status(), 400);
        // Without a Host header lambda_http takes requestContext.domainName.
        let mut e = event("relay.example");
        e["headers"] = serde_json::json!({});
        e["requestContext"]["domainName"] = "a.example, b.example".into();
        assert_eq!(http_event(&e).unwrap_err().status(), 400);
        // Header names in another case are the same header.
        let mut e = event("relay.example");
        e["headers"]["Host"] = "a.example, b.example".into();
        assert_eq!(http_event(&e).unwrap_err().status(), 400);
        let mut e = event("relay.example");
        e["headers"] = serde_json::json!({"HOST": "a.example, b.example"});
        assert_eq!(http_event(&e).unwrap_err().status(), 400);
        let mut e = event("relay.example");
        e["headers"]["x-forwarded-proto"] = "not a scheme".into();
        assert_eq!(http_event(&e).unwrap_err().status(), 400);
        let mut e = event("relay.example");
        e["rawQueryString"] = "link=a%20b&prompt=login".into();
        assert!(http_event(&e).is_ok());
    }
}
