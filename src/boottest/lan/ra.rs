//! The box's LAN answers IPv6 router solicitations, as a LAN with an IPv6
//! router does, so an iPXE node is not held up looking for one.
//!
//! iPXE (QEMU's NIC option ROMs) configures IPv4 by DHCP and IPv6 by NDP at
//! once, and boots only when both have finished. On a link where nothing
//! answers its router solicitations it sends them 0.25, 0.5, 1, 2, 4 and 8 s
//! apart before giving up on IPv6: 16 s in "Configuring (net0 ...)", of a
//! LAN boot's whole firmware stage. QEMU's user network answers them
//! itself; the bridge of [`super::Lan`] had nothing that did.
//!
//! A thread here listens on the bridge for router solicitations (ICMPv6
//! type 133, sent to ff02::2) and answers each with a router advertisement
//! (type 134) to ff02::1 that offers nothing: router lifetime 0 (not a
//! default router), no prefix, neither the managed nor the other-config
//! flag. iPXE's NDP configurator is done at the first one; the nodes' Linux
//! takes no address or route from it. The kernel fills in the ICMPv6
//! checksum on a raw ICMPv6 socket. Each answer is a line in `ra.log`.
//! The socket's calls are `libc`'s: no crate in the tree wraps raw ICMPv6
//! sockets with multicast membership, and the calls are few.
//!
//! This is the test LAN's part only: `sync` renders no IPv6 for the
//! cluster. A real LAN without an IPv6 router costs iPXE nodes the same
//! 16 s (the README says so under the inventory).

use anyhow::{Result, bail};
use std::io::Write as _;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// ICMPv6 message types (RFC 4861).
const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
/// Where solicitations go, and advertisements.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// A router advertisement that configures nothing: type, code, checksum
/// (the kernel's), hop limit 0 (unspecified), no flags, router lifetime 0,
/// reachable time and retransmit timer 0 (unspecified).
pub fn advertisement() -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = ROUTER_ADVERTISEMENT;
    m
}

/// Whether an ICMPv6 message (as a raw socket reads it: no IPv6 header)
/// is a router solicitation.
pub fn is_solicitation(msg: &[u8]) -> bool {
    msg.len() >= 8 && msg[0] == ROUTER_SOLICITATION && msg[1] == 0
}

/// The answering thread; stopped (and joined) on drop.
pub struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn check(rc: libc::c_int, what: &str) -> Result<()> {
    if rc < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, v: &T, what: &str) -> Result<()> {
    // SAFETY: `v` is a live value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(rc, what)
}

/// A raw ICMPv6 socket on `ifname` (index `ifindex`), in ff02::2, whose
/// multicasts leave with hop limit 255 (NDP's rule) and whose reads time
/// out every 200 ms.
fn open(ifname: &str, ifindex: u32) -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let raw = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6) };
    check(raw, "opening a raw ICMPv6 socket")?;
    // SAFETY: `raw` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: the name's bytes with their NUL, as SO_BINDTODEVICE takes.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.as_bytes_with_nul().len() as libc::socklen_t,
        )
    };
    check(rc, &format!("binding the ICMPv6 socket to {ifname}"))?;
    let group = libc::ipv6_mreq {
        ipv6mr_multiaddr: libc::in6_addr {
            s6_addr: ALL_ROUTERS.octets(),
        },
        ipv6mr_interface: ifindex,
    };
    let (v6, hops) = (libc::IPPROTO_IPV6, 255 as libc::c_int);
    setsockopt(
        &fd,
        v6,
        libc::IPV6_ADD_MEMBERSHIP,
        &group,
        "joining ff02::2",
    )?;
    setsockopt(
        &fd,
        v6,
        libc::IPV6_MULTICAST_HOPS,
        &hops,
        "setting hop limit",
    )?;
    setsockopt(
        &fd,
        v6,
        libc::IPV6_MULTICAST_IF,
        &ifindex,
        "setting interface",
    )?;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    setsockopt(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        &tv,
        "setting timeout",
    )?;
    Ok(fd)
}

/// Send [`advertisement`] to ff02::1 on interface `ifindex`.
fn advertise(fd: &OwnedFd, ifindex: u32) -> std::io::Result<()> {
    let msg = advertisement();
    // SAFETY: a zeroed sockaddr_in6 is valid; the fields are set below.
    let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    to.sin6_addr.s6_addr = ALL_NODES.octets();
    to.sin6_scope_id = ifindex;
    // SAFETY: `msg` and `to` live across the call, with their sizes.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&to as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Answer router solicitations on `ifname` until dropped, logging each
/// answer (or why it failed: the bridge has no link-local address for
/// its first second) to `log`.
pub fn start(ifname: &str, log: &Path) -> Result<Responder> {
    let cname = std::ffi::CString::new(ifname)?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {ifname}: {}", std::io::Error::last_os_error());
    }
    let fd = open(ifname, ifindex)?;
    let mut out = super::super::runner::create(log)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let t0 = Instant::now();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !flag.load(Ordering::SeqCst) {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 || !is_solicitation(&buf[..n as usize]) {
                continue;
            }
            let at = t0.elapsed().as_secs_f64();
            let _ = match advertise(&fd, ifindex) {
                Ok(()) => writeln!(out, "{at:.2} solicitation: advertised nothing to ff02::1"),
                Err(e) => writeln!(out, "{at:.2} solicitation: not answered: {e}"),
            };
        }
    });
    Ok(Responder {
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertisement_offers_nothing() {
        let m = advertisement();
        assert_eq!(m[0], 134);
        // No flags, router lifetime 0, no options.
        assert_eq!(m[5], 0);
        assert_eq!(&m[6..8], &[0, 0]);
        assert_eq!(m.len(), 16);
        assert!(is_solicitation(&[133, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_solicitation(&[135, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_solicitation(&[133, 0, 0]));
    }
}
