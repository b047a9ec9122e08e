//! The agent as a microVM's init. The guest kernel starts it from the initramfs as PID 1; it
//! loads the virtio and ext4 modules the initramfs carries (Debian's kernel has them as
//! modules), mounts the node's root filesystem from `/dev/vda`, moves into it, sets the
//! hostname, and serves agent streams multiplexed over the virtio-serial port named `agent0`
//! ([`crate::mux`]). The kernel command line carries the few settings it needs:
//! `bulkhead.hostname=NAME`, and `bulkhead.probe=1` for the host's KVM probe (print a line and
//! power off).

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{mux, reaper, server};

/// The serial of the node's root disk (`crate::volume` finds volumes by theirs).
pub const ROOT_SERIAL: &str = "bulkhead-root";

/// The line a probe boot prints on the console.
pub const PROBE_OK: &str = "bulkhead-guest: probe ok";

fn mount(
    src: &str,
    dst: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let (s, d, t, o) = (c(src), c(dst), c(fstype), c(data));
    let _ = std::fs::create_dir_all(dst);
    // SAFETY: valid NUL-terminated strings for the call's duration.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            if fstype.is_empty() {
                std::ptr::null()
            } else {
                t.as_ptr()
            },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                o.as_ptr().cast()
            },
        )
    };
    if r < 0 {
        return Err(format!(
            "mount {src} on {dst}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn load_modules(dir: &Path) -> Result<(), String> {
    let order = std::fs::read_to_string(dir.join("order"))
        .map_err(|e| format!("reading module order: {e}"))?;
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f = std::fs::File::open(dir.join(format!("{name}.ko")))
            .map_err(|e| format!("module {name}: {e}"))?;
        // SAFETY: finit_module on an open module file with empty parameters.
        let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("loading module {name}: {e}"));
            }
        }
    }
    Ok(())
}

fn wait_for(p: &Path, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if p.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    p.exists()
}

/// The device of the virtio-serial port named `name` (`/dev/vportNpM`).
fn find_port(name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        if std::fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim() == name) {
            return Some(Path::new("/dev").join(e.file_name()));
        }
    }
    None
}

fn cmdline(key: &str) -> Option<String> {
    let c = std::fs::read_to_string("/proc/cmdline").ok()?;
    c.split_whitespace().find_map(|w| {
        w.strip_prefix(key)
            .and_then(|v| v.strip_prefix('='))
            .map(str::to_string)
    })
}

fn power_off() -> ! {
    // SAFETY: sync and reboot(POWER_OFF) as PID 1 of the guest.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    std::process::exit(0)
}

