//! Per-tenant secrets: held in the `platform_configurations` table, sealed with a key from
//! the environment (`HOOKGATE_SECRETS_KEY`), opened only into the gateway's memory, and
//! never shown again — listings give an id, a fingerprint and times.
//!
//! The pipeline never reads the database per webhook: [`TenantSecrets`] holds every
//! tenant's opened secrets and is refreshed after each change made through this gateway,
//! and by every instance on a short poll that notices changes made elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::Utc;
use uuid::Uuid;

use crate::ingest::rotation::fingerprint;
use crate::plugin::{Credentials, TenantLookup};
use crate::store::{SealedSecret, Store, StoreError};

/// The environment variable holding the sealing key: 32 bytes, base64 or hex.
pub const KEY_VAR: &str = "HOOKGATE_SECRETS_KEY";

/// How often every instance looks for changes made by another.
pub const REFRESH: Duration = Duration::from_secs(5);

const NONCE_LEN: usize = 24;

/// The key secrets are sealed with. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretsKey(Arc<XChaCha20Poly1305>);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{KEY_VAR} must be 32 bytes as base64 or hex (64 hex digits)")]
    Malformed,
}

impl SecretsKey {
    /// Parses 32 bytes given as 64 hex digits or base64.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| KeyError::Malformed)?
        } else {
            STANDARD.decode(text).map_err(|_| KeyError::Malformed)?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        Ok(Self(Arc::new(XChaCha20Poly1305::new(&key.into()))))
    }

    /// The key of the process environment, if set.
    pub fn from_env() -> Result<Option<Self>, KeyError> {
        match std::env::var(KEY_VAR) {
            Ok(text) if !text.trim().is_empty() => Self::parse(&text).map(Some),
            _ => Ok(None),
        }
    }

    /// Seals `secret` for (source, tenant, id): the associated data binds the ciphertext
    /// to its place, so a sealed value copied to another tenant does not open.
    pub fn seal(&self, place: &Place<'_>, secret: &[u8]) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand_nonce();
        let nonce = XNonce::from(nonce_bytes);
        let aad = place.associated_data();
        // Encryption with a valid key and nonce cannot fail.
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// Opens what [`seal`](Self::seal) made for the same place; `None` if it was made with
    /// another key, for another place, or altered.
    pub fn open(&self, place: &Place<'_>, sealed: &str) -> Option<Vec<u8>> {
        let raw = STANDARD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.0
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &place.associated_data(),
                },
            )
            .ok()
    }
}

/// A random nonce from the OS: XChaCha's 192 bits make random nonces safe.
fn rand_nonce() -> [u8; NONCE_LEN] {
    XChaCha20Poly1305::generate_nonce(&mut OsRng).into()
}

/// Where a sealed secret belongs.
pub struct Place<'a> {
    pub source: &'a str,
    pub tenant: &'a str,
    pub id: Uuid,
}

impl Place<'_> {
    fn associated_data(&self) -> Vec<u8> {
        format!(
            "hookgate-secret\0{}\0{}\0{}",
            self.source, self.tenant, self.id
        )
        .into_bytes()
    }
}

/// Seals a new secret of (source, tenant).
pub fn seal_new(key: &SecretsKey, source: &str, tenant: &str, secret: &[u8]) -> SealedSecret {
    let id = Uuid::now_v7();
    SealedSecret {
        id,
        fingerprint: fingerprint(secret),
        created_at: Utc::now(),
        sealed: key.seal(&Place { source, tenant, id }, secret),
    }
}

/// One tenant's opened secrets, as the pipeline hands them to the plugin.
#[derive(Debug, Clone)]
pub struct TenantCredentials {
    pub secrets: Arc<[Vec<u8>]>,
    /// Fingerprints, in `secrets` order.
    pub ids: Arc<[String]>,
}

type BySource = HashMap<String, Arc<HashMap<String, TenantCredentials>>>;

/// One source's tenants with secrets, from one refresh.
pub struct SourceTenants(Arc<HashMap<String, TenantCredentials>>);

impl SourceTenants {
    /// A lookup for the plugin call: the tenant's secrets with the source's keys, signed
    /// URL and grants.
    pub fn lookup(&self, base: &Credentials) -> TenantLookup {
        let tenants = self.0.clone();
        let base = base.clone();
        Arc::new(move |tenant: &str| {
            let found = tenants.get(tenant)?;
            Some(Credentials {
                secrets: found.secrets.clone(),
                ..base.clone()
            })
        })
    }

    /// The fingerprints of `tenant`'s secrets, in the order the lookup hands them over.
    pub fn ids(&self, tenant: &str) -> Option<Arc<[String]>> {
        self.0.get(tenant).map(|t| t.ids.clone())
    }
}

/// Every tenant's opened secrets, by source and tenant.
pub struct TenantSecrets {
    key: Option<SecretsKey>,
    store: Arc<dyn Store>,
    snapshot: RwLock<Arc<BySource>>,
    /// What the store said last (`Store::tenant_secrets_version`): unchanged means no
    /// reload.
    version: tokio::sync::Mutex<Option<String>>,
}

