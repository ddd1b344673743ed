//! Reading ids from JSON without losing digits.

use serde_json::value::RawValue;

/// An id as text: a number exactly as written (so `820982911946154500` keeps every
/// digit, which an `f64` would not), a string unescaped; `None` for null, empty strings,
/// and anything that is not an id.
pub(crate) fn id_text(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text)
            .ok()
            .filter(|s| !s.is_empty()),
        b'-' | b'0'..=b'9' => Some(text.to_owned()),
        _ => None,
    }
}
