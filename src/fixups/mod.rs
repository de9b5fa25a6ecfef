//! The diskless fixups: small, idempotent edits of a root tree.
//!
//! Each fixup is one module with `fn apply(root, ctx) -> Result<bool>`
//! (true when it changed something), working only through the image's
//! confined view ([`ImageRoot`]): paths resolve inside the tree, files are
//! replaced by rename, so a symlink at the destination is replaced rather
//! than written through, and nothing is read from outside the image.
//! Running the whole list twice changes nothing the second time.

use crate::imagefs::ImageRoot;
use crate::profile::Profile;
use anyhow::{Context, Result};
use std::path::Path;

pub mod fstab;
pub mod generators;
pub mod hostname;
pub mod identity;
pub mod logs;
pub mod mtab;
pub mod network;
pub mod nodestate;
pub mod release;
pub mod units;

/// What the fixups know about the build.
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    pub profile: &'a Profile,
    /// `server:/path` of the per-host log export, if the nodes mount one.
    pub logs_export: Option<String>,
    /// `server:/path` of the directory holding each host's ssh keys (the
    /// node mounts `<path>/<its name>`).
    pub hostkeys_export: String,
    pub build_id: String,
    pub build_date: String,
    pub profile_digest: String,
}

/// A fixup: its name (for progress and errors) and its function.
pub type Fixup = (&'static str, fn(&ImageRoot, &Ctx<'_>) -> Result<bool>);

/// Every fixup, in the order they run.
pub const ALL: &[Fixup] = &[
    ("fstab", fstab::apply),
    ("network", network::apply),
    ("mtab", mtab::apply),
    ("hostname", hostname::apply),
    ("logs", logs::apply),
    ("nodestate", nodestate::apply),
    ("identity", identity::apply),
    ("units", units::apply),
    ("generators", generators::apply),
    ("release", release::apply),
];

/// Run every fixup; returns the names of those that changed something.
pub fn apply_all(root: &ImageRoot, ctx: &Ctx<'_>) -> Result<Vec<&'static str>> {
    let mut changed = Vec::new();
    for (name, f) in ALL {
        if f(root, ctx).with_context(|| format!("fixup {name}"))? {
            changed.push(*name);
        }
    }
    Ok(changed)
}

/// Write `content` at `rel` unless it is already exactly that (same bytes,
/// regular file, same mode). Returns whether it wrote.
pub fn write_file(root: &ImageRoot, rel: &str, content: &str, mode: u32) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(m) = root.symlink_metadata(rel)?
        && m.is_file()
        && m.permissions().mode() & 0o7777 == mode
        && root.read_opt(rel)?.as_deref() == Some(content.as_bytes())
    {
        return Ok(false);
    }
    root.write(rel, content.as_bytes(), mode)?;
    Ok(true)
}

/// Make `rel` a symlink to `target` unless it already is.
pub fn symlink(root: &ImageRoot, rel: &str, target: &str) -> Result<bool> {
    if root.read_link(rel)?.as_deref() == Some(Path::new(target)) {
        return Ok(false);
    }
    root.symlink(rel, target)?;
    Ok(true)
}

/// Whether `rel` is a link to `/dev/null`: how systemd masks a unit or
/// turns off a generator.
pub fn is_masked(root: &ImageRoot, rel: &str) -> Result<bool> {
    Ok(root
        .read_link(rel)?
        .is_some_and(|t| t.as_os_str() == "/dev/null"))
}

/// Remove `rel` (a file or symlink) if present.
pub fn remove(root: &ImageRoot, rel: &str) -> Result<bool> {
    root.remove_file(rel)
}

/// Create a directory (and parents) with `mode` unless it exists.
pub fn dir(root: &ImageRoot, rel: &str, mode: u32) -> Result<bool> {
    if !root.create_dir_all(rel, mode)? {
        return Ok(false);
    }
    root.set_mode(rel, mode)?;
    Ok(true)
}

#[cfg(test)]
pub mod testutil {
    //! A fake root and a context for fixup unit tests.
    use super::*;

    pub fn profile(extra: &str) -> Profile {
        crate::profile::parse(
            &format!("name = \"t\"\n{extra}"),
            Path::new("t.toml"),
            Path::new("."),
        )
        .unwrap()
        .profile
    }