impl TenantSecrets {
    /// Loads every stored tenant secret.
    pub async fn load(key: Option<SecretsKey>, store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let secrets = Self {
            key,
            store,
            snapshot: RwLock::new(Arc::new(HashMap::new())),
            version: tokio::sync::Mutex::new(None),
        };
        secrets.refresh(true).await?;
        Ok(secrets)
    }

    pub fn key(&self) -> Option<&SecretsKey> {
        self.key.as_ref()
    }

    fn snapshot(&self) -> Arc<BySource> {
        match self.snapshot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether any tenant of `source` has secrets.
    pub fn has_tenants(&self, source: &str) -> bool {
        self.for_source(source).is_some()
    }

    /// The tenants of `source` with secrets, as they are now, or none: only then is the
    /// plugin asked for the delivery's tenant. One webhook reads one view, so the secrets
    /// it is verified with and the ids a match is counted under cannot come from two
    /// different refreshes.
    pub fn for_source(&self, source: &str) -> Option<SourceTenants> {
        self.snapshot()
            .get(source)
            .filter(|tenants| !tenants.is_empty())
            .cloned()
            .map(SourceTenants)
    }

    /// Reads the table again if it changed since the last read (or always, if `force`).
    pub async fn refresh(&self, force: bool) -> Result<(), StoreError> {
        let mut version = self.version.lock().await;
        let now = self.store.tenant_secrets_version().await?;
        if !force && version.as_deref() == Some(now.as_str()) {
            return Ok(());
        }
        let rows = self.store.list_tenant_secrets().await?;
        let mut by_source: HashMap<String, HashMap<String, TenantCredentials>> = HashMap::new();
        let mut unopened = 0usize;
        for row in rows {
            let mut secrets = Vec::new();
            let mut ids = Vec::new();
            for sealed in &row.secrets {
                let place = Place {
                    source: &row.source,
                    tenant: &row.tenant,
                    id: sealed.id,
                };
                match self
                    .key
                    .as_ref()
                    .and_then(|k| k.open(&place, &sealed.sealed))
                {
                    Some(secret) => {
                        secrets.push(secret);
                        ids.push(sealed.fingerprint.clone());
                    }
                    None => unopened += 1,
                }
            }
            if !secrets.is_empty() {
                by_source.entry(row.source.clone()).or_default().insert(
                    row.tenant.clone(),
                    TenantCredentials {
                        secrets: secrets.into(),
                        ids: ids.into(),
                    },
                );
            }
        }
        if unopened > 0 {
            tracing::error!(
                unopened,
                "tenant secrets that cannot be opened (no {KEY_VAR}, another key, or altered): their tenants' webhooks fail verification"
            );
        }
        let snapshot: Arc<BySource> = Arc::new(
            by_source
                .into_iter()
                .map(|(source, tenants)| (source, Arc::new(tenants)))
                .collect(),
        );
        match self.snapshot.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        *version = Some(now);
        Ok(())
    }

    /// Polls for changes made by other instances until `shutdown`.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let secrets = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tick.tick() => {
                        if let Err(error) = secrets.refresh(false).await {
                            tracing::warn!(%error, "tenant secrets not refreshed; the ones in memory keep serving");
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretsKey {
        SecretsKey::parse(&"42".repeat(32)).unwrap()
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_nothing_else() {
        assert!(SecretsKey::parse(&"ab".repeat(32)).is_ok());
        assert!(SecretsKey::parse(&STANDARD.encode([7u8; 32])).is_ok());
        assert_eq!(SecretsKey::parse("short").unwrap_err(), KeyError::Malformed);
        assert!(SecretsKey::parse(&STANDARD.encode([7u8; 31])).is_err());
        assert_eq!(format!("{:?}", key()), "SecretsKey(..)");
    }

    #[test]
    fn a_sealed_secret_opens_only_in_its_place_with_its_key() {
        let key = key();
        let sealed = seal_new(&key, "shopify", "shop-a", b"tenant-secret");
        assert!(!sealed.sealed.contains("tenant-secret"));
        let place = |tenant| Place {
            source: "shopify",
            tenant,
            id: sealed.id,
        };
        assert_eq!(
            key.open(&place("shop-a"), &sealed.sealed).as_deref(),
            Some(&b"tenant-secret"[..])
        );
        assert_eq!(key.open(&place("shop-b"), &sealed.sealed), None);
        let other = SecretsKey::parse(&"43".repeat(32)).unwrap();
        assert_eq!(other.open(&place("shop-a"), &sealed.sealed), None);
        let mut altered = STANDARD.decode(&sealed.sealed).unwrap();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(&place("shop-a"), &STANDARD.encode(altered)), None);
        assert_eq!(sealed.fingerprint, fingerprint(b"tenant-secret"));
    }

    #[test]
    fn two_seals_of_one_secret_differ() {
        let key = key();
        let a = key.seal(
            &Place {
                source: "s",
                tenant: "t",
                id: Uuid::nil(),
            },
            b"x",
        );
        let b = key.seal(
            &Place {
                source: "s",
                tenant: "t",
                id: Uuid::nil(),
            },
            b"x",
        );
        assert_ne!(a, b);
    }
}
