//! Secrets at rest: AES-256-GCM (RustCrypto `aes-gcm`) under a master key from
//! `WXTOKEN_MASTER_KEY` or `server.master_key_file` (64 hex characters, 32 bytes).
//!
//! A sealed value is `sealed:v1:` + base64(12-byte random nonce || ciphertext || tag).
//! The associated data names what the value belongs to (`app:shop:secret`,
//! `authorizer:component/appid`), so a sealed value copied to another record does not
//! open. What is sealed: secrets of apps added at runtime (secret, message token, AES
//! key) and component authorizers' refresh tokens. Values written without a master key
//! stay readable; once a key is set, new writes are sealed.
//!
//! The store keeps a check value sealed under the key (`Registry::Meta`
//! `master_key_check`): a start with another key, or without one, fails before anything
//! is read or written.

use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::future::BoxFuture;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::credential::CredentialKey;
use crate::store::{
    AuditEntry, AuditFilter, AuthorizerRecord, Coordination, Pruned, Registry, Store, StoreError,
    UsageRow, VerifyTicket,
};

const PREFIX: &str = "sealed:v1:";
const NONCE_LEN: usize = 12;
/// The `Registry::Meta` entry holding the check value.
pub const CHECK_ID: &str = "master_key_check";
const CHECK_AAD: &str = "wxtoken:master-key-check";
const CHECK_PLAINTEXT: &str = "wxtoken master key check";

/// Why a secret could not be sealed, opened or a key loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0}: the master key must be 64 hex characters (32 bytes)")]
    BadKey(&'static str),
    #[error("cannot read server.master_key_file {path}: {source}")]
    ReadKey {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the master key does not match the one this store's secrets were encrypted with; \
         nothing was changed (check WXTOKEN_MASTER_KEY or server.master_key_file)"
    )]
    WrongKey,
    #[error(
        "this store holds secrets encrypted with a master key; set WXTOKEN_MASTER_KEY or \
         server.master_key_file to start"
    )]
    KeyMissing,
    #[error("a sealed value ({0}) does not open with the master key")]
    Unopenable(String),
    #[error("a sealed value ({0}) is found but no master key is set")]
    SealedWithoutKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A 32-byte AES-256-GCM key.
#[derive(Clone)]
pub struct MasterKey(Arc<Aes256Gcm>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Parses 64 hex characters (surrounding whitespace ignored); `origin` names where
    /// they came from, for the error.
    pub fn from_hex(hex_key: &str, origin: &'static str) -> Result<Self, SecretsError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| SecretsError::BadKey(origin))?;
        if bytes.len() != 32 {
            return Err(SecretsError::BadKey(origin));
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SecretsError::BadKey(origin))?;
        Ok(Self(Arc::new(cipher)))
    }

    /// The key from `WXTOKEN_MASTER_KEY` if set, else from `file` if given.
    pub fn from_env_or_file(file: Option<&Path>) -> Result<Option<Self>, SecretsError> {
        if let Ok(hex_key) = std::env::var("WXTOKEN_MASTER_KEY") {
            let hex_key = SecretString::from(hex_key);
            return Self::from_hex(hex_key.expose_secret(), "WXTOKEN_MASTER_KEY").map(Some);
        }
        let Some(path) = file else { return Ok(None) };
        let text = std::fs::read_to_string(path).map_err(|source| SecretsError::ReadKey {
            path: path.to_owned(),
            source,
        })?;
        let text = SecretString::from(text);
        Self::from_hex(text.expose_secret(), "server.master_key_file").map(Some)
    }

    /// A new random key, as hex (for `wxtoken keygen --master-key`).
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    /// Encrypts `plaintext` bound to `aad`, under a fresh random nonce.
    pub fn seal(&self, aad: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// Decrypts a value [`MasterKey::seal`] made with the same `aad`.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<String, SecretsError> {
        let unopenable = || SecretsError::Unopenable(aad.to_owned());
        let encoded = sealed.strip_prefix(PREFIX).ok_or_else(unopenable)?;
        let raw = STANDARD.decode(encoded).map_err(|_| unopenable())?;
        if raw.len() < NONCE_LEN {
            return Err(unopenable());
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let plain = self
            .0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| unopenable())?;
        String::from_utf8(plain).map_err(|_| unopenable())
    }
}

