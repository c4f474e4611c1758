//! What the Lambda runtime tells an invocation, read the same way by every
//! function that budgets its time (dispatch, the scheduled run).

use std::time::{Duration, Instant};

/// When the invocation must be over, from the runtime's deadline (unix
/// milliseconds) at `now`. A deadline that has already passed when the
/// invocation starts is a runtime that gave none (`cargo lambda watch` sends
/// a fixed 600000, ten minutes after 1970): then the invocation has
/// `timeout`, the function's configured one, from now.
pub fn invocation_deadline(deadline_ms: u64, now: std::time::SystemTime, timeout: Duration) -> Instant {
    let now_ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let left = match deadline_ms.checked_sub(now_ms) {
        Some(left) if left > 0 => Duration::from_millis(left),
        _ => {
            tracing::debug!(
                deadline_ms,
                "the runtime's deadline has passed already; using the configured timeout"
            );
            timeout
        }
    };
    Instant::now() + left
}
