//! The servers hookgate's tests talk to: PostgreSQL, Redis and NATS with JetStream.
//!
//! Each is taken, in this order, from
//! 1. its environment variable (`HOOKGATE_TEST_DATABASE_URL`, `HOOKGATE_TEST_REDIS_URL`,
//!    `HOOKGATE_TEST_NATS_URL`): an existing server the developer names;
//! 2. its default address on loopback (`127.0.0.1:5432` database `test`, `:6379`,
//!    `:4222`), when something answers there;
//! 3. a private server started for the test run, on a free loopback port with its data
//!    under the target directory (see [`private`]).
//!
//! `HOOKGATE_TEST_SERVICES=private` skips step 2, so a developer's own servers are never
//! used at all. Whatever the source, tests only touch what they create themselves (a
//! schema, a stream and subject prefix, a key namespace) and remove it afterwards.
//!
//! The private servers are one set per test run, shared by every test binary of that run:
//! the first binary that needs them starts them, the others find them, and a small
//! watchdog stops them and deletes their data once no test process has used them for a
//! while.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

pub mod private;

/// One of the servers the tests need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Postgres,
    Redis,
    Nats,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Postgres, Kind::Redis, Kind::Nats];

    /// The environment variable that names an existing server.
    pub fn env_var(self) -> &'static str {
        match self {
            Kind::Postgres => "HOOKGATE_TEST_DATABASE_URL",
            Kind::Redis => "HOOKGATE_TEST_REDIS_URL",
            Kind::Nats => "HOOKGATE_TEST_NATS_URL",
        }
    }

    /// Where the development machines run it.
    pub fn default_url(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres://postgres@127.0.0.1:5432/test",
            Kind::Redis => "redis://127.0.0.1:6379",
            Kind::Nats => "nats://127.0.0.1:4222",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
            Kind::Nats => "nats",
        }
    }
}

/// A server the tests can reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL clients connect with (`postgres://...`, `redis://...`, `nats://...`).
    pub url: String,
    /// Its `host:port`, for the tests that put a relay in front of it.
    pub address: String,
    /// Where it came from.
    pub origin: Origin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Named by the environment variable.
    Environment,
    /// Found at the default address.
    Default,
    /// Started for this test run.
    Private,
}

impl Endpoint {
    fn new(url: String, origin: Origin) -> Result<Self, String> {
        let address = host_port(&url).ok_or_else(|| format!("{url} names no host:port"))?;
        Ok(Self {
            url,
            address,
            origin,
        })
    }

    /// The same URL through another `host:port`: a relay in front of the server.
    pub fn url_via(&self, address: &str) -> String {
        if self.url.contains(&self.address) {
            return self.url.replacen(&self.address, address, 1);
        }
        // The URL left the port out: its host alone stands in it.
        let host = self.address.rsplit_once(':').map_or("", |(host, _)| host);
        self.url.replacen(host, address, 1)
    }

    /// The address as a socket address (resolving a host name if the URL has one).
    pub fn socket_addr(&self) -> SocketAddr {
        self.address
            .to_socket_addrs()
            .ok()
            .and_then(|mut all| all.next())
            .unwrap_or_else(|| panic!("{} does not resolve", self.address))
    }
}

/// The three servers of this test run.
#[derive(Debug)]
pub struct Services {
    pub postgres: Endpoint,
    pub redis: Endpoint,
    pub nats: Endpoint,
}

impl Services {
    pub fn get(&self, kind: Kind) -> &Endpoint {
        match kind {
            Kind::Postgres => &self.postgres,
            Kind::Redis => &self.redis,
            Kind::Nats => &self.nats,
        }
    }
}

/// The servers of this test run, found or started on first use. Panics with a message
/// that says what is missing and how to provide it when that cannot be done.
pub fn services() -> &'static Services {
    static SERVICES: OnceLock<Services> = OnceLock::new();
    SERVICES.get_or_init(|| resolve().unwrap_or_else(|problem| panic!("{problem}")))
}

