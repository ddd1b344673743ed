//! `${VAR}` interpolation of configuration strings from the environment, and the key paths
//! (`sources.shopify.secrets[0]`) that errors name.
//!
//! Syntax: `${NAME}` is replaced by the variable's value; `${NAME:-fallback}` uses
//! `fallback` when the variable is unset; `$${` stands for a literal `${`. Any other `$` is
//! kept as is. An empty variable counts as unset, like everywhere else in the config.

use std::borrow::Cow;
use std::fmt;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The environment as the configuration sees it: a lookup function in which empty values
/// count as unset. A function rather than `std::env` so tests never touch the process
/// environment (which is shared by all tests running in parallel).
pub(crate) struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    pub(crate) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup }
    }

    pub(crate) fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.is_empty())
    }
}

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpandError {
    Unset { var: String },
    Malformed { reason: String },
}

/// Expands every `${...}` in `text`.
pub(crate) fn expand(text: &str, env: &Env<'_>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body_and_rest) = after.strip_prefix('{') {
            let end = body_and_rest
                .find('}')
                .ok_or_else(|| ExpandError::Malformed {
                    reason: "unterminated `${` (write `$${` for a literal `${`)".to_owned(),
                })?;
            let body = &body_and_rest[..end];
            let (name, fallback) = match body.split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (body, None),
            };
            if !is_var_name(name) {
                return Err(ExpandError::Malformed {
                    reason: format!("`${{{body}}}`: `{name}` is not a variable name"),
                });
            }
            if fallback.is_some_and(|f| f.contains("${")) {
                return Err(ExpandError::Malformed {
                    reason: format!("`${{{body}}}`: nested `${{` is not supported"),
                });
            }
            match (env.get(name), fallback) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(fallback)) => out.push_str(fallback),
                (None, None) => {
                    return Err(ExpandError::Unset {
                        var: name.to_owned(),
                    });
                }
            }
            rest = &body_and_rest[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The variable name when `text` is exactly one `${NAME}` reference (no fallback, nothing
/// around it). Secrets written that way get list semantics and the "no secret" rule.
pub(crate) fn whole_reference(text: &str) -> Option<&str> {
    let name = text.strip_prefix("${")?.strip_suffix('}')?;
    is_var_name(name).then_some(name)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path as operators write it: `sources.shopify.secrets[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Seg::Key(key.to_owned()));
        next
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Seg::Index(index));
        next
    }

    /// Whether this is `sources.<name>.secrets`, whose items are interpolated later with
    /// their own rules (see `Config::load`).
    fn is_source_secrets(&self) -> bool {
        matches!(self.0.as_slice(), [Seg::Key(s), Seg::Key(_), Seg::Key(k)] if s == "sources" && k == "secrets")
    }
}

impl KeyPath {
    /// Whether values at or under this key may be secrets (`admin_token`,
    /// `sources.<name>.secrets`), so that messages must not quote them.
    pub(crate) fn holds_secret(&self) -> bool {
        match self.0.as_slice() {
            [Seg::Key(k), ..] if k == "admin_token" || k == "secrets_key" => true,
            [Seg::Key(s), _, Seg::Key(k), ..] => s == "sources" && k == "secrets",
            _ => false,
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Interpolates every string value of a parsed document in place, keeping the spans so
/// later deserialization errors still point into the original text. Source secrets are
/// left alone here (see [`KeyPath::is_source_secrets`]).
pub(crate) fn expand_table(
    table: &mut DeTable<'_>,
    path: &KeyPath,
    env: &Env<'_>,
) -> Result<(), (KeyPath, ExpandError)> {
    for (key, value) in table.iter_mut() {
        let path = path.key(key.get_ref());
        expand_value(value, &path, env)?;
    }
    Ok(())
}

fn expand_value(
    value: &mut Spanned<DeValue<'_>>,
    path: &KeyPath,
    env: &Env<'_>,
) -> Result<(), (KeyPath, ExpandError)> {
    match value.get_mut() {
        DeValue::String(text) => {
            let expanded = expand(text, env).map_err(|e| (path.clone(), e))?;
            *text = Cow::Owned(expanded);
        }
        DeValue::Array(items) if !path.is_source_secrets() => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &path.index(i), env)?;
            }
        }
        DeValue::Table(inner) => expand_table(inner, path, env)?,
        _ => {}
    }
    Ok(())
}

/// The key path of the entry at byte offset `pos` of the document: the key whose name or
/// value covers it, as deep as possible. Serde's errors carry only a span; operators need
/// the dotted path, since `[sources.x]` headers can be far above the offending line.
pub(crate) fn key_path_at(table: &DeTable<'_>, pos: usize) -> Option<KeyPath> {
    search_table(table, &KeyPath::default(), pos)
}

fn covers(span: &std::ops::Range<usize>, pos: usize) -> bool {
    span.contains(&pos) || (span.is_empty() && span.start == pos)
}

fn search_table(table: &DeTable<'_>, path: &KeyPath, pos: usize) -> Option<KeyPath> {
    for (key, value) in table.iter() {
        let path = path.key(key.get_ref());
        if covers(&key.span(), pos) {
            return Some(path);
        }
        if let Some(found) = search_value(value, &path, pos) {
            return Some(found);
        }
    }
    None
}

fn search_value(value: &Spanned<DeValue<'_>>, path: &KeyPath, pos: usize) -> Option<KeyPath> {
    // Tables opened by a `[header]` do not span their body, so descend regardless of span.
    let deeper = match value.get_ref() {
        DeValue::Table(inner) => search_table(inner, path, pos),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| search_value(item, &path.index(i), pos)),
        _ => None,
    };
    deeper.or_else(|| covers(&value.span(), pos).then(|| path.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn expands_references_fallbacks_and_escapes() {
        let lookup = env_of(&[("HOST", "db.local"), ("EMPTY", ""), ("USER", "hg")]);
        let env = Env::new(&lookup);
        assert_eq!(
            expand("postgres://${USER}@${HOST}/x", &env),
            Ok("postgres://hg@db.local/x".to_owned())
        );
        assert_eq!(
            expand("${MISSING:-fallback}", &env),
            Ok("fallback".to_owned())
        );
        assert_eq!(expand("${EMPTY:-fb}", &env), Ok("fb".to_owned()));
        assert_eq!(expand("${HOST:-fb}", &env), Ok("db.local".to_owned()));
        assert_eq!(
            expand("cost $5, $${HOST}", &env),
            Ok("cost $5, ${HOST}".to_owned())
        );
        assert_eq!(
            expand("a${EMPTY}b", &env),
            Err(ExpandError::Unset {
                var: "EMPTY".to_owned()
            })
        );
        assert!(matches!(
            expand("${HOST", &env),
            Err(ExpandError::Malformed { .. })
        ));
        assert!(matches!(
            expand("${1X}", &env),
            Err(ExpandError::Malformed { .. })
        ));
        assert!(matches!(
            expand("${A:-${B}}", &env),
            Err(ExpandError::Malformed { .. })
        ));
    }

    #[test]
    fn whole_reference_is_only_a_lone_reference() {
        assert_eq!(
            whole_reference("${SHOPIFY_WEBHOOK_SECRET}"),
            Some("SHOPIFY_WEBHOOK_SECRET")
        );
        assert_eq!(whole_reference("x${A}"), None);
        assert_eq!(whole_reference("${A:-b}"), None);
        assert_eq!(whole_reference("literal"), None);
    }

    #[test]
    fn key_path_display_quotes_odd_keys() {
        let path = KeyPath::default()
            .key("sources")
            .key("shop.ify")
            .key("secrets")
            .index(2);
        assert_eq!(path.to_string(), "sources.\"shop.ify\".secrets[2]");
    }

    #[test]
    fn finds_the_key_path_of_a_position() {
        let text = "listen = \"x\"\n[sources.shop]\nsecrets = [\"a\", \"b\"]\n[sources.shop.settings]\nmode = \"m\"\n";
        let doc = DeTable::parse(text).map(|d| d.into_inner());
        let Ok(doc) = doc else {
            panic!("test document must parse");
        };
        let at = |needle: &str| {
            text.find(needle)
                .and_then(|p| key_path_at(&doc, p))
                .map(|p| p.to_string())
        };
        assert_eq!(at("\"b\"").as_deref(), Some("sources.shop.secrets[1]"));
        assert_eq!(at("mode").as_deref(), Some("sources.shop.settings.mode"));
        assert_eq!(at("\"x\"").as_deref(), Some("listen"));
    }
}
