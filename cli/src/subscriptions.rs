//! What the commands say about subscriptions: the resource a subscription
//! watches (the model's [`Resource`], named as the API names it) and a
//! subscription's health in a few words. `connect`, `manage`, `doctor` and
//! `status` all show subscriptions, so this sits below them.

use clap::builder::{PossibleValuesParser, TypedValueParser, ValueParser};
use serde_json::Value;

pub use relay365::model::scopes::Resource;

use crate::ui::s;

/// The argument parser for a resource name (`mail`, `calendar`): clap lists
/// the model's names when one is wrong.
pub fn resource_arg() -> ValueParser {
    ValueParser::new(
        PossibleValuesParser::new(Resource::ALL.map(Resource::name))
            .try_map(|name| Resource::from_name(&name).ok_or("not a resource relay365 subscribes to")),
    )
}

/// A subscription's health in a few words: `Ok` when Graph has it and
/// events flow, `Err` with the problem otherwise.
///
/// # Errors
/// The problem, in words.
pub fn subscription_health(sub: &Value) -> Result<String, String> {
    if s(sub, "status") == "paused" {
        let since = [s(sub, "paused_at"), s(sub, "target_gone_at")]
            .into_iter()
            .find(|t| !t.is_empty())
            .unwrap_or("a while");
        let why = s(sub, "paused_reason");
        return Err(if why.is_empty() {
            format!("paused since {since}: `relay365 resume` delivers what arrived meanwhile")
        } else {
            format!("paused since {since}: {why}")
        });
    }
    if !s(sub, "catching_up").is_empty() {
        return Ok(format!(
            "catching up since {} (mail that arrived while it was paused)",
            s(sub, "catching_up")
        ));
    }
    if !s(sub, "last_error").is_empty() {
        return Err(s(sub, "last_error").to_string());
    }
    if s(sub, "id").is_empty() {
        return Err("not created at Graph yet".into());
    }
    if !s(sub, "last_delivery_error").is_empty() {
        return Err(format!("delivery failing: {}", s(sub, "last_delivery_error")));
    }
    let expires = s(sub, "expires_at");
    if let Ok(at) = time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
        && at < time::OffsetDateTime::now_utc()
    {
        return Err(format!("expired at {expires}: the renewal schedule has not run"));
    }
    Ok(format!("ok, expires {expires}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn health_names_the_first_problem() {
        let ok = json!({"id": "g1", "resource": "mail", "expires_at": "2999-01-01T00:00:00Z"});
        assert!(subscription_health(&ok).is_ok());
        let failing = json!({"id": "g1", "last_error": "Graph could not validate the notification URL"});
        assert_eq!(
            subscription_health(&failing).unwrap_err(),
            "Graph could not validate the notification URL"
        );
        let expired = json!({"id": "g1", "expires_at": "2000-01-01T00:00:00Z"});
        assert!(subscription_health(&expired).unwrap_err().contains("expired"));
        assert!(
            subscription_health(&json!({}))
                .unwrap_err()
                .contains("not created")
        );
        let paused = json!({"id": "g1", "status": "paused", "paused_at": "2026-12-04T10:00:00Z",
            "paused_reason": "the target answered 410 Gone"});
        let why = subscription_health(&paused).unwrap_err();
        assert!(
            why.contains("paused since 2026-12-04T10:00:00Z") && why.contains("410"),
            "{why}"
        );
        let resuming = json!({"id": "g1", "status": "active", "catching_up": "2026-12-04T10:05:00Z"});
        assert!(subscription_health(&resuming).unwrap().contains("catching up"));
    }
}
