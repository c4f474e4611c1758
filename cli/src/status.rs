//! `relay365 status`: one screen that answers "is it working?".
//!
//! It puts together what the admin API says of each connection (its state,
//! its flows, the last mail, what waits for retry, what was recovered) and
//! what the functions measured in the last hour: events delivered (a
//! sparkline of one bar per minute), retried, recovered, paused flows, the
//! mail-to-target latency, and how many notifications wait in the queues.
//! On AWS the figures are the CloudWatch metrics the functions' Embedded
//! Metric Format lines became; on `make demo` they are the same lines, read
//! from the demo, which keeps them as the functions write them. `--watch`
//! refreshes the screen; without a terminal each refresh is printed plain.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use crate::api::Api;
use crate::error::CliError;
use crate::stack::Stack;
use crate::ui::{self, Mode, s};

/// Arguments of `relay365 status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Refresh every SECONDS (default 10) until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "10")]
    pub watch: Option<u64>,
}

/// The last hour's figures, fleet-wide.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct Figures {
    /// Events delivered per minute, oldest first (60 values).
    pub delivered_per_minute: Vec<f64>,
    /// Events delivered in the hour.
    pub delivered: f64,
    /// Deliveries that failed and wait for a retry.
    pub retried: f64,
    /// Items a catch-up found that Graph never announced.
    pub recovered: f64,
    /// Flows paused (a 410, or an operator).
    pub paused: f64,
    /// Connections that needed a new sign-in.
    pub reauth: f64,
    /// Mail to target, median and 99th percentile (milliseconds).
    pub latency_p50_ms: Option<f64>,
    /// See `latency_p50_ms`.
    pub latency_p99_ms: Option<f64>,
    /// Notifications waiting for dispatch (visible and in flight).
    pub queued: u64,
    /// Notifications in the dead-letter queue.
    pub dead_letters: u64,
    /// Deferred sends in their dead-letter queue.
    pub deferred_dead_letters: u64,
}

const HOUR_MS: u64 = 3_600_000;

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn values(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().filter_map(Value::as_f64).collect(),
        other => other.as_f64().into_iter().collect(),
    }
}

/// The figures from Embedded Metric Format lines (as the demo keeps them),
/// for the hour before `now_ms`.
pub fn figures_from_lines(lines: &[Value], now_ms: u64) -> Figures {
    let from = now_ms.saturating_sub(HOUR_MS);
    let mut f = Figures {
        delivered_per_minute: vec![0.0; 60],
        ..Figures::default()
    };
    let mut latencies = Vec::new();
    for line in lines {
        let Some(at) = line["_aws"]["Timestamp"].as_u64() else {
            continue;
        };
        if at < from || at > now_ms {
            continue;
        }
        let sum = |name: &str| values(&line[name]).iter().sum::<f64>();
        let delivered = sum("EventsDelivered");
        let minute = ((at - from) / 60_000).min(59) as usize;
        f.delivered_per_minute[minute] += delivered;
        f.delivered += delivered;
        f.retried += sum("EventsRetried");
        f.recovered += sum("SweepRecovered");
        f.paused += sum("FlowsPaused");
        f.reauth += sum("ReauthRequired");
        latencies.extend(values(&line["EndToEndLatency"]));
    }
    latencies.sort_by(f64::total_cmp);
    f.latency_p50_ms = percentile(&latencies, 50.0);
    f.latency_p99_ms = percentile(&latencies, 99.0);
    f
}

