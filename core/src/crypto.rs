//! Encryption at rest: master keys, per-tenant data keys, AES-256-GCM sealing of single values,
//! and keyed record ids.
//!
//! Every tenant has a random 256-bit data key. The store keeps it only wrapped (sealed) by a
//! master key, which comes from the environment or a key file and is never stored beside the
//! data. Sensitive fields of records are sealed one by one under the tenant's data key into
//! self-describing text ([`SEALED_PREFIX`], data key version, nonce and ciphertext), so a reader
//! knows which key opens a value. Each value is bound to its tenant and field (the AEAD's
//! associated data), so a value copied into another record or tenant does not open.

use std::fmt;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};
use uuid::Uuid;

use crate::ids::{ContactId, ScheduleId, SequenceId, TenantId};
use crate::sensitive::Sensitive;

/// Length of every key, master or data: AES-256.
pub const KEY_LEN: usize = 32;

/// Start of every sealed value, with the format version: `$fu1$<data key version>$<base64url of
/// nonce, ciphertext and tag>`. Values written through the sealed store are always sealed, so
/// text in a sealed field without this prefix was written by the store itself (a recovery
/// reason) and is not secret.
pub const SEALED_PREFIX: &str = "$fu1$";

/// Length of the AES-GCM tag appended to each ciphertext.
const TAG_LEN: usize = 16;

/// Errors of key handling and sealing. None of them contains key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A master key could not be read.
    #[error("invalid master key in {origin}: {reason}")]
    InvalidMasterKey { origin: String, reason: String },
    /// No master key was configured.
    #[error(
        "no master key: set FOLLOWUP_MASTER_KEY to a key from `followup keys generate`, or \
         name a key file with --master-key-file (config key master_key_file)"
    )]
    NoMasterKey,
    /// A wrapped data key names a master key that is not in the key ring.
    #[error(
        "the data key of tenant {tenant} is wrapped by master key {master_key_id}, which is \
         not configured: add that key to the key file (loaded: {loaded})"
    )]
    UnknownMasterKey { tenant: TenantId, master_key_id: String, loaded: String },
    /// The tenant has no data key: it was destroyed, or the tenant was never created here.
    #[error("tenant {0} has no data key: it was destroyed, so its sealed data cannot be read")]
    NoDataKey(TenantId),
    /// A sealed value or wrapped key did not open: wrong key, or the bytes were altered.
    #[error("cannot open {what}: wrong key or altered data")]
    Open { what: String },
    /// A sealed value is not in the sealed format.
    #[error("malformed sealed value in {what}: {reason}")]
    Malformed { what: String, reason: String },
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// A master key and its id.
pub struct MasterKey {
    /// First 4 bytes of the key's SHA-256 in hex: names the key in wrapped data keys, logs and
    /// reports without revealing it.
    id: String,
    key: LessSafeKey,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Reads a key written as base64 of 32 bytes; `origin` names where it came from in errors.
    pub fn from_base64(text: &str, origin: &str) -> Result<Self, CryptoError> {
        let invalid =
            |reason: String| CryptoError::InvalidMasterKey { origin: origin.to_owned(), reason };
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            invalid("not base64; generate one with `followup keys generate`".into())
        })?;
        if bytes.len() != KEY_LEN {
            return Err(invalid(format!("{} bytes, expected {KEY_LEN}", bytes.len())));
        }
        Self::from_bytes(&bytes).map_err(|_| invalid("rejected by AES-256-GCM".into()))
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let fingerprint = digest::digest(&digest::SHA256, bytes);
        let id = hex(&fingerprint.as_ref()[..4]);
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| CryptoError::Random)?;
        Ok(Self { id, key: LessSafeKey::new(key) })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Creates a new random master key, as base64 of 32 bytes.
pub fn generate_master_key() -> Result<Sensitive<String>, CryptoError> {
    let mut bytes = [0u8; KEY_LEN];
    SystemRandom::new().fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(Sensitive::new(STANDARD.encode(bytes)))
}

