//! The gossip keyring: AES-256-GCM keys that seal and open every packet.
//!
//! One key is the *primary*: it seals what this member sends. Every installed
//! key opens what it receives. A rotation that never splits the pool is
//! therefore: install the new key everywhere, use it everywhere, remove the
//! old one everywhere (Nomad's `nomad operator gossip keyring -install / -use /
//! -remove`).
//!
//! # Packet format
//! ```text
//! version (1 byte, = 1) | key id (4 bytes) | nonce (12 bytes) | ciphertext | tag (16 bytes)
//! ```
//! The nonce is random for every packet. The key id is the first four bytes of
//! AES-256 of a fixed block under the key (a key check value): it tells the
//! receiver which key to try and reveals nothing about the key. Version and
//! key id are authenticated as associated data. With random 96-bit nonces a
//! key should seal fewer than 2^32 packets: rotate keys long before that.

use std::fmt;
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::aes::cipher::generic_array::GenericArray;
use aes_gcm::aes::cipher::{BlockEncrypt, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Length of a gossip key, bytes.
pub const KEY_LEN: usize = 32;
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// Bytes a sealed packet adds to its plaintext.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The block encrypted to derive a key id.
const KEY_ID_BLOCK: &[u8; 16] = b"atoll-gossip-kid";

/// Why a keyring operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// The key is not base64 of exactly 32 bytes.
    #[error("invalid gossip key: {0}")]
    InvalidKey(String),
    /// `use` or `remove` of a key that is not installed.
    #[error("gossip key is not installed")]
    NotInstalled,
    /// `remove` of the primary key.
    #[error("cannot remove the primary gossip key; use another key first")]
    RemovePrimary,
    /// A keyring needs at least one key.
    #[error("no gossip key configured")]
    NoKey,
}

/// Why a received packet was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than the envelope.
    #[error("packet too short")]
    TooShort,
    /// Unknown envelope version.
    #[error("unknown packet version {0}")]
    Version(u8),
    /// No installed key opens it (unknown key, or tampered with).
    #[error("no installed key opens the packet")]
    NoKey,
}

/// The keys of a keyring, base64, as `list` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringList {
    /// The key that seals outgoing packets.
    pub primary: String,
    /// Every installed key (the primary included), in installation order.
    pub keys: Vec<String>,
}

struct Key {
    raw: [u8; KEY_LEN],
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
}

impl Key {
    fn new(raw: [u8; KEY_LEN]) -> Self {
        let block_cipher = Aes256::new(GenericArray::from_slice(&raw));
        let mut block = GenericArray::clone_from_slice(KEY_ID_BLOCK);
        block_cipher.encrypt_block(&mut block);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&block[..KEY_ID_LEN]);
        Self {
            raw,
            id,
            cipher: Aes256Gcm::new(GenericArray::from_slice(&raw)),
        }
    }

    fn encoded(&self) -> String {
        B64.encode(self.raw)
    }
}

struct Inner {
    keys: Vec<Key>,
    primary: usize,
}

impl Inner {
    fn position(&self, raw: &[u8; KEY_LEN]) -> Option<usize> {
        self.keys.iter().position(|k| &k.raw == raw)
    }
}

/// A shared, run-time changeable set of gossip keys. Clones share the keys:
/// a change through one clone is seen by every pool using the keyring.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<RwLock<Inner>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key ids only; never the keys.
        let inner = self.read();
        let ids: Vec<String> = inner
            .keys
            .iter()
            .map(|k| k.id.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        f.debug_struct("Keyring")
            .field("primary", &ids[inner.primary])
            .field("key_ids", &ids)
            .finish()
    }
}

/// Decode a base64 gossip key.
fn decode_key(key: &str) -> Result<[u8; KEY_LEN], KeyringError> {
    let bytes = B64
        .decode(key.trim())
        .map_err(|e| KeyringError::InvalidKey(format!("not base64: {e}")))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyringError::InvalidKey(format!("{} bytes, expected {KEY_LEN}", bytes.len())))
}

impl Keyring {
    /// A keyring whose only (and primary) key is `primary` (base64).
    pub fn new(primary: &str) -> Result<Self, KeyringError> {
        Self::with_keys(primary, &[] as &[&str])
    }

