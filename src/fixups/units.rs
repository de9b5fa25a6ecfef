//! systemd units of a diskless node: mask what writes shared image state or
//! serves local disks ([`DEFAULT_MASK`], by root mode), drop the virtual
//! console gettys, and apply the profile's `[units]` (`enable`, `mask`,
//! `unmask`).
//!
//! Done here on files, through the confined view, rather than by running
//! `systemctl --root=<image>`: `systemctl` would run no binary of the image,
//! but it resolves every path in the untrusted tree itself (as root, on the
//! master), outside [`ImageRoot`], and the host's systemctl may be older or
//! newer than the image's. What is needed is small and exact:
//!
//! - mask: `/etc/systemd/system/<unit>` -> `/dev/null` (as `systemctl mask`);
//! - unmask: remove that link if it points to `/dev/null`;
//! - enable: the unit's `[Install]` section, as `systemctl enable` reads it:
//!   a link `<target>.wants/<unit>` (`.requires` for `RequiredBy=`) and
//!   `Alias=` links in `/etc/systemd/system` to the unit file, `Also=` units
//!   enabled too; a template instance (`getty@tty1.service`) links to the
//!   template's file under the instance's name.
//!
//! Some units are only disabled ([`DEFAULT_DISABLE`]): started on demand
//! by what needs them, not by every boot.
//!
//! The serial console needs nothing: systemd's getty generator starts a
//! serial getty on the kernel's `console=` (the profile's `boot.serial`).
//! The tty1-6 gettys are dropped (`getty.target.wants/getty@tty*.service`,
//! and `getty-static.service`, which starts tty2-6 when there is no D-Bus)
//! unless the profile enables them.
//!
//! A unit the profile names that the image does not have is an error
//! naming the profile field and the unit; it is raised at build, on the
//! staged tree, before anything is swapped into place (the profile itself
//! is checked at load time without an image). Default masks of units the
//! image lacks are skipped.

use super::{Ctx, is_masked, remove, symlink};
use crate::imagefs::ImageRoot;
use crate::profile::{Profile, RootMode};
use anyhow::{Result, bail};

/// Where masks and enablement links go.
const ETC: &str = "/etc/systemd/system";
/// Where unit files are looked up, in systemd's order.
const SEARCH: &[&str] = &[
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// When a default mask applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    Always,
    /// On a read-write root. A read-only root is shared too, but nothing
    /// can write it; these units are then pointless (their state would
    /// land in a per-boot tmpfs) and slow.
    RwRoot,
    /// Unless each node keeps its own login records on the server
    /// ([`super::logs::per_host_logins`]): on a read-write root the nodes
    /// would share /var/log/wtmp; on a read-only root it is on the per-boot
    /// tmpfs, so nobody can read the records once the node reboots.
    NoOwnWtmp,
    /// Unless a mount of the profile asks for Kerberos (`sec=krb5`,
    /// `krb5i`, `krb5p`: see [`wants_kerberos`]).
    NoKerberos,
}

/// Whether the root's or an extra mount's NFS options name a Kerberos
/// flavour (`sec=krb5...`, also in a list such as `sec=sys:krb5`).
pub fn wants_kerberos(p: &Profile) -> bool {
    std::iter::once(p.nfs.options.as_str())
        .chain(p.mounts.iter().map(|m| m.options.as_str()))
        .flat_map(|o| o.split(','))
        .filter_map(|o| o.trim().strip_prefix("sec="))
        .any(|flavours| flavours.split(':').any(|f| f.starts_with("krb5")))
}

