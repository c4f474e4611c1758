//! What became of one queue record, and how Graph's and the renewal's
//! errors map onto it (retry what may succeed later, finish what never will).

use relay365::microsoft::graph::GraphError;
use relay365::subscriptions;

/// What became of one record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done (nothing to deliver, or delivered earlier): delete it.
    Done,
    /// Delivered now, and the notification time recorded with it: delete it.
    Delivered,
    /// The target answered 410 Gone and is switched off: delete the record
    /// (the connection is read again before its next record).
    TargetGone,
    /// Try again later: report it as a batch item failure.
    Retry(String),
}

pub(crate) fn retry(what: impl std::fmt::Display) -> Outcome {
    Outcome::Retry(what.to_string())
}

pub(crate) fn graph_outcome(r: Result<(), GraphError>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(e) if e.is_retryable() => retry(e),
        // Access denied is for a person to fix (a permission, an Exchange
        // application access policy): keep the record.
        Err(e) if e.status() == Some(403) => retry(e),
        Err(e) => {
            tracing::error!(error = %e, "Graph refused; not retrying");
            Outcome::Done
        }
    }
}

pub(crate) fn sub_outcome(r: Result<(), subscriptions::SubscriptionError>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(e) if e.is_retryable() => retry(e),
        Err(e) => {
            tracing::error!(error = %subscriptions::explain(&e), "subscription could not be fixed; not retrying");
            Outcome::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> GraphError {
        GraphError::Api {
            status,
            code: "c".into(),
            message: "m".into(),
            request_id: None,
        }
    }

    #[test]
    fn passing_failures_are_retried_and_lasting_ones_finish() {
        assert_eq!(graph_outcome(Ok(())), Outcome::Done);
        assert!(matches!(graph_outcome(Err(api(503))), Outcome::Retry(_)));
        assert!(matches!(
            graph_outcome(Err(GraphError::Throttled {
                status: 429,
                retry_after: None,
                request_id: None
            })),
            Outcome::Retry(_)
        ));
        assert_eq!(graph_outcome(Err(api(400))), Outcome::Done);
        assert!(matches!(graph_outcome(Err(api(403))), Outcome::Retry(_)));
        assert!(matches!(sub_outcome(Err(api(500).into())), Outcome::Retry(_)));
        assert_eq!(sub_outcome(Err(api(403).into())), Outcome::Done);
    }
}