/// One bar per value, scaled to the largest.
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    values
        .iter()
        .map(|v| {
            if max <= 0.0 || *v <= 0.0 {
                ' '
            } else {
                BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The demo's kept metric lines of the last hour.
async fn local_figures(stack: &Stack) -> Result<Figures, CliError> {
    let now = now_ms();
    let url = format!(
        "{}/_demo/metrics?since={}",
        stack.output("ApiUrl")?.trim_end_matches('/'),
        now.saturating_sub(HOUR_MS)
    );
    let body: Value = stack
        .http()?
        .get(&url)
        .send()
        .await
        .map_err(|e| CliError::Network(format!("the demo's metrics ({url}): {e}")))?
        .json()
        .await
        .map_err(|e| CliError::Network(format!("the demo's metrics ({url}): {e}")))?;
    let lines = body["lines"].as_array().cloned().unwrap_or_default();
    Ok(figures_from_lines(&lines, now))
}

/// The same figures from CloudWatch.
async fn aws_figures(stack: &Stack) -> Result<Figures, CliError> {
    let cw = aws_sdk_cloudwatch::Client::new(&stack.sdk);
    let end = aws_sdk_cloudwatch::primitives::DateTime::from_millis(now_ms() as i64);
    let start =
        aws_sdk_cloudwatch::primitives::DateTime::from_millis(now_ms().saturating_sub(HOUR_MS) as i64);
    let out = cw
        .get_metric_data()
        .start_time(start)
        .end_time(end)
        .set_metric_data_queries(Some(metric_queries()))
        .send()
        .await
        .map_err(|e| {
            CliError::Aws(format!(
                "CloudWatch GetMetricData: {}",
                aws_sdk_cloudwatch::error::DisplayErrorContext(e)
            ))
        })?;
    Ok(figures_from_results(out.metric_data_results()))
}

/// The dimension every dispatch metric carries.
const DISPATCH: (&str, &str) = ("function", "mail-dispatch");

/// What [`metric_queries`] asks for: the id [`figures_from_results`] reads
/// it by, the metric, its dimensions, the statistic and the period (one
/// minute for the sparkline, an hour for the totals).
type QuerySpec = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
    i32,
);

// A table reads best one query a line.
#[rustfmt::skip]
const QUERIES: [QuerySpec; 11] = [
    ("d_https", "EventsDelivered", &[DISPATCH, ("target", "https")], "Sum", 60),
    ("d_eb", "EventsDelivered", &[DISPATCH, ("target", "eventbridge")], "Sum", 60),
    ("r_https", "EventsRetried", &[DISPATCH, ("target", "https")], "Sum", 3600),
    ("r_eb", "EventsRetried", &[DISPATCH, ("target", "eventbridge")], "Sum", 3600),
    ("rec_c", "SweepRecovered", &[("function", "connections")], "Sum", 3600),
    ("rec_d", "SweepRecovered", &[DISPATCH], "Sum", 3600),
    ("p_t", "FlowsPaused", &[DISPATCH, ("outcome", "target")], "Sum", 3600),
    ("p_o", "FlowsPaused", &[("function", "connections"), ("outcome", "operator")], "Sum", 3600),
    ("reauth", "ReauthRequired", &[DISPATCH], "Sum", 3600),
    ("p50", "EndToEndLatency", &[DISPATCH, ("target", "https")], "p50", 3600),
    ("p99", "EndToEndLatency", &[DISPATCH, ("target", "https")], "p99", 3600),
];

/// The metrics [`aws_figures`] asks CloudWatch for, each under the id
/// [`figures_from_results`] reads it by.
fn metric_queries() -> Vec<aws_sdk_cloudwatch::types::MetricDataQuery> {
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
    QUERIES
        .iter()
        .map(|&(id, name, dims, stat, period)| {
            let metric = Metric::builder()
                .namespace("relay365")
                .metric_name(name)
                .set_dimensions(Some(
                    dims.iter()
                        .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
                        .collect(),
                ))
                .build();
            MetricDataQuery::builder()
                .id(id)
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric)
                        .period(period)
                        .stat(stat)
                        .build(),
                )
                .build()
        })
        .collect()
}

