//! `nfsroot doctor`: every host prerequisite, the Debian package that
//! provides it, and whether it is here.

use crate::exec::find_tool;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Check {
    pub what: String,
    pub package: String,
    pub needed_for: String,
    pub ok: bool,
    pub found: Option<String>,
}

/// (program or file, package, what needs it)
pub const PREREQS: &[(&str, &str, &str)] = &[
    ("mmdebstrap", "mmdebstrap", "build (preferred bootstrapper)"),
    (
        "debootstrap",
        "debootstrap",
        "build (fallback bootstrapper)",
    ),
    ("unshare", "util-linux", "build, exec, boot-test"),
    ("chroot", "coreutils", "exec, initramfs-tools backend"),
    (
        "ssh-keygen",
        "openssh-client",
        "sync (per-host ssh host keys)",
    ),
    ("/usr/lib/PXELINUX/pxelinux.0", "pxelinux", "publish"),
    (
        "/usr/lib/syslinux/modules/bios/ldlinux.c32",
        "syslinux-common",
        "publish",
    ),
    ("qemu-system-x86_64", "qemu-system-x86", "boot-test"),
    (
        "/usr/lib/ipxe/qemu/efi-virtio.rom",
        "ipxe-qemu",
        "boot-test --mode pxe",
    ),
    ("ganesha.nfsd", "nfs-ganesha", "boot-test"),
    (
        "/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so",
        "nfs-ganesha-vfs",
        "boot-test",
    ),
    ("rpcbind", "rpcbind", "boot-test"),
    ("ip", "iproute2", "boot-test"),
];

pub fn run() -> Vec<Check> {
    PREREQS
        .iter()
        .map(|(what, pkg, why)| {
            let found = if what.starts_with('/') {
                Path::new(what).exists().then(|| what.to_string())
            } else {
                find_tool(what).map(|p| p.display().to_string())
            };
            Check {
                what: what.to_string(),
                package: pkg.to_string(),
                needed_for: why.to_string(),
                ok: found.is_some(),
                found,
            }
        })
        .collect()
}