/// PostgreSQL's URL (a database the tests may create schemas in).
pub fn postgres_url() -> String {
    services().postgres.url.clone()
}

pub fn redis_url() -> String {
    services().redis.url.clone()
}

pub fn nats_url() -> String {
    services().nats.url.clone()
}

fn resolve() -> Result<Services, String> {
    let private_only = std::env::var("HOOKGATE_TEST_SERVICES").is_ok_and(|v| v == "private");
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for kind in Kind::ALL {
        match std::env::var(kind.env_var()) {
            Ok(url) if !url.trim().is_empty() => {
                let endpoint = Endpoint::new(url.trim().to_owned(), Origin::Environment)?;
                if !answers(&endpoint.address) {
                    return Err(format!(
                        "{} = {} is unreachable: start that server or unset the variable to \
                         let the tests start a private one",
                        kind.env_var(),
                        endpoint.url
                    ));
                }
                found.push((kind, endpoint));
            }
            _ => {
                let endpoint = Endpoint::new(kind.default_url().to_owned(), Origin::Default)?;
                if !private_only && answers(&endpoint.address) {
                    found.push((kind, endpoint));
                } else {
                    missing.push(kind);
                }
            }
        }
    }
    if !missing.is_empty() {
        found.extend(private::shared(&missing)?);
    }
    let mut take = |kind: Kind| {
        let index = found
            .iter()
            .position(|(k, _)| *k == kind)
            .expect("resolved");
        found.swap_remove(index).1
    };
    Ok(Services {
        postgres: take(Kind::Postgres),
        redis: take(Kind::Redis),
        nats: take(Kind::Nats),
    })
}

/// Whether something accepts TCP connections at `address` (within half a second).
pub fn answers(address: &str) -> bool {
    let Ok(addresses) = address.to_socket_addrs() else {
        return false;
    };
    addresses
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

/// `host:port` of a URL such as `postgres://user:pw@host:port/db?x=y` (first host of a
/// list); the scheme's default port when none is written.
pub fn host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', ',']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.is_empty() {
        return None;
    }
    let has_port = match host_port.rsplit_once(':') {
        Some((host, port)) => !port.is_empty() && !host.ends_with('[') && !port.ends_with(']'),
        None => false,
    };
    if has_port {
        return Some(host_port.to_owned());
    }
    let port = match scheme {
        "postgres" | "postgresql" => 5432,
        "redis" | "rediss" => 6379,
        "nats" => 4222,
        _ => return None,
    };
    Some(format!("{host_port}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_reads_each_scheme() {
        let cases = [
            ("postgres://postgres@127.0.0.1:5432/test", "127.0.0.1:5432"),
            ("postgres://u:p@db.local/x?sslmode=disable", "db.local:5432"),
            ("redis://:secret@127.0.0.1:6380/0", "127.0.0.1:6380"),
            ("redis://localhost", "localhost:6379"),
            ("nats://127.0.0.1:4333", "127.0.0.1:4333"),
            ("nats://a:4222,nats://b:4222", "a:4222"),
            ("nats://[::1]:4222", "[::1]:4222"),
            ("nats://[::1]", "[::1]:4222"),
        ];
        for (url, expected) in cases {
            assert_eq!(host_port(url).as_deref(), Some(expected), "{url}");
        }
        assert_eq!(host_port("memory://"), None);
        assert_eq!(host_port("http://x"), None);
        assert_eq!(host_port("no scheme"), None);
    }

    #[test]
    fn url_via_swaps_the_address_only() {
        let endpoint = Endpoint::new(
            "postgres://postgres@127.0.0.1:5432/test".into(),
            Origin::Default,
        )
        .unwrap();
        assert_eq!(
            endpoint.url_via("127.0.0.1:40001"),
            "postgres://postgres@127.0.0.1:40001/test"
        );
        let portless = Endpoint::new("redis://localhost/0".into(), Origin::Default).unwrap();
        assert_eq!(portless.url_via("127.0.0.1:1"), "redis://127.0.0.1:1/0");
    }
}
