//! Values a mapping hands back to the gateway, made safe to hand back: RFC 3339
//! timestamps, ids read from JSON as text, and the gateway's limits on text fields.
//!
//! The gateway treats a mapping that breaks these rules as a plugin fault (HTTP 5xx, so
//! the sender retries a delivery that can never succeed); the helpers here let a plugin
//! drop or refuse such a value itself. Shared by the `standard-webhooks` and `discord`
//! plugins (each includes this file with `#[path]`, as `json_object.rs` is).

use serde_json::value::RawValue;

/// The gateway refuses a key, tenant, topic or subject longer than this (in bytes).
pub(crate) const MAX_TEXT: usize = 1024;

/// Whether the gateway accepts `text` as an idempotency key, tenant, topic or subject:
/// not empty, at most [`MAX_TEXT`] bytes, no control characters.
pub(crate) fn usable(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_TEXT && !text.chars().any(char::is_control)
}

/// An id as text: a JSON number exactly as written (a 64-bit id keeps every digit, which
/// an `f64` would not), a JSON string unescaped; `None` for anything else and for ids the
/// gateway would refuse ([`usable`]).
pub(crate) fn id_text(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    let id = match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text).ok()?,
        b'-' | b'0'..=b'9' => text.to_owned(),
        _ => return None,
    };
    usable(&id).then_some(id)
}

/// Whether `s` is an RFC 3339 date-time the gateway accepts:
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, every field in range (a real calendar day,
/// hours below 24, ...). Where RFC 3339 allows more than this (a space for `T`, the leap
/// second `60`) it is refused: a timestamp refused here is merely not used, while one the
/// gateway refuses fails the whole webhook.
pub(crate) fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let number = |at: usize, len: usize| -> Option<u32> {
        let digits = b.get(at..at + len)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let punctuated = b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && matches!(b.get(10), Some(b'T' | b't'))
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':');
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        number(0, 4),
        number(5, 2),
        number(8, 2),
        number(11, 2),
        number(14, 2),
        number(17, 2),
    ) else {
        return false;
    };
    if !punctuated
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = &fraction[digits..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let two = |a: &u8, b: &u8| {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            };
            matches!((two(h1, h2), two(m1, m2)), (Some(h), Some(m)) if h <= 23 && m <= 59)
        }
        _ => false,
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_accepts_what_the_gateway_accepts() {
        for ok in [
            "2025-11-24T15:00:00Z",
            "2022-11-03T20:26:10.344522Z",
            "2025-11-24t15:00:00z",
            "2025-11-24T15:00:00.1+05:30",
            "2025-11-24T15:00:00-23:59",
            "2024-02-29T00:00:00Z",
            "2000-02-29T23:59:59.999999999999Z",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "2025-11-24",
            "2025-11-24T15:00:00",
            "2025-11-24T15:00:00.Z",
            "2025-11-24 15:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-00-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2025-04-31T00:00:00Z",
            "2025-11-24T24:00:00Z",
            "2025-11-24T15:60:00Z",
            "2025-11-24T15:00:60Z",
            "2025-11-24T15:00:00+24:00",
            "2025-11-24T15:00:00+0100",
            "2025-11-24T15:00:00ZZ",
            "+2025-11-24T15:00:00Z",
            "2025-11-24T15:00:00Z ",
            "yesterday",
            "２０２５-11-24T15:00:00Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn ids_are_text_with_every_digit() {
        fn raw(s: &str) -> &RawValue {
            serde_json::from_str(s).expect("JSON")
        }
        assert_eq!(
            id_text(raw("1234505980407808808")).as_deref(),
            Some("1234505980407808808")
        );
        assert_eq!(id_text(raw(r#""inv_\u0031""#)).as_deref(), Some("inv_1"));
        assert_eq!(id_text(raw("-7")).as_deref(), Some("-7"));
        for none in ["null", "true", "{}", "[1]", r#""""#, r#""a\nb""#] {
            assert_eq!(id_text(raw(none)), None, "{none}");
        }
        let long = format!("\"{}\"", "x".repeat(MAX_TEXT + 1));
        assert_eq!(id_text(raw(&long)), None);
    }

    #[test]
    fn usable_follows_the_gateway_limits() {
        assert!(usable("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"));
        assert!(usable(&"x".repeat(MAX_TEXT)));
        assert!(!usable(&"x".repeat(MAX_TEXT + 1)));
        assert!(!usable(""));
        assert!(!usable("a\tb"));
        assert!(!usable("a\u{7f}b"));
    }
}
