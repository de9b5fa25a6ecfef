//! systemd generators a diskless node does not need, disabled the way
//! systemd.generator(7) documents: a link to `/dev/null` of the same name in
//! `/etc/systemd/system-generators`, which overrides the one in
//! `/usr/lib/systemd/system-generators`.
//!
//! systemd runs every generator at boot, before it loads a unit (and again
//! at each `daemon-reload`). Each is a process linked against systemd's
//! shared library; on an emulated 2-CPU node the thirteen of a Debian 12
//! image took 3.3-4.1 s between "Hostname set" and "Queued start job", and
//! 2.3-2.6 s without the ones below (nfsroot-it fixture, direct boots).
//! The ones left (fstab, getty, debug, rc-local, run, sysv, rpc-pipefs) do
//! work a node needs or an admin may ask for on the kernel command line.
//!
//! The cryptsetup, integritysetup and veritysetup generators only read
//! their tables in `/etc` (a diskless root has no encrypted, integrity or
//! verity volumes of its own); each stays when the image has its table,
//! so an image that sets up an encrypted scratch disk keeps it. Like the
//! unit masks, the links are made at build time: an image that gains such
//! a table later needs a rebuild (or the link removed).

use super::{Ctx, dir, is_masked, remove, symlink};
use crate::imagefs::ImageRoot;
use anyhow::Result;

/// Where the disabling links go.
const ETC: &str = "/etc/systemd/system-generators";
/// Where the image's generators are.
const LIB: &[&str] = &[
    "/usr/lib/systemd/system-generators",
    "/lib/systemd/system-generators",
];

/// Disabled generators: `(generator, table that keeps it, why)`.
pub const DISABLED: &[(&str, Option<&str>, &str)] = &[
    (
        "systemd-gpt-auto-generator",
        None,
        "mounts the partitions of the disk / is on (GPT auto-discovery): / is on NFS",
    ),
    (
        "systemd-hibernate-resume-generator",
        None,
        "resumes from the swap named by resume=: a diskless node has no swap to hibernate to",
    ),
    (
        "systemd-system-update-generator",
        None,
        "boots into an offline update when /system-update exists: a shared image is upgraded on the master, not by every node",
    ),
    (
        "systemd-cryptsetup-generator",
        Some("/etc/crypttab"),
        "sets up the encrypted volumes of /etc/crypttab, which the image does not have",
    ),
    (
        "systemd-integritysetup-generator",
        Some("/etc/integritytab"),
        "sets up the integrity volumes of /etc/integritytab, which the image does not have",
    ),
    (
        "systemd-veritysetup-generator",
        Some("/etc/veritytab"),
        "sets up the verity volumes of /etc/veritytab, which the image does not have",
    ),
];

pub fn apply(root: &ImageRoot, _ctx: &Ctx<'_>) -> Result<bool> {
    let mut c = false;
    for (name, table, _) in DISABLED {
        let link = format!("{ETC}/{name}");
        let keep = match table {
            Some(t) => root.symlink_metadata(t)?.is_some(),
            None => false,
        };
        if keep {
            if is_masked(root, &link)? {
                c |= remove(root, &link)?;
            }
            continue;
        }
        if !LIB.iter().any(|d| root.is_file(format!("{d}/{name}"))) {
            continue;
        }
        if !root.is_dir(ETC) {
            c |= dir(root, ETC, 0o755)?;
        }
        c |= symlink(root, &link, "/dev/null")?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixups::testutil::*;
    use std::path::Path;

    fn generators(r: &Path, names: &[&str]) {
        let d = r.join("usr/lib/systemd/system-generators");
        std::fs::create_dir_all(&d).unwrap();
        for n in names {
            std::fs::write(d.join(n), "").unwrap();
        }
    }

    fn link(r: &Path, name: &str) -> Option<String> {
        std::fs::read_link(r.join("etc/systemd/system-generators").join(name))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    #[test]
    fn disables_what_a_diskless_node_does_not_need() {
        let d = fake_root();
        let r = d.path();
        generators(
            r,
            &[
                "systemd-gpt-auto-generator",
                "systemd-cryptsetup-generator",
                "systemd-fstab-generator",
                "systemd-getty-generator",
                "systemd-veritysetup-generator",
            ],
        );
        let p = profile("");
        idempotent(apply, r, &ctx(&p));
        for g in [
            "systemd-gpt-auto-generator",
            "systemd-cryptsetup-generator",
            "systemd-veritysetup-generator",
        ] {
            assert_eq!(link(r, g).as_deref(), Some("/dev/null"), "{g}");
        }
        // Kept: needed, or not in the image.
        for g in [
            "systemd-fstab-generator",
            "systemd-getty-generator",
            "systemd-hibernate-resume-generator",
        ] {
            assert_eq!(link(r, g), None, "{g}");
        }
    }

    #[test]
    fn a_table_in_the_image_keeps_its_generator() {
        let d = fake_root();
        let r = d.path();
        generators(
            r,
            &["systemd-cryptsetup-generator", "systemd-gpt-auto-generator"],
        );
        let p = profile("");
        let c = ctx(&p);
        assert!(apply(&img(r), &c).unwrap());
        assert_eq!(
            link(r, "systemd-cryptsetup-generator").as_deref(),
            Some("/dev/null")
        );
        std::fs::write(r.join("etc/crypttab"), "scratch /dev/sdb none luks\n").unwrap();
        assert!(apply(&img(r), &c).unwrap());
        assert_eq!(link(r, "systemd-cryptsetup-generator"), None);
        assert_eq!(
            link(r, "systemd-gpt-auto-generator").as_deref(),
            Some("/dev/null")
        );
        assert!(!apply(&img(r), &c).unwrap());
    }

    #[test]
    fn every_disabled_generator_says_why() {
        for (name, _, why) in DISABLED {
            assert!(name.ends_with("-generator") && !why.is_empty(), "{name}");
        }
    }
}
