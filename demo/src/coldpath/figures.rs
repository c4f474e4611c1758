//! The figures' arithmetic: milliseconds from a duration, the median and
//! worst of a set. The standing parts time the servers with them and the
//! report and the run print them, so they sit below all three.

use std::time::Duration;

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and worst of some figures.
pub(super) fn stats(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut v: Vec<f64> = v.collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let mid = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (mid, v[v.len() - 1])
}
