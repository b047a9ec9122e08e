//! A private network for the network tests: a namespace that plays the host (daemons run in
//! it) and one that plays the internet, joined by a veth. Nothing here touches the machine's
//! root network namespace, and every address lives only inside these namespaces (TEST-NET
//! documentation ranges). Dropping the lab ends both namespaces' holder processes.
//!
//! ```text
//!  host ns: up0 198.51.100.1/24 (default route via .2)     internet ns: inet0 198.51.100.2/24
//!                                                           lo: 203.0.113.10, .11 (hosts)
//!                                                               203.0.113.200 (drop-listed)
//!                                                               169.254.169.254 (metadata)
//!                                                               192.0.2.53 (DNS server)
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HOST_UPLINK: &str = "198.51.100.1";
pub const INTERNET: &str = "203.0.113.10";
pub const INTERNET2: &str = "203.0.113.11";
pub const DROPPED: &str = "203.0.113.200";
pub const METADATA: &str = "169.254.169.254";
pub const DNS: &str = "192.0.2.53";
/// Every listener the lab starts answers on this port with a line naming itself.
pub const PORT: u16 = 7000;

pub struct NetLab {
    host: Netns,
    inet: Netns,
}

/// A network namespace held open by a `sleep` that this test started (and kills on drop).
pub struct Netns(Child);

impl Netns {
    /// A fresh namespace with nothing in it, ready once this returns.
    pub fn new() -> Netns {
        let child = Command::new("unshare")
            .args(["--net", "--", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let ns = Netns(child);
        // The holder needs a moment to unshare.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(ns.path()).ok() == std::fs::read_link("/proc/self/ns/net").ok() {
            assert!(Instant::now() < deadline, "namespace holder did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.0.id()))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a shell script in the network namespace at `ns` (host tools, as root).
pub fn sh_in(ns: &Path, script: &str) -> (bool, String) {
    let o = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["--", "sh", "-c", script])
        .output()
        .expect("nsenter");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn sh_ok(ns: &Path, script: &str) {
    let (ok, out) = sh_in(ns, script);
    assert!(ok, "{script}: {out}");
}

/// Runs `f` on a thread that has entered the network namespace at `ns`.
pub fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&ns).expect("open netns");
        // SAFETY: setns on a namespace fd for this thread only.
        assert_eq!(
            unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .expect("thread in netns")
}

/// Starts a TCP listener on `addr:PORT` in `ns` that answers every connection with `name`.
pub fn listen(ns: &Path, addr: &str, name: &str) {
    listen_port(ns, addr, PORT, name)
}

/// Connects from `ns` to `addr:PORT`; returns what the listener said, or `None`.
pub fn tcp_probe(ns: &Path, addr: &str) -> Option<String> {
    tcp_probe_from(ns, None, addr)
}

/// Like [`tcp_probe`], binding the source address first (for spoofing tests: the address
/// need not be assigned, thanks to IP_TRANSPARENT, which root may set).
pub fn tcp_probe_from(ns: &Path, src: Option<&str>, addr: &str) -> Option<String> {
    let (src, addr) = (src.map(str::to_string), addr.to_string());
    in_ns(ns, move || {
        let dst: SocketAddr = format!("{addr}:{PORT}").parse().unwrap();
        let mut s = match src {
            None => TcpStream::connect_timeout(&dst, Duration::from_millis(1500)).ok()?,
            Some(src) => connect_from(&src, dst)?,
        };
        s.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out.trim().to_string()).filter(|o| !o.is_empty())
    })
}

fn connect_from(src: &str, dst: SocketAddr) -> Option<TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: a fresh socket, bound and connected with plain sockaddr_in values; wrapped
    // into a TcpStream (which owns it) once connected.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_IP,
            libc::IP_TRANSPARENT,
            (&one as *const libc::c_int).cast(),
            4,
        );
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 500_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let s = sa(src.parse().ok()?, 0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::bind(fd, (&s as *const libc::sockaddr_in).cast(), len) != 0 {
            libc::close(fd);
            return None;
        }
        let SocketAddr::V4(d) = dst else { return None };
        let d = sa(*d.ip(), d.port());
        if libc::connect(fd, (&d as *const libc::sockaddr_in).cast(), len) != 0 {
            libc::close(fd);
            return None;
        }
        Some(TcpStream::from_raw_fd(fd))
    }
}

/// One ICMP echo from `ns` to `addr` (busybox ping, as root, on the namespace's routes).
pub fn ping(ns: &Path, addr: &str) -> bool {
    sh_in(
        ns,
        &format!("busybox ping -c 1 -W 1 {addr} >/dev/null 2>&1"),
    )
    .0
}

/// Sends `bytes` from `ns` to a sink at `addr:PORT+1` and returns the time it took.
pub fn upload(ns: &Path, addr: &str, bytes: usize) -> Duration {
    let addr = addr.to_string();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(
            &format!("{addr}:{}", PORT + 1).parse().unwrap(),
            Duration::from_secs(2),
        )
        .expect("connect to sink");
        let chunk = vec![0u8; 64 * 1024];
        let t0 = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).expect("upload");
            left -= n;
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        // The sink answers once it has read everything.
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
        t0.elapsed()
    })
}