/// Whether `value` is a sealed value (rather than plaintext written without a key).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// Seals with the master key when there is one; keeps plaintext otherwise.
#[derive(Clone, Debug, Default)]
pub struct Sealer(Option<MasterKey>);

impl Sealer {
    pub fn new(key: Option<MasterKey>) -> Self {
        Self(key)
    }

    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    pub fn seal(&self, aad: &str, plaintext: &str) -> String {
        match &self.0 {
            Some(key) => key.seal(aad, plaintext),
            None => plaintext.to_owned(),
        }
    }

    pub fn open(&self, aad: &str, stored: &str) -> Result<String, SecretsError> {
        match (&self.0, is_sealed(stored)) {
            (Some(key), true) => key.open(aad, stored),
            (None, true) => Err(SecretsError::SealedWithoutKey(aad.to_owned())),
            (_, false) => Ok(stored.to_owned()),
        }
    }
}

/// The associated data of a runtime app's secret field (`secret`, `token`,
/// `encoding_aes_key`).
pub fn app_aad(app: &str, field: &str) -> String {
    format!("app:{app}:{field}")
}

/// The associated data of an authorizer's refresh token.
pub fn authorizer_aad(component: &str, appid: &str) -> String {
    format!("authorizer:{component}/{appid}")
}

/// Checks `key` against the store's check value before anything else touches the
/// store, and writes the check value on a store's first start with a key.
pub async fn verify_master_key(
    store: &dyn Store,
    key: Option<&MasterKey>,
) -> Result<(), SecretsError> {
    let check = store
        .registry_list(Registry::Meta)
        .await?
        .into_iter()
        .find(|(id, _)| id == CHECK_ID)
        .map(|(_, value)| value);
    match (key, check) {
        (Some(key), Some(check)) if opens_check(key, &check) => Ok(()),
        (Some(_), Some(_)) => Err(SecretsError::WrongKey),
        (Some(key), None) => {
            store
                .registry_put(
                    Registry::Meta,
                    CHECK_ID.to_owned(),
                    key.seal(CHECK_AAD, CHECK_PLAINTEXT),
                )
                .await?;
            Ok(())
        }
        (None, Some(_)) => Err(SecretsError::KeyMissing),
        (None, None) => Ok(()),
    }
}

/// Whether `check` is the check value sealed under `key`.
pub fn opens_check(key: &MasterKey, check: &str) -> bool {
    key.open(CHECK_AAD, check)
        .is_ok_and(|plain| plain == CHECK_PLAINTEXT)
}

/// The check value for `key`, for a rotation to write last.
pub fn check_value(key: &MasterKey) -> String {
    key.seal(CHECK_AAD, CHECK_PLAINTEXT)
}

/// A store whose authorizer refresh tokens are sealed on the way in and opened on the
/// way out; everything else passes through.
pub struct SealedStore {
    inner: Arc<dyn Store>,
    sealer: Sealer,
}

impl std::fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedStore")
            .field("sealing", &self.sealer.enabled())
            .finish_non_exhaustive()
    }
}

impl SealedStore {
    pub fn new(inner: Arc<dyn Store>, sealer: Sealer) -> Self {
        Self { inner, sealer }
    }

    fn open_record(
        &self,
        component: &str,
        mut record: AuthorizerRecord,
    ) -> Result<AuthorizerRecord, StoreError> {
        record.refresh_token = self
            .sealer
            .open(
                &authorizer_aad(component, &record.appid),
                &record.refresh_token,
            )
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(record)
    }
}

