//! `bulkhead shim install` (#16, part E; docs/fleet.md, ADR 0040): puts
//! `containerd-shim-bulkhead-v2` (built beside `bulkhead`) where containerd looks for shims,
//! writes the shim's options file (`<config-dir>/shim-<driver>.toml`: the daemon's `api.shim`
//! socket, the driver, the host paths the shim may copy into a rootfs) and the containerd
//! runtime snippet that names it (`runtime_type = "io.containerd.bulkhead.v2"`,
//! `options.ConfigPath`), printed or written as a drop-in for containerd's `imports`.
//!
//! Invariants: every file is written to a temporary name in its own directory, synced and
//! renamed over the target, so containerd never starts a half-copied shim or reads a half-written
//! config; nothing here talks to the daemon or to containerd.

use anyhow::{bail, Context};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The shim's file name: containerd maps runtime `io.containerd.bulkhead.v2` to it on PATH.
pub const SHIM_BIN: &str = "containerd-shim-bulkhead-v2";
/// The runtime type containerd's config names.
pub const RUNTIME_TYPE: &str = "io.containerd.bulkhead.v2";
/// Where the daemon's `api.shim` listener is by default.
pub const DEFAULT_SOCKET: &str = "unix:///run/bulkhead/shim.sock";
/// containerd's and kubelet's own directories: the only host files a pod may see (copied).
pub const DEFAULT_HOST_PATHS: [&str; 3] = [
    "/var/lib/containerd",
    "/run/containerd",
    "/var/lib/kubelet/pods",
];

#[derive(clap::Subcommand)]
pub enum ShimCmd {
    /// Install containerd-shim-bulkhead-v2, its options file and the containerd runtime snippet
    Install(InstallArgs),
}

#[derive(clap::Args)]
pub struct InstallArgs {
    /// Where the shim binary goes (containerd finds shims on its PATH)
    #[arg(long, default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
    /// Where the shim's options file goes (shim-<driver>.toml)
    #[arg(long, default_value = "/etc/bulkhead")]
    config_dir: PathBuf,
    /// The daemon's api.shim socket (unix:///path or /path)
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: String,
    /// Which of the tenant's host groups pods land on: jail nodes or microVMs
    #[arg(long, value_parser = ["jail", "qemu"], default_value = "jail")]
    driver: String,
    /// Host path prefixes whose files the shim may copy into a rootfs (repeat; default:
    /// containerd's and kubelet's own directories)
    #[arg(long = "host-path")]
    host_paths: Vec<PathBuf>,
    /// Write the containerd snippet to this file (a drop-in for containerd's `imports`)
    /// instead of printing it
    #[arg(long)]
    containerd_config: Option<PathBuf>,
}

/// The runtime's name in containerd's CRI config (a RuntimeClass's `handler`).
pub fn runtime_name(driver: &str) -> &'static str {
    if driver == "qemu" {
        "bulkhead-vm"
    } else {
        "bulkhead"
    }
}

/// `unix:///path` for a socket given as either form; anything else is refused.
fn socket_url(s: &str) -> anyhow::Result<String> {
    let path = s.strip_prefix("unix://").unwrap_or(s);
    if !path.starts_with('/') {
        bail!(
            "--socket {s:?}: give the daemon's api.shim socket as an absolute path or unix:///path"
        );
    }
    Ok(format!("unix://{path}"))
}

/// A TOML basic string (JSON's string escapes are all valid TOML escapes).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The shim's options file (DESIGN-16: `socket`, `driver`, `host_paths`).
pub fn shim_toml(socket: &str, driver: &str, host_paths: &[PathBuf]) -> String {
    let paths: Vec<String> = host_paths
        .iter()
        .map(|p| toml_str(&p.to_string_lossy()))
        .collect();
    format!(
        "# containerd-shim-bulkhead-v2's options (written by `bulkhead shim install`; docs/fleet.md)\n\
         # The daemon's api.shim socket.\n\
         socket = {}\n\
         # Which host group of the namespace's tenant pods land on: \"jail\" or \"qemu\".\n\
         driver = {}\n\
         # Host path prefixes whose files (CRI's /etc/hosts, resolv.conf, volumes) the shim copies\n\
         # into a container's rootfs; a bind mount from anywhere else is refused.\n\
         host_paths = [{}]\n",
        toml_str(socket),
        toml_str(driver),
        paths.join(", ")
    )
}