fn sink(ns: &Path, addr: &str) {
    let (ns, addr) = (ns.to_path_buf(), addr.to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&ns).expect("open netns");
        // SAFETY: as in in_ns.
        assert_eq!(
            unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let l = TcpListener::bind((addr.as_str(), PORT + 1)).expect("bind sink");
        tx.send(()).unwrap();
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                let _ = c.write_all(b"k");
            });
        }
    });
    rx.recv().unwrap();
}

impl NetLab {
    pub fn new() -> NetLab {
        let lab = NetLab {
            host: Netns::new(),
            inet: Netns::new(),
        };
        sh_ok(
            &lab.host_ns(),
            &format!(
                "ip link set lo up && ip link add up0 type veth peer name inet0 netns {} && \
                 ip addr add {HOST_UPLINK}/24 dev up0 && ip link set up0 up && \
                 ip route add default via 198.51.100.2",
                lab.inet.pid()
            ),
        );
        sh_ok(
            &lab.inet_ns(),
            &format!(
                "ip link set lo up && ip addr add 198.51.100.2/24 dev inet0 && ip link set inet0 up && \
                 for a in {INTERNET} {INTERNET2} {DROPPED} {METADATA} {DNS}; do ip addr add $a/32 dev lo; done"
            ),
        );
        for (a, n) in [
            (INTERNET, "internet"),
            (INTERNET2, "internet2"),
            (DROPPED, "dropped"),
            (METADATA, "metadata"),
            (DNS, "dns"),
        ] {
            listen(&lab.inet_ns(), a, n);
        }
        // A DNS server answers on 53 too (TCP is enough to prove reachability).
        let ns = lab.inet_ns();
        std::thread::spawn(move || {
            in_ns(&ns, || {
                let l = TcpListener::bind((DNS, 53)).expect("bind dns");
                for mut c in l.incoming().flatten() {
                    let _ = c.write_all(b"dns53\n");
                }
            })
        });
        listen(&lab.host_ns(), "0.0.0.0", "host");
        sink(&lab.inet_ns(), INTERNET);
        lab
    }

    pub fn host_ns(&self) -> PathBuf {
        self.host.path()
    }

    pub fn inet_ns(&self) -> PathBuf {
        self.inet.path()
    }

    /// Runs a script in the host namespace.
    pub fn host_sh(&self, script: &str) -> (bool, String) {
        sh_in(&self.host_ns(), script)
    }
}

/// What a UDP listener started by [`udp_listen`] received: one payload per datagram.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Starts a UDP listener on `addr:port` in `ns` that records each datagram's payload and
/// answers it with `name` (to the datagram's source, whoever that claims to be).
pub fn udp_listen(ns: &Path, addr: &str, port: u16, name: &str) -> Received {
    let (ns, addr, name) = (ns.to_path_buf(), addr.to_string(), name.to_string());
    let got: Received = Default::default();
    let rec = got.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&ns).expect("open netns");
        // SAFETY: as in in_ns.
        assert_eq!(
            unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let s = std::net::UdpSocket::bind((addr.as_str(), port)).expect("bind udp listener");
        tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            rec.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = s.send_to(name.as_bytes(), from);
        }
    });
    rx.recv().unwrap();
    got
}

/// Sends one datagram `payload` from `ns` to `addr:port`, from `src` when given (spoofing,
/// through IP_TRANSPARENT, which root may set); returns the answer, if one came back.
pub fn udp_probe_from(
    ns: &Path,
    src: Option<&str>,
    addr: &str,
    port: u16,
    payload: &str,
) -> Option<String> {
    let (src, addr, payload) = (
        src.map(str::to_string),
        addr.to_string(),
        payload.to_string(),
    );
    in_ns(ns, move || {
        use std::os::fd::FromRawFd;
        let src: std::net::Ipv4Addr = src.as_deref().unwrap_or("0.0.0.0").parse().ok()?;
        // SAFETY: a fresh datagram socket, bound with a plain sockaddr_in and given to
        // UdpSocket (which owns it) at once.
        let s = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            let s = std::net::UdpSocket::from_raw_fd(fd);
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd,
                libc::SOL_IP,
                libc::IP_TRANSPARENT,
                (&one as *const libc::c_int).cast(),
                4,
            );
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
            if libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len) != 0 {
                return None;
            }
            s
        };
        s.set_read_timeout(Some(Duration::from_millis(1000))).ok()?;
        s.send_to(payload.as_bytes(), (addr.as_str(), port)).ok()?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// Connects from `ns` to `addr:port`; returns the first line the peer sent, or `None`.
pub fn tcp_probe_port(ns: &Path, addr: &str, port: u16) -> Option<String> {
    let addr = addr.to_string();
    in_ns(ns, move || {
        let dst: SocketAddr = format!("{addr}:{port}").parse().unwrap();
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_millis(1500)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        Some(out.trim().to_string()).filter(|o| !o.is_empty())
    })
}

/// Starts a TCP listener on `addr:port` in `ns` that answers every connection with `name`.
pub fn listen_port(ns: &Path, addr: &str, port: u16, name: &str) {
    let (ns, addr, name) = (ns.to_path_buf(), addr.to_string(), name.to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&ns).expect("open netns");
        // SAFETY: as in in_ns.
        assert_eq!(
            unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let l = TcpListener::bind((addr.as_str(), port)).expect("bind lab listener");
        tx.send(()).unwrap();
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(format!("{name}\n").as_bytes());
        }
    });
    rx.recv().unwrap();
}
