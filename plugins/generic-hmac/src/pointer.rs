//! JSON Pointers (RFC 6901, <https://www.rfc-editor.org/rfc/rfc6901>) resolved over the raw
//! body: each step reads one object member or array element as raw JSON, so a number
//! keeps every digit and nothing but the path is built into values.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A parsed JSON Pointer: `/event/data/id`, `/items/0`, `/a~1b` (the member `a/b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pointer {
    /// The reference tokens, `~1` and `~0` already unescaped.
    tokens: Vec<String>,
}

impl Pointer {
    /// Parses RFC 6901 text: empty (the whole document) or `/`-prefixed tokens, where `~`
    /// must be followed by `0` (`~`) or `1` (`/`).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self { tokens: Vec::new() });
        }
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("JSON pointer {text:?} must start with `/`"))?;
        let tokens = rest
            .split('/')
            .map(|token| {
                unescape(token)
                    .ok_or_else(|| format!("JSON pointer {text:?}: `~` must be followed by 0 or 1"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { tokens })
    }

    /// The value the pointer refers to in `doc`, `None` when some step does not exist (a
    /// missing member, an index past the end or not a number, a step into a scalar).
    /// An error only when `doc` is not valid JSON.
    pub(crate) fn find<'a>(&self, doc: &'a RawValue) -> Result<Option<&'a RawValue>, String> {
        let mut current = doc;
        for token in &self.tokens {
            let text = current.get();
            let next = match text.trim_start().as_bytes().first() {
                Some(b'{') => deserialize(text, Member(token))?,
                Some(b'[') => match index(token) {
                    Some(i) => deserialize(text, Element(i))?,
                    None => None,
                },
                _ => None,
            };
            match next {
                Some(value) => current = value,
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }
}

fn unescape(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// An array index as RFC 6901 writes it: `0` or digits without a leading zero. `-` (the
/// element after the last) and anything else refer to nothing.
fn index(token: &str) -> Option<usize> {
    let valid = token == "0"
        || (!token.is_empty()
            && !token.starts_with('0')
            && token.bytes().all(|b| b.is_ascii_digit()));
    if valid { token.parse().ok() } else { None }
}

fn deserialize<'a, S>(text: &'a str, seed: S) -> Result<Option<&'a RawValue>, String>
where
    S: DeserializeSeed<'a, Value = Option<&'a RawValue>>,
{
    let mut de = serde_json::Deserializer::from_str(text);
    seed.deserialize(&mut de)
        .map_err(|e| format!("body is not JSON: {e}"))
}

/// Finds one member of an object. The last of duplicate names wins, as in serde_json's
/// own `Value`.
struct Member<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        // Every entry is read: the deserializer insists on reaching the closing brace.
        while let Some(key) = map.next_key::<String>()? {
            if key == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Finds one element of an array.
struct Element(usize);

impl<'de> DeserializeSeed<'de> for Element {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Element {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0usize;
        loop {
            if i == self.0 {
                match seq.next_element::<&'de RawValue>()? {
                    Some(value) => found = Some(value),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::Pointer;
    use serde_json::value::RawValue;

    fn find(doc: &str, pointer: &str) -> Option<String> {
        let doc: &RawValue = serde_json::from_str(doc).expect("test document is JSON");
        Pointer::parse(pointer)
            .expect("valid pointer")
            .find(doc)
            .expect("valid JSON")
            .map(|raw| raw.get().to_owned())
    }

    /// The examples of RFC 6901 section 5, over its example document.
    #[test]
    fn rfc_6901_examples() {
        let doc = r#"{
            "foo": ["bar", "baz"],
            "": 0,
            "a/b": 1,
            "c%d": 2,
            "e^f": 3,
            "g|h": 4,
            "i\\j": 5,
            "k\"l": 6,
            " ": 7,
            "m~n": 8
        }"#;
        assert!(find(doc, "").is_some_and(|whole| whole.starts_with('{')));
        assert_eq!(find(doc, "/foo").as_deref(), Some(r#"["bar", "baz"]"#));
        assert_eq!(find(doc, "/foo/0").as_deref(), Some(r#""bar""#));
        assert_eq!(find(doc, "/").as_deref(), Some("0"));
        assert_eq!(find(doc, "/a~1b").as_deref(), Some("1"));
        assert_eq!(find(doc, "/c%d").as_deref(), Some("2"));
        assert_eq!(find(doc, "/e^f").as_deref(), Some("3"));
        assert_eq!(find(doc, "/g|h").as_deref(), Some("4"));
        assert_eq!(find(doc, r"/i\j").as_deref(), Some("5"));
        assert_eq!(find(doc, "/k\"l").as_deref(), Some("6"));
        assert_eq!(find(doc, "/ ").as_deref(), Some("7"));
        assert_eq!(find(doc, "/m~0n").as_deref(), Some("8"));
    }

    #[test]
    fn nested_members_and_elements() {
        let doc = r#"{"event":{"data":{"id":"PGR0VU2","n":12345678901234567890},"list":[{"id":1},{"id":2}]}}"#;
        assert_eq!(find(doc, "/event/data/id").as_deref(), Some(r#""PGR0VU2""#));
        assert_eq!(
            find(doc, "/event/data/n").as_deref(),
            Some("12345678901234567890"),
            "numbers keep every digit"
        );
        assert_eq!(find(doc, "/event/list/1/id").as_deref(), Some("2"));
        assert_eq!(find(doc, "/event/list/0/id").as_deref(), Some("1"));
    }

    #[test]
    fn what_is_not_there_is_none() {
        let doc = r#"{"a":{"b":"text"},"list":[1,2],"01":"member"}"#;
        assert_eq!(find(doc, "/missing"), None);
        assert_eq!(find(doc, "/a/b/c"), None, "a step into a string");
        assert_eq!(find(doc, "/list/2"), None, "past the end");
        assert_eq!(find(doc, "/list/-"), None, "the element after the last");
        assert_eq!(find(doc, "/list/01"), None, "leading zeros are no index");
        assert_eq!(find(doc, "/list/x"), None);
        assert_eq!(find(doc, "/list/99999999999999999999999"), None);
        assert_eq!(
            find(doc, "/01").as_deref(),
            Some(r#""member""#),
            "a member may look like an index"
        );
    }

    #[test]
    fn escaped_member_names_match_their_text() {
        let doc = r#"{"caf\u00e9":"yes","tab\tname":1}"#;
        assert_eq!(find(doc, "/café").as_deref(), Some(r#""yes""#));
        assert_eq!(find(doc, "/tab\tname").as_deref(), Some("1"));
    }

    #[test]
    fn the_last_duplicate_member_wins() {
        assert_eq!(find(r#"{"a":1,"a":2}"#, "/a").as_deref(), Some("2"));
    }

    #[test]
    fn pointer_syntax_errors() {
        for bad in ["a/b", "event", "/a~2", "/a~", "/~x"] {
            assert!(Pointer::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Pointer::parse("/a~0~1").is_ok());
    }

    #[test]
    fn invalid_json_on_the_path_is_an_error() {
        let doc: &RawValue = serde_json::from_str(r#"{"a":{"b":1}}"#).expect("valid");
        assert!(Pointer::parse("/a/b").unwrap().find(doc).unwrap().is_some());
        // A raw value is valid JSON by construction; the error path covers documents
        // handed over as text that claims to be an object.
        let broken = super::deserialize("{\"a\":", super::Member("a"));
        assert!(broken.is_err());
    }
}
