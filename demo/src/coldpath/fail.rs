//! How a failed step reads: what was being done, and why it failed. Every
//! part of the harness reports its failures this way, so this sits on the
//! bottom floor.

/// A failed step's error: what was being done, and why it failed.
pub(super) fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}
