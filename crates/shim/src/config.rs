//! Where the shim finds the daemon and what it may copy from the host (#16).
//!
//! containerd hands Create an `options` Any. For runtime types it does not know (ours), CRI
//! passes `runtimeoptions.v1.Options {type_url = 1, config_path = 2}` built from the runtime's
//! `options` table (`ConfigPath = "..."`), and `ctr run --runtime-config-path FILE` sends the
//! same message: the options go through a file, as with gVisor's runsc.toml, because containerd
//! 1.6's CRI forwards nothing else for unknown runtimes. The file is TOML:
//! `socket`, `driver`, `host_paths`; any other key is refused, naming the key and the file.
//!
//! Precedence: the file's `socket`, else `BULKHEAD_URL` (containerd's environment), else
//! [`DEFAULT_SOCKET`]. `driver` defaults to `jail`; `host_paths`, when the file sets it,
//! replaces [`DEFAULT_HOST_PATHS`] (the caller adds containerd's own `--root`/`--state`).
//! Invariant: a loaded config has a UNIX socket with an absolute path, a known driver and
//! absolute, `..`-free host paths.

use std::path::{Component, Path, PathBuf};

/// The daemon's `api.shim` socket when nothing else says where it is.
pub const DEFAULT_SOCKET: &str = "unix:///run/bulkhead/shim.sock";
/// Host groups the shim can ask for (`driver` key).
pub const DRIVERS: &[&str] = &["jail", "qemu"];
/// Host directories whose files CRI binds into containers (containerd's and kubelet's own).
pub const DEFAULT_HOST_PATHS: &[&str] = &[
    "/var/lib/containerd",
    "/run/containerd",
    "/var/lib/kubelet/pods",
];
/// The options message containerd sends for runtimes it does not know.
pub const OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// What the shim knows about its daemon and the host paths it may copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimConfig {
    /// `unix:///path` or a plain absolute path: the daemon's `api.shim` socket.
    pub socket: String,
    /// `jail` or `qemu`: which host group of the tenant the nodes go to.
    pub driver: String,
    /// Host files binds may come from (copied into the rootfs stream, never mounted).
    pub host_paths: Vec<PathBuf>,
}

impl Default for ShimConfig {
    fn default() -> Self {
        ShimConfig {
            socket: DEFAULT_SOCKET.into(),
            driver: "jail".into(),
            host_paths: DEFAULT_HOST_PATHS.iter().map(PathBuf::from).collect(),
        }
    }
}

impl ShimConfig {
    /// The socket's filesystem path (`unix://` stripped).
    pub fn socket_path(&self) -> PathBuf {
        PathBuf::from(self.socket.strip_prefix("unix://").unwrap_or(&self.socket))
    }

    /// Whether `p` (absolute, `..`-free) lies under one of `host_paths`.
    pub fn host_path_allowed(&self, p: &Path) -> bool {
        clean_absolute(p) && self.host_paths.iter().any(|prefix| p.starts_with(prefix))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("runtime options {type_url:?}: {msg}")]
    Options { type_url: String, msg: String },
    #[error("runtime options config file {}: {source}: check the runtime's ConfigPath option", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("runtime options config file {}: {msg}", path.display())]
    Parse { path: PathBuf, msg: String },
    #[error("runtime options config file {}: unknown key {key:?}: the keys are socket, driver, host_paths", path.display())]
    UnknownKey { path: PathBuf, key: String },
    #[error("runtime options config file {}: key {key}: {msg}", path.display())]
    Value {
        path: PathBuf,
        key: String,
        msg: String,
    },
    #[error("BULKHEAD_URL {url:?}: {msg}")]
    Env { url: String, msg: String },
}

/// The shim's config from Create's `options` (the Any's value and type url), the
/// `BULKHEAD_URL` of containerd's environment, and defaults. No options, or options without a
/// `config_path`, mean defaults.
pub fn load(
    options: Option<&[u8]>,
    type_url: &str,
    env_url: Option<&str>,
) -> Result<ShimConfig, ConfigError> {
    let mut cfg = ShimConfig::default();
    let mut socket_set = false;
    if let Some(path) = config_path(options, type_url)? {
        socket_set = read_file(&path, &mut cfg)?;
    }
    if let Some(url) = env_url.filter(|u| !socket_set && !u.is_empty()) {
        check_socket(url).map_err(|msg| ConfigError::Env {
            url: url.into(),
            msg,
        })?;
        cfg.socket = url.into();
    }
    Ok(cfg)
}