    pub fn ctx(p: &Profile) -> Ctx<'_> {
        Ctx {
            profile: p,
            logs_export: if p.nfs.root_mode == crate::profile::RootMode::Ro {
                Some("10.0.2.2:/srv/logs/t".into())
            } else {
                None
            },
            hostkeys_export: "10.0.2.2:/srv/nfsroot/.nfsroot/hostkeys".into(),
            build_id: "20260101T000000Z-abcdef".into(),
            build_date: "2026-01-01T00:00:00Z".into(),
            profile_digest: "00".repeat(32),
        }
    }

    /// A root with the files a freshly bootstrapped Debian has.
    pub fn fake_root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in [
            "etc/network",
            "etc/ssh",
            "usr/share/zoneinfo/Etc",
            "usr/sbin",
            "var/lib/dbus",
            "root",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::write(r.join("etc/hostname"), "buildhost\n").unwrap();
        std::fs::write(r.join("etc/resolv.conf"), "nameserver 192.0.2.53\n").unwrap();
        std::fs::write(
            r.join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        std::fs::write(r.join("etc/ssh/ssh_host_ed25519_key.pub"), "pub").unwrap();
        std::fs::write(r.join("usr/sbin/sshd"), "").unwrap();
        std::fs::write(
            r.join("etc/shadow"),
            "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/mtab"), "stale\n").unwrap();
        std::fs::write(r.join("usr/share/zoneinfo/Etc/UTC"), "TZif").unwrap();
        std::fs::write(r.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        d
    }

    /// The confined view of a fake root.
    pub fn img(root: &Path) -> ImageRoot {
        ImageRoot::open(root).unwrap()
    }

    /// Apply `f` twice: the first run must change, the second must not.
    pub fn idempotent(f: fn(&ImageRoot, &Ctx<'_>) -> Result<bool>, root: &Path, c: &Ctx<'_>) {
        let root = &img(root);
        assert!(f(root, c).unwrap(), "first run should change the tree");
        assert!(!f(root, c).unwrap(), "second run should change nothing");
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;

    #[test]
    fn links_out_of_the_tree_are_replaced_never_followed() {
        let p = profile("");
        let c = ctx(&p);
        let d = fake_root();
        let outside = tempfile::tempdir().unwrap();
        let o = outside.path();
        std::fs::write(o.join("fstab"), "keep").unwrap();
        std::fs::write(o.join("ssh_host_rsa_key"), "host's own key").unwrap();
        std::fs::write(o.join("shadow"), "root:secret:1::::::\n").unwrap();
        let r = d.path();
        for (name, target) in [
            ("etc/fstab", o.join("fstab")),
            ("etc/shadow", o.join("shadow")),
        ] {
            std::fs::remove_file(r.join(name)).ok();
            std::os::unix::fs::symlink(target, r.join(name)).unwrap();
        }
        std::fs::remove_dir_all(r.join("etc/ssh")).unwrap();
        std::os::unix::fs::symlink(o, r.join("etc/ssh")).unwrap();
        // A directory link that leads nowhere inside is refused by name.
        let e = super::apply_all(&img(r), &c).unwrap_err();
        assert!(format!("{e:#}").contains("etc/ssh"), "{e:#}");
        std::fs::remove_file(r.join("etc/ssh")).unwrap();
        std::fs::create_dir(r.join("etc/ssh")).unwrap();
        // The shadow link resolves inside the image, where there is none.
        super::apply_all(&img(r), &c).unwrap();
        assert_eq!(std::fs::read_to_string(o.join("fstab")).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(o.join("ssh_host_rsa_key")).unwrap(),
            "host's own key"
        );
        assert_eq!(
            std::fs::read_to_string(o.join("shadow")).unwrap(),
            "root:secret:1::::::\n"
        );
        assert!(
            std::fs::symlink_metadata(r.join("etc/fstab"))
                .unwrap()
                .is_file()
        );
    }

    #[test]
    fn all_fixups_are_idempotent_together() {
        for extra in ["", "[nfs]\nroot_mode = \"rw\"\n"] {
            let p = profile(extra);
            let c = ctx(&p);
            let d = fake_root();
            assert!(!super::apply_all(&img(d.path()), &c).unwrap().is_empty());
            assert!(super::apply_all(&img(d.path()), &c).unwrap().is_empty());
        }
    }
}
