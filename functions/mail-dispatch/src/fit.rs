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

/// The length of `v`'s JSON, counted as it is written rather than written
/// into a buffer: the cut below measures up to a megabyte several times.
fn size(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    serde_json::to_writer(&mut n, v).map_or(usize::MAX, |()| n.0)
}

/// A copy of `v` without the member at `path` (the one about to be
/// replaced), so the part of the event that is cut is never copied whole.
fn clone_without(v: &Value, path: &[&str]) -> Value {
    match (v, path) {
        (Value::Object(map), [first, rest @ ..]) => Value::Object(
            map.iter()
                .filter(|(k, _)| !(k.as_str() == *first && rest.is_empty()))
                .map(|(k, x)| {
                    let x = if k.as_str() == *first {
                        clone_without(x, rest)
                    } else {
                        x.clone()
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// The event as it is when it fits `limit` bytes of JSON, else with its mail
/// body's content shortened (on a character boundary) until it does.
///
/// `original_length` is the whole content's length in bytes: the one the
/// fetch recorded when it cut the body already, else the content's own.
pub fn fit(event: &Value, limit: usize) -> Cow<'_, Value> {
    let total = size(event);
    if total <= limit {
        return Cow::Borrowed(event);
    }
    let Some(content) = event.pointer("/mail/body/content").and_then(Value::as_str) else {
        return Cow::Borrowed(event);
    };
    let original = event
        .pointer("/mail/body/original_length")
        .and_then(Value::as_u64)
        .unwrap_or(content.len() as u64);
    let mut out = clone_without(event, &["mail", "body", "content"]);
    out["mail"]["body"]["truncated"] = true.into();
    out["mail"]["body"]["original_length"] = original.into();
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

    #[test]
    fn a_body_the_fetch_cut_keeps_its_original_length_when_cut_again() {
        let content = "x".repeat(1024 * 1024);
        let mut e = mail(&content);
        e["mail"]["body"]["truncated"] = true.into();
        e["mail"]["body"]["original_length"] = 52_428_800.into();
        let fitted = fit(&e, EVENTBRIDGE_DETAIL_LIMIT);
        assert!(size(&fitted) <= EVENTBRIDGE_DETAIL_LIMIT);
        assert_eq!(fitted["mail"]["body"]["original_length"], 52_428_800);
        assert_eq!(fitted["mail"]["body"]["truncated"], true);
        assert_eq!(fitted["mail"]["subject"], "Big");
    }
}
