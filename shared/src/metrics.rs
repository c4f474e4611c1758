//! What the functions measure, in CloudWatch's Embedded Metric Format.
//!
//! An operator should see whether relay365 works without reading logs: how
//! fast the webhook answers Graph, how many notifications come in and are
//! queued or refused, how many events reach each kind of target, how long a
//! mail takes from its arrival to the target's 2xx, what the sweep had to
//! recover, when Graph throttles and how long it makes us wait, renewals
//! and their failures, paused flows and lost grants.
//!
//! The values are recorded through the `metrics` facade into
//! `metrics_cloudwatch_embedded`'s collector, which holds them in memory: a
//! measurement costs the hot path no I/O. Each function's `main` installs
//! the collector once ([`init`]) and writes what an invocation recorded to
//! its log once the invocation is over ([`flush`]); CloudWatch turns those
//! log lines into metrics in the namespace [`NAMESPACE`]. Without a
//! collector (tests, tools) every recording is a no-op.
//!
//! Dimensions stay few and bounded: the function (every line), and where it
//! matters the target kind (`https`, `eventbridge`) or the outcome. Anything
//! with many values (a connection id) goes into properties, never into a
//! dimension, so the number of metrics CloudWatch bills does not grow with
//! the fleet.

use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

/// The CloudWatch namespace of every relay365 metric.
pub const NAMESPACE: &str = "relay365";

/// The metric names, as the dashboard and the alarms in template.yaml use them.
pub mod name {
    /// The webhook's time from a request to its answer (milliseconds).
    pub const WEBHOOK_ACK: &str = "WebhookAckLatency";
    /// Notifications in requests Graph sent.
    pub const NOTIFICATIONS_RECEIVED: &str = "NotificationsReceived";
    /// Notifications the queue took.
    pub const NOTIFICATIONS_QUEUED: &str = "NotificationsQueued";
    /// Notifications refused as forged (a clientState that does not verify).
    pub const NOTIFICATIONS_FORGED: &str = "NotificationsForged";
    /// Events a target took.
    pub const EVENTS_DELIVERED: &str = "EventsDelivered";
    /// Deliveries that failed and will be tried again.
    pub const EVENTS_RETRIED: &str = "EventsRetried";
    /// From a mail's `receivedDateTime` to the target's 2xx (milliseconds).
    pub const END_TO_END: &str = "EndToEndLatency";
    /// Items a catch-up (the sweep, `missed`, a resume) found and queued.
    pub const RECOVERED: &str = "SweepRecovered";
    /// `connection.reauth_required` events sent.
    pub const REAUTH: &str = "ReauthRequired";
    /// Graph answers of 429.
    pub const GRAPH_THROTTLED: &str = "GraphThrottled";
    /// How long Graph asked us to wait after a 429 (milliseconds).
    pub const GRAPH_WAIT: &str = "GraphThrottleWait";
    /// Subscriptions renewed, recreated or rekeyed by the scheduled run.
    pub const RENEWALS: &str = "SubscriptionRenewals";
    /// Subscriptions the scheduled run could not renew or recreate.
    pub const RENEWAL_FAILURES: &str = "SubscriptionRenewalFailures";
    /// Flows paused (their target answered 410, or an operator).
    pub const PAUSED: &str = "FlowsPaused";
}

