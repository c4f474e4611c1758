//! A message's body read out of Graph's JSON answer piece by piece, keeping
//! only as much of `body.content` as an event can carry.
//!
//! Anyone who can send mail to a mailbox decides how large its body is: an
//! HTML body with inline images can be 25 MB or more. Parsed whole with
//! serde, such an answer is held several times over (the bytes, the value,
//! its copies) and a 128 MB function runs out of memory on every retry,
//! stalling the mailbox behind it. An event never carries more than 1 MB of
//! body anyway, so this scanner keeps at most `limit` bytes of the decoded
//! content and only counts the rest: memory is O(limit), not O(mail).
//!
//! It reads the answer to `GET …/messages/{id}?$select=body` — dispatch
//! fetches the other fields (small, bounded by Exchange's own limits) in a
//! separate request and parses them normally. That split is deliberate: a
//! scanner that must understand one member of one object is small enough to
//! be obviously right and fuzzed to never panic, whereas a streaming parser
//! of the whole message that truncates one string in flight would be a JSON
//! parser of our own. The price is one more Graph request per mail.
//!
//! The scanner is a byte-at-a-time state machine, so the answer can be fed
//! in chunks of any size split anywhere (in a multibyte character, an
//! escape, a surrogate pair), with the same result as feeding it whole.
//! The kept content ends on a character boundary, and never in the middle
//! of an escape (`\"`, `\\`, `\uXXXX`, a surrogate pair `\uD83D\uDE80`): a
//! character is kept whole or not at all, and once one does not fit nothing
//! after it is kept. `contentType` may come before or after `content`;
//! anything but `text` (absent, cut off, unknown) counts as HTML, the form
//! Exchange stores most mail in. Malformed input never panics: invalid
//! UTF-8, lone surrogates and unknown escapes become U+FFFD, and structure
//! the scanner does not expect is skipped.

/// How `body.content` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentType {
    /// HTML (also what an absent or unknown `contentType` means).
    #[default]
    Html,
    /// Plain text.
    Text,
}

impl ContentType {
    /// Graph's spelling, lower case (`html`, `text`).
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Html => "html",
            ContentType::Text => "text",
        }
    }
}

/// What the scan found of `body`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Body {
    /// Whether the answer had a `body` object at all.
    pub found: bool,
    /// `body.contentType`.
    pub content_type: ContentType,
    /// The decoded start of `body.content`: at most the limit in bytes,
    /// whole characters only.
    pub content: String,
    /// The UTF-8 length in bytes of all of `body.content` the input held,
    /// kept or not (the whole content's length when [`Body::complete`]).
    pub original_length: u64,
    /// Whether the content's closing quote was seen.
    pub complete: bool,
}

impl Body {
    /// True when `content` is less than the content the input held (the
    /// limit cut it). Whether the input itself was whole is [`Body::complete`].
    pub fn is_truncated(&self) -> bool {
        self.content.len() as u64 != self.original_length
    }
}

/// The start of `body.content` (at most `limit` bytes) out of the first
/// bytes of Graph's answer: [`BodyScanner`] fed once.
pub fn parse_prefix(bytes: &[u8], limit: usize) -> Body {
    let mut s = BodyScanner::new(limit);
    s.feed(bytes);
    s.finish()
}

/// Keys and `contentType` are short; longer ones are none we look for.
const SHORT: usize = 16;

/// Which member a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Other,
    Body,
    Content,
    ContentType,
}

/// Where the characters of the string being read go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// A key of the message or of its body (into `short`).
    Key,
    /// `body.content`.
    Content,
    /// `body.contentType` (into `short`).
    ContentType,
    /// Any other string: read only to find its end.
    Skip,
}

/// Where inside an escape the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After `\`.
    Backslash,
    /// After `\u` and `n` hex digits worth `v`.
    Hex {
        n: u8,
        v: u16,
    },
}

/// One object level the scanner follows (the message, its body).
#[derive(Debug, Clone, Copy)]
struct Level {
    /// The next string is a key.
    expect_key: bool,
    /// The key whose value comes (or is being read).
    key: Key,
}

impl Level {
    const START: Level = Level {
        expect_key: true,
        key: Key::Other,
    };
}

