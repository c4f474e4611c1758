//! Calls to Microsoft Graph with bearer tokens, retried the way Microsoft asks.
//!
//! 429, 503 and 504 are retried, waiting what `Retry-After` says (whole or
//! fractional seconds, or an HTTP date) or backing off exponentially when it
//! says nothing, but never past an overall deadline (a POST, which creates
//! something, only after a 429 or a refused connection: an answer lost on
//! the way is no proof that nothing was made): a Lambda invocation has
//! a time limit, and a caller is better served by a clear "throttled, retry
//! after N s" than by a timeout. Graph's error JSON becomes a typed error that
//! keeps the code, the message and the request id for support cases.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;

use crate::model::sensitive::Sensitive;

/// How hard to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// No retry starts after this much time since the first attempt.
    pub deadline: Duration,
    /// At most this many attempts in all.
    pub max_attempts: u32,
    /// The first back-off when Graph gives no `Retry-After`; doubled each time.
    pub base_backoff: Duration,
}

/// The longest a single Graph request may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(20),
            max_attempts: 6,
            base_backoff: Duration::from_millis(500),
        }
    }
}

/// A Graph call that did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// Graph refused the request; retrying the same request will not help.
    #[error("Microsoft Graph answered {status} {code}: {message} (request-id {})", request_id.as_deref().unwrap_or("none"))]
    Api {
        /// The HTTP status.
        status: u16,
        /// Graph's error code (`ErrorSendAsDenied`, `Authorization_RequestDenied`, …).
        code: String,
        /// Graph's message.
        message: String,
        /// The request id, for a Microsoft support case.
        request_id: Option<String>,
    },
    /// Still throttled or unavailable when the deadline came: retry later.
    #[error("Microsoft Graph is throttling or unavailable ({status}); retry after {}", retry_after.map_or_else(|| "a short wait".to_string(), |d| format!("{:.1} s", d.as_secs_f64())))]
    Throttled {
        /// The last status (429, 503 or 504).
        status: u16,
        /// The last `Retry-After`, if Graph sent one.
        retry_after: Option<Duration>,
        /// The request id of the last attempt.
        request_id: Option<String>,
    },
    /// The network failed (connect, timeout, TLS): retry later.
    #[error("could not reach Microsoft Graph: {0}")]
    Transport(String),
    /// The answer was not what Graph documents.
    #[error("unexpected answer from Microsoft Graph: {0}")]
    Decode(String),
}

impl GraphError {
    /// True when the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, GraphError::Throttled { .. } | GraphError::Transport(_))
            || matches!(self, GraphError::Api { status, .. } if *status >= 500)
    }

    /// The HTTP status Graph answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Api { status, .. } | GraphError::Throttled { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Graph's error code, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct GraphResponse {
    /// The status (2xx).
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl GraphResponse {
    /// Decodes the body as JSON.
    ///
    /// # Errors
    /// [`GraphError::Decode`] when it is not the expected shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, GraphError> {
        serde_json::from_slice(&self.body).map_err(|e| GraphError::Decode(e.to_string()))
    }
}

/// What [`GraphClient::get_streamed`] saw of a successful answer (its body
/// went to the caller, piece by piece).
#[derive(Debug)]
pub struct Streamed {
    /// The status (2xx).
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// How many bytes of body arrived.
    pub len: u64,
    /// False when the body ended early (a connection failure or the
    /// attempt's timeout): `len` is then a lower bound.
    pub complete: bool,
}

/// A successful answer read with a cap: its first bytes, and the size of
/// the whole.
#[derive(Debug)]
pub struct Capped {
    /// The status (2xx).
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body's first bytes, at most the cap.
    pub head: Vec<u8>,
    /// How many bytes of body arrived in all (kept or not).
    pub len: u64,
    /// False when the body ended early: `len` is then a lower bound.
    pub complete: bool,
}

impl Capped {
    /// True when `head` is the whole body.
    pub fn is_whole(&self) -> bool {
        self.complete && self.head.len() as u64 == self.len
    }
}

/// The longest wait a `Retry-After` can ask for; a server asking for more
/// (by seconds or by a date years ahead) gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses `Retry-After`: delta seconds (Graph sends fractional ones, `2.128`)
/// or an HTTP date, at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// One request as [`GraphClient::send`] and [`GraphClient::get_streamed`]
/// hand it to the retry loop, which sends it again as it is.
struct Call<'a> {
    method: reqwest::Method,
    path: &'a str,
    token: &'a Sensitive,
    body: Option<&'a serde_json::Value>,
    extra_headers: &'a [(&'static str, String)],
}

/// A Graph client for one Graph host.
#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    policy: RetryPolicy,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(serde::Deserialize)]
struct ErrorInner {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default, rename = "innerError")]
    inner: Option<serde_json::Value>,
}

