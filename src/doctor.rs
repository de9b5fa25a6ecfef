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
    (
        "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "ovmf",
        "boot-test --firmware uefi",
    ),
];

/// Every prerequisite as (program or file, package, what needs it): the
/// loaders publish copies (one list, in [`crate::publish::BOOT_FILES`]),
/// then [`PREREQS`].
pub fn prerequisites() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    crate::publish::BOOT_FILES
        .iter()
        .map(|(src, _, pkg)| (*src, *pkg, "publish"))
        .chain(PREREQS.iter().copied())
}

/// Check each of [`prerequisites`].
pub fn run() -> Vec<Check> {
    prerequisites()
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

/// What `nfsroot doctor` found: the prerequisites and the mirror builds
/// would use.
#[derive(Debug, Serialize)]
pub struct Findings {
    pub checks: Vec<Check>,
    /// The mirror from the host's apt sources, if one was found.
    pub mirror: Option<String>,
    /// Why no mirror was found.
    #[serde(skip)]
    pub mirror_error: Option<String>,
}

/// Check the prerequisites and the mirror in the apt sources at `apt_dir`.
pub fn findings(apt_dir: &Path) -> Findings {
    let (mirror, mirror_error) = match crate::bootstrap::detect_mirror(apt_dir) {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    Findings {
        checks: run(),
        mirror,
        mirror_error,
    }
}

impl Findings {
    /// A table of the checks and the `apt-get install` line for what is
    /// missing (missing optional tools are information, not failure).
    pub fn text(&self) -> String {
        let mut s = match (&self.mirror, &self.mirror_error) {
            (Some(m), _) => format!("mirror {m} (from the host's apt sources)\n\n"),
            (None, e) => format!("mirror: {}\n\n", e.as_deref().unwrap_or("none")),
        };
        let mut missing: Vec<&str> = Vec::new();
        for c in &self.checks {
            s += &format!(
                "{:4} {:50} {:18} {}\n",
                if c.ok { "ok" } else { "MISS" },
                c.what,
                c.package,
                c.needed_for
            );
            if !c.ok && !missing.contains(&c.package.as_str()) {
                missing.push(&c.package);
            }
        }
        if !missing.is_empty() {
            s += &format!(
                "\ninstall what is missing with: apt-get install {}\n",
                missing.join(" ")
            );
        }
        s
    }
}
