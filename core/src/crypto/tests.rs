use std::collections::HashSet;

use super::*;

fn keyring() -> Keyring {
    let key = generate_master_key().expect("random key");
    Keyring::new(vec![MasterKey::from_base64(key.expose(), "test").expect("valid key")])
        .expect("one key")
}

fn data_key(tenant: TenantId) -> DataKey {
    keyring().create_data_key(tenant, 1).expect("data key").0
}

#[test]
fn seal_open_round_trip() {
    let tenant = TenantId::generate();
    let key = data_key(tenant);
    for plaintext in ["", "ada@example.com", "Zoë Ångström 中文", &"x".repeat(10_000)] {
        let sealed = key.seal(tenant, "contact.email", plaintext).expect("seal");
        assert!(is_sealed(&sealed), "{sealed}");
        assert!(!sealed.contains(plaintext) || plaintext.is_empty(), "plaintext leaked");
        assert_eq!(key.open(tenant, "contact.email", &sealed).expect("open"), plaintext);
    }
}

#[test]
fn sealed_value_names_its_key_version() {
    let tenant = TenantId::generate();
    let (key, _) = keyring().create_data_key(tenant, 7).expect("data key");
    let sealed = key.seal(tenant, "f", "v").expect("seal");
    assert!(sealed.starts_with("$fu1$7$"), "{sealed}");
}

#[test]
fn flipped_byte_fails_to_open() {
    let tenant = TenantId::generate();
    let key = data_key(tenant);
    let sealed = key.seal(tenant, "contact.phone", "+15005550006").expect("seal");
    let (head, body) = sealed.rsplit_once('$').expect("format");
    let mut bytes = URL_SAFE_NO_PAD.decode(body).expect("base64");
    for index in [0, NONCE_LEN, bytes.len() - 1] {
        bytes[index] ^= 0x01;
        let altered = format!("{head}${}", URL_SAFE_NO_PAD.encode(&bytes));
        let error = key.open(tenant, "contact.phone", &altered).expect_err("altered byte");
        assert!(matches!(error, CryptoError::Open { .. }), "byte {index}: {error}");
        bytes[index] ^= 0x01;
    }
}

#[test]
fn value_is_bound_to_tenant_and_field() {
    let tenant = TenantId::generate();
    let key = data_key(tenant);
    let sealed = key.seal(tenant, "contact.email", "a@example.com").expect("seal");
    let other_field = key.open(tenant, "contact.phone", &sealed);
    assert!(matches!(other_field, Err(CryptoError::Open { .. })));
    let other_tenant = key.open(TenantId::generate(), "contact.email", &sealed);
    assert!(matches!(other_tenant, Err(CryptoError::Open { .. })));
    let other_key = data_key(tenant).open(tenant, "contact.email", &sealed);
    assert!(matches!(other_key, Err(CryptoError::Open { .. })));
}

#[test]
fn nonces_are_distinct_across_many_seals() {
    let tenant = TenantId::generate();
    let key = data_key(tenant);
    let mut seen = HashSet::new();
    for n in 0..100_000 {
        let sealed = key.seal(tenant, "f", "same text").expect("seal");
        let body = sealed.rsplit_once('$').expect("format").1;
        let bytes = URL_SAFE_NO_PAD.decode(body).expect("base64");
        let nonce: [u8; NONCE_LEN] = bytes[..NONCE_LEN].try_into().expect("nonce");
        assert!(seen.insert(nonce), "nonce repeated at seal {n}");
    }
}

#[test]
fn nonce_prefix_is_redrawn_before_counter_wraps() {
    let source = NonceSource::new().expect("source");
    let first = source.next().expect("nonce");
    source.state.lock().expect("lock").next = u32::MAX - 1;
    let last = source.next().expect("nonce");
    let after = source.next().expect("nonce");
    assert_eq!(first[..8], last[..8], "same prefix before the wrap");
    assert_eq!(last[8..], (u32::MAX - 1).to_be_bytes());
    assert_ne!(after[..8], last[..8], "new prefix instead of a wrap");
    assert_eq!(after[8..], 0u32.to_be_bytes());
}