impl GraphClient {
    /// A client for `graph_base` (scheme and host, e.g. `https://graph.microsoft.com`); calls go to `{base}/v1.0/…`.
    pub fn new(http: reqwest::Client, graph_base: &str, policy: RetryPolicy) -> Self {
        Self {
            http,
            base: format!("{}/v1.0", graph_base.trim_end_matches('/')),
            policy,
        }
    }

    /// The versioned base (`https://graph.microsoft.com/v1.0`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// How hard this client retries.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// The same client with another overall deadline per call, so that
    /// several calls can share one time budget (the rest of it).
    pub fn with_deadline(&self, deadline: Duration) -> GraphClient {
        GraphClient {
            policy: RetryPolicy {
                deadline,
                ..self.policy
            },
            ..self.clone()
        }
    }

    /// Resolves a path (`/me`) or an absolute link Graph returned (`@odata.nextLink`).
    /// Absolute links must point at this Graph host: the bearer token is never sent elsewhere.
    fn url(&self, path: &str) -> Result<String, GraphError> {
        if path.starts_with("http://") || path.starts_with("https://") {
            let origin = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
            if origin(path).is_some() && origin(path) == origin(&self.base) {
                Ok(path.to_string())
            } else {
                Err(GraphError::Decode(
                    "a link that points outside Microsoft Graph was refused".into(),
                ))
            }
        } else {
            Ok(format!("{}{}", self.base, path))
        }
    }

