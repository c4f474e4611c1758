//! A string that must never reach a log line, an error message or an API
//! response: tokens, client secrets, authorization codes, clientState values.
//!
//! `Debug` and `Display` print a fixed placeholder, so `{:?}` on any struct
//! that holds one stays safe. Serde is transparent, because the value does
//! have to be stored (in Secrets Manager) and sent (to Microsoft).

use serde::{Deserialize, Serialize};

/// Implements `Debug` for a struct by showing only the named fields and
/// printing `..` for the rest.
///
/// The structs that hold keys, tokens or SDK clients use it: what `{:?}`
/// shows of them is chosen field by field, so a field added later stays out
/// of log lines until someone names it here.
#[macro_export]
macro_rules! debug_showing {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

/// A secret string whose formatting is redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Sensitive(String);

impl Sensitive {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sensitive(**redacted**)")
    }
}

impl std::fmt::Display for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("**redacted**")
    }
}

impl From<String> for Sensitive {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Sensitive::new("eyJ0eXAiOiJKV1Qi.secret");
        assert!(!format!("{s:?}").contains("secret"));
        assert!(!format!("{s}").contains("secret"));
        assert_eq!(s.expose(), "eyJ0eXAiOiJKV1Qi.secret");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"eyJ0eXAiOiJKV1Qi.secret\"");
    }
}