impl Store for SealedStore {
    fn load(
        &self,
        key: CredentialKey,
    ) -> BoxFuture<'_, Result<Option<crate::credential::Token>, StoreError>> {
        self.inner.load(key)
    }

    fn save(
        &self,
        key: CredentialKey,
        token: crate::credential::Token,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.inner.save(key, token)
    }

    fn add_usage(
        &self,
        day: String,
        app: String,
        api: &'static str,
        n: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.add_usage(day, app, api, n)
    }

    fn usage(&self, day: String, app: String) -> BoxFuture<'_, Result<Vec<UsageRow>, StoreError>> {
        self.inner.usage(day, app)
    }

    fn prune(
        &self,
        oldest_day: String,
        apps: Vec<String>,
        expired_before_ms: u64,
    ) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        self.inner.prune(oldest_day, apps, expired_before_ms)
    }

    fn save_verify_ticket(
        &self,
        component: String,
        ticket: VerifyTicket,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.inner.save_verify_ticket(component, ticket)
    }

    fn load_verify_ticket(
        &self,
        component: String,
    ) -> BoxFuture<'_, Result<Option<VerifyTicket>, StoreError>> {
        self.inner.load_verify_ticket(component)
    }

    fn save_authorizer(
        &self,
        component: String,
        mut record: AuthorizerRecord,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        record.refresh_token = self.sealer.seal(
            &authorizer_aad(&component, &record.appid),
            &record.refresh_token,
        );
        self.inner.save_authorizer(component, record)
    }

    fn load_authorizer(
        &self,
        component: String,
        appid: String,
    ) -> BoxFuture<'_, Result<Option<AuthorizerRecord>, StoreError>> {
        Box::pin(async move {
            match self.inner.load_authorizer(component.clone(), appid).await? {
                Some(record) => self.open_record(&component, record).map(Some),
                None => Ok(None),
            }
        })
    }

    fn list_authorizers(
        &self,
        component: String,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AuthorizerRecord>, StoreError>> {
        Box::pin(async move {
            self.inner
                .list_authorizers(component.clone(), after, limit)
                .await?
                .into_iter()
                .map(|record| self.open_record(&component, record))
                .collect()
        })
    }

    fn load_many(
        &self,
        keys: Vec<CredentialKey>,
    ) -> BoxFuture<'_, Result<Vec<Option<crate::credential::Token>>, StoreError>> {
        self.inner.load_many(keys)
    }

    fn registry_put(
        &self,
        registry: Registry,
        id: String,
        value: String,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.registry_put(registry, id, value)
    }

    fn registry_remove(
        &self,
        registry: Registry,
        id: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.inner.registry_remove(registry, id)
    }

    fn registry_list(
        &self,
        registry: Registry,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        self.inner.registry_list(registry)
    }

    fn registry_version(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.registry_version()
    }

    fn audit_append(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.audit_append(entry)
    }

    fn audit_since(
        &self,
        since_ms: u64,
        limit: usize,
        filter: AuditFilter,
    ) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>> {
        self.inner.audit_since(since_ms, limit, filter)
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.ping()
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }

    fn coordination(&self) -> Option<&dyn Coordination> {
        self.inner.coordination()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_hex(&hex::encode([byte; 32]), "test").expect("a valid key")
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_associated_data() {
        let k = key(1);
        let sealed = k.seal("app:shop:secret", "the-secret");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("the-secret"));
        assert_eq!(
            k.open("app:shop:secret", &sealed).expect("opens"),
            "the-secret"
        );
        assert!(k.open("app:other:secret", &sealed).is_err());
        assert!(key(2).open("app:shop:secret", &sealed).is_err());
        // A fresh nonce per value: the same plaintext never seals the same way twice.
        assert_ne!(sealed, k.seal("app:shop:secret", "the-secret"));
    }

    #[test]
    fn keys_must_be_64_hex_characters() {
        assert!(MasterKey::from_hex("abcd", "WXTOKEN_MASTER_KEY").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32), "WXTOKEN_MASTER_KEY").is_err());
        let message = MasterKey::from_hex("abcd", "WXTOKEN_MASTER_KEY")
            .expect_err("too short")
            .to_string();
        assert!(message.contains("WXTOKEN_MASTER_KEY"), "{message}");
        assert!(MasterKey::from_hex(&format!(" {} \n", "ab".repeat(32)), "x").is_ok());
    }

    #[test]
    fn a_sealer_without_a_key_keeps_plaintext_and_refuses_sealed_values() {
        let plain = Sealer::new(None);
        assert_eq!(plain.seal("a", "v"), "v");
        assert_eq!(plain.open("a", "v").expect("plain"), "v");
        let sealed = key(3).seal("a", "v");
        assert!(plain.open("a", &sealed).is_err());
        assert_eq!(
            Sealer::new(Some(key(3))).open("a", &sealed).expect("opens"),
            "v"
        );
    }
}