/// The figures of the last hour from CloudWatch's answer to [`metric_queries`].
fn figures_from_results(results: &[aws_sdk_cloudwatch::types::MetricDataResult]) -> Figures {
    let mut f = Figures {
        delivered_per_minute: vec![0.0; 60],
        ..Figures::default()
    };
    let from = now_ms().saturating_sub(HOUR_MS);
    for r in results {
        let vals = r.values();
        let total: f64 = vals.iter().sum();
        match r.id().unwrap_or_default() {
            "d_https" | "d_eb" => {
                f.delivered += total;
                for (t, v) in r.timestamps().iter().zip(vals) {
                    let at = t.to_millis().unwrap_or(0).max(0) as u64;
                    let minute = (at.saturating_sub(from) / 60_000).min(59) as usize;
                    f.delivered_per_minute[minute] += v;
                }
            }
            "r_https" | "r_eb" => f.retried += total,
            "rec_c" | "rec_d" => f.recovered += total,
            "p_t" | "p_o" => f.paused += total,
            "reauth" => f.reauth += total,
            "p50" => f.latency_p50_ms = vals.first().copied(),
            "p99" => f.latency_p99_ms = vals.first().copied(),
            _ => {}
        }
    }
    f
}

/// The queues' depths (what waits, what dead-lettered).
async fn queues(stack: &Stack, f: &mut Figures) -> Result<(), CliError> {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    f.queued = crate::dlq::waiting(&sqs, stack.resource("NotificationQueue")?).await?;
    f.dead_letters = crate::dlq::waiting(&sqs, stack.resource("NotificationDeadLetterQueue")?).await?;
    f.deferred_dead_letters =
        crate::dlq::waiting(&sqs, stack.resource("DeferredSendDeadLetterQueue")?).await?;
    Ok(())
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 1000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
    }
}

/// The screen, from the connections the API listed and the figures.
pub fn render(stack_name: &str, conns: &Value, f: &Figures) -> String {
    let mut out = String::new();
    let now = relay365::model::rfc3339(time::OffsetDateTime::now_utc());
    out += &format!("relay365 status: {stack_name}    {now}\n\n");
    out += &format!(
        "events, last hour   [{}] {} delivered, {} retried, {} recovered, {} paused, {} sign-ins lost\n",
        sparkline(&f.delivered_per_minute),
        f.delivered,
        f.retried,
        f.recovered,
        f.paused,
        f.reauth
    );
    out += &format!(
        "mail to target      p50 {}, p99 {}\n",
        ms(f.latency_p50_ms),
        ms(f.latency_p99_ms)
    );
    let dead = if f.dead_letters + f.deferred_dead_letters > 0 {
        format!(
            "{} dead letters ✘ (`relay365 dlq`), {} deferred sends",
            f.dead_letters, f.deferred_dead_letters
        )
    } else {
        "no dead letters".into()
    };
    out += &format!(
        "queues              {} notifications waiting, {dead}\n\n",
        f.queued
    );
    let list = conns["connections"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        out += "No connections yet: `relay365 connect MAILBOX --subscribe mail` makes one.\n";
        return out;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let subs = c["subscriptions"].as_array().cloned().unwrap_or_default();
            let last = subs
                .iter()
                .map(|x| s(x, "last_delivery_at"))
                .filter(|t| !t.is_empty())
                .max()
                .unwrap_or("-")
                .to_string();
            let flows = subs
                .iter()
                .map(|x| {
                    let mut words = match crate::subscriptions::subscription_health(x) {
                        Ok(_) => format!("{} ✔", s(x, "resource")),
                        Err(e) => format!("{} ✘ {e}", s(x, "resource")),
                    };
                    if x["waiting"].as_u64().unwrap_or(0) > 0 {
                        words += &format!(" ({} waiting)", x["waiting"]);
                    }
                    if x["recovered"].as_u64().unwrap_or(0) > 0 {
                        words += &format!(" ({} recovered)", x["recovered"]);
                    }
                    words
                })
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                s(c, "id").to_string(),
                s(c, "mailbox").to_string(),
                s(c, "status").to_string(),
                last,
                if flows.is_empty() { "-".into() } else { flows },
            ]
        })
        .collect();
    out += &ui::table(&["CONNECTION", "MAILBOX", "STATE", "LAST MAIL", "FLOWS"], &rows);
    out
}

async fn once(stack: &Stack, api: &Api) -> Result<(Value, Figures), CliError> {
    let conns = api.get("/connections").await?;
    let mut f = if stack.local {
        local_figures(stack).await?
    } else {
        aws_figures(stack).await?
    };
    queues(stack, &mut f).await?;
    Ok((conns, f))
}

