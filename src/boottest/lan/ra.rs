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
//! The socket is `rustix`'s (its `net` calls), so nothing here is unsafe.
//! It is not bound to the bridge (rustix has no `SO_BINDTODEVICE`): it
//! joins ff02::2 on the bridge only, and the test's private network
//! namespace has no other link that carries IPv6.
//!
//! This is the test LAN's part only: `sync` renders no IPv6 for the
//! cluster. On a real LAN without an IPv6 router, iPXE nodes may wait
//! the same (the README says so under the inventory).

use anyhow::{Context, Result};
use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketType, sockopt};
use std::io::Write as _;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// A raw ICMPv6 socket in ff02::2 on `ifname`, whose multicasts leave
/// there with hop limit 255 (NDP's rule) and whose reads time out every
/// 200 ms; and the interface's index.
fn open(ifname: &str) -> Result<(OwnedFd, u32)> {
    let fd = net::socket(
        AddressFamily::INET6,
        SocketType::RAW,
        Some(net::ipproto::ICMPV6),
    )
    .context("opening a raw ICMPv6 socket")?;
    let ifindex = net::netdevice::name_to_index(&fd, ifname)
        .with_context(|| format!("finding interface {ifname}"))?;
    sockopt::set_ipv6_add_membership(&fd, &ALL_ROUTERS, ifindex)
        .with_context(|| format!("joining ff02::2 on {ifname}"))?;
    sockopt::set_ipv6_multicast_if(&fd, ifindex).context("choosing the interface")?;
    sockopt::set_ipv6_multicast_hops(&fd, 255).context("setting the hop limit")?;
    sockopt::set_socket_timeout(
        &fd,
        sockopt::Timeout::Recv,
        Some(Duration::from_millis(200)),
    )
    .context("setting the read timeout")?;
    Ok((fd, ifindex))
}

/// Answer router solicitations on `ifname` until dropped, logging each
/// answer (or why it failed: the bridge has no link-local address for
/// its first second) to `log`.
pub fn start(ifname: &str, log: &Path) -> Result<Responder> {
    let (fd, ifindex) = open(ifname)?;
    let mut out = super::super::runner::create(log)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let t0 = Instant::now();
    let to = SocketAddrV6::new(ALL_NODES, 0, 0, ifindex);
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !flag.load(Ordering::SeqCst) {
            let n = match net::recv(&fd, &mut buf[..], RecvFlags::empty()) {
                Ok((n, _)) => n,
                Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INTR => continue,
                Err(e) => {
                    // Anything else would repeat at once: stop answering.
                    let _ = writeln!(out, "reading solicitations: {e}; no more answers");
                    break;
                }
            };
            if !is_solicitation(&buf[..n]) {
                continue;
            }
            let at = t0.elapsed().as_secs_f64();
            let _ = match net::sendto(&fd, &advertisement(), SendFlags::empty(), &to) {
                Ok(_) => writeln!(out, "{at:.2} solicitation: advertised nothing to ff02::1"),
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
