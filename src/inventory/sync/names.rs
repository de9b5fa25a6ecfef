//! The per-host boot config names sync owns, recorded in
//! `<state>/inventory/pxelinux-names.json`: PXELINUX names as they are
//! (`01-<mac>`, hex IP, in `pxelinux.cfg/`), GRUB names with their
//! directory (`grub/grub.cfg-01-<mac>`, see [`crate::grub`]).
//!
//! Only names a loader looks up per host ([`is_host_file`]) are ever read
//! back from the record, so a damaged record cannot make sync remove a
//! file outside `pxelinux.cfg/` and `grub/`.

use crate::fsutil;
use crate::image::Layout;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// `01-aa-bb-..` or an 8-digit upper-case hex address: names PXELINUX
/// looks up per host.
pub(super) fn is_pxelinux_host_file(n: &str) -> bool {
    let mac = n.len() == 20
        && n.starts_with("01-")
        && n[3..]
            .split('-')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    let hex = n.len() == 8
        && n.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    mac || hex
}

/// A recorded per-host name: a PXELINUX one, or `grub/` and a GRUB one.
pub(super) fn is_host_file(n: &str) -> bool {
    is_pxelinux_host_file(n) || grub_name(n).is_some()
}

/// The GRUB host file name of a recorded `grub/<name>`.
pub(super) fn grub_name(n: &str) -> Option<&str> {
    n.strip_prefix(crate::grub::DIR)?
        .strip_prefix('/')
        .filter(|g| crate::grub::is_host_file(g))
}

/// The recorded name for a GRUB host file.
pub(super) fn grub_record_name(g: &str) -> String {
    format!("{}/{g}", crate::grub::DIR)
}

/// Where a recorded per-host name lives.
pub(super) fn name_path(layout: &Layout, n: &str) -> PathBuf {
    match grub_name(n) {
        Some(g) => crate::publish::grub_dir(layout).join(g),
        None => crate::publish::cfg_dir(layout).join(n),
    }
}

fn names_record(layout: &Layout) -> PathBuf {
    layout
        .state_dir()
        .join("inventory")
        .join("pxelinux-names.json")
}

/// The per-host names recorded as ours. Only names PXELINUX looks up per
/// host count: an entry such as `../x` in a damaged record never makes
/// sync remove a file outside `pxelinux.cfg/`.
pub(super) fn load_names(layout: &Layout) -> Result<BTreeSet<String>> {
    let p = names_record(layout);
    match std::fs::read(&p) {
        Ok(b) => {
            let all: BTreeSet<String> =
                serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display()))?;
            Ok(all.into_iter().filter(|n| is_host_file(n)).collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

pub(super) fn save_names(layout: &Layout, names: &BTreeSet<String>) -> Result<()> {
    let p = names_record(layout);
    fsutil::mkdir_p(p.parent().expect("has a parent"))?;
    let mut t = serde_json::to_string_pretty(names)?;
    t.push('\n');
    fsutil::atomic_write(&p, t.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pxelinux_host_file_pattern() {
        assert!(is_pxelinux_host_file("01-52-54-00-ab-cd-01"));
        assert!(is_pxelinux_host_file("0A120102"));
        assert!(!is_pxelinux_host_file("default"));
        assert!(!is_pxelinux_host_file("nfsroot-minimal"));
        assert!(!is_pxelinux_host_file("0a120102"));
        assert!(is_host_file("grub/grub.cfg-01-52-54-00-ab-cd-01"));
        assert!(is_host_file("grub/grub.cfg-10.18.1.2"));
        for bad in [
            "grub/../x",
            "grub/grub.cfg",
            "grub/nfsroot-a.cfg",
            "../grub/grub.cfg-10.1.1.1",
        ] {
            assert!(!is_host_file(bad), "{bad}");
        }
    }
}
