//! The connect, notification and send-mail flows again, end to end through
//! the release binaries: each function runs as its own process under a local
//! Lambda Runtime API, reached through an API-Gateway-like front with HTTP
//! API v2 events, with moto for AWS and the simulator for Microsoft. These
//! are the binaries `sam build` packages, started the way Lambda starts them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod demo_common;

use std::time::Duration;

use demo_common::*;
use relay365::model::sensitive::Sensitive;
use relay365::web::signing::Signer;
use relay365_demo::apigw::{self, HttpRequest, ROUTES};
use relay365_demo::{Demo, Function, Options, Spec};
use serde_json::{Value, json};

async fn start() -> (Demo, TempDir) {
    let logs = TempDir::new();
    let mut opts = Options::for_tests(bin_dir());
    opts.log_dir = Some(logs.path.clone());
    let demo = Demo::start(opts).await.expect("the stack starts");
    (demo, logs)
}

async fn api(demo: &Demo, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let http = http();
    let url = format!("{}{path}", demo.api_url);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("content-type", "application/json")]
    } else {
        &[]
    };
    let mut req = http.request(method.parse().unwrap(), &url);
    for (k, v) in headers.iter().copied() {
        req = req.header(k, v);
    }
    for (k, v) in signed(method, &url, headers, bytes.as_bytes()) {
        req = req.header(k, v);
    }
    if body.is_some() {
        req = req.body(bytes);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn connect(demo: &Demo) -> String {
    let (status, conn) = api(
        demo,
        "POST",
        "/connections",
        Some(&json!({"id": "support", "auth": "delegated", "scopes": ["Mail.ReadOnly", "Mail.Send", "Mail.Draft"],
                     "subscriptions": [{"resource": "mail"}]})),
    )
    .await;
    assert_eq!(status, 201, "{conn}");
    let (status, page) = sign_in(conn["connect_url"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("is connected"), "{page}");
    // Another process (connections) must see what oauth-callback stored.
    let (status, conn) = api(demo, "GET", "/connections/support", None).await;
    assert_eq!(status, 200);
    assert_eq!(conn["status"], "active", "{conn}");
    let sub = conn["subscriptions"][0]["id"].as_str().unwrap().to_string();
    assert!(!sub.is_empty(), "{conn}");
    sub
}

/// Every secret value the run could have leaked: tokens the simulator
/// issued, the app's client secret, the signing key and the clientState.
async fn secrets(demo: &Demo) -> Vec<String> {
    let sm = aws_sdk_secretsmanager::Client::new(&demo.aws.sdk_config().await);
    let get = |id: &'static str| {
        let sm = sm.clone();
        async move {
            sm.get_secret_value()
                .secret_id(id)
                .send()
                .await
                .unwrap()
                .secret_string()
                .unwrap()
                .to_string()
        }
    };
    let app: Value = serde_json::from_str(&get("relay365/app").await).unwrap();
    let key = get("relay365/signing-key").await;
    let signer = Signer::new(&Sensitive::new(key.clone())).unwrap();
    let mut out = demo.sim.as_ref().unwrap().issued_secrets();
    out.push(app["client_secret"].as_str().unwrap().to_string());
    out.push(key);
    out.push(get("relay365/event-signing-key").await);
    out.push(signer.client_state("support").expose().to_string());
    out
}

fn logs(dir: &std::path::Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        all += &std::fs::read_to_string(entry.unwrap().path()).unwrap();
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_receive_and_send_through_the_release_binaries() {
    let (demo, logdir) = start().await;
    let sim = demo.sim.as_ref().unwrap();

    // API Gateway's own answers: unsigned calls to IAM routes, unknown routes.
    let resp = http()
        .post(format!("{}/connections", demo.api_url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"message": "Forbidden"})
    );
    // A signature made with another secret key, or for another body, is refused
    // as API Gateway refuses it: the front verifies signatures, not their presence.
    let url = format!("{}/connections", demo.api_url);
    for (headers, body) in [
        (signed_with("not-the-demo-secret", "GET", &url, &[], b""), ""),
        (signed("GET", &url, &[], b""), "{}"),
    ] {
        let mut req = http().get(&url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.body(body).send().await.unwrap();
        assert_eq!(resp.status(), 403);
        let message = resp.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.contains("signature we calculated does not match"),
            "{message}"
        );
    }
    let (status, body) = api(&demo, "GET", "/nowhere", None).await;
    assert_eq!((status, body), (404, json!({"message": "Not Found"})));

    // Malformed input: a 4xx JSON error that says what is wrong.
    let http = http();
    let url = format!("{}/connections", demo.api_url);
    let mut req = http.post(&url).header("content-type", "application/json");
    for (k, v) in signed(
        "POST",
        &url,
        &[("content-type", "application/json")],
        b"{\"id\": ",
    ) {
        req = req.header(k, v);
    }
    let resp = req.body("{\"id\": ").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(!err["error"]["message"].as_str().unwrap().is_empty(), "{err}");

    // A declined sign-in comes back as a page that says what happened.
    let (_, conn) = api(
        &demo,
        "POST",
        "/connections",
        Some(&json!({"id": "declined", "auth": "delegated", "scopes": ["Mail.ReadOnly"]})),
    )
    .await;
    sim.set_authorize_outcome(graph_sim::AuthorizeOutcome::Error {
        error: "access_denied".into(),
        aadsts: 65004,
        message: "User declined to consent to access the app.".into(),
        admin_consent_flag: false,
    });
    let (status, page) = sign_in(conn["connect_url"].as_str().unwrap()).await;
    assert!((400..500).contains(&status), "{status} {page}");
    assert!(page.contains("AADSTS65004"), "{page}");
    assert!(
        page.to_lowercase().contains("declined") || page.to_lowercase().contains("cancelled"),
        "{page}"
    );

    // Connect: the simulator validates the webhook binary before creating the subscription.
    connect(&demo).await;

    // Incoming mail: Graph notifies the webhook binary, which queues in SQS;
    // the event source hands the batch to the dispatch binary, which delivers
    // a signed event to the flow.
    sim.set_duplicate_notifications(true);
    let id = sim.deliver_message(
        relay365_demo::DEMO_USER,
        graph_sim::Message {
            subject: "Where is my order?".into(),
            from: ("Customer".into(), "customer@example.org".into()),
            body_html: "<p>Order 1234</p>".into(),
            ..Default::default()
        },
    );
    assert!(
        eventually(20, || !demo.receiver.events().is_empty()).await,
        "no event arrived"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = demo.receiver.events();
    assert_eq!(events.len(), 1, "Graph's duplicate was delivered too: {events:?}");
    let e = &events[0];
    assert!(e.signature_ok, "the event's signature does not verify");
    assert_eq!(e.event["type"], "mail.received");
    assert_eq!(e.event["connection_id"], "support");
    assert_eq!(e.event["mail"]["id"], id.as_str());
    assert_eq!(e.event["mail"]["subject"], "Where is my order?");
    assert_eq!(e.event["mail"]["from"]["address"], "customer@example.org");
    assert!(e.event_id.is_some());

    // Send a reply over HTTP, twice with one idempotency key: one mail leaves.
    let reply = json!({"connection_id": "support", "to": ["customer@example.org"], "subject": "Re: Where is my order?",
                       "body": {"text": "It ships today."}, "reply_to_message_id": id, "idempotency_key": "case-1234"});
    let (status, body) = api(&demo, "POST", "/mail/send", Some(&reply)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "sent");
    let (status, body) = api(&demo, "POST", "/mail/send", Some(&reply)).await;
    assert_eq!(
        (status, &body["idempotent_replay"]),
        (202, &json!(true)),
        "{body}"
    );
    assert_eq!(sim.sent().len(), 1);
    assert_eq!(sim.sent()[0].in_reply_to.as_deref(), Some(id.as_str()));

    // A field-named 400 from the binary.
    let (status, body) = api(
        &demo,
        "POST",
        "/mail/send",
        Some(&json!({"connection_id": "support", "to": ["x"], "body": {"text": "t"}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("to[0]"),
        "{body}"
    );

    // A 5 MiB attachment from the deployment's bucket: the binary's S3 client
    // reads it in ranges and the upload session receives it intact.
    let bytes: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    aws_sdk_s3::Client::new(&demo.aws.sdk_config().await)
        .put_object()
        .bucket(&demo.resources.bucket)
        .key("support/c-1/call.wav")
        .body(bytes.clone().into())
        .send()
        .await
        .unwrap();
    let (status, body) = api(
        &demo,
        "POST",
        "/mail/send",
        Some(
            &json!({"connection_id": "support", "to": ["customer@example.org"], "subject": "Recording",
                     "body": {"text": "Attached"},
                     "attachments": [{"name": "call.wav", "content_type": "audio/wav",
                                      "s3": {"bucket": demo.resources.bucket, "key": "support/c-1/call.wav"}}]}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let sent = sim.sent();
    assert_eq!(sent.last().unwrap().attachments[0].2, bytes);

    // Amazon Connect invokes send-mail directly with a contact flow event.
    let answer = demo
        .invoke_send_mail(&json!({
            "Name": "ContactFlowEvent",
            "Details": {"ContactData": {"ContactId": "c-1"}, "Parameters": {
                "connection_id": "support", "to": "customer@example.org; boss@example.org",
                "subject": "Your callback", "body_text": "We will call you at 3pm."}}
        }))
        .await
        .unwrap();
    assert_eq!(answer, json!({"status": "sent"}));
    assert_eq!(
        sim.sent().last().unwrap().to,
        vec!["customer@example.org", "boss@example.org"]
    );

    // Nothing secret reached any function's log.
    let all = logs(&logdir.path);
    assert!(
        all.contains("mailbox connected"),
        "the logs were not captured: {all}"
    );
    for s in secrets(&demo).await {
        assert!(!all.contains(&s), "a secret appears in the function logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_renewal_schedule_recreates_a_subscription_graph_lost() {
    let (demo, _logs) = start().await;
    let sim = demo.sim.as_ref().unwrap();
    let old = connect(&demo).await;
    sim.remove_subscription_silently(&old);
    let report = demo.run_schedule().await.unwrap();
    assert_eq!(report["recreated"], 1, "{report}");
    let (_, conn) = api(&demo, "GET", "/connections/support", None).await;
    let new = conn["subscriptions"][0]["id"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(sim.subscriptions().iter().any(|s| s.0 == new));
    // And mail flows through the new subscription.
    sim.deliver_message(
        relay365_demo::DEMO_USER,
        graph_sim::Message {
            subject: "after renewal".into(),
            from: ("C".into(), "c@example.org".into()),
            ..Default::default()
        },
    );
    assert!(eventually(20, || demo.receiver.events().len() == 1).await);
}

/// `cargo lambda watch` hands every invocation the deadline 600000 (ten
/// minutes after 1970): dispatch takes that for a runtime that gave none and
/// works within its configured timeout, so mail still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_delivers_under_a_deadline_in_the_past_as_cargo_lambda_watch_sends() {
    let logs = TempDir::new();
    let mut opts = Options::for_tests(bin_dir());
    opts.log_dir = Some(logs.path.clone());
    opts.fixed_deadline_ms = Some(600_000);
    let demo = Demo::start(opts).await.expect("the stack starts");
    let sim = demo.sim.as_ref().unwrap();
    connect(&demo).await;
    let id = sim.deliver_message(
        relay365_demo::DEMO_USER,
        graph_sim::Message {
            subject: "under cargo lambda watch".into(),
            from: ("C".into(), "c@example.org".into()),
            ..Default::default()
        },
    );
    assert!(
        eventually(30, || demo.receiver.events().len() == 1).await,
        "no event arrived; dispatch log:\n{}",
        std::fs::read_to_string(logs.path.join("mail-dispatch.log")).unwrap_or_default()
    );
    let got = &demo.receiver.events()[0];
    assert_eq!(got.event["mail"]["id"], id.as_str());
    // The invocation's trace reaches the target, so a mail can be followed.
    assert!(
        got.trace.as_deref().is_some_and(|t| t.starts_with("Root=1-")),
        "{:?}",
        got.trace
    );
    // The binary wrote the delivery as an Embedded Metric Format line, with
    // the invocation's request id.
    let log = logs.path.join("mail-dispatch.log");
    let metric = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| !l["EventsDelivered"].is_null())
    };
    assert!(
        eventually(10, || metric().is_some()).await,
        "no metric line in the dispatch log"
    );
    let line = metric().unwrap();
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "relay365",
        "{line}"
    );
    assert_eq!(
        (line["function"].as_str(), line["target"].as_str()),
        (Some("mail-dispatch"), Some("https")),
        "{line}"
    );
    assert!(
        line["requestId"].as_str().is_some_and(|r| !r.is_empty()),
        "{line}"
    );
    assert!(line["EndToEndLatency"].is_array(), "{line}");
}

fn webhook_spec(env: Vec<(String, String)>) -> Spec {
    Spec {
        name: "mail-webhook".into(),
        binary: bin_dir().join("mail-webhook"),
        env,
        timeout: Duration::from_secs(10),
        log_file: None,
        echo: false,
        args: Vec::new(),
        cpu: Default::default(),
        fixed_deadline_ms: None,
        metrics: None,
    }
}

fn notifications_event(query: &str, body: &str) -> Value {
    let req = HttpRequest {
        method: "POST".into(),
        path: "/notifications".into(),
        query: query.into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
        source_ip: "52.0.0.1".into(),
    };
    apigw::event("POST /notifications", &[], &req, None, "relay.example")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_answers_the_handshake_cold_without_touching_aws_and_never_acks_what_it_cannot_queue() {
    let aws = relay365_testkit::Aws::start().await;
    let env: Vec<(String, String)> = [
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_ENDPOINT_URL", aws.url()),
        ("RELAY365_APP_SECRET_ID", "relay365/app".into()),
        ("RELAY365_SIGNING_KEY_SECRET_ID", "relay365/signing-key".into()),
        ("RELAY365_QUEUE_URL", format!("{}/123456789012/q.fifo", aws.url())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let webhook = Function::new(webhook_spec(env)).await.unwrap();
    let answer = webhook
        .invoke(&notifications_event(
            "validationToken=Validation%3A+Testing+client+application+reachability",
            "",
        ))
        .await
        .unwrap();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(
        answer["body"],
        "Validation: Testing client application reachability"
    );
    assert!(
        answer["headers"]["content-type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(webhook.timings().cold_starts, 1);
    assert!(
        aws.counts().is_empty(),
        "the handshake reached AWS: {:?}",
        aws.counts()
    );

    // A real notification while AWS is unreachable: not acknowledged (Graph retries).
    aws.set_down(true);
    let note = json!({"value": [{"subscriptionId": "s", "clientState": "support.x", "changeType": "created",
                                 "resource": "Users/u/Messages/m", "tenantId": "t"}]});
    let answer = webhook
        .invoke(&notifications_event("", &note.to_string()))
        .await
        .unwrap();
    assert_eq!(answer["statusCode"], 503, "{answer}");
    assert_eq!(
        webhook.timings().cold_starts,
        1,
        "the process should have survived"
    );

    // Two Host headers joined by a comma: a 400, and the sandbox lives on
    // (lambda_http would panic on it, aborting the process).
    let mut doubled = notifications_event("validationToken=x", "");
    doubled["headers"]["host"] = "relay.example, evil.example".into();
    let answer = webhook.invoke(&doubled).await.unwrap();
    assert_eq!(answer["statusCode"], 400, "{answer}");
    assert_eq!(
        webhook.timings().cold_starts,
        1,
        "the crafted event killed the sandbox"
    );

    // A sandbox that went away is replaced on the next invocation: a second cold start.
    webhook.stop().await;
    let answer = webhook
        .invoke(&notifications_event("validationToken=again", ""))
        .await
        .unwrap();
    assert_eq!(answer["body"], "again");
    assert_eq!(webhook.timings().cold_starts, 2);
    assert!(webhook.timings().ready.is_some());
}

#[tokio::test]
async fn api_gateway_events_have_the_fields_aws_sends() {
    // The fixture aws_lambda_events tests itself against, from the crate's source.
    let fixture_path = dependency_file(
        "aws_lambda_events",
        "src/fixtures/example-apigw-v2-request-iam.json",
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&fixture_path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not the JSON fixture it was: {e}", fixture_path.display()));

    let req = HttpRequest {
        method: "POST".into(),
        path: "/connections/support/subscriptions".into(),
        query: "a=1&a=2".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cookie".into(), "c=1".into()),
            ("user-agent".into(), "curl/8".into()),
        ],
        body: b"{}".to_vec(),
        source_ip: "192.0.2.1".into(),
    };
    let (route, params) = apigw::find("POST", &req.path).unwrap();
    let ours = apigw::event(
        &route.key(),
        &params,
        &req,
        Some("AKID"),
        "abc.execute-api.us-east-1.amazonaws.com",
    );

    // Every field we send exists in AWS's event with the same JSON type…
    fn same_shape(ours: &Value, theirs: &Value, at: &str) {
        match (ours, theirs) {
            (Value::Object(o), Value::Object(t)) => {
                for (k, v) in o {
                    let Some(tv) = t.get(k) else {
                        panic!("{at}.{k} is not a field of API Gateway's event");
                    };
                    // Free-form maps (headers, parameters) have their own keys.
                    if !matches!(k.as_str(), "headers" | "queryStringParameters" | "pathParameters") {
                        same_shape(v, tv, &format!("{at}.{k}"));
                    }
                }
            }
            // AWS sends null for absent optional values (cognitoIdentity, principalOrgId).
            (Value::Null, _) => {}
            (o, t) => assert_eq!(
                std::mem::discriminant(o),
                std::mem::discriminant(t),
                "{at}: {o} vs {t}"
            ),
        }
    }
    same_shape(&ours, &fixture, "event");
    // …and every field AWS always sends is there (mTLS and stage variables are optional).
    for k in fixture.as_object().unwrap().keys() {
        if k != "stageVariables" {
            assert!(ours.get(k).is_some(), "missing {k}");
        }
    }
    for k in fixture["requestContext"].as_object().unwrap().keys() {
        if k != "authentication" {
            assert!(
                ours["requestContext"].get(k).is_some(),
                "missing requestContext.{k}"
            );
        }
    }

    // lambda_http (what the functions use) reads it as an HTTP API v2 request.
    let parsed = lambda_http::request::from_str(&ours.to_string()).unwrap();
    use lambda_http::RequestExt;
    assert_eq!(parsed.uri().path(), "/connections/support/subscriptions");
    assert_eq!(parsed.path_parameters().first("id"), Some("support"));
    assert_eq!(parsed.query_string_parameters().all("a"), Some(vec!["1", "2"]));
    assert_eq!(parsed.headers()["cookie"], "c=1");
    assert!(matches!(
        parsed.request_context(),
        lambda_http::request::RequestContext::ApiGatewayV2(_)
    ));
}

#[test]
fn the_demo_routes_are_the_templates() {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).unwrap();
    // Each route block: RouteKey, AuthorizationType and the integration's function.
    let mut declared = Vec::new();
    let blocks: Vec<&str> = template.split("Type: AWS::ApiGatewayV2::Route").skip(1).collect();
    for block in blocks {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")).map(str::to_string))
                .unwrap()
        };
        let target = field("Target");
        let integration = target
            .split("${")
            .nth(1)
            .and_then(|t| t.split("Integration").next())
            .unwrap()
            .to_string();
        // ConnectionsIntegration -> connections, OAuthCallback -> oauth-callback.
        let mut function = String::new();
        let mut prev_lower = false;
        for c in integration.chars() {
            if c.is_uppercase() && prev_lower {
                function.push('-');
            }
            prev_lower = c.is_lowercase();
            function.push(c.to_ascii_lowercase());
        }
        declared.push((
            field("RouteKey"),
            field("AuthorizationType") == "AWS_IAM",
            function,
        ));
    }
    let mut ours: Vec<(String, bool, String)> = ROUTES
        .iter()
        .map(|r| (r.key(), r.iam, r.function.to_string()))
        .collect();
    declared.sort();
    ours.sort();
    assert_eq!(ours, declared);
}

#[test]
fn a_missing_dependency_file_is_named_with_where_it_was_looked_for() {
    let err = std::panic::catch_unwind(|| {
        dependency_file("aws_lambda_events", "src/fixtures/no-such-fixture.json")
    })
    .expect_err("a file the crate does not ship cannot be found");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("src/fixtures/no-such-fixture.json"), "{msg}");
    assert!(msg.contains("aws_lambda_events"), "{msg}");
    assert!(msg.contains("dep-info"), "{msg}");
    assert!(msg.contains("cargo metadata"), "{msg}");
    // And the real one is found the same way, from the copy the build compiled.
    let found = dependency_file(
        "aws_lambda_events",
        "src/fixtures/example-apigw-v2-request-iam.json",
    );
    assert!(found.is_file(), "{}", found.display());
}
