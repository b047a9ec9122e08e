//! The `debian` image: Debian 12 (bookworm), debootstrap's `minbase` variant with python3 and
//! ca-certificates (bash is part of minbase), from Debian's packages on the mirror the host's
//! apt uses ([`sources`]), plus the account `user` (uid 1000, home `/home/user`) that E2B runs
//! commands as. Nothing but Debian's archive is downloaded, and it is verified with Debian's
//! keyring (the apt entry's `signed-by`, else debootstrap's default).
//!
//! debootstrap runs in a mount namespace of its own (`unshare --mount`), so the /proc and /sys
//! it mounts into the tree never show on the host and vanish with it, even when it is killed;
//! it writes into the store's staging directory ([`super::install`]), so a failed or
//! interrupted build leaves no image and its scratch is wiped. Its progress (fd 3 in
//! `--debian-installer` mode) is parsed by [`progress`]; its full log goes to a file whose
//! last lines a failure reports.

pub mod progress;
pub mod sources;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::install::{install, Origin};
use super::store::{err, ioe, ImageMeta};
use super::users;
use crate::JailError;
pub use progress::Progress;
pub use sources::Mirror;

/// The release the image is made of.
pub const SUITE: &str = "bookworm";
/// Packages beyond minbase.
pub const INCLUDE: &[&str] = &["python3", "ca-certificates"];
/// Raised whenever what the recipe does to the tree changes (not the mirror's contents).
const VERSION: u32 = 1;

/// The recipe as `image.json` records it and test caches key on: `debian/<hash>` of what
/// makes the tree (suite, variant, packages, mirror, this code's version).
pub fn recipe(mirror: &Mirror) -> String {
    let text = format!(
        "v{VERSION} {SUITE} minbase {} user:1000 {}",
        INCLUDE.join(","),
        mirror.uri
    );
    // FNV-1a: stable across builds and Rust versions, which std's hasher is not.
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("debian/{h:016x}")
}

/// The mirror to build from: `--mirror`, else the host's apt's.
pub fn mirror(explicit: Option<&str>) -> Result<Mirror, JailError> {
    match explicit {
        Some(uri) => Ok(Mirror {
            uri: uri.to_string(),
            keyring: None,
            from: "--mirror".into(),
        }),
        None => sources::host_mirror(Path::new("/etc/apt")).map_err(err),
    }
}

fn find_debootstrap() -> Result<PathBuf, JailError> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = ["/usr/sbin", "/sbin"]
        .into_iter()
        .chain(path.split(':'))
        .map(|d| Path::new(d).join("debootstrap"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            err("debootstrap is not installed: `apt-get install debootstrap` (scripts/setup.sh does)")
        });
    found
}

/// Builds the image `name` (normally `debian`), reporting progress to `on`. Returns the
/// image and the check's warnings.
pub fn build(
    state: &Path,
    name: &str,
    mirror: &Mirror,
    on: &mut dyn FnMut(Progress),
) -> Result<(ImageMeta, Vec<String>), JailError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(err(
            "building the debian image needs root (debootstrap installs packages as root into the tree)",
        ));
    }
    let debootstrap = find_debootstrap()?;
    let origin = Origin {
        source: format!("debootstrap {SUITE} from {} ({})", mirror.uri, mirror.from),
        recipe: Some(recipe(mirror)),
    };
    install(state, name, origin, |root| {
        run_debootstrap(&debootstrap, root, mirror, on)?;
        let step = |on: &mut dyn FnMut(Progress), stage: &str| {
            on(Progress {
                percent: 99,
                stage: stage.into(),
                detail: None,
                new_stage: true,
            })
        };
        step(on, "Adding the account user");
        finish(root)?;
        step(on, "Checking and installing the image");
        Ok(())
    })
}

fn run_debootstrap(
    debootstrap: &Path,
    root: &Path,
    mirror: &Mirror,
    on: &mut dyn FnMut(Progress),
) -> Result<(), JailError> {
    let log = root.parent().unwrap_or(root).join("debootstrap.log");
    let mut args: Vec<String> = vec![
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        debootstrap.display().to_string(),
        "--debian-installer".into(),
        "--variant=minbase".into(),
        "--components=main".into(),
        format!("--include={}", INCLUDE.join(",")),
    ];
    if let Some(k) = &mirror.keyring {
        args.push(format!("--keyring={}", k.display()));
    }
    args.extend([
        SUITE.to_string(),
        root.display().to_string(),
        mirror.uri.clone(),
    ]);
    // fd 3 (the progress protocol) is our pipe; stdout and stderr, the full log, a file.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("log=$1; shift; exec \"$@\" 3>&1 >>\"$log\" 2>&1")
        .arg("sh")
        .arg(&log)
        .arg("unshare")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| err(format!("running debootstrap: {e}")))?;
    let mut tracker = progress::Tracker::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(p) = tracker.line(&line) {
                on(p);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| err(format!("waiting for debootstrap: {e}")))?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_file(&log);
    if status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(err(format!(
        "debootstrap {SUITE} from {} ({}) failed ({status}): {}{}",
        mirror.uri,
        mirror.from,
        tracker
            .error
            .unwrap_or_else(|| "see its log below".to_string()),
        if tail.is_empty() {
            String::new()
        } else {
            format!(
                "\n--- the end of debootstrap's log ---\n{}",
                tail.join("\n")
            )
        }
    )))
}

/// After debootstrap: no downloaded packages or lists (the image's apt fetches its own), no
/// trace of the build host (its resolv.conf and hostname: a node gets its own), and `user`.
fn finish(root: &Path) -> Result<(), JailError> {
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        for e in fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) && e.file_name() != "lock" {
                fs::remove_file(e.path())
                    .map_err(ioe(format!("removing {}", e.path().display())))?;
            }
        }
    }
    for (f, content) in [("etc/resolv.conf", ""), ("etc/hostname", "localhost\n")] {
        let p = root.join(f);
        let _ = fs::remove_file(&p);
        fs::write(&p, content).map_err(ioe(format!("writing /{f}")))?;
    }
    users::add_user(root, "/bin/bash")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_changes_with_the_mirror_only_through_its_uri() {
        let m = |uri: &str, from: &str| Mirror {
            uri: uri.into(),
            keyring: None,
            from: from.into(),
        };
        let a = recipe(&m("http://deb.debian.org/debian", "a"));
        assert!(a.starts_with("debian/") && a.len() == 23, "{a}");
        assert_eq!(a, recipe(&m("http://deb.debian.org/debian", "b")));
        assert_ne!(a, recipe(&m("http://mirror.example/debian", "a")));
    }
}
