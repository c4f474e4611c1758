//! The functions' metric lines, kept for `relay365 status --local`.
//!
//! On AWS, CloudWatch turns the Embedded Metric Format lines the functions
//! write into metrics, and `relay365 status` reads those. The demo has no
//! CloudWatch, so it reads the same lines from the functions' output as they
//! are written, keeps the most recent ones in memory, and serves them on
//! `GET /_demo/metrics` of its API front: the numbers `status` shows are the
//! functions' own, not made up by the demo.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::Value;

/// The lines kept: a busy demo hour is far fewer.
const KEEP: usize = 20_000;

/// Metric lines as the functions wrote them, newest last.
#[derive(Debug, Default)]
pub struct MetricLog {
    lines: Mutex<VecDeque<Value>>,
}

impl MetricLog {
    /// Keeps `line` if it is an Embedded Metric Format document.
    pub fn offer(&self, line: &str) {
        if !line.starts_with('{') || !line.contains("\"_aws\"") {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return;
        };
        if v["_aws"]["CloudWatchMetrics"].is_array() {
            let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
            if lines.len() == KEEP {
                lines.pop_front();
            }
            lines.push_back(v);
        }
    }

    /// The lines written at or after `since_ms` (unix milliseconds).
    pub fn since(&self, since_ms: u64) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|v| v["_aws"]["Timestamp"].as_u64().is_some_and(|t| t >= since_ms))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_metric_documents_are_kept_and_read_by_time() {
        let log = MetricLog::default();
        log.offer("{\"level\":\"INFO\",\"message\":\"event delivered\"}");
        log.offer("not json at all");
        log.offer(r#"{"_aws":{"Timestamp":1000,"CloudWatchMetrics":[{"Namespace":"relay365","Dimensions":[["function"]],"Metrics":[{"Name":"EventsDelivered","Unit":"Count"}]}]},"function":"mail-dispatch","EventsDelivered":1}"#);
        log.offer(r#"{"_aws":{"Timestamp":5000,"CloudWatchMetrics":[{"Namespace":"relay365","Dimensions":[["function"]],"Metrics":[{"Name":"EventsDelivered","Unit":"Count"}]}]},"function":"mail-dispatch","EventsDelivered":2}"#);
        assert_eq!(log.since(0).len(), 2);
        assert_eq!(log.since(2000).len(), 1);
        assert_eq!(log.since(2000)[0]["EventsDelivered"], 2);
    }
}
