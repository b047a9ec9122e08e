//! The node spec: what the daemon hands a supervisor (`<node>/spec.json`), and the files a
//! node leaves in its directory.
//!
//! The spec is driver-neutral: the fields every driver and the supervisor framework need
//! (tenant, node, cgroup, directory, limits, uid range, network plan) plus the driver's name
//! and its own parameters as opaque JSON that only that driver decodes ([`NodeSpec::params`]).
//!
//! Invariants: `cgroup` stays a top-level key (reconciliation and deletion find a node's
//! cgroups by it, from any version's spec). A spec is read once, by the supervisor at start;
//! a spec written before drivers were peers (flat jail fields, a `vm` key for microVMs) still
//! reads ([`NodeSpec::parse`]).

use bulkhead_sandbox::Limits;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Files of a node directory. The supervisor creates the sockets and the console log; the
/// daemon writes `spec.json` and `supervisor.json`.
pub mod files {
    /// The node's agent (a jail's agent listens on it; a microVM's supervisor relays it).
    pub const AGENT_SOCKET: &str = "agent.sock";
    /// The supervisor's control channel (root only): `state`, `wait`, `kill`.
    pub const CONTROL_SOCKET: &str = "supervisor.sock";
    pub const CONSOLE_LOG: &str = "console.log";
    /// Who supervises the node (pid and start time), for a restarted daemon.
    pub const SUPERVISOR: &str = "supervisor.json";
    pub const SPEC: &str = "spec.json";
    pub const ROOTFS: &str = "rootfs";
    pub const SCRATCH: &str = "scratch";
}

/// Everything a supervisor needs to start one node; written by the daemon as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub tenant: String,
    pub node: String,
    /// Name of the node's cgroup under `bulkhead/<tenant>/`: an opaque id, because a standby
    /// supervisor creates (and enters) it before it knows which node it will run.
    pub cgroup: String,
    pub hostname: String,
    /// Holds `rootfs/`, `scratch/`, the sockets, `console.log`, `supervisor.json`.
    pub node_dir: PathBuf,
    pub uid_base: u32,
    pub uid_count: u32,
    /// The node cgroup's limits, including what the driver needs beyond the node's RAM.
    pub limits: Limits,
    pub network: bulkhead_net::NetworkPlan,
    /// The registry name of the driver that starts this node (`jail`, `qemu`).
    pub driver: String,
    /// The driver's own parameters; only that driver decodes them.
    pub params: Params,
    /// The CPUs the node's cgroup is pinned to (`cpuset.cpus`: its group's dedicated cores,
    /// else the host's unreserved ones; ADR 0027); absent: the parent's, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Volumes attached to the node (#13, attach): their images, key ids and where they go.
    /// Their keys never appear here: they come on the supervisor's stdin with the spec's
    /// digest ([`crate::instruction`]), and a spec naming volumes without them starts nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// A persistent node's writable layer (#13, persistent nodes): its image and key id; the
    /// key comes with the instruction, as volumes' keys do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_layer: Option<crate::persist::LayerMount>,
    /// The commit a node starts from (#13 commit and fork), for a driver whose supervisor
    /// opens it ([`crate::CommitTree::Supervisor`]): its encrypted image and key id; the key
    /// comes with the instruction, as a layer's does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_image: Option<crate::persist::LayerMount>,
}

/// One volume attached to a node: what the supervisor (jail) or the guest agent (microVM)
/// mounts, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The volume's id (a ULID).
    pub id: String,
    /// The volume's ext4 image on the host.
    pub image: PathBuf,
    /// Which of the tenant's derived keys opens it (`TenantKey::derive("volume", key_id)`).
    pub key_id: String,
    /// Absolute path inside the node.
    pub path: String,
    pub read_only: bool,
    /// Mounted without `noexec` (the tenant's policy allows it).
    #[serde(default)]
    pub exec: bool,
}

/// Paths a volume may not be mounted on, under or above: what bulkhead itself puts in a node.
/// The one list: the daemon checks a create's paths against it, the jail supervisor again, and
/// the guest agent keeps a copy (it depends on no other bulkhead crate) that a daemon test pins
/// equal to this one.
pub const RESERVED_VOLUME_PATHS: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/.bulkhead",
    "/run/bulkhead",
    "/run/secrets",
];

