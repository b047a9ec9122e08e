//! Unit tests of `keys.rs`.

use super::*;
use std::os::unix::fs::PermissionsExt;

fn ring() -> (tempfile::TempDir, Keyring) {
    let d = tempfile::tempdir().unwrap();
    let r = Keyring::open(&d.path().join("keys")).unwrap();
    (d, r)
}

#[test]
fn first_open_creates_private_master_and_dirs() {
    let (d, _r) = ring();
    let k = d.path().join("keys");
    assert_eq!(fs::metadata(&k).unwrap().mode() & 0o777, 0o700);
    assert_eq!(
        fs::metadata(k.join("tenants")).unwrap().mode() & 0o777,
        0o700
    );
    let m = fs::metadata(k.join(MASTER_FILE)).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600);
    assert_eq!(m.len(), 32);
}

#[test]
fn tenant_key_is_stable_across_opens_and_distinct_per_tenant() {
    let (d, r) = ring();
    let a1 = r.tenant("acme").unwrap().derive("volume", "k1");
    let r2 = Keyring::open(&d.path().join("keys")).unwrap();
    let a2 = r2.tenant("acme").unwrap().derive("volume", "k1");
    assert_eq!(a1, a2);
    assert_ne!(a1, r2.tenant("other").unwrap().derive("volume", "k1"));
    assert_ne!(a1, r2.tenant("acme").unwrap().derive("volume", "k2"));
    assert_ne!(a1, r2.tenant("acme").unwrap().derive("layer", "k1"));
    let f = fs::metadata(tenant_path(&d.path().join("keys"), "acme")).unwrap();
    assert_eq!(f.mode() & 0o777, 0o600);
}

#[test]
fn master_key_readable_by_others_is_refused_with_the_fix() {
    let (d, _r) = ring();
    let k = d.path().join("keys");
    let m = k.join(MASTER_FILE);
    fs::set_permissions(&m, fs::Permissions::from_mode(0o644)).unwrap();
    let e = Keyring::open(&k).unwrap_err();
    assert!(matches!(e, KeyError::Permissions { .. }), "{e}");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    fs::set_permissions(&m, fs::Permissions::from_mode(0o600)).unwrap();
    Keyring::open(&k).unwrap();
}

#[test]
fn master_key_not_owned_by_root_is_refused() {
    let (d, _r) = ring();
    let k = d.path().join("keys");
    let m = k.join(MASTER_FILE);
    std::os::unix::fs::chown(&m, Some(1000), Some(1000)).unwrap();
    let e = Keyring::open(&k).unwrap_err();
    assert!(matches!(e, KeyError::Owner { uid: 1000, .. }), "{e}");
    assert!(e.to_string().contains("chown root:root"), "{e}");
}

#[test]
fn missing_master_with_tenants_is_refused_not_regenerated() {
    let (d, r) = ring();
    r.tenant("acme").unwrap();
    let k = d.path().join("keys");
    fs::remove_file(k.join(MASTER_FILE)).unwrap();
    assert!(matches!(
        Keyring::open(&k),
        Err(KeyError::MasterMissing { .. })
    ));
    assert!(!k.join(MASTER_FILE).exists());
}

#[test]
fn tenant_file_renamed_to_another_tenant_does_not_open() {
    let (d, r) = ring();
    r.tenant("acme").unwrap();
    let k = d.path().join("keys");
    let mut f = read_tenant_file(&tenant_path(&k, "acme"), "acme").unwrap();
    f.tenant = "evil".into();
    write_tenant_file(&tenant_path(&k, "evil"), &f).unwrap();
    assert!(matches!(r.tenant("evil"), Err(KeyError::TenantFile { .. })));
}

#[test]
fn bad_tenant_names_are_refused() {
    let (_d, r) = ring();
    for n in ["", "../x", ".hidden", "a/b", "a b"] {
        assert!(matches!(r.tenant(n), Err(KeyError::TenantName(_))), "{n}");
    }
}

#[test]
fn seal_open_round_trip_and_binding() {
    let (_d, r) = ring();
    let a = r.tenant("a").unwrap();
    let s = a.seal(b"secret/db", b"hunter2");
    assert_eq!(s[0], SEAL_VERSION);
    assert_eq!(s.len(), 1 + 12 + 7 + 16);
    assert_eq!(a.open(b"secret/db", &s).unwrap(), b"hunter2");
    assert_ne!(a.seal(b"secret/db", b"hunter2"), s, "nonce must be random");
    assert!(matches!(a.open(b"secret/other", &s), Err(KeyError::Open)));
    assert!(matches!(
        r.tenant("b").unwrap().open(b"secret/db", &s),
        Err(KeyError::Open)
    ));
    let mut edited = s.clone();
    edited[15] ^= 1;
    assert!(matches!(a.open(b"secret/db", &edited), Err(KeyError::Open)));
    let mut v2 = s.clone();
    v2[0] = 2;
    assert!(matches!(a.open(b"secret/db", &v2), Err(KeyError::Format)));
    assert!(matches!(
        a.open(b"secret/db", &s[..20]),
        Err(KeyError::Format)
    ));
}

#[test]
fn derive_is_hkdf_sha256_of_the_documented_info() {
    // Pins the derivation so a refactor cannot silently change every volume key.
    let t = TenantKey {
        tenant: "t".into(),
        key: Secret::from_slice(&[7u8; 32]).unwrap(),
    };
    let mut want = [0u8; 64];
    hkdf_fill(&[7u8; 32], b"bulkhead/v1/volume/abc", &mut want);
    assert_eq!(t.derive("volume", "abc").expose(), &want);
    assert_ne!(want, [0u8; 64]);
}
