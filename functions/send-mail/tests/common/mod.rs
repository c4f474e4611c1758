//! What the send-mail end-to-end tests share: a stack (moto, the Microsoft
//! simulator) with an attachments bucket and, when asked, a deferred-send
//! queue; connections made through the real admin API and sign-in; and
//! `POST /mail/send` as a plain HTTP request or as API Gateway's event from a
//! chosen IAM caller.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use relay365_harness::*;
use send_mail::Sender;
use send_mail::idempotency::StateKeys;
use serde_json::{Value, json};

pub const BUCKET: &str = "relay365-attachments";
pub const ACCOUNT: &str = "123456789012";

/// The message of an error answer, which a caller reads.
pub fn error_message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap()
}

pub struct World {
    pub stack: Stack,
    pub s3: aws_sdk_s3::Client,
    /// The deferred-send queue, when the world has one.
    pub deferred: Option<Fifo>,
}

impl World {
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// A world with the settings `env` besides the attachments bucket's.
    pub async fn start_with(env: Vec<(&'static str, String)>) -> Self {
        let mut all = vec![("RELAY365_ATTACHMENTS_BUCKET", BUCKET.into())];
        all.extend(env);
        let stack = Stack::start_with(Options {
            env: all,
            ..Default::default()
        })
        .await;
        let s3 = stack.s3_with_bucket(BUCKET).await;
        Self {
            stack,
            s3,
            deferred: None,
        }
    }

    /// This world with a deferred-send queue, which large sends go through.
    pub async fn with_deferred(mut self) -> Self {
        self.deferred = Some(Fifo::standard(&self.stack.aws, "relay365-deferred-sends", 3).await);
        self
    }

    /// Adds a simulated user (a mailbox mail can arrive in).
    pub fn add_user(&self, upn: &str) {
        self.stack.sim.add_user(graph_sim::User {
            id: format!("u-{upn}"),
            upn: upn.into(),
            display_name: upn.into(),
            tenant: TENANT.into(),
        });
    }

    pub fn sender(&self) -> Sender<'_> {
        Sender {
            services: &self.stack.services,
            s3: Some(relay365::aws::sdk::LazyClient::ready(self.s3.clone())),
            idempotency: Some(Arc::new(StateKeys::new(self.stack.services.state.clone()))),
            deferred: self.deferred.as_ref().map(|q| {
                Arc::new(send_mail::deferred::SqsDeferred::with_client(
                    q.client.clone(),
                    q.url.clone(),
                )) as Arc<dyn send_mail::deferred::Deferred>
            }),
        }
    }

    /// `POST /connections` with `body`: (status, answer).
    pub async fn create(&self, body: &Value) -> (u16, Value) {
        let resp = connections::handle(
            request("POST", "/connections", Some(&body.to_string()), &[]),
            &self.stack.services,
        )
        .await;
        (resp.status().as_u16(), body_json(&resp))
    }

    /// A delegated connection, created with `extra` settings and signed in
    /// through the real flow.
    pub async fn delegated(&self, id: &str, scopes: Value, extra: Value) {
        let mut body = json!({"id": id, "auth": "delegated", "scopes": scopes});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let (status, v) = self.create(&body).await;
        assert_eq!(status, 201, "{v}");
        let link = v["connect_url"].as_str().unwrap().to_string();
        let start = self.oauth(&path_and_query(&link), &[]).await;
        let cookie = cookies(&start).remove(0);
        let back = self.stack.follow(&location(&start)).await;
        let done = self.oauth(&path_and_query(&back), &[&cookie]).await;
        assert_eq!(done.status(), 200, "{}", body_text(&done));
    }

    async fn oauth(&self, path: &str, cookies: &[&str]) -> lambda_http::Response<lambda_http::Body> {
        oauth_callback::handle(request("GET", path, None, cookies), &self.stack.services).await
    }

    /// An app-only connection in the app's home tenant, for `mailbox`, made
    /// active (consented there).
    pub async fn app_only(&self, id: &str, mailbox: &str) {
        let body = json!({"id": id, "auth": "app_secret", "scopes": ["Mail.Send"], "mailbox": mailbox, "tenant_id": TENANT});
        let (status, v) = self.create(&body).await;
        assert_eq!(status, 201, "{v}");
        self.stack
            .services
            .state
            .update_connection(
                id,
                relay365::aws::store::ConnectionChange::new().status(relay365::Status::Active),
            )
            .await
            .unwrap();
    }

    /// `POST /mail/send` through the HTTP handler: (status, answer, Retry-After).
    pub async fn post(&self, body: &Value) -> (u16, Value, Option<String>) {
        self.post_with(body, &[]).await
    }

    /// [`Self::post`] with these headers besides the JSON content type.
    pub async fn post_with(&self, body: &Value, headers: &[(&str, &str)]) -> (u16, Value, Option<String>) {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        let req = request_with_headers("POST", "/mail/send", Some(&body.to_string()), &[], &h);
        let resp = send_mail::handle_http(req, &self.sender()).await;
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (resp.status().as_u16(), body_json(&resp), retry)
    }

    /// `POST /mail/send` as API Gateway hands it over when `caller` (an IAM
    /// principal ARN) signed the request: (status, answer).
    pub async fn post_as(&self, caller: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut h = json!({"content-type": "application/json", "host": "relay.example"});
        for (k, v) in headers {
            h[*k] = (*v).into();
        }
        let event = json!({
            "version": "2.0",
            "routeKey": "POST /mail/send",
            "rawPath": "/mail/send",
            "rawQueryString": "",
            "headers": h,
            "requestContext": {
                "accountId": ACCOUNT,
                "apiId": "relay365test",
                "authorizer": {"iam": {
                    "accessKey": "ASIATESTTESTTESTTEST",
                    "accountId": ACCOUNT,
                    "callerId": "AROATESTTESTTEST:session",
                    "cognitoIdentity": null,
                    "principalOrgId": null,
                    "userArn": caller,
                    "userId": "AROATESTTESTTEST:session"
                }},
                "domainName": "relay.example",
                "domainPrefix": "relay",
                "http": {"method": "POST", "path": "/mail/send", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "relay365-tests"},
                "requestId": "req-1",
                "routeKey": "POST /mail/send",
                "stage": "$default",
                "time": "22/Nov/2026:18:00:00 +0000",
                "timeEpoch": 1763834400000u64
            },
            "body": body.to_string(),
            "isBase64Encoded": false
        });
        let out = send_mail::handle_event(event, &self.sender()).await;
        let status = out["statusCode"].as_u64().unwrap() as u16;
        let answer = serde_json::from_str(out["body"].as_str().unwrap_or("")).unwrap_or(Value::Null);
        (status, answer)
    }

    /// An Amazon Connect contact flow event of `instance` with these parameters.
    pub async fn contact_flow(&self, instance: &str, parameters: Value) -> Value {
        let event = json!({
            "Name": "ContactFlowEvent",
            "Details": {
                "ContactData": {"ContactId": "c-123", "Channel": "VOICE", "InitiationMethod": "INBOUND", "InstanceARN": instance},
                "Parameters": parameters
            }
        });
        send_mail::handle_event(event, &self.sender()).await
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .unwrap();
    }
}