/// Masked by default: `(unit, when, why)`.
pub const DEFAULT_MASK: &[(&str, When, &str)] = &[
    (
        "apt-daily.timer",
        When::Always,
        "downloads package lists into the shared /var/lib/apt and /var/cache/apt from every node at once",
    ),
    (
        "apt-daily-upgrade.timer",
        When::Always,
        "would upgrade the shared image from every node; images are upgraded on the master",
    ),
    (
        "dpkg-db-backup.timer",
        When::Always,
        "rewrites the shared /var/backups/dpkg.* daily from every node",
    ),
    (
        "e2scrub_all.timer",
        When::Always,
        "scrubs local ext4 on LVM: a diskless node has none",
    ),
    (
        "e2scrub_reap.service",
        When::Always,
        "removes local e2scrub snapshots: a diskless node has none",
    ),
    (
        "fstrim.timer",
        When::Always,
        "trims local disks: a diskless node has none",
    ),
    (
        "networking.service",
        When::Always,
        "ifup -a has nothing to do (lo is systemd's, eth0 is the initramfs's and manual) but held network-online.target 16 s",
    ),
    (
        "getty-static.service",
        When::Always,
        "without D-Bus it starts gettys on tty2-6: virtual consoles nobody sees",
    ),
    (
        "systemd-machine-id-commit.service",
        When::Always,
        "would write the node's own id (the initramfs binds it read-only over /etc/machine-id) into the shared file",
    ),
    (
        "rpc-statd-notify.service",
        When::Always,
        "sm-notify writes /var/lib/nfs state shared by every node; nodes mount with nolock",
    ),
    (
        "rpc-gssd.service",
        When::NoKerberos,
        "Kerberos for NFS, which the profile's mounts do not ask for; nfs-client.target waits for it, and it for the rpc_pipefs mount after tmpfiles, so every NFS mount (the log export too) waited for sysinit (2 s under TCG)",
    ),
    (
        "modprobe@dm_mod.service",
        When::Always,
        "loads device-mapper for local disks, which a diskless node has none of (6 s of CPU beside sysinit under TCG)",
    ),
    (
        "modprobe@loop.service",
        When::Always,
        "preloads loop for local images; /dev/loop-control (kmod-static-nodes) still loads it on first use",
    ),
    (
        "modprobe@fuse.service",
        When::Always,
        "preloads fuse; /dev/fuse (kmod-static-nodes) still loads it on first use",
    ),
    (
        "man-db.timer",
        When::RwRoot,
        "rebuilds the shared /var/cache/man from every node; the master's apt runs do it",
    ),
    (
        "logrotate.timer",
        When::RwRoot,
        "rotates the shared /var/log from every node; logs rotate on the master",
    ),
    (
        "systemd-tmpfiles-clean.timer",
        When::RwRoot,
        "ages out files in shared directories (/var/cache/man, coredumps) from every node; /tmp and /var/tmp are per-node tmpfs",
    ),
    (
        "systemd-random-seed.service",
        When::Always,
        "every node would load and save the same shared seed (rw) or one on a per-boot tmpfs (ro): nothing of the node's own; 3 s before sysinit under TCG",
    ),
    (
        "systemd-update-utmp.service",
        When::NoOwnWtmp,
        "appends boot records to a shared /var/log/wtmp, or to a per-boot tmpfs one nobody reads; 3.5-4 s on sysinit's critical path under TCG",
    ),
    (
        "systemd-update-utmp-runlevel.service",
        When::NoOwnWtmp,
        "appends runlevel changes to a shared /var/log/wtmp, or to a per-boot tmpfs one nobody reads",
    ),
    (
        "systemd-journal-flush.service",
        When::Always,
        "moves the journal from /run to /var/log/journal, which the nodes' volatile journald (logs fixup) never keeps; tmpfiles-setup waited for it and the /var/log mount it pulls in (0.5-0.9 s under TCG)",
    ),
    (
        "systemd-pstore.service",
        When::RwRoot,
        "archives crash records into the shared /var/lib/systemd/pstore",
    ),
];

/// Disabled by default (their `<target>.wants/` link removed, the unit
/// kept): `(unit, target, why)`. Whatever needs one still starts it.
pub const DEFAULT_DISABLE: &[(&str, &str, &str)] = &[(
    "rpcbind.service",
    "multi-user.target",
    "nodes mount with nolock and serve no RPC; rpcbind.socket stays, so statd or NIS start it when they ask (6 s in multi-user.target's wait under TCG)",
)];

/// The units masked by default for a profile.
pub fn default_mask(p: &Profile) -> impl Iterator<Item = &'static str> {
    let rw = p.nfs.root_mode == RootMode::Rw;
    let own_wtmp = super::logs::per_host_logins(p);
    let krb5 = wants_kerberos(p);
    DEFAULT_MASK
        .iter()
        .filter(move |(_, when, _)| match when {
            When::Always => true,
            When::RwRoot => rw,
            When::NoOwnWtmp => !own_wtmp,
            When::NoKerberos => !krb5,
        })
        .map(|(u, _, _)| *u)
}