/// Checks a volume's mount path in a node: absolute, normalised (no `.`, `..` or empty
/// components, no trailing slash), not `/`, at most 1024 bytes, and neither on, under nor
/// above one of [`RESERVED_VOLUME_PATHS`] (a volume on `/run` would cover `/run/secrets`).
/// The message says what to send instead.
pub fn check_volume_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("volume path {path:?} {why}"));
    if !path.starts_with('/') || path.len() < 2 {
        return bad("must be an absolute path below /, e.g. \"/data\"");
    }
    if path.len() > 1024 || path.contains('\0') {
        return bad("is too long or holds a NUL byte");
    }
    if path[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("must be normalised: no empty, \".\" or \"..\" parts and no trailing slash");
    }
    if let Some(r) = reserved_overlap(path) {
        return bad(&format!(
            "is on, under or above {r}, which bulkhead itself mounts in a node: pick another path"
        ));
    }
    Ok(())
}

/// The reserved path that normalised `path` is on, under or above, if any.
pub fn reserved_overlap(path: &str) -> Option<&'static str> {
    let within = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
    RESERVED_VOLUME_PATHS
        .iter()
        .copied()
        .find(|r| within(path, r) || within(r, path))
}

impl VolumeMount {
    /// The volume's disk serial in a microVM (virtio-blk's `serial`, at most 20 characters):
    /// the last 20 of its id, lowercase (a ULID's random part and the end of its time).
    pub fn serial(&self) -> String {
        let id: String = self
            .id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        id[id.len().saturating_sub(20)..].to_ascii_lowercase()
    }
}

/// A driver's parameters as raw JSON text: the daemon encodes them once from the driver's
/// type and the supervisor decodes them once into it, with no JSON tree in between (a jail's
/// compiled seccomp filters are thousands of numbers, and this is the create path).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Params(Box<serde_json::value::RawValue>);

impl PartialEq for Params {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Params {
    /// Encodes a driver's parameters.
    pub fn of<T: Serialize>(params: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(params).map(Params)
    }
    /// Decodes them as the driver's type.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

/// A spec that cannot be read or does not fit its driver.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading spec {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spec {path} is not a node spec: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the {driver} driver cannot read its parameters in the spec: {source}")]
    Params {
        driver: String,
        #[source]
        source: serde_json::Error,
    },
}

impl NodeSpec {
    /// Reads a spec; see [`NodeSpec::parse`].
    pub fn read(path: &Path) -> Result<Self, SpecError> {
        let bytes = std::fs::read(path).map_err(|source| SpecError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&bytes).map_err(|message| SpecError::Invalid {
            path: path.into(),
            message,
        })
    }

    /// Parses a spec. One written before drivers were peers has no `driver`: its jail fields
    /// sat at the top level, and a microVM's parameters under `vm`. Those read as the `jail`
    /// driver with the whole object as parameters, or the `qemu` driver with `vm`'s.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        // Every spec this release writes names its driver: read it straight into its type.
        if let Ok(spec) = serde_json::from_slice::<NodeSpec>(bytes) {
            return Ok(spec);
        }
        let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if let Some(obj) = v.as_object_mut() {
            if !obj.contains_key("driver") {
                let (driver, params) = match obj.get("vm") {
                    Some(vm) if !vm.is_null() => ("qemu", vm.clone()),
                    _ => ("jail", serde_json::Value::Object(obj.clone())),
                };
                obj.insert("driver".into(), driver.into());
                obj.insert("params".into(), params);
            }
        }
        // Through text, not `from_value`: the raw parameters need a text deserializer.
        serde_json::from_str(&v.to_string()).map_err(|e| e.to_string())
    }

    /// The driver's parameters, decoded as that driver's type.
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, SpecError> {
        self.params.decode().map_err(|source| SpecError::Params {
            driver: self.driver.clone(),
            source,
        })
    }

    /// The spec as the supervisor reads it (compact: it is read by a program, on the create
    /// path).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What the daemon records once a node runs, so a restarted daemon can find its supervisor
/// again (and an upgraded one can reach a supervisor older than the control channel).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorState {
    pub supervisor_pid: i32,
    /// Start time of the supervisor in clock ticks since boot (field 22 of /proc/PID/stat),
    /// which tells a live supervisor from an unrelated process that reused its pid.
    pub supervisor_start: u64,
    pub init_pid: i32,
}

/// Start time (clock ticks since boot) of a process, or `None` when it does not exist.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // A zombie has exited: it only waits for its parent to reap it.
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the supervisor recorded in `state` is still the same live process.
pub fn supervisor_alive(state: &SupervisorState) -> bool {
    process_start_time(state.supervisor_pid) == Some(state.supervisor_start)
}