/// The configured master keys, oldest first. The newest wraps new and rotated data keys; the
/// others only open data keys wrapped before a rotation.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl Keyring {
    /// Builds a key ring; fails when `keys` is empty or two keys share an id.
    pub fn new(keys: Vec<MasterKey>) -> Result<Self, CryptoError> {
        if keys.is_empty() {
            return Err(CryptoError::NoMasterKey);
        }
        for (index, key) in keys.iter().enumerate() {
            if keys[..index].iter().any(|earlier| earlier.id == key.id) {
                return Err(CryptoError::InvalidMasterKey {
                    origin: format!("key {}", index + 1),
                    reason: format!("the key {} appears twice", key.id),
                });
            }
        }
        Ok(Self { keys })
    }

    /// Reads a key file: one base64 key per line, newest last; blank lines and lines starting
    /// with `#` are skipped. `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CryptoError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(MasterKey::from_base64(line, &format!("{origin} line {}", index + 1))?);
        }
        if keys.is_empty() {
            return Err(CryptoError::InvalidMasterKey {
                origin: origin.to_owned(),
                reason: "the file contains no key".into(),
            });
        }
        Self::new(keys)
    }

    /// Returns the key that wraps new data keys.
    pub fn newest(&self) -> &MasterKey {
        // `new` rejects an empty ring.
        &self.keys[self.keys.len() - 1]
    }

    pub fn get(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|key| key.id == id)
    }

    /// Returns the ids of the keys, oldest first.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|key| key.id.clone()).collect()
    }

    /// Creates a data key for `tenant` and returns it with its wrapped form under the newest
    /// master key.
    pub fn create_data_key(
        &self,
        tenant: TenantId,
        version: u32,
    ) -> Result<(DataKey, String), CryptoError> {
        let mut raw = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut raw).map_err(|_| CryptoError::Random)?;
        let wrapped = self.newest().wrap(tenant, version, &raw)?;
        Ok((DataKey::from_raw(version, &raw)?, wrapped))
    }

    /// Opens a wrapped data key with the master key `master_key_id`.
    pub fn unwrap_data_key(
        &self,
        tenant: TenantId,
        version: u32,
        master_key_id: &str,
        wrapped: &str,
    ) -> Result<DataKey, CryptoError> {
        let raw = self.unwrap_raw(tenant, version, master_key_id, wrapped)?;
        DataKey::from_raw(version, &raw)
    }

    /// Re-wraps a wrapped data key under the newest master key, without changing the data key.
    pub fn rewrap(
        &self,
        tenant: TenantId,
        version: u32,
        master_key_id: &str,
        wrapped: &str,
    ) -> Result<String, CryptoError> {
        let raw = self.unwrap_raw(tenant, version, master_key_id, wrapped)?;
        self.newest().wrap(tenant, version, &raw)
    }

    fn unwrap_raw(
        &self,
        tenant: TenantId,
        version: u32,
        master_key_id: &str,
        wrapped: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        let master = self.get(master_key_id).ok_or_else(|| CryptoError::UnknownMasterKey {
            tenant,
            master_key_id: master_key_id.to_owned(),
            loaded: self.ids().join(", "),
        })?;
        let what = || format!("the data key of tenant {tenant}");
        let sealed = URL_SAFE_NO_PAD
            .decode(wrapped)
            .map_err(|_| CryptoError::Malformed { what: what(), reason: "not base64url".into() })?;
        open_bytes(&master.key, &wrap_aad(tenant, version), sealed)
            .map_err(|()| CryptoError::Open { what: what() })
    }
}

impl MasterKey {
    fn wrap(&self, tenant: TenantId, version: u32, raw: &[u8]) -> Result<String, CryptoError> {
        let sealed = seal_bytes(&self.key, &wrap_aad(tenant, version), raw)?;
        Ok(URL_SAFE_NO_PAD.encode(sealed))
    }
}

/// Associated data of a wrapped data key: the key belongs to one tenant and version.
fn wrap_aad(tenant: TenantId, version: u32) -> Vec<u8> {
    [b"data-key".as_slice(), tenant.as_bytes(), &version.to_be_bytes()].concat()
}

/// A tenant's data key, unwrapped: seals and opens the tenant's values and derives its record
/// ids.
pub struct DataKey {
    version: u32,
    aead: LessSafeKey,
    ids: RecordIdKey,
    /// Signs the tenant's unsubscribe links; derived from the data key, so that a link stops
    /// working when the tenant's key is destroyed.
    unsubscribe: hmac::Key,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey").field("version", &self.version).finish_non_exhaustive()
    }
}

