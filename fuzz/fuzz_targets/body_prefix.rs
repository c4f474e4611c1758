//! The start of a message's body out of Graph's JSON answer, cut anywhere
//! and fed in pieces: never a panic, never more than the limit, the same
//! result however the input is split, and on a well-formed answer exactly
//! the start of the content serde reads and its whole length.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay365::microsoft::body_prefix::{BodyScanner, ContentType, parse_prefix};

#[derive(serde::Deserialize)]
struct Message {
    body: Body,
}

#[derive(serde::Deserialize)]
struct Body {
    content: String,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b, s], input)) = data.split_first_chunk::<3>() else {
        return;
    };
    let limit = usize::from(u16::from_le_bytes([a, b]));
    let whole = parse_prefix(input, limit);
    assert!(whole.content.len() <= limit);
    assert!(whole.original_length >= whole.content.len() as u64);

    let at = input.len() * usize::from(s) / 255;
    let mut split = BodyScanner::new(limit);
    split.feed(&input[..at]);
    split.feed(&input[at..]);
    assert_eq!(split.finish(), whole, "split at {at}");

    // A well-formed message object (serde refuses duplicate members, lone
    // surrogates and invalid UTF-8, as Graph never sends them).
    let is_object = input.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{');
    if let (true, Ok(m)) = (is_object, serde_json::from_slice::<Message>(input)) {
        assert!(whole.found && whole.complete);
        assert!(m.body.content.starts_with(&whole.content));
        assert_eq!(whole.original_length, m.body.content.len() as u64);
        let text = m
            .body
            .content_type
            .is_some_and(|t| t.eq_ignore_ascii_case("text"));
        assert_eq!(whole.content_type == ContentType::Text, text);
    }
});
