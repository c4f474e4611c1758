//! Events that always fit their target.
//!
//! A mail's body can be far larger than a target takes: EventBridge refuses
//! a `PutEvents` entry over 256 KB, and a receiver may refuse a large POST
//! with 413. Refused, such an event would be retried until it dead-letters,
//! holding up its mailbox meanwhile. So the body's content is cut to fit,
//! `"truncated": true` says so, and `web_link` (kept) lets a flow fetch the
//! whole mail; everything else of the event is unchanged, its id included.

use std::borrow::Cow;

use serde_json::Value;

/// The most an EventBridge entry's detail may be (its limit is 256 KB for the
/// whole entry; source, detail-type and bus name take the rest).
pub const EVENTBRIDGE_DETAIL_LIMIT: usize = 250 * 1024;
/// The most an HTTPS target is sent at once.
pub const WEBHOOK_LIMIT: usize = 1024 * 1024;
/// What a target that answered 413 is sent instead.
pub const AFTER_413_LIMIT: usize = 64 * 1024;

fn size(v: &Value) -> usize {
    serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX)
}

/// The event as it is when it fits `limit` bytes of JSON, else with its mail
/// body's content shortened (on a character boundary) until it does.
pub fn fit(event: &Value, limit: usize) -> Cow<'_, Value> {
    let total = size(event);
    if total <= limit {
        return Cow::Borrowed(event);
    }
    let Some(content) = event.pointer("/mail/body/content").and_then(Value::as_str) else {
        return Cow::Borrowed(event);
    };
    let mut out = event.clone();
    out["mail"]["body"]["truncated"] = true.into();
    out["mail"]["body"]["original_length"] = content.len().into();
    // Escaping can make the serialised content longer than the text, so cut,
    // measure, and cut more until it fits.
    let mut keep = content.len().saturating_sub(total - limit + 64);
    loop {
        let mut cut = keep.min(content.len());
        while !content.is_char_boundary(cut) {
            cut -= 1;
        }
        out["mail"]["body"]["content"] = content[..cut].into();
        let now = size(&out);
        if now <= limit || cut == 0 {
            return Cow::Owned(out);
        }
        keep = cut.saturating_sub(now - limit + 64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(content: &str) -> Value {
        serde_json::json!({"id": "evt_1", "type": "mail.received", "mail": {"subject": "Big",
            "body": {"content_type": "html", "content": content}, "web_link": "https://outlook.office365.com/owa/?ItemID=x"}})
    }

    #[test]
    fn a_small_event_is_sent_as_it_is() {
        let e = mail("<p>hello</p>");
        assert!(matches!(fit(&e, EVENTBRIDGE_DETAIL_LIMIT), Cow::Borrowed(_)));
    }

    #[test]
    fn a_300_kb_body_is_cut_to_fit_eventbridge_and_says_so() {
        // Quotes and non-ASCII text: escaping and character boundaries.
        let content = "<p class=\"x\">Grüße, ünïcödé 🚀</p>\n".repeat(8000);
        assert!(content.len() > 300 * 1024);
        let e = mail(&content);
        let fitted = fit(&e, EVENTBRIDGE_DETAIL_LIMIT);
        assert!(serde_json::to_vec(&*fitted).unwrap().len() <= EVENTBRIDGE_DETAIL_LIMIT);
        let body = &fitted["mail"]["body"];
        assert_eq!(body["truncated"], true);
        assert_eq!(body["original_length"], content.len());
        let kept = body["content"].as_str().unwrap();
        assert!(
            content.starts_with(kept) && kept.len() > 200 * 1024,
            "{}",
            kept.len()
        );
        assert_eq!(fitted["mail"]["web_link"], e["mail"]["web_link"]);
        assert_eq!(fitted["id"], "evt_1");
        let small = fit(&e, AFTER_413_LIMIT);
        assert!(serde_json::to_vec(&*small).unwrap().len() <= AFTER_413_LIMIT);
    }
}
