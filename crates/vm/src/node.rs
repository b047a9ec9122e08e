//! The microVM's supervisor side ([`QemuLauncher`]): the node's process is a confined QEMU
//! ([`crate::confine`]), and the supervisor itself serves the node's `agent.sock`, carrying
//! each connection to the guest's agent over the virtio-serial port
//! ([`bulkhead_agent::mux`]). The daemon cannot tell the difference.
//!
//! Threads (the console writer, the relay) start only after QEMU's clone: the supervisor must
//! be single-threaded when it clones.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use crate::{Accel, VmError, VmSpec};
use bulkhead_driver::{files, DriverError, Launcher, NodeStart};

/// Where QEMU's end of the agent channel appears (inside the node's `vm/` directory).
pub const SERIAL: &str = "agent.serial";

/// The microVM's [`Launcher`].
pub struct QemuLauncher;

impl Launcher for QemuLauncher {
    fn start(&self, node: NodeStart<'_>) -> Result<i32, DriverError> {
        let vm: VmSpec = node.spec.params()?;
        start(node, &vm).map_err(|e| match e {
            VmError::Io { what, source } => DriverError::Io { what, source },
            e => DriverError::Failed(e.to_string()),
        })
    }
}

/// The read end of a pipe holding the persistent disk's key (hex, then EOF), for a node whose
/// root disk is encrypted; `None` otherwise.
fn root_key_pipe(
    spec: &bulkhead_driver::NodeSpec,
    vm: &VmSpec,
    keys: &bulkhead_driver::instruction::VolumeKeys,
) -> Result<Option<std::os::fd::OwnedFd>, VmError> {
    if !vm.encrypted_root {
        return Ok(None);
    }
    let key = spec
        .persistent_layer
        .as_ref()
        .and_then(|l| keys.get(&l.key_id))
        .ok_or_else(|| setup("the persistent disk's key did not come from the daemon"))?;
    let (r, w) = bulkhead_sandbox::ns::cloexec_pipe().map_err(setup)?;
    // QEMU reopens it through `/proc/self/fd/N`, which checks the pipe's owner and mode
    // (root's, 0600): it must be QEMU's own.
    let qemu = spec.uid_base + crate::QEMU_UID;
    std::os::unix::fs::fchown(&r, Some(qemu), Some(qemu))
        .map_err(|e| setup(format!("handing QEMU its disk's key: {e}")))?;
    let mut text = crate::disk::key_text(key.bytes()).into_bytes();
    let mut w = w;
    let written = std::io::Write::write_all(&mut w, &text);
    text.iter_mut().for_each(|b| *b = 0);
    written.map_err(|e| setup(format!("handing QEMU its disk's key: {e}")))?;
    drop(w);
    Ok(Some(r.into()))
}

fn setup(e: impl std::fmt::Display) -> VmError {
    VmError::Launch(e.to_string())
}