/// Runs `relay365 status`.
///
/// # Errors
/// When the API, CloudWatch or SQS fails.
pub async fn run(stack: &Stack, args: &StatusArgs, mode: Mode) -> Result<ExitCode, CliError> {
    use std::io::IsTerminal;
    let api = Api::new(stack)?;
    let terminal = std::io::stdout().is_terminal();
    loop {
        let (conns, f) = once(stack, &api).await?;
        match mode {
            Mode::Json => {
                ui::json(&json!({"stack": stack.name, "figures": f, "connections": conns["connections"]}))
            }
            Mode::Human => {
                if terminal && args.watch.is_some() {
                    // Clear the screen and go home: one screen, refreshed.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", render(&stack.name, &conns, &f));
                if !terminal && args.watch.is_some() {
                    println!();
                }
            }
        }
        let Some(every) = args.watch else {
            return Ok(ExitCode::SUCCESS);
        };
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(every.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(at: u64, body: Value) -> Value {
        let mut v = body;
        v["_aws"] = json!({"Timestamp": at, "CloudWatchMetrics": [{"Namespace": "relay365", "Dimensions": [["function"]], "Metrics": []}]});
        v
    }

    #[test]
    fn figures_add_up_the_hour_by_minute_and_leave_older_lines_out() {
        let now = 10 * HOUR_MS;
        let lines = vec![
            line(now - HOUR_MS - 1, json!({"EventsDelivered": 50})),
            line(
                now - 30 * 60_000,
                json!({"EventsDelivered": 2, "EndToEndLatency": [100.0, 300.0]}),
            ),
            line(
                now - 10,
                json!({"EventsDelivered": 1, "EventsRetried": 3, "EndToEndLatency": [200.0]}),
            ),
            line(now - 5, json!({"SweepRecovered": 4, "FlowsPaused": 1})),
        ];
        let f = figures_from_lines(&lines, now);
        assert_eq!(
            (f.delivered, f.retried, f.recovered, f.paused),
            (3.0, 3.0, 4.0, 1.0)
        );
        assert_eq!(f.delivered_per_minute.len(), 60);
        assert_eq!(f.delivered_per_minute[30], 2.0);
        assert_eq!(f.delivered_per_minute[59], 1.0);
        assert_eq!((f.latency_p50_ms, f.latency_p99_ms), (Some(200.0), Some(300.0)));
    }

    #[test]
    fn a_sparkline_scales_to_the_busiest_minute() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0]), " ▃▅█");
        assert_eq!(sparkline(&[0.0, 0.0]), "  ");
    }

    #[test]
    fn the_screen_names_each_connection_its_flows_and_the_queues() {
        let conns = json!({"connections": [{"id": "support", "mailbox": "support@contoso.com", "status": "active",
            "subscriptions": [{"id": "g1", "resource": "mail", "status": "active", "expires_at": "2999-01-01T00:00:00Z",
                "last_delivery_at": "2026-12-05T00:00:00Z", "recovered": 2},
                {"id": "g2", "resource": "calendar", "status": "paused", "paused_at": "2026-12-05T00:01:00Z",
                "paused_reason": "the target answered 410 Gone"}]}]});
        let f = Figures {
            delivered_per_minute: vec![0.0; 60],
            delivered: 7.0,
            dead_letters: 1,
            latency_p99_ms: Some(1500.0),
            ..Figures::default()
        };
        let screen = render("demo", &conns, &f);
        assert!(screen.contains("7 delivered"), "{screen}");
        assert!(screen.contains("p99 1.5 s"), "{screen}");
        assert!(screen.contains("1 dead letters ✘"), "{screen}");
        assert!(screen.contains("support@contoso.com"), "{screen}");
        assert!(screen.contains("mail ✔ (2 recovered)"), "{screen}");
        assert!(
            screen.contains("calendar ✘ paused since 2026-12-05T00:01:00Z"),
            "{screen}"
        );
        assert!(screen.contains("2026-12-05T00:00:00Z"), "{screen}");
    }
}