    /// Sends one request, retrying 429/503/504 and network failures within the policy.
    ///
    /// # Errors
    /// [`GraphError`] saying whether to retry, re-authorise or fix the request.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &Sensitive,
        body: Option<&serde_json::Value>,
        extra_headers: &[(&'static str, String)],
    ) -> Result<GraphResponse, GraphError> {
        let call = Call {
            method,
            path,
            token,
            body,
            extra_headers,
        };
        let resp = self.respond(call).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let request_id = request_id_of(&headers);
        let body = resp
            .bytes()
            .await
            .map_err(|e| GraphError::Transport(describe_transport(&e)))?;
        if (200..300).contains(&status) {
            return Ok(GraphResponse {
                status,
                headers,
                body: body.to_vec(),
            });
        }
        Err(GraphError::from_answer(status, &body, request_id))
    }

    /// Sends one request until Graph answers with something other than
    /// 429/503/504 (or the policy gives up), and returns that answer with its
    /// body still unread: [`GraphClient::send`] reads it whole,
    /// [`GraphClient::get_streamed`] chunk by chunk.
    ///
    /// Each attempt's timeout covers its body too (reqwest applies a
    /// request's timeout "until the response body has finished"), so whoever
    /// reads the body is bounded by the same attempt timeout.
    async fn respond(&self, call: Call<'_>) -> Result<reqwest::Response, GraphError> {
        let Call {
            method,
            path,
            token,
            body,
            extra_headers,
        } = call;
        let url = self.url(path)?;
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // No attempt outlives the policy's deadline, so one call never
            // takes much longer than it (an API request has 29 s in all).
            let left = self.policy.deadline.saturating_sub(started.elapsed());
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(left.clamp(Duration::from_secs(1), ATTEMPT_TIMEOUT))
                .bearer_auth(token.expose())
                .header("Prefer", HeaderValue::from_static("IdType=\"ImmutableId\""));
            for (name, value) in extra_headers {
                req = req.header(*name, value);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let outcome = req.send().await;
            // A POST creates something (a subscription, a draft, a sent
            // mail). Once it may have reached Graph (a timeout, a cut
            // connection, a 503 or 504 from a gateway that may have passed
            // it on) it is not sent again blindly: the caller looks for what
            // it made, or Graph's 409 says it exists. Only a refused
            // connection or a 429 (not processed) is retried here.
            let creates = method == reqwest::Method::POST;
            let (wait, last) = match outcome {
                Err(e) => {
                    let err = GraphError::Transport(describe_transport(&e));
                    if creates && !e.is_connect() {
                        tracing::warn!(error = %err, "a Graph POST may have been carried out; not repeating it");
                        return Err(err);
                    }
                    (None, err)
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if !matches!(status, 429 | 503 | 504) || (creates && status != 429) {
                        return Ok(resp);
                    }
                    let headers = resp.headers();
                    let retry_after = headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                    if status == 429 {
                        crate::metrics::graph_throttled(retry_after);
                    }
                    (
                        retry_after,
                        GraphError::Throttled {
                            status,
                            retry_after,
                            request_id: request_id_of(headers),
                        },
                    )
                }
            };
            let wait = wait.unwrap_or_else(|| self.policy.base_backoff * 2u32.saturating_pow(attempt - 1));
            if attempt >= self.policy.max_attempts || started.elapsed() + wait > self.policy.deadline {
                tracing::warn!(attempts = attempt, error = %last, "giving up on a Graph call");
                return Err(last);
            }
            tracing::info!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                "Graph asked us to wait; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// `GET` whose answer is handed to `on_chunk` piece by piece as it
    /// arrives and never held whole: memory stays what `on_chunk` keeps,
    /// however large the answer. The answer's head is retried as
    /// [`GraphClient::send`] retries it; once a body is flowing nothing is
    /// retried (a part of it has been handed over already).
    ///
    /// Reading the body ends early, with [`Streamed::complete`] false, when
    /// the connection fails or the attempt's timeout (at most
    /// [`ATTEMPT_TIMEOUT`], never past the policy's deadline) runs out: what
    /// was handed over stays usable, and a caller that needs the whole
    /// answer treats it as a transport failure.
    ///
    /// # Errors
    /// As [`GraphClient::send`]; an error answer (non-2xx) is decoded from
    /// its first [`ERROR_BODY_CAP`] bytes and never reaches `on_chunk`.
    pub async fn get_streamed<F: FnMut(&[u8]) + Send>(
        &self,
        path: &str,
        token: &Sensitive,
        mut on_chunk: F,
    ) -> Result<Streamed, GraphError> {
        let call = Call {
            method: reqwest::Method::GET,
            path,
            token,
            body: None,
            extra_headers: &[],
        };
        let mut resp = self.respond(call).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if !(200..300).contains(&status) {
            // Error answers are small JSON; a server that sends a huge one
            // still costs no more than the cap.
            let mut head = Vec::new();
            read_chunks(&mut resp, |c| {
                let room = ERROR_BODY_CAP.saturating_sub(head.len());
                head.extend_from_slice(&c[..c.len().min(room)]);
            })
            .await;
            return Err(GraphError::from_answer(status, &head, request_id_of(&headers)));
        }
        let (len, complete) = read_chunks(&mut resp, &mut on_chunk).await;
        Ok(Streamed {
            status,
            headers,
            len,
            complete,
        })
    }

    /// `GET` keeping at most `cap_bytes` of the answer and only counting
    /// the rest ([`GraphClient::get_streamed`] with a bounded buffer), so a
    /// huge answer costs `cap_bytes` of memory, not its size.
    ///
    /// # Errors
    /// As [`GraphClient::get_streamed`].
    pub async fn get_capped(
        &self,
        path: &str,
        token: &Sensitive,
        cap_bytes: usize,
    ) -> Result<Capped, GraphError> {
        let mut head = Vec::new();
        let streamed = self
            .get_streamed(path, token, |c| {
                let room = cap_bytes.saturating_sub(head.len());
                head.extend_from_slice(&c[..c.len().min(room)]);
            })
            .await?;
        Ok(Capped {
            status: streamed.status,
            headers: streamed.headers,
            head,
            len: streamed.len,
            complete: streamed.complete,
        })
    }

    /// `GET` decoded as JSON.
    ///
    /// # Errors
    /// As [`GraphClient::send`], or [`GraphError::Decode`].
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        token: &Sensitive,
    ) -> Result<T, GraphError> {
        self.send(reqwest::Method::GET, path, token, None, &[])
            .await?
            .json()
    }
}

/// The most of an error answer's body that is read (Graph's error JSON is a
/// few hundred bytes).
pub const ERROR_BODY_CAP: usize = 64 * 1024;

fn request_id_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Hands each chunk of `resp`'s body to `on_chunk` as it arrives; returns
/// the bytes seen and whether the body ended normally (false when the
/// connection failed or the request's timeout ran out part way).
async fn read_chunks(resp: &mut reqwest::Response, mut on_chunk: impl FnMut(&[u8])) -> (u64, bool) {
    let mut len = 0u64;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                len += c.len() as u64;
                on_chunk(&c);
            }
            Ok(None) => return (len, true),
            Err(e) => {
                tracing::warn!(bytes = len, error = %describe_transport(&e), "a Graph answer ended early");
                return (len, false);
            }
        }
    }
}

fn describe_transport(e: &reqwest::Error) -> String {
    // reqwest's Display can include the URL; Graph URLs carry no secrets, but
    // an upload URL does (authtoken=…), so keep only the kind of failure.
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off".into()
    } else {
        "request failed".into()
    }
}

impl GraphError {
    /// What a Graph answer with an error `status` and `body` means: Graph's
    /// `{"error": {"code", "message"}}` when the body is one, otherwise the
    /// first 200 bytes of whatever came back.
    pub fn from_answer(status: u16, body: &[u8], request_id: Option<String>) -> GraphError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => {
                let inner_id = b
                    .error
                    .inner
                    .as_ref()
                    .and_then(|i| i.get("request-id"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                GraphError::Api {
                    status,
                    code: b.error.code,
                    message: b.error.message,
                    request_id: request_id.or(inner_id),
                }
            }
            Err(_) => GraphError::Api {
                status,
                code: "unknown".into(),
                message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                request_id,
            },
        }
    }
}

#[cfg(test)]
mod tests;
