//! A small synchronous rtnetlink client: exactly the requests node networking needs (create a
//! veth pair with one end in another namespace, a bridge, addresses, a default route, link
//! state, link dumps and deletes). One socket per caller, one request in flight, each request
//! acknowledged; errors come back as the kernel's errno.
//!
//! Hand-written rather than taken from the netlink-packet-* crates: the route-netlink ABI is
//! stable and small for what we use, the supervisor is single-threaded and synchronous, and
//! those crates' message types changed shape across most of their recent minor versions
//! (see docs/dependencies.md).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h>, <linux/veth.h>
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const NLA_F_NESTED: u16 = 0x8000;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = 1;

/// A netlink message under construction: header, fixed body, attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

impl Msg {
    fn new(ty: u16, flags: u16, body: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish()
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq, set on send
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        buf.extend_from_slice(body);
        buf.resize(align(buf.len()), 0);
        Msg { buf, nests: vec![] }
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v)
    }

    fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    fn begin(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Raw bytes inside the current nest (used for the veth peer's ifinfomsg).
    fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    fn end(&mut self) -> &mut Self {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// struct ifinfomsg.
fn ifinfo(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// A link as a dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: i32,
    pub name: String,
}

/// A route-netlink socket in the network namespace of the thread that opened it.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket call; the fd is wrapped at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zero means "let the kernel pick our port id".
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid socket and address of the right size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink { fd, seq: 1 })
    }

    fn send(&mut self, m: Msg) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let buf = m.finish(self.seq);
        // SAFETY: buf is a valid, initialised buffer for the call's duration.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Receives messages for `seq` until the ack (or DONE for dumps); hands others to `each`.
    fn receive(&mut self, seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let len =
                    u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
                let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let mseq =
                    u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap_or_default());
                if len < 16 || off + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let body = &buf[off + 16..off + len];
                if mseq == seq {
                    match ty {
                        NLMSG_ERROR => {
                            let code = i32::from_ne_bytes(
                                body.get(0..4)
                                    .and_then(|b| b.try_into().ok())
                                    .unwrap_or_default(),
                            );
                            return if code == 0 {
                                Ok(())
                            } else {
                                Err(io::Error::from_raw_os_error(-code))
                            };
                        }
                        NLMSG_DONE => return Ok(()),
                        _ => each(ty, body),
                    }
                }
                off += align(len);
            }
        }
    }

    fn request(&mut self, m: Msg) -> io::Result<()> {
        let seq = self.send(m)?;
        self.receive(seq, |_, _| {})
    }

    /// Creates a veth pair: `host` here, `peer` inside the network namespace of `pid`.
    pub fn add_veth(&mut self, host: &str, peer: &str, pid: i32) -> io::Result<()> {
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &ifinfo(0, 0, 0),
        );
        m.attr_str(IFLA_IFNAME, host)
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .raw(&ifinfo(0, 0, 0))
            .attr_str(IFLA_IFNAME, peer)
            .attr_u32(IFLA_NET_NS_PID, pid as u32)
            .end()
            .end()
            .end();
        self.request(m)
    }

    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &ifinfo(0, 0, 0),
        );
        m.attr_str(IFLA_IFNAME, name)
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "bridge")
            .end();
        self.request(m)
    }

    /// Sets a link up, and makes it a port of `master` when given.
    pub fn set_up(&mut self, index: i32, master: Option<i32>) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK, &ifinfo(index, IFF_UP, IFF_UP));
        if let Some(master) = master {
            m.attr_u32(IFLA_MASTER, master as u32);
        }
        self.request(m)
    }

    pub fn add_address(&mut self, index: i32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        // struct ifaddrmsg: family, prefixlen, flags, scope, index.
        let mut body = [0u8; 8];
        body[0] = libc::AF_INET as u8;
        body[1] = prefix_len;
        body[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        let mask = u32::MAX.checked_shl(32 - prefix_len as u32).unwrap_or(0);
        let brd = Ipv4Addr::from(u32::from(addr) | !mask);
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &body);
        m.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets())
            .attr(IFA_BROADCAST, &brd.octets());
        self.request(m)
    }

    pub fn add_default_route(&mut self, index: i32, gateway: Ipv4Addr) -> io::Result<()> {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        let mut body = [0u8; 12];
        body[0] = libc::AF_INET as u8;
        body[4] = RT_TABLE_MAIN;
        body[5] = RTPROT_STATIC;
        body[7] = RTN_UNICAST;
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &body);
        m.attr(RTA_GATEWAY, &gateway.octets())
            .attr_u32(RTA_OIF, index as u32);
        self.request(m)
    }

    pub fn delete_link(&mut self, index: i32) -> io::Result<()> {
        self.request(Msg::new(RTM_DELLINK, NLM_F_ACK, &ifinfo(index, 0, 0)))
    }

    /// Every link of this namespace.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let seq = self.send(Msg::new(RTM_GETLINK, NLM_F_DUMP, &ifinfo(0, 0, 0)))?;
        let mut out = vec![];
        self.receive(seq, |ty, body| {
            if ty != RTM_NEWLINK || body.len() < 16 {
                return;
            }
            let index = i32::from_ne_bytes(body[4..8].try_into().unwrap_or_default());
            let mut off = 16;
            while off + 4 <= body.len() {
                let len = u16::from_ne_bytes([body[off], body[off + 1]]) as usize;
                let ty = u16::from_ne_bytes([body[off + 2], body[off + 3]]) & 0x3fff;
                if len < 4 || off + len > body.len() {
                    break;
                }
                if ty == IFLA_IFNAME {
                    let v = &body[off + 4..off + len];
                    let name = v.split(|b| *b == 0).next().unwrap_or_default();
                    out.push(Link {
                        index,
                        name: String::from_utf8_lossy(name).into_owned(),
                    });
                }
                off += align(len);
            }
        })?;
        Ok(out)
    }
}

/// The index of a link in the calling thread's network namespace.
pub fn index_of(name: &str) -> io::Result<i32> {
    let c =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_have_their_lengths() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK, &ifinfo(0, 0, 0));
        m.attr_str(IFLA_IFNAME, "bv00010001")
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end();
        let b = m.finish(7);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        // header 16 + ifinfomsg 16 + ifname (4 + 11 -> 16) = 48: the nest starts there.
        let nest_len = u16::from_ne_bytes([b[48], b[49]]) as usize;
        assert_eq!(nest_len, 4 + 4 + 5 + 3); // nest header + kind attr "veth\0" padded
        assert_eq!(b.len(), 48 + nest_len);
        assert_eq!(b.len() % 4, 0);
    }
}