fn setup() -> Result<std::fs::File, String> {
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "")?;
    mount(
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )?;
    mount(
        "sysfs",
        "/sys",
        "sysfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )?;
    load_modules(Path::new("/modules"))?;
    if cmdline("bulkhead.probe").is_some() {
        println!("{PROBE_OK}");
        let _ = std::io::stdout().flush();
        power_off();
    }
    if !wait_for(Path::new("/dev/vda"), Duration::from_secs(10)) {
        return Err("no root disk (/dev/vda) appeared".into());
    }
    // The root disk by its serial: a node's volumes are disks too (#13, attach), and probe
    // order is no promise. A host older than serials gives only the root disk, as vda.
    let root = crate::volume::disk_of(ROOT_SERIAL).unwrap_or_else(|| PathBuf::from("/dev/vda"));
    mount(
        &root.to_string_lossy(),
        "/newroot",
        "ext4",
        libc::MS_NOATIME,
        "",
    )?;
    for d in ["/dev", "/proc", "/sys"] {
        mount(d, &format!("/newroot{d}"), "", libc::MS_MOVE, "")?;
    }
    std::env::set_current_dir("/newroot").map_err(|e| format!("chdir /newroot: {e}"))?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    // SAFETY: chroot into the directory we just moved to /.
    if unsafe { libc::chroot(c".".as_ptr()) } < 0 {
        return Err(format!("chroot: {}", std::io::Error::last_os_error()));
    }
    let _ = std::env::set_current_dir("/");
    let _ = mount(
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    );
    // The workload identity token's own tmpfs (ADR 0020): never on the node's disk.
    std::fs::create_dir_all("/run/bulkhead/identity")
        .map_err(|e| format!("creating /run/bulkhead/identity: {e}"))?;
    mount(
        "tmpfs",
        "/run/bulkhead/identity",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "size=64k,mode=0755",
    )?;
    // secrets (#13): the node's secrets' own tmpfs, bounded as in a jail (`jail::setup`).
    std::fs::create_dir_all("/run/secrets").map_err(|e| format!("creating /run/secrets: {e}"))?;
    mount(
        "tmpfs",
        "/run/secrets",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "size=1m,nr_inodes=64,mode=0755",
    )?;
    let _ = mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666",
    );
    if let Some(h) = cmdline("bulkhead.hostname") {
        // SAFETY: a valid buffer and its length.
        unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) };
    }
    network()?;
    if !wait_for(
        Path::new("/sys/class/virtio-ports"),
        Duration::from_secs(10),
    ) {
        return Err("no virtio-serial ports appeared".into());
    }
    let until = Instant::now() + Duration::from_secs(10);
    let port = loop {
        if let Some(p) = find_port("agent0").filter(|p| p.exists()) {
            break p;
        }
        if Instant::now() > until {
            return Err("the agent0 port did not appear".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&port)
        .map_err(|e| format!("opening {}: {e}", port.display()))
}

/// Loopback, and `eth0` from `bulkhead.ip=ADDR/LEN bulkhead.gw=GW [bulkhead.dns=A,B]`.
fn network() -> Result<(), String> {
    use bulkhead_net::netlink::{index_of, Netlink};
    let mut nl = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
    if let Ok(lo) = index_of("lo") {
        let _ = nl.set_up(lo, None);
    }
    let Some(ip) = cmdline("bulkhead.ip") else {
        return Ok(());
    };
    let (addr, len) = ip
        .split_once('/')
        .and_then(|(a, l)| Some((a.parse().ok()?, l.parse().ok()?)))
        .ok_or_else(|| format!("bad bulkhead.ip={ip}"))?;
    let gw = cmdline("bulkhead.gw")
        .and_then(|g| g.parse().ok())
        .ok_or("bulkhead.ip without a valid bulkhead.gw")?;
    let until = Instant::now() + Duration::from_secs(10);
    let eth = loop {
        if let Ok(i) = index_of("eth0") {
            break i;
        }
        if Instant::now() > until {
            return Err("eth0 did not appear".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    for conf in ["all", "default", "eth0"] {
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{conf}/accept_redirects"),
            "0",
        );
    }
    nl.add_address(eth, addr, len)
        .map_err(|e| format!("eth0 address: {e}"))?;
    nl.set_up(eth, None).map_err(|e| format!("eth0 up: {e}"))?;
    nl.add_default_route(eth, gw)
        .map_err(|e| format!("default route: {e}"))?;
    if let Some(d) = cmdline("bulkhead.dns") {
        let text: String = d.split(',').map(|a| format!("nameserver {a}\n")).collect();
        let _ = std::fs::remove_file("/etc/resolv.conf");
        let _ = std::fs::write("/etc/resolv.conf", text);
    }
    Ok(())
}

/// Runs as the guest's PID 1. Never returns: on a fatal error it powers the guest off, which
/// ends the QEMU process and so the node.
pub fn boot() -> ! {
    let port = match setup() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bulkhead-guest: {e}");
            power_off();
        }
    };
    // SAFETY: prctl with integer arguments only (see server::serve).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // This agent is the guest's init: it may mount the node's volumes (#13, attach).
    crate::proto::IN_GUEST.store(true, std::sync::atomic::Ordering::Relaxed);
    reaper::block_signals();
    reaper::start(true);
    let started = Instant::now();
    eprintln!("bulkhead-agent: ready (guest)");
    let writer = match port.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("bulkhead-guest: {e}");
            power_off();
        }
    };
    let m = mux::Mux::new(writer);
    let m2 = m.clone();
    let r = m.run(port, move |id| {
        let Ok((a, b)) = std::os::unix::net::UnixStream::pair() else {
            return;
        };
        if m2.attach(id, a, false).is_ok() {
            server::spawn_handler(b, started);
        }
    });
    eprintln!("bulkhead-guest: agent port closed ({r:?}); powering off");
    power_off();
}