#[test]
fn rewrap_keeps_data_key() {
    let tenant = TenantId::generate();
    let old = keyring();
    let (key, wrapped) = old.create_data_key(tenant, 1).expect("data key");
    let sealed = key.seal(tenant, "f", "secret").expect("seal");
    let old_id = old.newest().id().to_owned();

    let new_key = generate_master_key().expect("random key");
    let mut keys = old.keys;
    keys.push(MasterKey::from_base64(new_key.expose(), "test").expect("valid key"));
    let both = Keyring::new(keys).expect("two keys");
    let rewrapped = both.rewrap(tenant, 1, &old_id, &wrapped).expect("rewrap");
    let new_id = both.newest().id().to_owned();

    let only_new = Keyring::new(vec![MasterKey::from_base64(new_key.expose(), "t").expect("key")])
        .expect("one key");
    let reopened = only_new.unwrap_data_key(tenant, 1, &new_id, &rewrapped).expect("unwrap");
    assert_eq!(reopened.open(tenant, "f", &sealed).expect("open"), "secret");
    let missing = only_new.unwrap_data_key(tenant, 1, &old_id, &wrapped);
    assert!(matches!(missing, Err(CryptoError::UnknownMasterKey { .. })), "{missing:?}");
}

#[test]
fn wrong_master_key_fails_to_unwrap() {
    let tenant = TenantId::generate();
    let (_, wrapped) = keyring().create_data_key(tenant, 1).expect("data key");
    let other = keyring();
    let id = other.newest().id().to_owned();
    let error = other.unwrap_data_key(tenant, 1, &id, &wrapped).expect_err("wrong key");
    assert!(matches!(error, CryptoError::Open { .. }), "{error}");
}

#[test]
fn key_file_parses_and_rejects_bad_lines() {
    let a = generate_master_key().expect("key");
    let b = generate_master_key().expect("key");
    let text = format!("# keys, newest last\n{}\n\n{}\n", a.expose(), b.expose());
    let ring = Keyring::parse(&text, "keys.txt").expect("two keys");
    assert_eq!(ring.ids().len(), 2);
    let b_id = MasterKey::from_base64(b.expose(), "b").expect("key").id().to_owned();
    assert_eq!(ring.newest().id(), b_id);
    assert_eq!(b_id.len(), 8);

    let short = Keyring::parse("AAAA\n", "keys.txt").expect_err("short key");
    assert!(short.to_string().contains("keys.txt line 1"), "{short}");
    assert!(short.to_string().contains("3 bytes"), "{short}");
    let empty = Keyring::parse("# nothing\n", "keys.txt").expect_err("no key");
    assert!(empty.to_string().contains("no key"), "{empty}");
    let twice = format!("{}\n{}\n", a.expose(), a.expose());
    assert!(Keyring::parse(&twice, "keys.txt").is_err(), "duplicate key");
}

#[test]
fn record_ids_are_keyed_and_stable() {
    let tenant = TenantId::generate();
    let key = data_key(tenant);
    let ids = key.record_ids();
    let sequence = SequenceId::generate();
    assert_eq!(ids.contact("a@example.com"), ids.contact("a@example.com"));
    assert_ne!(ids.contact("a@example.com"), ids.contact("b@example.com"));
    assert_eq!(ids.schedule(sequence, "a"), ids.schedule(sequence, "a"));
    let other = data_key(tenant);
    assert_ne!(ids.contact("a@example.com"), other.record_ids().contact("a@example.com"));
    let unkeyed = Uuid::new_v5(&tenant.0, b"contact:a@example.com");
    assert_ne!(ids.contact("a@example.com").0, unkeyed);
}

#[test]
fn unsubscribe_token_names_one_contact_of_one_tenant() {
    let tenant = TenantId::generate();
    let other_tenant = TenantId::generate();
    let key = data_key(tenant);
    let other_key = data_key(other_tenant);
    let contact = ContactId(Uuid::new_v4());
    let other_contact = ContactId(Uuid::new_v4());
    let token = key.unsubscribe_token(tenant, contact);

    assert!(key.verify_unsubscribe_token(tenant, contact, &token), "its own token");
    assert!(!key.verify_unsubscribe_token(tenant, other_contact, &token), "another contact");
    assert!(!key.verify_unsubscribe_token(other_tenant, contact, &token), "another tenant id");
    let theirs = other_key.unsubscribe_token(other_tenant, contact);
    assert!(!key.verify_unsubscribe_token(tenant, contact, &theirs), "another tenant's key");
    let mut tampered = token.clone();
    tampered.replace_range(..1, if token.starts_with('A') { "B" } else { "A" });
    assert!(!key.verify_unsubscribe_token(tenant, contact, &tampered), "a changed token");
    assert!(!key.verify_unsubscribe_token(tenant, contact, "not base64!"), "not base64url");
    assert!(!key.verify_unsubscribe_token(tenant, contact, ""), "empty");
}

#[test]
fn hex_writes_two_lower_case_digits_a_byte() {
    assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
    assert_eq!(hex(&[]), "");
}