impl DataKey {
    fn from_raw(version: u32, raw: &[u8]) -> Result<Self, CryptoError> {
        let aead = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| CryptoError::Random)?;
        let parent = hmac::Key::new(hmac::HMAC_SHA256, raw);
        let derived = hmac::sign(&parent, b"followup unsubscribe link key v1");
        let unsubscribe = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        let ids = RecordIdKey::derive(raw);
        Ok(Self { version, aead: LessSafeKey::new(aead), ids, unsubscribe })
    }

    /// Returns the token of the unsubscribe link of `contact`: the base64url HMAC-SHA256 of the
    /// tenant and contact ids, so that it names exactly that contact of that tenant.
    pub fn unsubscribe_token(&self, tenant: TenantId, contact: ContactId) -> String {
        let message = unsubscribe_message(tenant, contact);
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.unsubscribe, &message).as_ref())
    }

    /// Checks, in constant time, that `token` is the unsubscribe token of `contact`.
    pub fn verify_unsubscribe_token(
        &self,
        tenant: TenantId,
        contact: ContactId,
        token: &str,
    ) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        hmac::verify(&self.unsubscribe, &unsubscribe_message(tenant, contact), &tag).is_ok()
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn record_ids(&self) -> &RecordIdKey {
        &self.ids
    }

    /// Seals `plaintext` as the field `field` of a record of `tenant`.
    pub fn seal(
        &self,
        tenant: TenantId,
        field: &str,
        plaintext: &str,
    ) -> Result<String, CryptoError> {
        let sealed = seal_bytes(&self.aead, &field_aad(tenant, field), plaintext.as_bytes())?;
        let mut text = String::with_capacity(SEALED_PREFIX.len() + 12 + sealed.len() * 4 / 3 + 4);
        text.push_str(SEALED_PREFIX);
        text.push_str(&self.version.to_string());
        text.push('$');
        URL_SAFE_NO_PAD.encode_string(sealed, &mut text);
        Ok(text)
    }

    /// Opens a value sealed by [`DataKey::seal`] for the same tenant and field.
    pub fn open(&self, tenant: TenantId, field: &str, sealed: &str) -> Result<String, CryptoError> {
        let what = || format!("{field} of tenant {tenant}");
        let malformed =
            |reason: &str| CryptoError::Malformed { what: what(), reason: reason.into() };
        let (version, body) = parse_sealed(sealed).ok_or_else(|| malformed("no version"))?;
        if version != self.version {
            return Err(malformed(&format!(
                "sealed under data key version {version}, but the tenant's key is version {}",
                self.version
            )));
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| malformed("not base64url"))?;
        let plaintext = open_bytes(&self.aead, &field_aad(tenant, field), bytes)
            .map_err(|()| CryptoError::Open { what: what() })?;
        String::from_utf8(plaintext).map_err(|_| malformed("not UTF-8 after opening"))
    }
}

/// The signed part of an unsubscribe link: a label, the tenant id and the contact id.
fn unsubscribe_message(tenant: TenantId, contact: ContactId) -> Vec<u8> {
    [b"unsubscribe".as_slice(), tenant.as_bytes(), contact.as_bytes()].concat()
}

/// Returns whether `value` is a sealed value, as opposed to text the store wrote itself.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

/// Splits a sealed value into its data key version and its base64url body.
fn parse_sealed(sealed: &str) -> Option<(u32, &str)> {
    let rest = sealed.strip_prefix(SEALED_PREFIX)?;
    let (version, body) = rest.split_once('$')?;
    Some((version.parse().ok()?, body))
}

/// Associated data of a sealed field: the tenant's id and the field's name.
fn field_aad(tenant: TenantId, field: &str) -> Vec<u8> {
    [tenant.as_bytes().as_slice(), field.as_bytes()].concat()
}

/// The key of a tenant's record ids. Contact and schedule ids are HMAC-SHA256 under it of the
/// contact's key (external id or normalised address). So an id reveals nothing about the
/// contact without the tenant's data key, and the same row always gets the same id.
pub struct RecordIdKey(hmac::Key);

impl fmt::Debug for RecordIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordIdKey([redacted])")
    }
}