fn start(node: NodeStart<'_>, vm: &VmSpec) -> Result<i32, VmError> {
    let NodeStart {
        spec,
        cgroup: cg,
        inside,
        agent_listener: listener,
        console,
        volume_keys, // volumes: the daemon gives a guest its keys over the agent channel
    } = node;
    // A persistent node's LUKS root disk (#13): its key, from the daemon's instruction, on a
    // pipe QEMU inherits and reads at its start (the pipe holds it, never a file).
    let key_pipe = root_key_pipe(spec, vm, volume_keys)?;
    let mut vm = vm.clone();
    vm.root_key_fd = key_pipe.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    let vm = &vm;
    // The volumes' images (#13, attach), opened here as root and inherited by QEMU, whose own
    // uid and root reach no image; each becomes a disk the guest's agent mounts by its serial
    // once the daemon asks it to.
    let images = open_images(&spec.volumes)?;
    let drives: Vec<crate::qemu::VolumeDrive> = images
        .iter()
        .zip(&spec.volumes)
        .map(|(fs, v)| crate::qemu::VolumeDrive {
            fds: fs.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect(),
            read_only: v.read_only,
            serial: v.serial(),
        })
        .collect();
    let root = spec.node_dir.join(files::ROOTFS);
    fs::create_dir_all(&root).map_err(|source| VmError::Io {
        what: format!("creating {}", root.display()),
        source,
    })?;
    // The guest's serial console is the guest's to write, endlessly if it likes: QEMU writes
    // it into a pipe, and the supervisor keeps the last CONSOLE_CAP bytes or so on disk.
    // The writer thread starts only after the clone below. Until then the pipe buffers QEMU's
    // first output.
    let (console_r, console_w) = bulkhead_sandbox::ns::cloexec_pipe().map_err(setup)?;
    let log_path = spec.node_dir.join(files::CONSOLE_LOG);
    let log_file = console;
    let console = console_w;
    if vm.accel == Accel::Kvm {
        // QEMU opens /dev/kvm through its group (the node's user namespace keeps the
        // supplementary groups it was created with).
        if let Ok(m) = fs::metadata("/dev/kvm") {
            let g = m.gid();
            // SAFETY: setgroups with a one-element array.
            unsafe { libc::setgroups(1, &g) };
        }
    }
    // SAFETY: the supervisor is single-threaded until the console thread below.
    let pending = unsafe {
        crate::confine::spawn(
            vm,
            &root,
            &console,
            (spec.uid_base, spec.uid_count),
            false,
            &drives,
        )?
    };
    // QEMU holds its own copies now.
    drop(images);
    drop(key_pipe);
    let pid = pending.pid;
    let placed = (|| {
        if !inside {
            cg.add(pid).map_err(setup)?;
        }
        bulkhead_net::host::apply_host(&spec.network, pid)
            .map_err(|e| setup(format!("node network: {e}")))
    })();
    if let Err(e) = placed {
        bulkhead_sandbox::ns::kill_and_reap(pid);
        return Err(e);
    }
    // A networked guest's NIC: /dev/net/tun opened inside the node's namespace (a tun fd
    // belongs to the namespace it was opened in), handed to QEMU's child, which attaches it
    // to the tap made for QEMU's uid. QEMU never opens /dev/net/tun (root-only on many hosts).
    let tun = match &spec.network {
        bulkhead_net::NetworkPlan::Veth(v) if v.guest_tap.is_some() => {
            let t = bulkhead_net::host::in_netns_of(pid, || {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/net/tun")
                    .map_err(|source| bulkhead_net::NetError::Host {
                        what: "opening /dev/net/tun in the node",
                        source,
                    })
            });
            match t {
                Ok(t) => Some(t),
                Err(e) => {
                    bulkhead_sandbox::ns::kill_and_reap(pid);
                    return Err(setup(e));
                }
            }
        }
        _ => None,
    };
    pending.go(tun.as_ref())?;
    drop(tun);
    let io = |what: &str| {
        let what = what.to_string();
        move |source| VmError::Io { what, source }
    };
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || bounded_log(console_r, log_file, &log_path))
        .map_err(io("starting the console writer"))?;
    let serial = vm.vm_dir.join(SERIAL);
    let until = Instant::now() + Duration::from_secs(20);
    let link = loop {
        match crate::unix_path::connect(&serial) {
            Ok(s) => break s,
            Err(e) if Instant::now() > until => {
                bulkhead_sandbox::ns::kill_and_reap(pid);
                return Err(setup(format!(
                    "QEMU did not open its agent channel {}: {e}",
                    serial.display()
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    serve_agent(listener, link).map_err(io("starting the agent relay"))?;
    Ok(pid)
}

/// Opens each volume's image for QEMU, never through a symlink, and only a regular file:
/// read-only, and for a writable volume read-write too (see [`crate::qemu::VolumeDrive`]).
fn open_images(volumes: &[bulkhead_driver::VolumeMount]) -> Result<Vec<Vec<fs::File>>, VmError> {
    let open = |v: &bulkhead_driver::VolumeMount, write: bool| {
        let f = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&v.image)
            .map_err(|source| VmError::Io {
                what: format!("opening volume {}'s image", v.id),
                source,
            })?;
        if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
            return Err(VmError::Launch(format!(
                "volume {}'s image is not a regular file",
                v.id
            )));
        }
        Ok(f)
    };
    volumes
        .iter()
        .map(|v| {
            let mut fds = vec![open(v, false)?];
            if !v.read_only {
                fds.push(open(v, true)?);
            }
            Ok(fds)
        })
        .collect()
}

/// How much of a microVM's console is kept: the current file and one rotated predecessor.
pub const CONSOLE_CAP: u64 = 1 << 20;

/// Copies the guest's console into the node's log, rotating to `console.log.1` at the cap.
fn bounded_log(mut from: std::fs::File, mut to: std::fs::File, path: &std::path::Path) {
    use std::io::{Read, Write};
    let mut size = to.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = [0u8; 8192];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if size + n as u64 > CONSOLE_CAP {
            let _ = fs::rename(path, path.with_extension("log.1"));
            match OpenOptions::new()
                .mode(0o600)
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(f) => {
                    to = f;
                    size = 0;
                }
                Err(_) => return,
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
        size += n as u64;
    }
}

/// Relays every connection on the node's agent socket to the guest as one mux stream.
fn serve_agent(listener: UnixListener, link: UnixStream) -> std::io::Result<()> {
    let mux = bulkhead_agent::mux::Mux::new(link.try_clone()?);
    let m = mux.clone();
    std::thread::Builder::new()
        .name("mux-in".into())
        .spawn(move || {
            let _ = m.run(link, |_| {});
        })?;
    std::thread::Builder::new()
        .name("mux-accept".into())
        .spawn(move || {
            let mut next: u32 = 1;
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        let id = next;
                        next = next.wrapping_add(1).max(1);
                        let _ = mux.attach(id, c, true);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
    Ok(())
}