/// `config_path` of a `runtimeoptions.v1.Options`, if options were given and name a file.
fn config_path(options: Option<&[u8]>, type_url: &str) -> Result<Option<PathBuf>, ConfigError> {
    let bytes = options.unwrap_or_default();
    if bytes.is_empty() && type_url.is_empty() {
        return Ok(None);
    }
    let err = |msg: String| ConfigError::Options {
        type_url: type_url.into(),
        msg,
    };
    // typeurl gives the bare message name; tolerate a `type.googleapis.com/` style prefix.
    let name = type_url.rsplit('/').next().unwrap_or_default();
    if name != OPTIONS_TYPE {
        return Err(err(format!(
            "the bulkhead shim takes {OPTIONS_TYPE} (ConfigPath = \"/etc/bulkhead/shim.toml\" in the runtime's options), not this type"
        )));
    }
    let opts = decode_options(bytes).map_err(err)?;
    if opts.config_path.is_empty() {
        return Ok(None);
    }
    let path = PathBuf::from(&opts.config_path);
    if !clean_absolute(&path) {
        return Err(err(format!(
            "ConfigPath {:?} must be an absolute path without '..'",
            opts.config_path
        )));
    }
    Ok(Some(path))
}

/// `runtimeoptions.v1.Options` (containerd's `pkg/runtimeoptions/v1/api.proto`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RuntimeOptions {
    pub type_url: String,
    pub config_path: String,
}

/// A checked protobuf decoder for the two string fields; other fields are skipped by wire type.
pub(crate) fn decode_options(mut b: &[u8]) -> Result<RuntimeOptions, String> {
    let mut out = RuntimeOptions::default();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut b)?;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                b = b.get(n..).ok_or("truncated fixed-width field")?;
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).map_err(|_| "length too large")?;
                let (v, rest) = (b.get(..len).ok_or("truncated field")?, &b[len..]);
                b = rest;
                let s = || String::from_utf8(v.to_vec()).map_err(|_| "a string is not UTF-8");
                match field {
                    1 => out.type_url = s()?,
                    2 => out.config_path = s()?,
                    _ => {}
                }
            }
            _ => return Err(format!("bad protobuf wire type {wire}")),
        }
        if field == 0 {
            return Err("bad protobuf field number 0".into());
        }
    }
    Ok(out)
}

fn varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// Reads the TOML file into `cfg`; true when it set `socket`.
fn read_file(path: &Path, cfg: &mut ShimConfig) -> Result<bool, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.into(),
            msg: e.message().to_string(),
        })?;
    let value_err = |key: &str, msg: String| ConfigError::Value {
        path: path.into(),
        key: key.into(),
        msg,
    };
    let mut socket_set = false;
    for (key, value) in &table {
        match key.as_str() {
            "socket" => {
                let s = value.as_str().ok_or_else(|| {
                    value_err(
                        key,
                        "write a string: \"unix:///run/bulkhead/shim.sock\"".into(),
                    )
                })?;
                check_socket(s).map_err(|m| value_err(key, m))?;
                cfg.socket = s.into();
                socket_set = true;
            }
            "driver" => {
                let s = value
                    .as_str()
                    .filter(|s| DRIVERS.contains(s))
                    .ok_or_else(|| value_err(key, "write \"jail\" or \"qemu\"".into()))?;
                cfg.driver = s.into();
            }
            "host_paths" => {
                let arr = value
                    .as_array()
                    .ok_or_else(|| value_err(key, "write a list of absolute directories".into()))?;
                let mut paths = Vec::new();
                for v in arr {
                    let p = v.as_str().map(PathBuf::from).filter(|p| clean_absolute(p));
                    let p = p.ok_or_else(|| {
                        value_err(
                            key,
                            format!("{v:?} is not an absolute path without '..': write absolute directories"),
                        )
                    })?;
                    paths.push(p);
                }
                cfg.host_paths = paths;
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    path: path.into(),
                    key: key.clone(),
                })
            }
        }
    }
    Ok(socket_set)
}

/// `unix:///abs/path` or `/abs/path`.
fn check_socket(s: &str) -> Result<(), String> {
    let p = s.strip_prefix("unix://").unwrap_or(s);
    if p.starts_with('/') && clean_absolute(Path::new(p)) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a UNIX socket: write unix:///run/bulkhead/shim.sock (the daemon's config.api.shim.socket)"
        ))
    }
}

/// Absolute and without `..` components.
pub(crate) fn clean_absolute(p: &Path) -> bool {
    p.is_absolute() && !p.components().any(|c| c == Component::ParentDir)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
