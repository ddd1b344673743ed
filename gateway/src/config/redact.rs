//! Values that must never reach logs or `config show` in clear: secrets, and service URLs
//! whose password is masked whenever they are printed.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// What a redacted value prints as.
pub const REDACTED: &str = "***";

/// A secret (webhook signing secret, admin token). `Debug`, `Display` and `Serialize` print
/// `***`; the value is reachable only through [`Secret::expose`] / [`Secret::as_bytes`], so
/// every place that handles it in clear is visible in the code.
///
/// `==` is constant-time in the contents, so comparing a configured token with request
/// input through it leaks nothing but the length; it also lets a reload tell whether a
/// source's secrets changed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Secret {}

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value in clear. Only for the code that uses it (MACs, token comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value's bytes in clear, as MAC keys want them.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// The URL of a backing service (database, Redis, NATS, file sink). Its password, if any,
/// is masked in `Debug`, `Display` and `Serialize` (`postgres://user:***@host/db`); the
/// full URL, as the client libraries need it, comes from [`ServiceUrl::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ServiceUrl(String);

impl ServiceUrl {
    /// Wraps a URL without checking it; `Config::validate` does the checking.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL in clear, password included, for the client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The scheme, lower-cased (`postgres`, `redis`, ...); empty when there is none.
    pub fn scheme(&self) -> String {
        match self.0.split_once(':') {
            Some((scheme, _)) => scheme.to_ascii_lowercase(),
            None => String::new(),
        }
    }

    /// The URL with its password replaced by `***`.
    pub fn masked(&self) -> String {
        mask_password(&self.0)
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.masked())
    }
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for ServiceUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

/// Masks the password of `scheme://user:password@host...`. The userinfo ends at the last
/// `@` of the authority, because passwords may themselves contain `@` when the operator
/// did not percent-encode them. An unencoded `/`, `?` or `#` in a password ends the
/// authority early by the URL rules (`u:pa/ss@host`, which no driver parses either), and
/// the whole URL used to show: when the authority so cut is `user:` and something that is
/// not a port, everything up to the last `@` is the userinfo. `host:5432/db?x=a@b` keeps
/// its meaning: the masked URL also names the dedupe cache's namespace, so two different
/// well-formed URLs must not mask alike.
pub(crate) fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // `[` opens an IPv6 host, never a user name.
    let cut_password = !authority.contains('@')
        && !authority.starts_with('[')
        && authority.split_once(':').is_some_and(|(_, after)| {
            after.is_empty() || after.len() > 5 || !after.bytes().all(|b| b.is_ascii_digit())
        });
    let at = if cut_password {
        rest.rfind('@')
    } else {
        authority.rfind('@')
    };
    let Some(at) = at else {
        return url.to_owned();
    };
    let (userinfo, host_and_tail) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}{host_and_tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_prints_redacted_everywhere() {
        let secret = Secret::new("hush-7f3a9c-distinctive");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{secret}"), REDACTED);
        let json = serde_json::to_string(&secret).unwrap_or_default();
        assert_eq!(json, "\"***\"");
        assert_eq!(secret.expose(), "hush-7f3a9c-distinctive");
        assert_eq!(secret.as_bytes(), b"hush-7f3a9c-distinctive");
        assert!(secret == Secret::new("hush-7f3a9c-distinctive"));
        assert!(secret != Secret::new("hush-7f3a9c-distinctivE"));
        assert!(secret != Secret::new("hush"));
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_password("postgres://user:pa55@db.local:5432/hg"),
            "postgres://user:***@db.local:5432/hg"
        );
        assert_eq!(
            mask_password("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        // An unencoded `@` inside the password must not leave part of it visible.
        assert_eq!(
            mask_password("nats://u:p@ss@host:4222"),
            "nats://u:***@host:4222"
        );
        assert_eq!(
            mask_password("postgres://user@host/db"),
            "postgres://user@host/db"
        );
        assert_eq!(
            mask_password("sqlite://data/hookgate.db"),
            "sqlite://data/hookgate.db"
        );
        assert_eq!(mask_password("memory://"), "memory://");
        // Unencoded `/`, `?`, `#` in a password end the authority early by the URL rules;
        // the password must not show through that (found by tests/properties).
        assert_eq!(mask_password("postgres://:Pw?Zq@h"), "postgres://:***@h");
        assert_eq!(
            mask_password("postgres://u:pa/ss@db:5432/hg?sslmode=disable"),
            "postgres://u:***@db:5432/hg?sslmode=disable"
        );
        assert_eq!(
            mask_password("redis://u:p#w@host:6379/0"),
            "redis://u:***@host:6379/0"
        );
        // No userinfo: an `@` in the path or query is left alone, port or not.
        assert_eq!(
            mask_password("postgres://host/db?application_name=a@b"),
            "postgres://host/db?application_name=a@b"
        );
        assert_eq!(
            mask_password("postgres://host:5432/db?application_name=a@b"),
            "postgres://host:5432/db?application_name=a@b"
        );
        assert_eq!(
            mask_password("postgres://[::1]:5432/db?application_name=a@b"),
            "postgres://[::1]:5432/db?application_name=a@b"
        );
        assert_eq!(
            mask_password("postgres://u:p@host:5432/db?application_name=a@b"),
            "postgres://u:***@host:5432/db?application_name=a@b"
        );
        assert_eq!(
            mask_password("postgres://user@host/db"),
            "postgres://user@host/db"
        );
        let url = ServiceUrl::new("postgres://u:topsecret@h/d");
        assert!(!format!("{url:?}{url}").contains("topsecret"));
        assert_eq!(url.expose(), "postgres://u:topsecret@h/d");
        assert_eq!(url.scheme(), "postgres");
    }
}
