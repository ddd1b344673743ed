//! The template syntax shared by `signed_content` and the value settings (`event_type`,
//! `idempotency_key`, ...): literal text with `{placeholder}`s, `{{` and `}}` standing for
//! literal braces. What a placeholder may name is up to the setting that uses it.

/// One piece of a template, before the setting gives its placeholders a meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Literal text, braces unescaped; adjacent text is merged into one piece.
    Text(String),
    /// The text between `{` and `}`, as written (`body`, `header:X-Timestamp`).
    Placeholder(&'a str),
}

/// Splits `template` into text and placeholders. The error says what is wrong and where
/// (a byte offset), for the operator who wrote it.
pub(crate) fn parse(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        text.push_str(&rest[..at]);
        let offset = template.len() - rest.len() + at;
        let brace = &rest[at..];
        if let Some(after) = brace.strip_prefix("{{") {
            text.push('{');
            rest = after;
        } else if let Some(after) = brace.strip_prefix("}}") {
            text.push('}');
            rest = after;
        } else if brace.starts_with('}') {
            return Err(format!(
                "unmatched `}}` at byte {offset} (write `}}}}` for a literal brace)"
            ));
        } else {
            let inner = &brace[1..];
            let end = inner
                .find(['{', '}'])
                .filter(|&e| inner[e..].starts_with('}'));
            let Some(end) = end else {
                return Err(format!(
                    "`{{` at byte {offset} is not closed by `}}` (write `{{{{` for a literal brace)"
                ));
            };
            let name = &inner[..end];
            if name.is_empty() {
                return Err(format!("empty placeholder `{{}}` at byte {offset}"));
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Placeholder(name));
            rest = &inner[end + 1..];
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::{Piece, parse};

    fn text(s: &str) -> Piece<'static> {
        Piece::Text(s.to_owned())
    }

    #[test]
    fn plain_placeholders_and_text() {
        assert_eq!(parse("{body}"), Ok(vec![Piece::Placeholder("body")]));
        assert_eq!(
            parse("v0:{header:X-Zm-Request-Timestamp}:{body}"),
            Ok(vec![
                text("v0:"),
                Piece::Placeholder("header:X-Zm-Request-Timestamp"),
                text(":"),
                Piece::Placeholder("body"),
            ])
        );
        assert_eq!(
            parse("{url}{body}"),
            Ok(vec![Piece::Placeholder("url"), Piece::Placeholder("body")])
        );
        assert_eq!(parse("just text"), Ok(vec![text("just text")]));
        assert_eq!(parse(""), Ok(vec![]));
    }

    #[test]
    fn doubled_braces_are_literal_and_merge_with_text() {
        assert_eq!(
            parse("{{a}}.{body}.}}"),
            Ok(vec![text("{a}."), Piece::Placeholder("body"), text(".}")])
        );
        assert_eq!(
            parse("{{{body}}}"),
            Ok(vec![text("{"), Piece::Placeholder("body"), text("}")])
        );
        assert_eq!(parse("{{}}"), Ok(vec![text("{}")]));
    }

    #[test]
    fn placeholder_text_is_kept_as_written() {
        assert_eq!(
            parse("{json:/a~1b/0}"),
            Ok(vec![Piece::Placeholder("json:/a~1b/0")])
        );
        assert_eq!(
            parse("{ body }"),
            Ok(vec![Piece::Placeholder(" body ")]),
            "the setting decides whether spaces are allowed"
        );
    }

    #[test]
    fn broken_braces_are_errors_with_an_offset() {
        let err = parse("ab}c").unwrap_err();
        assert!(err.contains("unmatched `}` at byte 2"), "{err}");
        let err = parse("v0:{body").unwrap_err();
        assert!(err.contains("`{` at byte 3 is not closed"), "{err}");
        let err = parse("{a{b}").unwrap_err();
        assert!(err.contains("`{` at byte 0 is not closed"), "{err}");
        let err = parse("x{}").unwrap_err();
        assert!(err.contains("empty placeholder `{}` at byte 1"), "{err}");
        assert!(
            parse("{body}}").is_err(),
            "a lone closing brace after a placeholder"
        );
        assert!(parse("{").is_err());
        assert!(parse("}").is_err());
    }

    #[test]
    fn multibyte_text_is_kept() {
        assert_eq!(
            parse("é{body}ü"),
            Ok(vec![text("é"), Piece::Placeholder("body"), text("ü")])
        );
        let err = parse("é}").unwrap_err();
        assert!(err.contains("byte 2"), "{err}");
    }
}
