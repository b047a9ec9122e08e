//! The daemon's instruction to a supervisor (#13, attach): one JSON line on the supervisor's
//! stdin, after the spec path (a standby) or alone (a fresh `bulkhead-supervisor SPEC`, whose
//! stdin the daemon pipes). It holds the SHA-256 of the exact `spec.json` bytes the daemon
//! wrote and the 64-byte keys of the volumes that spec names (hex), so that what a supervisor
//! mounts is what the daemon decided, not what a file says.
//!
//! Invariants: a supervisor starts a node only from spec bytes whose digest an instruction
//! names, when one came; a spec that names volumes starts only with an instruction (an edited
//! spec file, or one started by hand, attaches nothing and starts nothing); every volume the
//! spec names has its key in the instruction. Keys live in [`VolumeKey`]s, which zero
//! themselves on drop, and never in the spec, a log or an error message (nor in `Debug`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::VolumeMount;

/// The word a refusal's message starts with, so the daemon can count it
/// (`bulkhead_volume_attach_refused_total{reason="spec_mismatch"}`).
pub const SPEC_MISMATCH: &str = "spec_mismatch";

/// The word a supervisor's message carries when a volume of its spec could not be mounted in
/// the node (the image does not open, its mount point cannot be made), so the daemon can
/// count it (`bulkhead_volume_mount_failures_total`, event `volume.mount_failed`).
pub const VOLUME_MOUNT_FAILED: &str = "volume_mount_failed";

/// Length of a volume's key (an fscrypt v2 master key).
pub const KEY_LEN: usize = 64;

/// A volume's key, zeroed when dropped; its `Debug` shows nothing of it.
pub struct VolumeKey(Box<[u8; KEY_LEN]>);

impl VolumeKey {
    pub fn new(bytes: &[u8; KEY_LEN]) -> Self {
        VolumeKey(Box::new(*bytes))
    }
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for VolumeKey {
    fn drop(&mut self) {
        wipe(&mut self.0[..]);
    }
}

impl std::fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeKey(..)")
    }
}

/// The keys an instruction carried, by key id.
#[derive(Debug, Default)]
pub struct VolumeKeys(BTreeMap<String, VolumeKey>);

