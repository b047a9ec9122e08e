//! Node networking. A [`NetworkPlan`] says what a node's network namespace should hold; the
//! `apply` functions make it so. Today the only plan is `Loopback` (`network.mode: none`):
//! the node has its own network namespace with `lo` up and no other interface, so it can reach
//! nothing outside itself. Isolated and bridge modes plug in here (issue #3).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPlan {
    /// Own network namespace, loopback only.
    Loopback,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot bring up loopback: {0}")]
    Loopback(#[source] std::io::Error),
}

/// Applies the part of the plan that runs inside the node's new network namespace.
pub fn apply_inside(plan: &NetworkPlan) -> Result<(), NetError> {
    match plan {
        NetworkPlan::Loopback => loopback_up().map_err(NetError::Loopback),
    }
}

/// Sets IFF_UP on `lo` of the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket used only for the interface ioctls below, closed before return.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; we fill the name and read/write flags through the union.
    let res = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    res
}