/// The collector of this process, writing lines for `function`. Installed
/// once; a second call (or a process that has another recorder) gets `None`
/// and records nothing, which is never a reason to fail.
pub fn init(function: &'static str) -> Option<&'static metrics_cloudwatch_embedded::Collector> {
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(NAMESPACE)
        .with_dimension("function", function)
        .init()
        .ok()?;
    describe();
    Some(collector)
}

/// Registers each metric's unit, so CloudWatch shows milliseconds and counts.
fn describe() {
    for (n, what) in [
        (
            name::WEBHOOK_ACK,
            "time from Graph's request to the webhook's answer",
        ),
        (name::END_TO_END, "from a mail's arrival to the target's 2xx"),
        (name::GRAPH_WAIT, "how long Graph asked us to wait after a 429"),
    ] {
        describe_histogram!(n, Unit::Milliseconds, what);
    }
    for (n, what) in [
        (name::NOTIFICATIONS_RECEIVED, "notifications Graph sent"),
        (name::NOTIFICATIONS_QUEUED, "notifications queued for dispatch"),
        (name::NOTIFICATIONS_FORGED, "notifications refused as forged"),
        (name::EVENTS_DELIVERED, "events a target took"),
        (name::EVENTS_RETRIED, "deliveries to be tried again"),
        (name::RECOVERED, "items a catch-up found Graph never announced"),
        (name::REAUTH, "connection.reauth_required events sent"),
        (name::GRAPH_THROTTLED, "Graph 429 answers"),
        (name::RENEWALS, "subscriptions renewed or recreated"),
        (name::RENEWAL_FAILURES, "subscriptions that could not be renewed"),
        (name::PAUSED, "flows paused"),
    ] {
        describe_counter!(n, Unit::Count, what);
    }
}

/// Writes what the invocation recorded to standard output (the function's
/// log), with the invocation's Lambda request id and X-Ray trace id as
/// properties.
pub fn flush(
    collector: Option<&'static metrics_cloudwatch_embedded::Collector>,
    invocation: &lambda_http::Context,
) {
    let Some(c) = collector else {
        return;
    };
    c.set_property("requestId", invocation.request_id.clone());
    match invocation.xray_trace_id.as_deref() {
        Some(t) => c.set_property("traceId", t.to_string()),
        None => c.remove_property("traceId"),
    };
    if let Err(e) = c.flush(std::io::stdout().lock()) {
        tracing::warn!(error = %e, "could not write the invocation's metrics");
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A webhook request answered after `elapsed`: how many notifications it
/// carried, how many were queued and how many refused as forged.
pub fn webhook_answered(elapsed: Duration, received: usize, queued: usize, forged: usize) {
    histogram!(name::WEBHOOK_ACK).record(millis(elapsed));
    counter!(name::NOTIFICATIONS_RECEIVED).increment(received as u64);
    counter!(name::NOTIFICATIONS_QUEUED).increment(queued as u64);
    counter!(name::NOTIFICATIONS_FORGED).increment(forged as u64);
}

/// A target of `kind` took an event; `since_arrival` is the time from the
/// mail's arrival, when the event is a mail.
pub fn delivered(kind: &'static str, since_arrival: Option<Duration>) {
    counter!(name::EVENTS_DELIVERED, "target" => kind).increment(1);
    if let Some(d) = since_arrival {
        histogram!(name::END_TO_END, "target" => kind).record(millis(d));
    }
}

/// A delivery to a target of `kind` failed and will be tried again.
pub fn retried(kind: &'static str) {
    counter!(name::EVENTS_RETRIED, "target" => kind).increment(1);
}

/// A flow was paused (`by`: `target` for a 410, `operator`).
pub fn paused(by: &'static str) {
    counter!(name::PAUSED, "outcome" => by).increment(1);
}

/// A catch-up queued `n` items the flow was never sent.
pub fn recovered(n: usize) {
    if n > 0 {
        counter!(name::RECOVERED).increment(n as u64);
    }
}

/// A `connection.reauth_required` event reached the flow.
pub fn reauth_sent() {
    counter!(name::REAUTH).increment(1);
}

/// Graph answered 429 and asked for `wait` (or gave no `Retry-After`).
pub fn graph_throttled(wait: Option<Duration>) {
    counter!(name::GRAPH_THROTTLED).increment(1);
    if let Some(w) = wait {
        histogram!(name::GRAPH_WAIT).record(millis(w));
    }
}

/// The scheduled run renewed or recreated `done` subscriptions and failed on `failed`.
pub fn renewals(done: usize, failed: usize) {
    counter!(name::RENEWALS).increment(done as u64);
    counter!(name::RENEWAL_FAILURES).increment(failed as u64);
}

#[cfg(test)]
mod tests {
    //! The lines a function writes, read as CloudWatch reads them.
    use super::*;
    use serde_json::Value;

    /// Every metric of the module, recorded once, flushed into a buffer and
    /// checked against the Embedded Metric Format: `_aws.Timestamp`,
    /// `_aws.CloudWatchMetrics[].Namespace`, `Dimensions` (each named
    /// dimension has a value at the top level), `Metrics` with `Name` and
    /// `Unit`, and each metric's value at the top level.
    #[test]
    fn each_metric_is_a_valid_embedded_metric_line_with_its_unit_and_bounded_dimensions() {
        let collector = init("mail-dispatch").expect("the first collector of this process");
        webhook_answered(Duration::from_millis(42), 3, 2, 1);
        delivered("https", Some(Duration::from_millis(1500)));
        delivered("eventbridge", None);
        retried("https");
        paused("target");
        recovered(4);
        reauth_sent();
        graph_throttled(Some(Duration::from_secs(2)));
        renewals(5, 1);
        collector.set_property("requestId", "req-1".to_string());
        let mut out = Vec::new();
        collector.flush(&mut out).unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(!lines.is_empty());
        let mut seen = std::collections::BTreeMap::new();
        for line in &lines {
            let aws = &line["_aws"];
            assert!(aws["Timestamp"].as_u64().is_some(), "{line}");
            let cw = &aws["CloudWatchMetrics"][0];
            assert_eq!(cw["Namespace"], NAMESPACE, "{line}");
            let dims: Vec<&str> = cw["Dimensions"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap())
                .collect();
            assert_eq!(dims[0], "function", "{line}");
            for d in &dims {
                assert!(
                    ["function", "target", "outcome"].contains(d),
                    "unbounded dimension {d}: {line}"
                );
                assert!(line[*d].is_string(), "dimension {d} has no value: {line}");
            }
            assert_eq!(line["function"], "mail-dispatch");
            assert_eq!(line["requestId"], "req-1", "properties ride along: {line}");
            for m in cw["Metrics"].as_array().unwrap() {
                let n = m["Name"].as_str().unwrap();
                assert!(m["Unit"].is_string(), "{n} has no unit: {line}");
                assert!(!line[n].is_null(), "{n} has no value: {line}");
                seen.insert(
                    n.to_string(),
                    (m["Unit"].clone(), line[n].clone(), line["target"].clone()),
                );
            }
        }
        let unit = |n: &str| seen[n].0.as_str().unwrap().to_string();
        for n in [name::WEBHOOK_ACK, name::END_TO_END, name::GRAPH_WAIT] {
            assert_eq!(unit(n), "Milliseconds", "{n}");
        }
        for n in [
            name::NOTIFICATIONS_RECEIVED,
            name::NOTIFICATIONS_QUEUED,
            name::NOTIFICATIONS_FORGED,
            name::EVENTS_DELIVERED,
            name::EVENTS_RETRIED,
            name::RECOVERED,
            name::REAUTH,
            name::GRAPH_THROTTLED,
            name::RENEWALS,
            name::RENEWAL_FAILURES,
            name::PAUSED,
        ] {
            assert_eq!(unit(n), "Count", "{n}");
        }
        assert_eq!(seen[name::NOTIFICATIONS_RECEIVED].1, 3);
        assert_eq!(seen[name::WEBHOOK_ACK].1, serde_json::json!([42.0]));
        assert_eq!(seen[name::END_TO_END].2, "https", "latency per target kind");
        // A second flush has nothing new to say about counters.
        let mut again = Vec::new();
        collector.flush(&mut again).unwrap();
        assert!(
            !String::from_utf8(again)
                .unwrap()
                .contains(name::NOTIFICATIONS_RECEIVED)
        );
    }
}