impl RecordIdKey {
    /// Derives the id key from a data key, so that it needs no storage of its own.
    fn derive(data_key: &[u8]) -> Self {
        let parent = hmac::Key::new(hmac::HMAC_SHA256, data_key);
        let derived = hmac::sign(&parent, b"followup record id key v1");
        Self(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// Builds an id key from given bytes, for fixtures and benchmarks that need ids without a
    /// data key.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Returns the id of the contact whose key is `contact_key`.
    pub fn contact(&self, contact_key: &str) -> ContactId {
        ContactId(self.uuid(&["contact", contact_key]))
    }

    /// Returns the id of the schedule enrolling the contact `contact_key` in `sequence`.
    pub fn schedule(&self, sequence: SequenceId, contact_key: &str) -> ScheduleId {
        ScheduleId(self.uuid(&["schedule", &sequence.to_string(), contact_key]))
    }

    /// Returns the stored form of a suppression key (`kind:value`): the kind, a colon and the
    /// hex HMAC of the whole key, so that the store can find an address without holding it.
    pub fn suppression_key(&self, key: &str) -> String {
        let kind = key.split_once(':').map_or("", |(kind, _)| kind);
        let mut context = hmac::Context::with_key(&self.0);
        for part in ["suppression", key] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        format!("{kind}:{}", hex(context.sign().as_ref()))
    }

    /// Returns a UUID (version 8, custom) of the first 16 bytes of the HMAC of `parts`, each
    /// preceded by its length so that no two lists of parts hash the same input.
    fn uuid(&self, parts: &[&str]) -> Uuid {
        let mut context = hmac::Context::with_key(&self.0);
        for part in parts {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        let tag = context.sign();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&tag.as_ref()[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }
}

/// Source of AES-GCM nonces, shared by every key of the process.
///
/// A nonce is a 64-bit random prefix drawn from the system generator followed by a 32-bit
/// counter that increases by one per seal. Within one prefix the counter never repeats, and
/// when it would wrap the prefix is drawn again, so one process never repeats a nonce. Two
/// processes that seal under the same key (restarts, or several engine nodes) repeat a nonce
/// only if they draw the same prefix: with P prefixes drawn over a key's life the chance is
/// below P^2 / 2^65, about 3e-8 for a million restarts. A prefix covers 2^32 seals, so P grows
/// by one per 4 billion seals, not per seal, which keeps far below the 2^32 random nonces
/// NIST SP 800-38D allows per key.
#[derive(Debug)]
struct NonceSource {
    state: Mutex<NonceState>,
}

#[derive(Debug)]
struct NonceState {
    prefix: [u8; 8],
    next: u32,
}

impl NonceSource {
    fn new() -> Result<Self, CryptoError> {
        Ok(Self { state: Mutex::new(NonceState { prefix: random_prefix()?, next: 0 }) })
    }

    fn next(&self) -> Result<[u8; NONCE_LEN], CryptoError> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.next == u32::MAX {
            state.prefix = random_prefix()?;
            state.next = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&state.prefix);
        nonce[8..].copy_from_slice(&state.next.to_be_bytes());
        state.next += 1;
        Ok(nonce)
    }
}

fn random_prefix() -> Result<[u8; 8], CryptoError> {
    let mut prefix = [0u8; 8];
    SystemRandom::new().fill(&mut prefix).map_err(|_| CryptoError::Random)?;
    Ok(prefix)
}

fn nonces() -> Result<&'static NonceSource, CryptoError> {
    static NONCES: std::sync::OnceLock<NonceSource> = std::sync::OnceLock::new();
    if let Some(source) = NONCES.get() {
        return Ok(source);
    }
    let source = NonceSource::new()?;
    Ok(NONCES.get_or_init(|| source))
}

/// Seals `plaintext` and returns nonce, ciphertext and tag in one buffer.
fn seal_bytes(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce = nonces()?.next()?;
    let mut buffer = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    buffer.extend_from_slice(&nonce);
    buffer.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buffer[NONCE_LEN..],
        )
        .map_err(|_| CryptoError::Random)?;
    buffer.extend_from_slice(tag.as_ref());
    Ok(buffer)
}

/// Opens what [`seal_bytes`] returned; fails on a wrong key, wrong associated data or any
/// altered byte.
fn open_bytes(key: &LessSafeKey, aad: &[u8], mut sealed: Vec<u8>) -> Result<Vec<u8>, ()> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(());
    }
    let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().map_err(|_| ())?;
    let nonce = Nonce::assume_unique_for_key(nonce);
    let length =
        key.open_in_place(nonce, Aad::from(aad), &mut sealed[NONCE_LEN..]).map_err(|_| ())?.len();
    sealed.drain(..NONCE_LEN);
    sealed.truncate(length);
    Ok(sealed)
}

/// Lower-case hex of `bytes`. Written digit by digit: a `format!` per byte made the
/// suppression keys of a dispatch round cost more than their HMACs.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests;