/// containerd's CRI runtime entry naming the shim and its options file.
pub fn containerd_snippet(driver: &str, config_path: &Path) -> String {
    let name = runtime_name(driver);
    let table = format!("plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{name}");
    format!(
        "# bulkhead's {driver} runtime for containerd's CRI (written by `bulkhead shim install`).\n\
         # Pods choose it with a RuntimeClass whose handler is \"{name}\" (docs/fleet.md).\n\
         [{table}]\n  runtime_type = \"{RUNTIME_TYPE}\"\n\
         [{table}.options]\n  ConfigPath = {}\n",
        toml_str(&config_path.to_string_lossy())
    )
}

/// Writes `bytes` to `target` through a temporary file in the same directory and a rename.
fn write_atomic(target: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = target.parent().context("the target has no directory")?;
    let name = target.file_name().context("the target has no file name")?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", target.display()));
    }
    Ok(())
}

fn ensure_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the {what} directory {}", dir.display()))
}

pub fn run(c: ShimCmd) -> anyhow::Result<ExitCode> {
    match c {
        ShimCmd::Install(a) => install(a),
    }
}

fn install(a: InstallArgs) -> anyhow::Result<ExitCode> {
    let socket = socket_url(&a.socket)?;
    let host_paths = if a.host_paths.is_empty() {
        DEFAULT_HOST_PATHS.iter().map(PathBuf::from).collect()
    } else {
        a.host_paths.clone()
    };
    if let Some(p) = host_paths.iter().find(|p| !p.is_absolute()) {
        bail!("--host-path {}: give an absolute path", p.display());
    }
    let exe = std::env::current_exe().context("finding the running bulkhead binary")?;
    let shim = exe.with_file_name(SHIM_BIN);
    let bytes = std::fs::read(&shim).map_err(|e| {
        anyhow::anyhow!(
            "no {SHIM_BIN} beside {} ({e}): build both with `cargo build --release` and run \
             target/release/bulkhead shim install",
            exe.display()
        )
    })?;
    ensure_dir(&a.bin_dir, "--bin-dir")?;
    let bin = a.bin_dir.join(SHIM_BIN);
    write_atomic(&bin, &bytes, 0o755)?;
    ensure_dir(&a.config_dir, "--config-dir")?;
    let config = a.config_dir.join(format!("shim-{}.toml", a.driver));
    let config_abs = std::path::absolute(&config).unwrap_or(config.clone());
    write_atomic(
        &config,
        shim_toml(&socket, &a.driver, &host_paths).as_bytes(),
        0o644,
    )?;
    eprintln!("installed {}", bin.display());
    eprintln!("wrote {}", config.display());
    let snippet = containerd_snippet(&a.driver, &config_abs);
    match &a.containerd_config {
        None => {
            eprintln!(
                "add this to containerd's config (/etc/containerd/config.toml, `version = 2`) and \
                 restart containerd:"
            );
            print!("{snippet}");
        }
        Some(file) => {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                ensure_dir(dir, "--containerd-config")?;
            }
            write_atomic(file, format!("version = 2\n{snippet}").as_bytes(), 0o644)?;
            let abs = std::path::absolute(file).unwrap_or(file.clone());
            eprintln!("wrote {}", file.display());
            eprintln!(
                "include it from /etc/containerd/config.toml with a top-level line (before any \
                 table): imports = [{}], then restart containerd.\n\
                 Note: containerd 1.6 replaces a plugin's whole section with an imported file's: \
                 if config.toml sets other [plugins.\"io.containerd.grpc.v1.cri\"] keys, paste the \
                 snippet into config.toml instead of importing it (docs/fleet.md).",
                toml_str(&abs.to_string_lossy())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_forms() {
        assert_eq!(socket_url("/run/b.sock").unwrap(), "unix:///run/b.sock");
        assert_eq!(
            socket_url("unix:///run/b.sock").unwrap(),
            "unix:///run/b.sock"
        );
        assert!(socket_url("run/b.sock").is_err());
        assert!(socket_url("tcp://1.2.3.4:1").is_err());
    }

    #[test]
    fn names_and_quoting() {
        assert_eq!(runtime_name("jail"), "bulkhead");
        assert_eq!(runtime_name("qemu"), "bulkhead-vm");
        let t = shim_toml("unix:///a\"b", "jail", &[PathBuf::from("/x")]);
        assert!(t.contains(r#"socket = "unix:///a\"b""#), "{t}");
        assert!(t.contains(r#"host_paths = ["/x"]"#), "{t}");
        let s = containerd_snippet("qemu", Path::new("/etc/bulkhead/shim-qemu.toml"));
        assert!(s.contains("runtimes.bulkhead-vm]"), "{s}");
        assert!(
            s.contains(r#"ConfigPath = "/etc/bulkhead/shim-qemu.toml""#),
            "{s}"
        );
    }
}