/// Records a node's supervisor (written by the daemon, from outside the node's cgroup, so
/// that the file's page cache is never charged to the node).
pub fn write_supervisor_state(node_dir: &Path, state: &SupervisorState) -> std::io::Result<()> {
    let tmp = node_dir.join(".supervisor.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(state).unwrap_or_default())?;
    std::fs::rename(&tmp, node_dir.join(files::SUPERVISOR))
}

pub fn read_supervisor_state(node_dir: &Path) -> Option<SupervisorState> {
    let bytes = std::fs::read(node_dir.join(files::SUPERVISOR)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The cgroup id a node's spec names, if the node got as far as having a spec.
pub fn spec_cgroup(node_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(node_dir.join(files::SPEC)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["cgroup"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(driver: &str, params: serde_json::Value) -> NodeSpec {
        NodeSpec {
            tenant: "t1".into(),
            node: "t1-1".into(),
            cgroup: "c0011".into(),
            hostname: "t1-1".into(),
            node_dir: "/var/lib/bulkhead/tenants/t1/nodes/t1-1".into(),
            uid_base: 1 << 20,
            uid_count: 65536,
            limits: Limits {
                memory_bytes: 512 << 20,
                millicpus: 1000,
                pids_max: 1024,
            },
            network: bulkhead_net::NetworkPlan::Loopback,
            driver: driver.into(),
            params: Params::of(&params).unwrap(),
            cpuset: Some("1,3".into()),
            volumes: Vec::new(),
            persistent_layer: None,
            commit_image: None,
        }
    }

    #[test]
    fn a_spec_round_trips_with_opaque_params() {
        let s = spec("qemu", json!({"mem_mib": 256, "anything": [1, 2]}));
        let back = NodeSpec::parse(&s.to_json()).unwrap();
        assert_eq!(back, s);
        #[derive(Deserialize)]
        struct Mine {
            mem_mib: u64,
        }
        assert_eq!(back.params::<Mine>().unwrap().mem_mib, 256);
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Other {
            lower: String,
        }
        let e = back.params::<Other>().unwrap_err().to_string();
        assert!(e.contains("qemu driver"), "{e}");
    }

    /// A spec.json written by the jail crate before drivers were peers still reads.
    #[test]
    fn old_specs_read_as_their_driver() {
        let mut old = serde_json::to_value(spec("x", json!(null))).unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("driver");
        o.remove("params");
        o.insert("lower".into(), json!("/lower"));
        o.insert("storage_bytes".into(), json!(1 << 30));
        let jail = NodeSpec::parse(old.to_string().as_bytes()).unwrap();
        assert_eq!(jail.driver, "jail");
        let params: serde_json::Value = jail.params.decode().unwrap();
        assert_eq!(params["lower"], "/lower");
        assert_eq!(params["storage_bytes"], 1 << 30);
        assert_eq!(jail.cgroup, "c0011");

        old["vm"] = json!({"mem_mib": 256});
        let vm = NodeSpec::parse(old.to_string().as_bytes()).unwrap();
        assert_eq!(vm.driver, "qemu");
        assert_eq!(
            vm.params.decode::<serde_json::Value>().unwrap(),
            json!({"mem_mib": 256})
        );

        old["vm"] = json!(null);
        assert_eq!(
            NodeSpec::parse(old.to_string().as_bytes()).unwrap().driver,
            "jail"
        );
        assert!(NodeSpec::parse(b"{\"node\": 1}").is_err());
    }

    #[test]
    fn volumes_are_optional_and_have_short_serials() {
        let mut s = spec("jail", json!({}));
        assert!(!String::from_utf8(s.to_json()).unwrap().contains("volumes"));
        s.volumes.push(VolumeMount {
            id: "01JDZ8Q3R4S5T6V7W8X9Y0Z1AB".into(),
            image: "/state/volumes/v.img".into(),
            key_id: "k".into(),
            path: "/data".into(),
            read_only: true,
            exec: false,
        });
        let back = NodeSpec::parse(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.volumes[0].serial(), "q3r4s5t6v7w8x9y0z1ab");
    }

    #[test]
    fn volume_paths_are_checked() {
        for ok in [
            "/data",
            "/mnt/vol-1",
            "/home/user/work",
            "/run/data",
            "/devices",
        ] {
            assert!(check_volume_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/",
            "data",
            "/data/",
            "//data",
            "/a/../b",
            "/a/./b",
            "/proc",
            "/proc/x",
            "/dev/shm",
            "/.bulkhead",
            "/run/bulkhead/identity",
            "/run/secrets",
            "/sys",
            "/run",
            "/run/bulkhead",
        ] {
            assert!(check_volume_path(bad).is_err(), "{bad}");
        }
        assert!(check_volume_path(&format!("/{}", "a".repeat(1100))).is_err());
    }

    #[test]
    fn the_cgroup_is_found_in_any_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(files::SPEC),
            spec("jail", json!({})).to_json(),
        )
        .unwrap();
        assert_eq!(spec_cgroup(dir.path()).as_deref(), Some("c0011"));
    }
}