/// Every unit the image's nodes should have masked: the defaults for the
/// root mode and the profile's `mask`, less what it unmasks or enables.
/// node.conf carries this list, so the ready hook checks it on the node.
pub fn masked(p: &Profile) -> Vec<String> {
    let u = &p.units;
    let mut out: Vec<String> = default_mask(p).map(String::from).collect();
    out.extend(u.mask.iter().cloned());
    out.retain(|m| !u.unmask.contains(m) && !u.enable.contains(m));
    out.dedup();
    out
}

pub fn apply(root: &ImageRoot, ctx: &Ctx<'_>) -> Result<bool> {
    let u = &ctx.profile.units;
    for (field, list) in [
        ("enable", &u.enable),
        ("mask", &u.mask),
        ("unmask", &u.unmask),
    ] {
        for name in list {
            if unit_file(root, name)?.is_none() {
                bail!("profile units.{field}: the image has no unit {name}");
            }
        }
    }
    let mut c = false;
    for name in masked(ctx.profile) {
        if unit_file(root, &name)?.is_some() {
            c |= symlink(root, &format!("{ETC}/{name}"), "/dev/null")?;
        }
    }
    for name in u.unmask.iter().chain(&u.enable) {
        c |= unmask(root, name)?;
    }
    c |= drop_vt_gettys(root, &u.enable)?;
    for (name, target, _) in DEFAULT_DISABLE {
        if !u.enable.iter().any(|e| e == name) {
            c |= remove(root, &format!("{ETC}/{target}.wants/{name}"))?;
        }
    }
    for name in &u.enable {
        c |= enable(root, name, &mut Vec::new())?;
    }
    Ok(c)
}

