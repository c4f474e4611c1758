//! What one check of a deployment found: passed, or failed with what to do.
//!
//! `relay365 doctor` runs the checks and prints them; the Amazon Connect
//! checks ([`crate::amazon_connect`]) make them too, so the outcome lives
//! below both.

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    /// Whether it passed.
    pub ok: bool,
    /// What was checked and what was found.
    pub text: String,
    /// What to do, when it failed.
    pub fix: Option<String>,
}

/// A check that passed.
pub(crate) fn pass(text: impl Into<String>) -> Check {
    Check {
        ok: true,
        text: text.into(),
        fix: None,
    }
}

/// A check that failed, with what to do.
pub(crate) fn fail(text: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        ok: false,
        text: text.into(),
        fix: Some(fix.into()),
    }
}
