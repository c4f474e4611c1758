//! The stack's HTTP API, called as the operator: every request to an IAM
//! route signed with SigV4 ([`crate::sigv4`]), every error turned into what
//! to do about it.

use std::time::SystemTime;

use serde_json::Value;

use crate::error::{CliError, chain};
use crate::sigv4;
use crate::stack::Stack;

/// The API of one stack.
#[derive(Debug, Clone)]
pub struct Api {
    stack: Stack,
    http: reqwest::Client,
    base: String,
    region: String,
}

impl Api {
    /// The API at the stack's `ApiUrl` output.
    ///
    /// # Errors
    /// When the stack has no `ApiUrl` or HTTPS cannot be set up.
    pub fn new(stack: &Stack) -> Result<Self, CliError> {
        let base = stack.output("ApiUrl")?.trim_end_matches('/').to_string();
        // https://{api}.execute-api.{region}.amazonaws.com
        let region = url::Url::parse(&base)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                let mut parts = host.split('.');
                (parts.nth(1) == Some("execute-api")).then(|| parts.next().map(str::to_string))?
            })
            .unwrap_or_else(|| stack.region.clone());
        Ok(Self {
            stack: stack.clone(),
            http: stack.http()?,
            base,
            region,
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`.
    ///
    /// # Errors
    /// As [`Api::call`].
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call("GET", path, None, &[]).await
    }

    /// A signed request; the JSON answer on 2xx, the error that says what to do otherwise.
    ///
    /// # Errors
    /// [`CliError::Forbidden`] (403 from API Gateway), [`CliError::Api`] (the
    /// function's JSON error), [`CliError::Network`].
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if body.is_some() {
            all.push(("content-type", "application/json"));
        }
        let creds = self.stack.credentials().await?;
        let signed = sigv4::sign_headers(
            method,
            &url,
            &all,
            &bytes,
            &creds,
            &self.region,
            SystemTime::now(),
        )?;
        let method_ = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| CliError::Usage(format!("{method} is not an HTTP method")))?;
        let mut req = self.http.request(method_, &url);
        for (k, v) in all.iter() {
            req = req.header(*k, *v);
        }
        for (k, v) in &signed {
            req = req.header(k, v);
        }
        let resp = req.body(bytes).send().await.map_err(|e| {
            CliError::Network(format!(
                "cannot reach the API at {}: {}; check the stack's ApiUrl output and your network",
                self.base,
                chain(&e)
            ))
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if (200..300).contains(&status) {
            return Ok(json);
        }
        if let Some(e) = json.get("error") {
            return Err(CliError::Api {
                status,
                code: e["code"].as_str().unwrap_or("error").to_string(),
                message: e["message"]
                    .as_str()
                    .unwrap_or("the API refused the request")
                    .to_string(),
            });
        }
        let message = json["message"].as_str().unwrap_or("").to_string();
        match status {
            403 => Err(CliError::Forbidden {
                message: if message.is_empty() {
                    "Forbidden".into()
                } else {
                    message
                },
                resource: format!(
                    "arn:aws:execute-api:{}:{}:{}/*/{method}{}",
                    self.region,
                    self.stack.account,
                    self.api_id(),
                    path.split('?').next().unwrap_or(path)
                ),
            }),
            404 => Err(CliError::Api {
                status,
                code: "not_found".into(),
                message: format!(
                    "the API has no route {method} {path}: the stack predates this CLI; run `sam deploy` from this checkout"
                ),
            }),
            _ => Err(CliError::Api {
                status,
                code: "gateway".into(),
                message: format!(
                    "API Gateway answered {status} {message}: look at the function's log group in CloudWatch"
                ),
            }),
        }
    }

    fn api_id(&self) -> String {
        url::Url::parse(&self.base)
            .ok()
            .and_then(|u| u.host_str().and_then(|h| h.split('.').next()).map(str::to_string))
            .unwrap_or_else(|| "API_ID".into())
    }
}
