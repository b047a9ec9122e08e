use super::*;

/// `runtimeoptions.v1.Options` encoded the way Go's protobuf does (fields 1 and 2, strings).
fn encode(type_url: &str, config_path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, s) in [(0x0a_u8, type_url), (0x12, config_path)] {
        if s.is_empty() {
            continue;
        }
        out.push(tag);
        let mut n = s.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(s.as_bytes());
    }
    out
}

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("shim.toml");
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

fn load_file(p: &Path, env: Option<&str>) -> Result<ShimConfig, ConfigError> {
    let opts = encode("", p.to_str().unwrap());
    load(Some(&opts), OPTIONS_TYPE, env)
}

#[test]
fn defaults_without_options() {
    let c = load(None, "", None).unwrap();
    assert_eq!(c, ShimConfig::default());
    assert_eq!(c.socket, "unix:///run/bulkhead/shim.sock");
    assert_eq!(c.driver, "jail");
    assert_eq!(c.socket_path(), PathBuf::from("/run/bulkhead/shim.sock"));
    assert!(c.host_path_allowed(Path::new("/var/lib/kubelet/pods/u/etc-hosts")));
    assert!(!c.host_path_allowed(Path::new("/etc/passwd")));
    assert!(!c.host_path_allowed(Path::new("/var/lib/containerd/../../etc/shadow")));
    assert!(!c.host_path_allowed(Path::new("/var/lib/containerdX/f")));
    // Empty options (CRI with no ConfigPath) are defaults too.
    assert_eq!(load(Some(&[]), OPTIONS_TYPE, None).unwrap(), c);
}

#[test]
fn env_url_then_default() {
    let c = load(None, "", Some("unix:///tmp/x.sock")).unwrap();
    assert_eq!(c.socket, "unix:///tmp/x.sock");
    let c = load(None, "", Some("/tmp/y.sock")).unwrap();
    assert_eq!(c.socket_path(), PathBuf::from("/tmp/y.sock"));
    let e = load(None, "", Some("http://127.0.0.1:8080")).unwrap_err();
    assert!(e.to_string().contains("BULKHEAD_URL"), "{e}");
    assert!(
        e.to_string().contains("unix:///run/bulkhead/shim.sock"),
        "{e}"
    );
}

#[test]
fn file_keys_and_precedence() {
    let (_d, p) =
        file("socket = \"unix:///run/b/s.sock\"\ndriver = \"qemu\"\nhost_paths = [\"/srv/k\"]\n");
    let c = load_file(&p, Some("unix:///env.sock")).unwrap();
    assert_eq!(c.socket, "unix:///run/b/s.sock");
    assert_eq!(c.driver, "qemu");
    assert_eq!(c.host_paths, vec![PathBuf::from("/srv/k")]);
    // Without `socket` in the file, BULKHEAD_URL still applies; other keys default.
    let (_d, p) = file("driver = \"jail\"\n");
    let c = load_file(&p, Some("unix:///env.sock")).unwrap();
    assert_eq!(c.socket, "unix:///env.sock");
    assert_eq!(c.host_paths, ShimConfig::default().host_paths);
    // The type url may carry a prefix (typeurl's Any from newer containerd).
    let opts = encode("", p.to_str().unwrap());
    let c = load(
        Some(&opts),
        "type.googleapis.com/runtimeoptions.v1.Options",
        None,
    )
    .unwrap();
    assert_eq!(c.driver, "jail");
}

#[test]
fn errors_name_file_and_key() {
    let (_d, p) = file("socket = \"unix:///s\"\nsockett = 1\n");
    let e = load_file(&p, None).unwrap_err().to_string();
    assert!(e.contains("unknown key \"sockett\""), "{e}");
    assert!(e.contains(p.to_str().unwrap()), "{e}");

    for (text, key) in [
        ("driver = \"docker\"", "driver"),
        ("driver = 3", "driver"),
        ("socket = \"tcp://1.2.3.4:5\"", "socket"),
        ("socket = \"relative.sock\"", "socket"),
        ("host_paths = \"/var\"", "host_paths"),
        ("host_paths = [\"relative\"]", "host_paths"),
        ("host_paths = [\"/var/../etc\"]", "host_paths"),
    ] {
        let (_d, p) = file(text);
        let e = load_file(&p, None).unwrap_err().to_string();
        assert!(e.contains(&format!("key {key}:")), "{text}: {e}");
        assert!(e.contains(p.to_str().unwrap()), "{text}: {e}");
    }

    let (_d, p) = file("socket = ");
    let e = load_file(&p, None).unwrap_err().to_string();
    assert!(e.contains(p.to_str().unwrap()), "{e}");

    let e = load_file(Path::new("/nonexistent/shim.toml"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/shim.toml") && e.contains("ConfigPath"),
        "{e}"
    );
}

#[test]
fn options_type_and_path_checked() {
    let e = load(Some(&encode("", "/x")), "containerd.runc.v1.Options", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("runtimeoptions.v1.Options"), "{e}");
    let e = load(Some(&encode("", "rel.toml")), OPTIONS_TYPE, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("absolute"), "{e}");
    // Options with a type url but no config path: defaults.
    let c = load(Some(&encode("x", "")), OPTIONS_TYPE, None).unwrap();
    assert_eq!(c, ShimConfig::default());
}

#[test]
fn decoder_is_checked() {
    let b = encode("t", "/etc/bulkhead/shim.toml");
    let o = decode_options(&b).unwrap();
    assert_eq!(o.type_url, "t");
    assert_eq!(o.config_path, "/etc/bulkhead/shim.toml");
    // Unknown fields of every wire type are skipped.
    let mut with_unknown = vec![0x18, 0x96, 0x01]; // field 3 varint 150
    with_unknown.extend([0x21, 1, 2, 3, 4, 5, 6, 7, 8]); // field 4 fixed64
    with_unknown.extend([0x2d, 1, 2, 3, 4]); // field 5 fixed32
    with_unknown.extend([0x32, 2, b'h', b'i']); // field 6 bytes
    with_unknown.extend(&b);
    assert_eq!(decode_options(&with_unknown).unwrap(), o);
    // A long path (two-byte length varint).
    let long = format!("/{}", "a".repeat(300));
    assert_eq!(
        decode_options(&encode("", &long)).unwrap().config_path,
        long
    );
    // Truncations and nonsense are errors, never panics.
    for cut in (1..b.len()).filter(|c| *c != 3) {
        // (3 is the end of the first field: a valid shorter message)
        assert!(decode_options(&b[..cut]).is_err(), "cut at {cut}");
    }
    for bad in [
        &[0x12, 0x05, b'a'][..],
        &[0x0b][..],                   // group start (wire type 3)
        &[0x02, 0x00][..],             // field 0
        &[0x12, 0x02, 0xff, 0xfe][..], // not UTF-8
        &[
            0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ][..],
    ] {
        assert!(decode_options(bad).is_err(), "{bad:?}");
    }
}