/// The path of a unit's file in the image (a template's for an instance),
/// not counting masks.
pub fn unit_file(root: &ImageRoot, name: &str) -> Result<Option<String>> {
    let file = template_of(name).unwrap_or_else(|| name.to_string());
    for dir in SEARCH {
        let p = format!("{dir}/{file}");
        if is_masked(root, &p)? {
            continue;
        }
        if root.is_file(&p) {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// `getty@tty1.service` -> `getty@.service`; None for a non-instance.
fn template_of(name: &str) -> Option<String> {
    let (stem, ty) = name.rsplit_once('.')?;
    let (prefix, instance) = stem.split_once('@')?;
    (!instance.is_empty()).then(|| format!("{prefix}@.{ty}"))
}

fn unmask(root: &ImageRoot, name: &str) -> Result<bool> {
    let p = format!("{ETC}/{name}");
    if is_masked(root, &p)? {
        return remove(root, &p);
    }
    Ok(false)
}

/// Remove the virtual console gettys' links unless the profile enables them.
fn drop_vt_gettys(root: &ImageRoot, enable: &[String]) -> Result<bool> {
    let dir = format!("{ETC}/getty.target.wants");
    let mut c = false;
    for e in root.read_dir(&dir)?.unwrap_or_default() {
        let name = e.name.to_string_lossy().to_string();
        if name.starts_with("getty@tty") && !enable.contains(&name) {
            c |= remove(root, &format!("{dir}/{name}"))?;
        }
    }
    Ok(c)
}

/// `systemctl enable` on files: the `[Install]` links of `name`, then of
/// its `Also=` units (`seen` stops loops).
fn enable(root: &ImageRoot, name: &str, seen: &mut Vec<String>) -> Result<bool> {
    if seen.iter().any(|s| s == name) {
        return Ok(false);
    }
    seen.push(name.to_string());
    let Some(file) = unit_file(root, name)? else {
        bail!("enabling {name}: the image has no such unit");
    };
    let text = String::from_utf8_lossy(&root.read(&file)?).to_string();
    let install = parse_install(&text);
    let instance = match name.split_once('@') {
        Some((_, i)) if !i.starts_with('.') => name.to_string(),
        Some(_) => match &install.default_instance {
            Some(d) => name.replacen("@.", &format!("@{d}."), 1),
            None => {
                bail!("enabling {name}: a template needs an instance (e.g. getty@tty1.service)")
            }
        },
        None => name.to_string(),
    };
    let mut c = false;
    for (targets, suffix) in [
        (&install.wanted_by, "wants"),
        (&install.required_by, "requires"),
    ] {
        for t in targets {
            c |= symlink(root, &format!("{ETC}/{t}.{suffix}/{instance}"), &file)?;
        }
    }
    for a in &install.alias {
        c |= symlink(root, &format!("{ETC}/{a}"), &file)?;
    }
    for also in &install.also {
        c |= enable(root, also, seen)?;
    }
    Ok(c)
}

/// The `[Install]` section of a unit file.
#[derive(Debug, Default, PartialEq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
    pub default_instance: Option<String>,
}

/// Parse `[Install]` as systemd does: space-separated lists that add up
/// over repeated keys, an empty value resets the list, `#`/`;` comments,
/// backslash line continuations, section and key names case-sensitive.
pub fn parse_install(text: &str) -> Install {
    let mut out = Install::default();
    let mut in_install = false;
    let joined = text.replace("\\\n", " ");
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        let Some((k, v)) = line.split_once('=').filter(|_| in_install) else {
            continue;
        };
        let list = match k.trim() {
            "WantedBy" => &mut out.wanted_by,
            "RequiredBy" => &mut out.required_by,
            "Alias" => &mut out.alias,
            "Also" => &mut out.also,
            "DefaultInstance" => {
                let v = v.trim();
                out.default_instance = (!v.is_empty()).then(|| v.to_string());
                continue;
            }
            _ => continue,
        };
        if v.trim().is_empty() {
            list.clear();
        }
        list.extend(v.split_whitespace().map(String::from));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::path::Path;

    const LIB: &str = "usr/lib/systemd/system";

    fn unit(r: &Path, name: &str, install: &str) {
        std::fs::create_dir_all(r.join(LIB)).unwrap();
        std::fs::write(
            r.join(LIB).join(name),
            format!(
                "[Unit]\nDescription=x\n\n[Service]\nExecStart=/bin/true\n\n[Install]\n{install}"
            ),
        )
        .unwrap();
    }

    /// A root with the units a bookworm image has.
    fn units_root() -> tempfile::TempDir {
        let d = fake_root();
        let r = d.path();
        for t in [
            "apt-daily.timer",
            "fstrim.timer",
            "man-db.timer",
            "logrotate.timer",
        ] {
            unit(r, t, "WantedBy=timers.target\n");
        }
        unit(r, "e2scrub_reap.service", "WantedBy=multi-user.target\n");
        unit(
            r,
            "getty@.service",
            "WantedBy=getty.target\nDefaultInstance=tty1\n",
        );
        unit(
            r,
            "rsync.service",
            "WantedBy=multi-user.target\nAlso=rsync.socket\n",
        );
        unit(r, "rsync.socket", "WantedBy=sockets.target\n");
        let wants = r.join("etc/systemd/system/getty.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(
            "/usr/lib/systemd/system/getty@.service",
            wants.join("getty@tty1.service"),
        )
        .unwrap();
        d
    }

    fn link(r: &Path, rel: &str) -> Option<String> {
        std::fs::read_link(r.join(rel))
            .ok()
            .map(|p| p.to_string_lossy().to_string())
    }

    #[test]
    fn ro_defaults_mask_shared_state_timers_and_drop_vt_gettys() {
        let p = profile("");
        let d = units_root();
        let r = d.path();
        idempotent(apply, r, &ctx(&p));
        for u in ["apt-daily.timer", "fstrim.timer", "e2scrub_reap.service"] {
            assert_eq!(
                link(r, &format!("etc/systemd/system/{u}")).as_deref(),
                Some("/dev/null"),
                "{u}"
            );
        }
        // Read-write only, and units the image lacks, are left alone.
        for u in ["man-db.timer", "logrotate.timer", "dpkg-db-backup.timer"] {
            assert_eq!(link(r, &format!("etc/systemd/system/{u}")), None, "{u}");
        }
        assert_eq!(
            link(
                r,
                "etc/systemd/system/getty.target.wants/getty@tty1.service"
            ),
            None
        );
    }

    #[test]
    fn rw_masks_the_shared_root_writers_too() {
        let p = profile("[nfs]\nroot_mode = \"rw\"\n");
        let d = units_root();
        let r = d.path();
        idempotent(apply, r, &ctx(&p));
        for u in ["man-db.timer", "logrotate.timer", "apt-daily.timer"] {
            assert_eq!(
                link(r, &format!("etc/systemd/system/{u}")).as_deref(),
                Some("/dev/null"),
                "{u}"
            );
        }
    }

    #[test]
    fn profile_enable_mask_unmask_are_honoured() {
        let p = profile(
            "[units]\nenable = [\"getty@tty2.service\", \"rsync.service\"]\nmask = [\"man-db.timer\"]\nunmask = [\"fstrim.timer\"]\n",
        );
        let d = units_root();
        let r = d.path();
        // fstrim was masked by an earlier build: unmask removes that.
        std::os::unix::fs::symlink("/dev/null", r.join("etc/systemd/system/fstrim.timer")).unwrap();
        idempotent(apply, r, &ctx(&p));
        let etc = "etc/systemd/system";
        assert_eq!(
            link(r, &format!("{etc}/man-db.timer")).as_deref(),
            Some("/dev/null")
        );
        assert_eq!(link(r, &format!("{etc}/fstrim.timer")), None);
        assert_eq!(
            link(r, &format!("{etc}/apt-daily.timer")).as_deref(),
            Some("/dev/null")
        );
        assert_eq!(
            link(r, &format!("{etc}/getty.target.wants/getty@tty2.service")).as_deref(),
            Some("/usr/lib/systemd/system/getty@.service")
        );
        // tty1 was not asked for; rsync brings its socket (Also=).
        assert_eq!(
            link(r, &format!("{etc}/getty.target.wants/getty@tty1.service")),
            None
        );
        assert_eq!(
            link(r, &format!("{etc}/multi-user.target.wants/rsync.service")).as_deref(),
            Some("/usr/lib/systemd/system/rsync.service")
        );
        assert_eq!(
            link(r, &format!("{etc}/sockets.target.wants/rsync.socket")).as_deref(),
            Some("/usr/lib/systemd/system/rsync.socket")
        );
    }

    /// The utmp services write /var/log/wtmp: unmasked only while each
    /// node keeps its own on the server (a read-write root's per-host
    /// directory, in the tree or a log export); machine-id-commit masked on
    /// every root.
    #[test]
    fn utmp_masked_unless_nodes_keep_their_own_wtmp() {
        let rw = "[nfs]\nroot_mode = \"rw\"\n";
        // (profile, utmp services masked, nodes keep their own wtmp)
        for (extra, masked_utmp, own) in [
            (String::new(), true, false),
            (rw.to_string(), false, true),
            (format!("{rw}[logs]\nlayout = \"local\"\n"), true, false),
            (
                format!("{rw}[logs]\nexport = \"10.0.0.1:/logs\"\n"),
                false,
                true,
            ),
        ] {
            let p = profile(&extra);
            let m = masked(&p);
            let has = |u: &str| m.iter().any(|x| x == u);
            assert_eq!(has("systemd-update-utmp.service"), masked_utmp, "{extra}");
            assert_eq!(has("systemd-update-utmp-runlevel.service"), masked_utmp);
            assert!(has("systemd-machine-id-commit.service"), "{extra}");
            assert_eq!(super::super::logs::per_host_logins(&p), own, "{extra}");
        }
    }

    /// rpc-gssd is masked unless a mount asks for a Kerberos flavour,
    /// on the root or an extra mount, alone or in a `sec=` list.
    #[test]
    fn gssd_masked_unless_a_mount_wants_kerberos() {
        let mount = |o: &str| {
            format!(
                "[[mounts]]\nsource = \"10.0.0.1:/home\"\ntarget = \"/home\"\noptions = \"{o}\"\n"
            )
        };
        for (extra, krb5) in [
            (String::new(), false),
            ("[nfs]\noptions = \"vers=4.2,sec=sys\"\n".to_string(), false),
            (
                "[nfs]\noptions = \"vers=4.2,sec=krb5p\"\n".to_string(),
                true,
            ),
            (mount("rw,sec=sys:krb5i"), true),
            (mount("rw,vers=3"), false),
        ] {
            let p = profile(&extra);
            assert_eq!(wants_kerberos(&p), krb5, "{extra}");
            let m = masked(&p);
            assert_eq!(!m.iter().any(|u| u == "rpc-gssd.service"), krb5, "{extra}");
        }
    }

    #[test]
    fn enabling_a_default_mask_keeps_it_unmasked() {
        let p = profile("[units]\nenable = [\"fstrim.timer\"]\n");
        let d = units_root();
        let r = d.path();
        apply(&img(r), &ctx(&p)).unwrap();
        assert_eq!(link(r, "etc/systemd/system/fstrim.timer"), None);
        assert!(link(r, "etc/systemd/system/timers.target.wants/fstrim.timer").is_some());
    }

    #[test]
    fn unknown_unit_names_the_field_and_changes_nothing() {
        for (field, name) in [
            ("enable", "nosuch.service"),
            ("mask", "getty@.timer"),
            ("unmask", "x.timer"),
        ] {
            let p = profile(&format!("[units]\n{field} = [\"{name}\"]\n"));
            let d = units_root();
            let e = apply(&img(d.path()), &ctx(&p)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("profile units.{field}: the image has no unit {name}")
            );
            assert_eq!(link(d.path(), "etc/systemd/system/apt-daily.timer"), None);
        }
    }

    #[test]
    fn masked_unit_file_in_etc_is_not_a_unit() {
        let p = profile("[units]\nenable = [\"gone.service\"]\n");
        let d = units_root();
        let r = d.path();
        std::os::unix::fs::symlink("/dev/null", r.join("etc/systemd/system/gone.service")).unwrap();
        assert!(apply(&img(r), &ctx(&p)).is_err());
    }

    #[test]
    fn install_section_as_systemd_reads_it() {
        let i = parse_install(
            "[Unit]\nWantedBy=not-here.target\n[Install]\n# c\nWantedBy=a.target \\\n  b.target\nWantedBy=c.target\nRequiredBy=x.target\nRequiredBy=\nAlias=y.service\nAlso=z.socket\n[Service]\nAlso=no.socket\n",
        );
        assert_eq!(
            i,
            Install {
                wanted_by: vec!["a.target".into(), "b.target".into(), "c.target".into()],
                required_by: vec![],
                alias: vec!["y.service".into()],
                also: vec!["z.socket".into()],
                default_instance: None,
            }
        );
    }

    /// rpcbind is no longer started by every boot, unless the profile
    /// enables it; its socket stays for what needs it.
    #[test]
    fn rpcbind_disabled_unless_enabled() {
        for (units, wanted) in [
            ("", false),
            ("[units]\nenable = [\"rpcbind.service\"]\n", true),
        ] {
            let p = profile(units);
            let d = units_root();
            let r = d.path();
            unit(
                r,
                "rpcbind.service",
                "WantedBy=multi-user.target\nAlso=rpcbind.socket\n",
            );
            unit(r, "rpcbind.socket", "WantedBy=sockets.target\n");
            let etc = r.join("etc/systemd/system");
            for (t, u) in [
                ("multi-user", "rpcbind.service"),
                ("sockets", "rpcbind.socket"),
            ] {
                std::fs::create_dir_all(etc.join(format!("{t}.target.wants"))).unwrap();
                std::os::unix::fs::symlink(
                    format!("/usr/lib/systemd/system/{u}"),
                    etc.join(format!("{t}.target.wants/{u}")),
                )
                .unwrap();
            }
            idempotent(apply, r, &ctx(&p));
            let l = "etc/systemd/system/multi-user.target.wants/rpcbind.service";
            assert_eq!(link(r, l).is_some(), wanted, "{units}");
            assert!(link(r, "etc/systemd/system/sockets.target.wants/rpcbind.socket").is_some());
            assert_eq!(link(r, "etc/systemd/system/rpcbind.service"), None);
        }
    }

    #[test]
    fn every_default_mask_says_why() {
        for (u, _, why) in DEFAULT_DISABLE {
            assert!(crate::profile::is_unit_name(u), "{u}");
            assert!(why.len() > 20, "{u}");
        }
        for (u, _, why) in DEFAULT_MASK {
            assert!(crate::profile::is_unit_name(u), "{u}");
            assert!(why.len() > 20, "{u}");
        }
    }
}