    /// A keyring with `primary` and more accepted keys (all base64).
    pub fn with_keys(primary: &str, others: &[impl AsRef<str>]) -> Result<Self, KeyringError> {
        let ring = Self {
            inner: Arc::new(RwLock::new(Inner {
                keys: vec![Key::new(decode_key(primary)?)],
                primary: 0,
            })),
        };
        for k in others {
            ring.install(k.as_ref())?;
        }
        Ok(ring)
    }

    /// The keyring of [`super::GossipConfig::keys`]: the first key is primary.
    pub fn from_config(cfg: &super::GossipConfig) -> Result<Self, KeyringError> {
        let (primary, others) = cfg.keys.split_first().ok_or(KeyringError::NoKey)?;
        Self::with_keys(primary, others)
    }

    /// A fresh random key, base64 (`nomad operator gossip keyring -generate`).
    pub fn generate_key() -> String {
        let mut raw = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut raw);
        B64.encode(raw)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the key list half
        // changed (every change is a single push/remove/assignment).
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Add `key` to the accepted keys. Installing an installed key is a no-op.
    pub fn install(&self, key: &str) -> Result<(), KeyringError> {
        let raw = decode_key(key)?;
        let mut inner = self.write();
        if inner.position(&raw).is_none() {
            inner.keys.push(Key::new(raw));
        }
        Ok(())
    }

    /// Make the installed `key` the primary: it seals from now on.
    pub fn use_key(&self, key: &str) -> Result<(), KeyringError> {
        let raw = decode_key(key)?;
        let mut inner = self.write();
        let pos = inner.position(&raw).ok_or(KeyringError::NotInstalled)?;
        inner.primary = pos;
        Ok(())
    }

    /// Stop accepting `key`. The primary cannot be removed.
    pub fn remove(&self, key: &str) -> Result<(), KeyringError> {
        let raw = decode_key(key)?;
        let mut inner = self.write();
        let pos = inner.position(&raw).ok_or(KeyringError::NotInstalled)?;
        if pos == inner.primary {
            return Err(KeyringError::RemovePrimary);
        }
        inner.keys.remove(pos);
        if inner.primary > pos {
            inner.primary -= 1;
        }
        Ok(())
    }

    /// The primary and every installed key.
    pub fn list(&self) -> KeyringList {
        let inner = self.read();
        KeyringList {
            primary: inner.keys[inner.primary].encoded(),
            keys: inner.keys.iter().map(Key::encoded).collect(),
        }
    }

    /// The primary key, base64.
    pub fn primary_key(&self) -> String {
        let inner = self.read();
        inner.keys[inner.primary].encoded()
    }

    /// Seal `plaintext` under the primary key with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        rand::rng().fill_bytes(&mut header[1 + KEY_ID_LEN..]);
        let inner = self.read();
        let key = &inner.keys[inner.primary];
        header[1..1 + KEY_ID_LEN].copy_from_slice(&key.id);
        let sealed = key
            .cipher
            .encrypt(
                Nonce::from_slice(&header[1 + KEY_ID_LEN..]),
                Payload {
                    msg: plaintext,
                    aad: &header[..1 + KEY_ID_LEN],
                },
            )
            // Only fails for plaintexts over ~64 GiB.
            .expect("AES-GCM seals any datagram");
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        out
    }

    /// Open a packet sealed by [`Keyring::seal`] under any installed key.
    pub fn open(&self, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
        if packet.len() < SEAL_OVERHEAD {
            return Err(OpenError::TooShort);
        }
        if packet[0] != VERSION {
            return Err(OpenError::Version(packet[0]));
        }
        let (header, body) = packet.split_at(HEADER_LEN);
        let key_id = &header[1..1 + KEY_ID_LEN];
        let nonce = Nonce::from_slice(&header[1 + KEY_ID_LEN..]);
        let inner = self.read();
        inner
            .keys
            .iter()
            // Key ids may collide (4 bytes): try each key that matches.
            .filter(|k| k.id == key_id)
            .find_map(|k| {
                k.cipher
                    .decrypt(
                        nonce,
                        Payload {
                            msg: body,
                            aad: &header[..1 + KEY_ID_LEN],
                        },
                    )
                    .ok()
            })
            .ok_or(OpenError::NoKey)
    }
}
