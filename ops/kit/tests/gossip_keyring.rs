//! The gossip keyring: operations and packet sealing.

use ops_kit::gossip::{GossipConfig, Keyring, KeyringError, OpenError, SEAL_OVERHEAD};

#[test]
fn use_requires_an_installed_key() {
    let a = Keyring::generate_key();
    let b = Keyring::generate_key();
    let ring = Keyring::new(&a).unwrap();
    assert_eq!(ring.use_key(&b), Err(KeyringError::NotInstalled));
    assert_eq!(ring.primary_key(), a);
    ring.install(&b).unwrap();
    ring.use_key(&b).unwrap();
    assert_eq!(ring.primary_key(), b);
}

#[test]
fn the_primary_cannot_be_removed() {
    let a = Keyring::generate_key();
    let b = Keyring::generate_key();
    let ring = Keyring::with_keys(&a, &[&b]).unwrap();
    assert_eq!(ring.remove(&a), Err(KeyringError::RemovePrimary));
    assert_eq!(
        ring.remove(&Keyring::generate_key()),
        Err(KeyringError::NotInstalled)
    );
    ring.remove(&b).unwrap();
    assert_eq!(ring.list().keys, vec![a.clone()]);
    // After switching the primary the old one can go.
    ring.install(&b).unwrap();
    ring.use_key(&b).unwrap();
    ring.remove(&a).unwrap();
    assert_eq!(ring.list().keys, vec![b]);
}

#[test]
fn list_shows_primary_and_installed_keys_in_order() {
    let (a, b, c) = (
        Keyring::generate_key(),
        Keyring::generate_key(),
        Keyring::generate_key(),
    );
    let ring = Keyring::new(&a).unwrap();
    ring.install(&b).unwrap();
    ring.install(&c).unwrap();
    ring.install(&b).unwrap(); // idempotent
    ring.use_key(&c).unwrap();
    let list = ring.list();
    assert_eq!(list.primary, c);
    assert_eq!(list.keys, vec![a, b, c]);
}

#[test]
fn keys_must_be_base64_of_32_bytes() {
    assert!(matches!(
        Keyring::new("not base64!"),
        Err(KeyringError::InvalidKey(_))
    ));
    // 16 bytes: a valid Serf key, too short for AES-256.
    assert!(matches!(
        Keyring::new("AAAAAAAAAAAAAAAAAAAAAA=="),
        Err(KeyringError::InvalidKey(_))
    ));
    assert!(Keyring::new(&Keyring::generate_key()).is_ok());
    assert_ne!(Keyring::generate_key(), Keyring::generate_key());
}

#[test]
fn keyring_from_config_uses_the_first_key_as_primary() {
    let (a, b) = (Keyring::generate_key(), Keyring::generate_key());
    let cfg = GossipConfig {
        keys: vec![a.clone(), b.clone()],
        ..GossipConfig::default()
    };
    let ring = Keyring::from_config(&cfg).unwrap();
    assert_eq!(ring.list().primary, a);
    assert_eq!(ring.list().keys, vec![a, b]);
    assert_eq!(
        Keyring::from_config(&GossipConfig::default()).err(),
        Some(KeyringError::NoKey)
    );
}

#[test]
fn debug_output_hides_keys() {
    let a = Keyring::generate_key();
    let ring = Keyring::new(&a).unwrap();
    let shown = format!("{ring:?}");
    assert!(!shown.contains(&a), "{shown}");
}

#[test]
fn seal_then_open() {
    let ring = Keyring::new(&Keyring::generate_key()).unwrap();
    let msg = b"ping from s1.eu";
    let sealed = ring.seal(msg);
    assert_eq!(sealed.len(), msg.len() + SEAL_OVERHEAD);
    assert_eq!(ring.open(&sealed).unwrap(), msg);
    // Fresh nonce every time.
    assert_ne!(ring.seal(msg), sealed);
    // Empty payloads work too.
    assert_eq!(ring.open(&ring.seal(b"")).unwrap(), b"");
}

#[test]
fn tampered_packets_are_rejected() {
    let ring = Keyring::new(&Keyring::generate_key()).unwrap();
    let sealed = ring.seal(b"suspect s2.eu");
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert!(
            ring.open(&bad).is_err(),
            "flipping a bit of byte {i} went unnoticed"
        );
    }
    assert_eq!(ring.open(&sealed[..10]), Err(OpenError::TooShort));
    let mut truncated = sealed.clone();
    truncated.pop();
    assert_eq!(ring.open(&truncated), Err(OpenError::NoKey));
    let mut version = sealed.clone();
    version[0] = 9;
    assert_eq!(ring.open(&version), Err(OpenError::Version(9)));
}

#[test]
fn only_installed_keys_open() {
    let (a, b) = (Keyring::generate_key(), Keyring::generate_key());
    let ring_a = Keyring::new(&a).unwrap();
    let ring_b = Keyring::new(&b).unwrap();
    let sealed = ring_a.seal(b"hello");
    assert_eq!(ring_b.open(&sealed), Err(OpenError::NoKey));
    // Accepted (not primary) keys open, and sealing still uses the primary.
    ring_b.install(&a).unwrap();
    assert_eq!(ring_b.open(&sealed).unwrap(), b"hello");
    let from_b = ring_b.seal(b"x");
    assert_eq!(ring_a.open(&from_b), Err(OpenError::NoKey));
    // Removing the key stops it opening.
    ring_b.remove(&a).unwrap();
    assert_eq!(ring_b.open(&sealed), Err(OpenError::NoKey));
}

#[test]
fn clones_share_the_keys() {
    let (a, b) = (Keyring::generate_key(), Keyring::generate_key());
    let ring = Keyring::new(&a).unwrap();
    let clone = ring.clone();
    clone.install(&b).unwrap();
    clone.use_key(&b).unwrap();
    assert_eq!(ring.primary_key(), b);
    let only_b = Keyring::new(&b).unwrap();
    assert!(only_b.open(&ring.seal(b"x")).is_ok());
}