/// The scanner: feed it Graph's answer in pieces, then [`BodyScanner::finish`].
#[derive(Debug, Clone)]
pub struct BodyScanner {
    limit: usize,
    /// Open objects and arrays (1 inside the message, 2 inside its body).
    depth: usize,
    message: Level,
    body: Level,
    /// The open depth-2 container is the (first) body object.
    in_body: bool,
    body_found: bool,
    content_seen: bool,
    content_type_seen: bool,
    /// Inside a string: where its characters go.
    string: Option<Sink>,
    escape: Escape,
    /// A high surrogate waiting for its low half.
    high: Option<u16>,
    /// The bytes of a multibyte character read so far.
    utf8: [u8; 4],
    utf8_len: usize,
    utf8_need: usize,
    /// The key or `contentType` being read; `short_long` when it overflowed.
    short: String,
    short_long: bool,
    content: String,
    /// A character did not fit: nothing after it is kept.
    full: bool,
    original_length: u64,
    complete: bool,
    content_type: ContentType,
}

impl BodyScanner {
    /// A scanner keeping at most `limit` bytes of `body.content`.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            depth: 0,
            message: Level::START,
            body: Level::START,
            in_body: false,
            body_found: false,
            content_seen: false,
            content_type_seen: false,
            string: None,
            escape: Escape::None,
            high: None,
            utf8: [0; 4],
            utf8_len: 0,
            utf8_need: 0,
            short: String::new(),
            short_long: false,
            content: String::new(),
            full: false,
            original_length: 0,
            complete: false,
            content_type: ContentType::Html,
        }
    }

    /// Whether the kept content has reached the limit (later characters are
    /// only counted).
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Reads the next piece of the answer.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            // Fast path for the bulk of a large body: plain bytes of a string
            // that is skipped, or of content past the limit, are only counted
            // (one byte, one byte of UTF-8), not decoded. Taken only between
            // characters, so the result does not depend on where the input
            // was split.
            if let Some(sink) = self.string
                && self.escape == Escape::None
                && self.high.is_none()
                && self.utf8_len == 0
                && (sink == Sink::Skip || (sink == Sink::Content && self.full))
            {
                let run = bytes[i..]
                    .iter()
                    .position(|&b| b == b'"' || b == b'\\')
                    .unwrap_or(bytes.len() - i);
                if sink == Sink::Content {
                    self.original_length += run as u64;
                }
                i += run;
                if i == bytes.len() {
                    break;
                }
            }
            self.byte(bytes[i]);
            i += 1;
        }
    }

    /// What was found. A character, escape or surrogate pair the input
    /// ended inside of is dropped.
    pub fn finish(self) -> Body {
        Body {
            found: self.body_found,
            content_type: self.content_type,
            content: self.content,
            original_length: self.original_length,
            complete: self.complete,
        }
    }

    fn byte(&mut self, b: u8) {
        match self.string {
            Some(sink) => self.string_byte(sink, b),
            None => self.structure(b),
        }
    }

    /// A byte between tokens.
    fn structure(&mut self, b: u8) {
        match b {
            b'"' => self.open_string(),
            b'{' => {
                self.depth = self.depth.saturating_add(1);
                match self.depth {
                    1 => self.message = Level::START,
                    2 => {
                        self.in_body =
                            self.message.key == Key::Body && !self.message.expect_key && !self.body_found;
                        if self.in_body {
                            self.body_found = true;
                            self.body = Level::START;
                        }
                    }
                    _ => {}
                }
            }
            b'[' => {
                self.depth = self.depth.saturating_add(1);
                if self.depth == 2 {
                    self.in_body = false;
                }
            }
            b'}' | b']' => {
                if self.depth == 2 {
                    self.in_body = false;
                }
                self.depth = self.depth.saturating_sub(1);
            }
            b',' => match self.depth {
                1 => self.message = Level::START,
                2 if self.in_body => self.body = Level::START,
                _ => {}
            },
            // `:`, white space, numbers, literals: nothing to follow.
            _ => {}
        }
    }

    fn open_string(&mut self) {
        let sink = match self.depth {
            1 if self.message.expect_key => Sink::Key,
            2 if self.in_body && self.body.expect_key => Sink::Key,
            // The first of each only: a repeated member is skipped.
            2 if self.in_body && self.body.key == Key::Content && !self.content_seen => {
                self.content_seen = true;
                Sink::Content
            }
            2 if self.in_body && self.body.key == Key::ContentType && !self.content_type_seen => {
                self.content_type_seen = true;
                Sink::ContentType
            }
            _ => Sink::Skip,
        };
        self.short.clear();
        self.short_long = false;
        self.string = Some(sink);
    }

    fn close_string(&mut self, sink: Sink) {
        // A lone high surrogate or a character cut short by the closing
        // quote is malformed, not cut off: it stands as U+FFFD.
        self.flush_pending(sink);
        self.string = None;
        let short = if self.short_long { "" } else { self.short.as_str() };
        match sink {
            Sink::Key => {
                let level = if self.depth == 1 {
                    &mut self.message
                } else {
                    &mut self.body
                };
                level.expect_key = false;
                level.key = match (self.depth, short) {
                    (1, "body") => Key::Body,
                    (2, "content") => Key::Content,
                    (2, "contentType") => Key::ContentType,
                    _ => Key::Other,
                };
            }
            Sink::Content => self.complete = true,
            Sink::ContentType => {
                self.content_type = if short.eq_ignore_ascii_case("text") {
                    ContentType::Text
                } else {
                    ContentType::Html
                };
            }
            Sink::Skip => {}
        }
    }

    /// A byte inside a string.
    fn string_byte(&mut self, sink: Sink, b: u8) {
        match self.escape {
            Escape::Backslash => {
                self.escape = Escape::None;
                let c = match b {
                    b'u' => {
                        self.escape = Escape::Hex { n: 0, v: 0 };
                        return;
                    }
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    _ => char::REPLACEMENT_CHARACTER,
                };
                self.lone_high(sink);
                self.emit(sink, c);
            }
            Escape::Hex { n, v } => {
                let Some(d) = (b as char).to_digit(16) else {
                    // Not an escape after all: it stands as U+FFFD and the
                    // byte is read afresh.
                    self.escape = Escape::None;
                    self.lone_high(sink);
                    self.emit(sink, char::REPLACEMENT_CHARACTER);
                    return self.string_byte(sink, b);
                };
                // Four hex digits fit a u16.
                let v = (v << 4) | d as u16;
                if n < 3 {
                    self.escape = Escape::Hex { n: n + 1, v };
                } else {
                    self.escape = Escape::None;
                    self.code_unit(sink, v);
                }
            }
            Escape::None => {
                if self.utf8_len > 0 {
                    if b & 0xC0 == 0x80 {
                        self.utf8[self.utf8_len] = b;
                        self.utf8_len += 1;
                        if self.utf8_len == self.utf8_need {
                            let c = std::str::from_utf8(&self.utf8[..self.utf8_len])
                                .ok()
                                .and_then(|s| s.chars().next())
                                .unwrap_or(char::REPLACEMENT_CHARACTER);
                            self.utf8_len = 0;
                            self.emit(sink, c);
                        }
                        return;
                    }
                    // A character cut short: U+FFFD, and the byte afresh.
                    self.utf8_len = 0;
                    self.emit(sink, char::REPLACEMENT_CHARACTER);
                }
                match b {
                    b'"' => self.close_string(sink),
                    b'\\' => self.escape = Escape::Backslash,
                    _ => {
                        self.lone_high(sink);
                        let need = match b {
                            0x00..=0x7F => 1,
                            0xC2..=0xDF => 2,
                            0xE0..=0xEF => 3,
                            0xF0..=0xF4 => 4,
                            _ => 0,
                        };
                        match need {
                            1 => self.emit(sink, b as char),
                            0 => self.emit(sink, char::REPLACEMENT_CHARACTER),
                            _ => {
                                self.utf8[0] = b;
                                self.utf8_len = 1;
                                self.utf8_need = need;
                            }
                        }
                    }
                }
            }
        }
    }

    /// One `\uXXXX`, which may be half of a surrogate pair.
    fn code_unit(&mut self, sink: Sink, v: u16) {
        if let Some(high) = self.high.take() {
            if (0xDC00..=0xDFFF).contains(&v) {
                let c = 0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(v) - 0xDC00);
                self.emit(sink, char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER));
                return;
            }
            self.emit(sink, char::REPLACEMENT_CHARACTER);
        }
        if (0xD800..=0xDBFF).contains(&v) {
            self.high = Some(v);
        } else {
            let c = char::from_u32(u32::from(v)).unwrap_or(char::REPLACEMENT_CHARACTER);
            self.emit(sink, c);
        }
    }

    /// A high surrogate followed by anything but a low one stands as U+FFFD.
    fn lone_high(&mut self, sink: Sink) {
        if self.high.take().is_some() {
            self.emit(sink, char::REPLACEMENT_CHARACTER);
        }
    }

    fn flush_pending(&mut self, sink: Sink) {
        self.lone_high(sink);
        if self.utf8_len > 0 {
            self.utf8_len = 0;
            self.emit(sink, char::REPLACEMENT_CHARACTER);
        }
        if self.escape != Escape::None {
            self.escape = Escape::None;
            self.emit(sink, char::REPLACEMENT_CHARACTER);
        }
    }

    /// One decoded character of the string being read.
    fn emit(&mut self, sink: Sink, c: char) {
        match sink {
            Sink::Content => {
                self.original_length += c.len_utf8() as u64;
                if !self.full {
                    if self.content.len() + c.len_utf8() <= self.limit {
                        self.content.push(c);
                    } else {
                        self.full = true;
                    }
                }
            }
            Sink::Key | Sink::ContentType => {
                if self.short.len() + c.len_utf8() <= SHORT {
                    self.short.push(c);
                } else {
                    self.short_long = true;
                }
            }
            Sink::Skip => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(content: &str, content_type: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/messages(body)/$entity",
            "@odata.etag": "W/\"CQAAABYAAAC\"",
            "id": "AAMkAGI2TG93AAA=",
            "body": {"contentType": content_type, "content": content},
        }))
        .unwrap()
    }

    /// Every way of splitting `bytes` in two gives what feeding it whole gives.
    fn same_when_split(bytes: &[u8], limit: usize) -> Body {
        let whole = parse_prefix(bytes, limit);
        for at in 0..=bytes.len() {
            let mut s = BodyScanner::new(limit);
            s.feed(&bytes[..at]);
            s.feed(&bytes[at..]);
            assert_eq!(s.finish(), whole, "split at {at}");
        }
        whole
    }

    #[test]
    fn a_whole_answer_gives_the_whole_body() {
        let content = "<p class=\"x\">Grüße\\ 🚀\n\t\u{1}</p>";
        let b = same_when_split(&answer(content, "HTML"), 1 << 20);
        assert!(b.found && b.complete && !b.is_truncated());
        assert_eq!(b.content, content);
        assert_eq!(b.original_length, content.len() as u64);
        assert_eq!(b.content_type, ContentType::Html);
        assert_eq!(
            parse_prefix(&answer("hi", "text"), 10).content_type,
            ContentType::Text
        );
    }

    #[test]
    fn a_cut_keeps_whole_characters_and_counts_them_all() {
        let content = "aé🚀\"\\z".repeat(10);
        let bytes = answer(&content, "html");
        for limit in 0..content.len() + 2 {
            let b = same_when_split(&bytes, limit);
            assert!(content.starts_with(&b.content), "{limit}");
            assert!(b.content.len() <= limit);
            // Nothing that would have fitted is dropped: the next character did not.
            let next = content[b.content.len()..].chars().next();
            assert!(
                next.is_none_or(|c| b.content.len() + c.len_utf8() > limit),
                "{limit}"
            );
            assert_eq!(b.original_length, content.len() as u64);
            assert_eq!(b.is_truncated(), limit < content.len());
        }
    }

    /// Every prefix of an answer with escapes, surrogate pairs and multibyte
    /// characters decodes to a prefix of the content, never a piece of an
    /// escape or of a character.
    #[test]
    fn every_prefix_decodes_to_a_prefix_of_the_content() {
        let raw = br#"{"id":"x","body":{"content":"a\"b\\c\u00e9d\uD83D\uDE80e\/\n\u20AC\u00","contentType":"html"}}"#;
        let full = "a\"b\\céd🚀e/\n€\u{fffd}";
        let mut longest = 0;
        for n in 0..=raw.len() {
            let b = parse_prefix(&raw[..n], 1 << 20);
            assert!(full.starts_with(&b.content), "prefix {n}: {:?}", b.content);
            assert!(b.content.len() >= longest, "prefix {n} lost characters");
            longest = b.content.len();
            assert_eq!(b.original_length, b.content.len() as u64);
        }
        // The final malformed `\u00"` is no escape: U+FFFD, and the quote ends it.
        assert_eq!(parse_prefix(raw, 1 << 20).content, full);
        // A pair cut between its halves keeps neither.
        let cut = raw.windows(6).position(|w| w == b"\\uDE80").unwrap();
        assert_eq!(parse_prefix(&raw[..cut + 3], 100).content, "a\"b\\céd");
        // Raw UTF-8 cut inside a character keeps the characters before it.
        let mut raw = "{\"body\":{\"content\":\"xé".as_bytes().to_vec();
        raw.pop();
        assert_eq!(parse_prefix(&raw, 100).content, "x");
    }

    #[test]
    fn content_type_after_content_and_other_members_anywhere() {
        let raw = br#"{"body":{"other":{"content":"no"},"content":"yes","x":["content"],"contentType":"Text"},"id":"1"}"#;
        let b = same_when_split(raw, 100);
        assert_eq!(
            (b.content.as_str(), b.content_type, b.complete),
            ("yes", ContentType::Text, true)
        );
        // Cut before contentType: HTML, the default.
        let cut = raw.windows(13).position(|w| w == b"\"contentType\"").unwrap();
        let b = parse_prefix(&raw[..cut], 100);
        assert_eq!((b.content.as_str(), b.content_type), ("yes", ContentType::Html));
        // Unknown content types are HTML.
        assert_eq!(
            parse_prefix(&answer("x", "markdown"), 9).content_type,
            ContentType::Html
        );
    }

    #[test]
    fn a_body_that_is_missing_or_elsewhere_is_not_found() {
        for raw in [
            &br#"{"id":"1","subject":"no body"}"#[..],
            br#"{"id":"1","x":{"body":{"content":"nested"}}}"#,
            br#"{"id":"1","body":"a string"}"#,
            br#"{"id":"1","body":null}"#,
            br#"["body",{"content":"x"}]"#,
            b"",
        ] {
            let b = same_when_split(raw, 100);
            assert!(
                !b.found && b.content.is_empty() && b.original_length == 0,
                "{raw:?}"
            );
        }
        // Found, but empty of content: no content is an empty one.
        let b = parse_prefix(br#"{"body":{"contentType":"text"}}"#, 10);
        assert!(b.found && b.content.is_empty() && !b.complete && !b.is_truncated());
    }

    #[test]
    fn keys_may_be_escaped_and_the_first_body_counts() {
        let raw = br#"{"bo\u0064y":{"content":"first"},"body":{"content":"second"}}"#;
        assert_eq!(parse_prefix(raw, 100).content, "first");
    }

    #[test]
    fn malformed_input_is_replaced_not_trusted() {
        let raw = b"{\"body\":{\"content\":\"a\xffb\xc3(\\q\\uD800x\\uDC00\"}}";
        let b = same_when_split(raw, 100);
        assert_eq!(b.content, "a\u{fffd}b\u{fffd}(\u{fffd}\u{fffd}x\u{fffd}");
        assert!(b.complete);
    }

    /// The fuzz target's checks on mutations of a fixture (a cheap stand-in
    /// for `cargo fuzz run body_prefix` in every test run).
    #[test]
    fn mutated_answers_never_panic_and_split_anywhere_alike() {
        let base = answer("<p>a \"quoted\" é 🚀 \\ path</p>\r\n", "html");
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"\"\\u{}[],:dD8C0e\xc3\xa9\xf0\xff ";
        for _ in 0..400 {
            let mut bytes = base.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % bytes.len();
                let b = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => bytes[at] = b,
                    1 => bytes.insert(at, b),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            let limit = (next() % 64) as usize;
            let b = same_when_split(&bytes, limit);
            assert!(b.content.len() <= limit);
            assert!(b.original_length >= b.content.len() as u64);
        }
    }
}