impl VolumeKeys {
    pub fn get(&self, key_id: &str) -> Option<&VolumeKey> {
        self.0.get(key_id)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Overwrites `b` with zeros in a way the optimiser keeps.
pub fn wipe(b: &mut [u8]) {
    for x in b.iter_mut() {
        // SAFETY: a valid, aligned, exclusive reference to one byte.
        unsafe { std::ptr::write_volatile(x, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    spec_sha256: String,
    #[serde(default)]
    volume_keys: BTreeMap<String, String>,
}

impl Drop for Wire {
    fn drop(&mut self) {
        for (_, v) in std::mem::take(&mut self.volume_keys) {
            let mut b = v.into_bytes();
            wipe(&mut b);
        }
    }
}

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex_key(s: &str) -> Option<VolumeKey> {
    let s = s.as_bytes();
    if s.len() != KEY_LEN * 2 {
        return None;
    }
    let mut k = [0u8; KEY_LEN];
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut ok = true;
    for (i, pair) in s.chunks(2).enumerate() {
        match (nib(pair[0]), nib(pair[1])) {
            (Some(h), Some(l)) => k[i] = h << 4 | l,
            _ => ok = false,
        }
    }
    let key = ok.then(|| VolumeKey::new(&k));
    wipe(&mut k);
    key
}

/// The line the daemon sends (newline-terminated); its bytes are zeroed when dropped.
pub struct Line(Vec<u8>);

impl Line {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Line(..)")
    }
}

/// The instruction for a supervisor about to read `spec_bytes`, with the keys of its volumes
/// (key id, key).
pub fn line(spec_bytes: &[u8], keys: &[(&str, &[u8; KEY_LEN])]) -> Line {
    let wire = Wire {
        spec_sha256: sha256_hex(spec_bytes),
        volume_keys: keys
            .iter()
            .map(|(id, k)| (id.to_string(), hex(&k[..])))
            .collect(),
    };
    let mut v = serde_json::to_vec(&wire).unwrap_or_default();
    v.push(b'\n');
    Line(v)
}

/// Why a supervisor refuses to start a node.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("spec_mismatch: the spec on disk is not the one the daemon wrote (its digest differs from the daemon's instruction); nothing was attached or started")]
    SpecMismatch,
    #[error("spec_mismatch: the spec names volumes but no instruction from the daemon came with it; a node with volumes starts only from its daemon")]
    NoInstruction,
    #[error("the daemon's instruction is not valid: {0}")]
    Invalid(String),
    #[error("the daemon's instruction has no key for volume {0}")]
    MissingKey(String),
}

impl Refusal {
    /// The `reason` label it is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::SpecMismatch | Refusal::NoInstruction => SPEC_MISMATCH,
            Refusal::Invalid(_) | Refusal::MissingKey(_) => "bad_instruction",
        }
    }
}

/// Checks the spec's bytes against the instruction that came with them (`None`: none came,
/// or an empty line) and returns the keys of the spec's volumes. The instruction's bytes are
/// zeroed here, whatever the outcome.
pub fn check(
    spec_bytes: &[u8],
    instruction: Option<&mut Vec<u8>>,
    volumes: &[VolumeMount],
) -> Result<VolumeKeys, Refusal> {
    let wanted: Vec<(&str, &str)> = volumes
        .iter()
        .map(|v| (v.id.as_str(), v.key_id.as_str()))
        .collect();
    check_keys(spec_bytes, instruction, &wanted)
}

/// Checks a whole spec: its volumes' keys and a persistent node's layer key (#13, persistent
/// nodes: the layer's key comes the same way, under its key id).
pub fn check_spec(
    spec_bytes: &[u8],
    instruction: Option<&mut Vec<u8>>,
    spec: &crate::NodeSpec,
) -> Result<VolumeKeys, Refusal> {
    let mut wanted: Vec<(&str, &str)> = spec
        .volumes
        .iter()
        .map(|v| (v.id.as_str(), v.key_id.as_str()))
        .collect();
    if let Some(l) = &spec.persistent_layer {
        wanted.push(("the persistent layer", l.key_id.as_str()));
    }
    if let Some(c) = &spec.commit_image {
        wanted.push(("the commit's image", c.key_id.as_str()));
    }
    check_keys(spec_bytes, instruction, &wanted)
}

/// [`check`] for any keyed things the spec names, as (what, key id): each needs its key in
/// the instruction, and naming any needs an instruction.
fn check_keys(
    spec_bytes: &[u8],
    instruction: Option<&mut Vec<u8>>,
    wanted: &[(&str, &str)],
) -> Result<VolumeKeys, Refusal> {
    let r = (|| {
        let text = match instruction.as_deref() {
            Some(t) if !t.trim_ascii().is_empty() => t.trim_ascii(),
            _ if wanted.is_empty() => return Ok(VolumeKeys::default()),
            _ => return Err(Refusal::NoInstruction),
        };
        let wire: Wire = serde_json::from_slice(text)
            .map_err(|e| Refusal::Invalid(format!("not the instruction's JSON: {e}")))?;
        if sha256_hex(spec_bytes) != wire.spec_sha256.to_ascii_lowercase() {
            return Err(Refusal::SpecMismatch);
        }
        let mut keys = BTreeMap::new();
        for (what, key_id) in wanted {
            let hex = wire
                .volume_keys
                .get(*key_id)
                .ok_or_else(|| Refusal::MissingKey(what.to_string()))?;
            let key = unhex_key(hex).ok_or_else(|| {
                Refusal::Invalid(format!("the key of volume {what} is not 64 bytes of hex"))
            })?;
            keys.insert(key_id.to_string(), key);
        }
        Ok(VolumeKeys(keys))
    })();
    if let Some(i) = instruction {
        wipe(i);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(id: &str, key_id: &str) -> VolumeMount {
        VolumeMount {
            id: id.into(),
            image: format!("/state/volumes/{id}.img").into(),
            key_id: key_id.into(),
            path: "/data".into(),
            read_only: false,
            exec: false,
        }
    }

    #[test]
    fn the_daemons_line_opens_its_spec_and_keys() {
        let spec = br#"{"node":"a-1"}"#;
        let k = [7u8; KEY_LEN];
        let l = line(spec, &[("k1", &k)]);
        assert!(l.as_bytes().ends_with(b"\n"));
        let mut got = l.as_bytes().to_vec();
        let keys = check(spec, Some(&mut got), &[vol("v1", "k1")]).unwrap();
        assert_eq!(keys.get("k1").unwrap().bytes(), &k);
        assert!(got.iter().all(|b| *b == 0), "the instruction is zeroed");
        assert_eq!(format!("{keys:?}").matches("..").count(), 1, "{keys:?}");
        assert!(!format!("{keys:?}").contains("07"));
    }

    #[test]
    fn an_edited_spec_is_refused() {
        let spec = br#"{"node":"a-1"}"#;
        let mut l = line(spec, &[]).as_bytes().to_vec();
        let e = check(br#"{"node":"a-2"}"#, Some(&mut l), &[]).unwrap_err();
        assert!(matches!(e, Refusal::SpecMismatch));
        assert!(e.to_string().starts_with(SPEC_MISMATCH), "{e}");
        assert_eq!(e.reason(), SPEC_MISMATCH);
    }

    #[test]
    fn volumes_need_an_instruction_and_their_keys() {
        let spec = b"{}";
        // No instruction: a spec without volumes starts (a supervisor run by hand for tests),
        // one with volumes does not.
        assert!(check(spec, None, &[]).unwrap().is_empty());
        assert!(check(spec, Some(&mut b"\n".to_vec()), &[]).is_ok());
        let e = check(spec, None, &[vol("v1", "k1")]).unwrap_err();
        assert!(matches!(e, Refusal::NoInstruction));
        assert_eq!(e.reason(), SPEC_MISMATCH);
        // A key for another volume is no key for this one.
        let other = [1u8; KEY_LEN];
        let mut l = line(spec, &[("k2", &other)]).as_bytes().to_vec();
        let e = check(spec, Some(&mut l), &[vol("v1", "k1")]).unwrap_err();
        assert!(matches!(e, Refusal::MissingKey(ref v) if v == "v1"), "{e}");
        // Short keys and junk are refused, naming no key bytes.
        let mut bad = br#"{"spec_sha256":"00","volume_keys":{"k1":"abcd"}}"#.to_vec();
        assert!(matches!(
            check(spec, Some(&mut bad), &[]).unwrap_err(),
            Refusal::SpecMismatch
        ));
        let digest = sha256_hex(spec);
        let mut bad =
            format!(r#"{{"spec_sha256":"{digest}","volume_keys":{{"k1":"abcd"}}}}"#).into_bytes();
        let e = check(spec, Some(&mut bad), &[vol("v1", "k1")]).unwrap_err();
        assert!(matches!(e, Refusal::Invalid(_)), "{e}");
        assert!(!e.to_string().contains("abcd"));
        let mut junk = b"ready 5\n".to_vec();
        assert!(matches!(
            check(spec, Some(&mut junk), &[]).unwrap_err(),
            Refusal::Invalid(_)
        ));
    }

    /// A persistent node's layer (#13): its key comes with the instruction under its key id;
    /// a spec naming a layer starts nothing without an instruction or without that key.
    #[test]
    fn a_layer_needs_the_instruction_and_its_key() {
        let mut spec = crate::NodeSpec {
            tenant: "t1".into(),
            node: "t1-1".into(),
            cgroup: "c1".into(),
            hostname: "t1-1".into(),
            node_dir: "/state/n".into(),
            uid_base: 1 << 20,
            uid_count: 65536,
            limits: bulkhead_sandbox::Limits {
                memory_bytes: 512 << 20,
                millicpus: 1000,
                pids_max: 1024,
            },
            network: bulkhead_net::NetworkPlan::Loopback,
            driver: "jail".into(),
            params: crate::Params::of(&serde_json::json!({})).unwrap(),
            cpuset: None,
            volumes: Vec::new(),
            persistent_layer: None,
            commit_image: None,
        };
        spec.persistent_layer = Some(crate::LayerMount {
            image: "/state/n/layer.img".into(),
            key_id: crate::persist::layer_key_id("01J0"),
        });
        let bytes = spec.to_json();
        let e = check_spec(&bytes, None, &spec).unwrap_err();
        assert!(matches!(e, Refusal::NoInstruction), "{e}");
        let other = [3u8; KEY_LEN];
        let mut l = line(&bytes, &[("layer:01J1", &other)]).as_bytes().to_vec();
        let e = check_spec(&bytes, Some(&mut l), &spec).unwrap_err();
        assert!(matches!(e, Refusal::MissingKey(_)), "{e}");
        let k = [9u8; KEY_LEN];
        let mut l = line(&bytes, &[("layer:01J0", &k)]).as_bytes().to_vec();
        let keys = check_spec(&bytes, Some(&mut l), &spec).unwrap();
        assert_eq!(keys.get("layer:01J0").unwrap().bytes(), &k);
        // An edited spec (another image) is refused even with the right key.
        let mut edited = spec.clone();
        edited.persistent_layer.as_mut().unwrap().image = "/state/other/layer.img".into();
        let mut l = line(&bytes, &[("layer:01J0", &k)]).as_bytes().to_vec();
        let e = check_spec(&edited.to_json(), Some(&mut l), &edited).unwrap_err();
        assert!(matches!(e, Refusal::SpecMismatch), "{e}");
        // A commit's image (#13 commit and fork): its key too, under its own id.
        spec.commit_image = Some(crate::LayerMount {
            image: "/state/images/commit-01J2-jail.img".into(),
            key_id: crate::persist::commit_key_id("01J2"),
        });
        let bytes = spec.to_json();
        let mut l = line(&bytes, &[("layer:01J0", &k)]).as_bytes().to_vec();
        let e = check_spec(&bytes, Some(&mut l), &spec).unwrap_err();
        assert!(
            matches!(e, Refusal::MissingKey(ref w) if w.contains("commit")),
            "{e}"
        );
        let c = [4u8; KEY_LEN];
        let mut l = line(&bytes, &[("layer:01J0", &k), ("commit:01J2", &c)])
            .as_bytes()
            .to_vec();
        let keys = check_spec(&bytes, Some(&mut l), &spec).unwrap();
        assert_eq!(keys.get("commit:01J2").unwrap().bytes(), &c);
    }

    #[test]
    fn wipe_clears_a_buffer() {
        let mut b = vec![5u8; 8];
        wipe(&mut b);
        assert_eq!(b, vec![0u8; 8]);
    }
}
