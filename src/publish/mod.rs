//! Publishing boot artifacts into the TFTP root.
//!
//! Layout: `<tftp-root>/<image>/vmlinuz-<ver>` and
//! `<tftp-root>/<image>/initrd.img-<ver>-<hash8>` (the initramfs name carries
//! a content hash, so a rebuild never overwrites a file a live config names),
//! the loaders at the root ([`BOOT_FILES`]: PXELINUX for BIOS nodes,
//! Debian's signed shim, GRUB and MOK manager for UEFI nodes), and the
//! image's boot config, PXELINUX and GRUB rendered from one record
//! ([`record::config_files`]): `pxelinux.cfg/nfsroot-<image>` and
//! `grub/nfsroot-<image>.cfg`, plus `pxelinux.cfg/default`,
//! `grub/grub.cfg` and the iPXE script `nfsroot.ipxe` (see [`crate::ipxe`])
//! when this image is the default one.
//!
//! Order of writes: files first (temp, fsync, rename, verify sha256), then
//! the record (outside the exported tree), then the configs, last, each by
//! atomic rename, the PXELINUX and GRUB file of a pair one right after the
//! other: the two loaders name different kernels only between two renames.
//! Retention deletes files only after the switch, and never one any config
//! (PXELINUX or GRUB, per-host ones included) names. A file a config still
//! pins stays in the record's `files` (not in its kernels:
//! [`Record::retired`]), and every later publish, upgrade-kernel, rollback
//! and sync ([`release_pins`]) deletes it once nothing names it.

use crate::fsutil::{self, AtomicFile};
use crate::image::Layout;
use crate::imagefs::ImageRoot;
use crate::kernel::{self, Kernel};
use crate::profile::{Loaded, Profile};
use anyhow::{Context, Result, bail};
use serde::Serialize;

mod heal;
mod record;
mod rollback;
mod status;

pub use record::{
    ConfigFile, Loader, PublishedKernel, Record, cfg_dir, config_files, grub_dir,
    image_config_name, ipxe_path, referenced, verify,
};
pub use rollback::rollback;
pub use status::{Status, status};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The loaders published at the TFTP root: (host file, name at the TFTP
/// root, Debian package). PXELINUX for BIOS nodes; for UEFI nodes Debian's
/// signed chain, which stock Secure Boot firmware trusts: shim (signed by
/// Microsoft) loads `grubx64.efi` from its own directory (Debian's signed
/// network GRUB, see [`crate::grub`] for where it reads its config), and
/// `mmx64.efi` is shim's MOK manager, without which a failed Secure Boot
/// check cannot be recovered at the console.
/// The loader DHCP hands UEFI x86-64 clients (one of [`BOOT_FILES`]).
pub const UEFI_LOADER: &str = "shimx64.efi";
pub const BOOT_FILES: &[(&str, &str, &str)] = &[
    ("/usr/lib/PXELINUX/pxelinux.0", "pxelinux.0", "pxelinux"),
    (
        "/usr/lib/syslinux/modules/bios/ldlinux.c32",
        "ldlinux.c32",
        "syslinux-common",
    ),
    (
        "/usr/lib/shim/shimx64.efi.signed",
        "shimx64.efi",
        "shim-signed",
    ),
    (
        "/usr/lib/shim/mmx64.efi.signed",
        "mmx64.efi",
        "shim-helpers-amd64-signed",
    ),
    (
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        "grubx64.efi",
        "grub-efi-amd64-signed",
    ),
];
/// Where host loader files are looked up: `/`, or NFSROOT_SYSLINUX_ROOT
/// (for tests of a host without the packages).
fn host_file(path: &str) -> PathBuf {
    let root = std::env::var_os("NFSROOT_SYSLINUX_ROOT").unwrap_or_else(|| "/".into());
    Path::new(&root).join(path.trim_start_matches('/'))
}

/// Check, before anything changes, that publishing can work.
pub fn preflight(layout: &Layout) -> Result<()> {
    for (src, _, pkg) in BOOT_FILES {
        let f = host_file(src);
        if !f.is_file() {
            bail!(
                "{} not found on this host; install it with: apt-get install {pkg}",
                f.display()
            );
        }
    }
    fsutil::mkdir_p(&layout.tftp_root)?;
    let probe = layout.tftp_root.join(format!(
        "{}probe-{}",
        fsutil::TEMP_PREFIX,
        std::process::id()
    ));
    std::fs::write(&probe, b"")
        .with_context(|| format!("TFTP root {} is not writable", layout.tftp_root.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// What a publish did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub image: String,
    pub default: String,
    pub changed: bool,
    pub written: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
    pub kept: Vec<String>,
}

impl Outcome {
    /// What a publish did, or with `dry_run` would do (never "wrote").
    pub fn text(&self, dry_run: bool) -> String {
        if !self.changed {
            return format!(
                "{}: nothing changed; default boots {}\n",
                self.image, self.default
            );
        }
        let (wrote, removed) = if dry_run {
            ("would write ", "would remove")
        } else {
            ("wrote  ", "removed")
        };
        let mut s = String::new();
        for w in &self.written {
            s += &format!("{wrote} {}\n", w.display());
        }
        for r in &self.removed {
            s += &format!("{removed} {}\n", r.display());
        }
        s += &format!(
            "{}: default {} {} (kept: {}){}\n",
            self.image,
            if dry_run { "would boot" } else { "boots" },
            self.default,
            self.kept.join(", "),
            if dry_run {
                "; dry run: nothing written"
            } else {
                ""
            }
        );
        s
    }
}

/// The kernel command line for a profile and image path.
pub fn cmdline(p: &Profile, image_dir: &Path) -> String {
    let mut c = format!(
        "root=/dev/nfs nfsroot={}:{},{} ip=dhcp net.ifnames=0 {}",
        p.nfs.server,
        image_dir.display(),
        p.nfs.root_options(),
        p.nfs.root_mode
    );
    if !p.boot.serial.is_empty() {
        c.push_str(&format!(" console=tty0 console={}", p.boot.serial));
    }
    if !p.boot.cmdline.is_empty() {
        c.push(' ');
        c.push_str(&p.boot.cmdline);
    }
    c
}

/// Build the initramfs for `k` as the profile asks; returns its bytes.
pub fn build_initramfs(img: &ImageRoot, k: &Kernel, p: &Profile) -> Result<Vec<u8>> {
    crate::initramfs::build_bytes(img, &k.version, &crate::initramfs::Spec::of_profile(p)?)
}

/// Publish the newest kernel of the image at `root` (lock held by caller).
pub fn publish(
    layout: &Layout,
    loaded: &Loaded,
    root: &Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    publish_with(layout, &loaded.profile, root, false, on_line)
}

/// What a publish writes: the newest kernel and its initramfs, in memory.
struct Artifacts {
    /// The kernel's bytes, read once through the confined view: what is
    /// hashed is what is written.
    kernel_data: Vec<u8>,
    initrd: Vec<u8>,
    initrd_sha: String,
    kernel_sha: String,
    entry: PublishedKernel,
    /// The image name, which is also its directory under the TFTP root.
    entry_image: String,
}

fn plan(p: &Profile, img: &ImageRoot, image_dir: &Path, tftp_sub: &str) -> Result<Artifacts> {
    let k = kernel::newest(img)?;
    let initrd = build_initramfs(img, &k, p)?;
    let initrd_sha = fsutil::sha256_bytes(&initrd);
    let kernel_data = img.read(&k.vmlinuz)?;
    let kernel_sha = fsutil::sha256_bytes(&kernel_data);
    let entry = PublishedKernel {
        version: k.version.clone(),
        kernel: format!("{tftp_sub}/vmlinuz-{}", k.version),
        initrd: format!("{tftp_sub}/initrd.img-{}-{}", k.version, &initrd_sha[..8]),
        kernel_sha256: kernel_sha.clone(),
        initrd_sha256: initrd_sha.clone(),
        backend: p.initramfs.backend.to_string(),
        append: cmdline(p, image_dir),
        published_at: crate::clock::rfc3339(crate::clock::now_secs()),
    };
    Ok(Artifacts {
        kernel_data,
        initrd,
        initrd_sha,
        kernel_sha,
        entry,
        entry_image: tftp_sub.to_string(),
    })
}

/// The record after this publish, and the kernels it drops.
struct NextRecord {
    rec: Record,
    dropped: Vec<PublishedKernel>,
    /// The planned kernel is published already, byte for byte.
    same: bool,
}

/// This version replaced or added, kept in dpkg order, default switched,
/// trimmed to `keep_kernels` (the default always kept).
fn next_record(old: &Record, p: &Profile, plan: &Artifacts) -> NextRecord {
    let mut rec = old.clone();
    rec.serial = (!p.boot.serial.is_empty()).then(|| p.boot.serial.clone());
    rec.timeout_s = p.boot.prompt_timeout;
    rec.ipxe = p.boot.ipxe;
    let e = &plan.entry;
    let replaced = old.find(&e.version).cloned();
    let same = replaced.as_ref().is_some_and(|r| {
        r.kernel_sha256 == plan.kernel_sha
            && r.initrd_sha256 == plan.initrd_sha
            && r.append == e.append
            && r.backend == e.backend
    });
    if !same {
        rec.kernels.retain(|k| k.version != e.version);
        rec.kernels.push(e.clone());
        rec.kernels
            .sort_by(|a, b| kernel::dpkg_version_cmp(&a.version, &b.version));
    }
    rec.default = Some(e.version.clone());
    let excess = rec
        .kernels
        .len()
        .saturating_sub(p.boot.keep_kernels as usize);
    let mut dropped: Vec<PublishedKernel> = rec.kernels.drain(..excess).collect();
    // A rebuilt initramfs for a published version: its old file retires too.
    if let Some(r) = replaced
        && !same
        && r.initrd != e.initrd
    {
        dropped.push(PublishedKernel {
            kernel: e.kernel.clone(),
            ..r
        });
    }
    NextRecord { rec, dropped, same }
}

/// Whether a publish writes the default configs: the profile asks for it
/// and no other image owns `pxelinux.cfg/default` (which also decides
/// `grub/grub.cfg`: one owner for both).
fn owns_default(layout: &Layout, p: &Profile) -> bool {
    p.boot.default
        && record::default_owner(&cfg_dir(layout).join("default")).is_none_or(|o| o == p.name)
}

fn versions(rec: &Record) -> Vec<String> {
    rec.kernels.iter().map(|k| k.version.clone()).collect()
}

/// Remove the temp files killed runs left where publish and rollback write:
/// the image's TFTP directory, pxelinux.cfg, the TFTP root and the records'
/// directory. The image lock is held, and the shared directories keep the
/// temp files of runs that are still alive.
fn sweep_leftovers(layout: &Layout, image: &str) -> Result<()> {
    let tftp = &layout.tftp_root;
    let record = layout.record_path(image);
    let records = record.parent().expect("a record has a parent");
    for d in [
        &tftp.join(image),
        &cfg_dir(layout),
        &grub_dir(layout),
        tftp,
        records,
    ] {
        fsutil::sweep_temps(d)?;
    }
    Ok(())
}

/// Publish (or with `dry_run`, describe) the newest kernel.
pub fn publish_with(
    layout: &Layout,
    p: &Profile,
    root: &Path,
    dry_run: bool,
    on_line: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    if !dry_run {
        preflight(layout)?;
    }
    let image = &p.name;
    let tftp = &layout.tftp_root;
    let img = ImageRoot::open(root)?;
    let plan = plan(p, &img, &layout.image_dir(image), image)?;
    let old = Record::load(layout, image)?.unwrap_or_else(|| Record {
        image: image.clone(),
        ..Record::default()
    });
    let mut next = next_record(&old, p, &plan);
    let with_default = owns_default(layout, p);
    let mut configs = config_files(layout, &next.rec, with_default)?;
    let mut out = Outcome {
        image: image.clone(),
        default: plan.entry.version.clone(),
        changed: false,
        written: vec![],
        removed: vec![],
        kept: versions(&next.rec),
    };
    // Leftovers of a run that was killed go even when there is nothing
    // else to do.
    if !dry_run {
        sweep_leftovers(layout, image)?;
    }
    let files_ok = next.rec.kernels.iter().all(|k| verify(tftp, k).is_ok())
        && BOOT_FILES.iter().all(|(src, name, _)| {
            fsutil::sha256_file(&tftp.join(name)).ok() == fsutil::sha256_file(&host_file(src)).ok()
        });
    let configs_ok = configs
        .iter()
        .all(|c| std::fs::read_to_string(&c.path).ok().as_deref() == Some(c.text.as_str()));
    let unpinned = unpinned(layout, &next.rec, &next.dropped, &configs)?;
    if next.same && files_ok && configs_ok && unpinned.is_empty() && next.rec == old {
        on_line(&format!(
            "{image}: {} is already published and booted by default; nothing to do",
            plan.entry.version
        ));
        return Ok(out);
    }
    out.changed = true;
    if dry_run {
        describe(layout, &plan, &configs, &mut out, on_line);
        out.removed = unpinned.iter().map(|f| tftp.join(f)).collect();
        return Ok(out);
    }
    write_boot_files(layout, &plan, &mut out, on_line)?;
    crate::crash_point!("publish.boot_files");
    let (healed, lost) = heal::heal(tftp, &img, p, &mut next.rec, &plan.entry.version, on_line)?;
    out.written.extend(healed);
    if !lost.is_empty() {
        configs = config_files(layout, &next.rec, with_default)?;
        out.kept = versions(&next.rec);
        for k in &lost {
            next.rec.files.remove(&k.kernel);
            next.rec.files.remove(&k.initrd);
        }
        next.dropped.extend(lost);
    }
    switch(layout, &plan, next, &configs, &mut out)?;
    Ok(out)
}

/// What a dry run reports: every file it would write, the config diffs
/// (as lines); the caller adds the files retention would remove.
fn describe(
    layout: &Layout,
    plan: &Artifacts,
    configs: &[ConfigFile],
    out: &mut Outcome,
    on_line: &mut dyn FnMut(&str),
) {
    let tftp = &layout.tftp_root;
    out.written = vec![
        tftp.join(&plan.entry.kernel),
        tftp.join(&plan.entry.initrd),
        layout.record_path(&plan.entry_image),
    ];
    out.written.extend(configs.iter().map(|c| c.path.clone()));
    for c in configs {
        let cur = std::fs::read_to_string(&c.path).unwrap_or_default();
        on_line(&format!(
            "--- {}\n+++ {} (new)\n{}",
            c.path.display(),
            c.path.display(),
            crate::textdiff::line_diff(&cur, &c.text)
        ));
    }
}

/// Step 1: the loaders, the kernel and the initramfs, each written
/// only when the file there differs, and verified after the rename.
fn write_boot_files(
    layout: &Layout,
    plan: &Artifacts,
    out: &mut Outcome,
    on_line: &mut dyn FnMut(&str),
) -> Result<()> {
    let tftp = &layout.tftp_root;
    fsutil::mkdir_p(&tftp.join(&plan.entry_image))?;
    fsutil::mkdir_p(&cfg_dir(layout))?;
    fsutil::mkdir_p(&grub_dir(layout))?;
    for (src, name, _) in BOOT_FILES {
        let dst = tftp.join(name);
        let src = host_file(src);
        if fsutil::sha256_file(&dst).ok() != Some(fsutil::sha256_file(&src)?) {
            fsutil::atomic_copy(&src, &dst, 0o644)?;
            out.written.push(dst);
        }
    }
    let kernel_path = tftp.join(&plan.entry.kernel);
    if fsutil::sha256_file(&kernel_path).ok().as_deref() != Some(plan.kernel_sha.as_str()) {
        on_line(&format!("writing {}", kernel_path.display()));
        let sha = fsutil::atomic_copy_from(&plan.kernel_data[..], &kernel_path, 0o644)?;
        if sha != plan.kernel_sha {
            bail!("{} was written short; run again", kernel_path.display());
        }
        out.written.push(kernel_path);
    }
    let initrd_path = tftp.join(&plan.entry.initrd);
    if fsutil::sha256_file(&initrd_path).ok().as_deref() != Some(plan.initrd_sha.as_str()) {
        on_line(&format!("writing {}", initrd_path.display()));
        let mut f = AtomicFile::create(&initrd_path)?;
        f.write_all(&plan.initrd)
            .with_context(|| format!("writing {}", initrd_path.display()))?;
        f.commit()?;
        out.written.push(initrd_path);
    }
    Ok(())
}

/// Steps 2-4: the record (listing every file any config may name), the
/// configs last, then retention of files no config names any more.
fn switch(
    layout: &Layout,
    plan: &Artifacts,
    mut next: NextRecord,
    configs: &[ConfigFile],
    out: &mut Outcome,
) -> Result<()> {
    let rec = &mut next.rec;
    let e = &plan.entry;
    rec.files.insert(e.kernel.clone(), e.kernel_sha256.clone());
    rec.files.insert(e.initrd.clone(), e.initrd_sha256.clone());
    for k in &rec.kernels {
        rec.files.insert(k.kernel.clone(), k.kernel_sha256.clone());
        rec.files.insert(k.initrd.clone(), k.initrd_sha256.clone());
    }
    rec.save(layout)?;
    crate::crash_point!("publish.record");
    for (i, c) in configs.iter().enumerate() {
        if i > 0 {
            crate::crash_point!("publish.between_configs");
        }
        if c.loader == Loader::Grub {
            crate::crash_point!("publish.grub_config");
        }
        fsutil::atomic_write(&c.path, c.text.as_bytes())?;
        out.written.push(c.path.clone());
    }
    crate::crash_point!("publish.configs");
    out.removed = retire(layout, rec, &next.dropped)?;
    crate::crash_point!("publish.retired");
    rec.save(layout)
}

/// The files retention may delete once `pending` configs are written:
/// those of `dropped` kernels and the record's retired ones
/// ([`Record::retired`]) that no config names.
fn unpinned(
    layout: &Layout,
    rec: &Record,
    dropped: &[PublishedKernel],
    pending: &[ConfigFile],
) -> Result<Vec<String>> {
    let refs = referenced(layout, pending)?;
    let kept = |f: &String| rec.kernels.iter().any(|k| &k.kernel == f || &k.initrd == f);
    let mut v: Vec<String> = dropped
        .iter()
        .flat_map(|k| [k.kernel.clone(), k.initrd.clone()])
        .chain(rec.retired())
        .filter(|f| !refs.contains(f) && !kept(f))
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Delete the unpinned files (see [`unpinned`]) and drop them from
/// `rec.files` (also those a killed run deleted already); the caller saves
/// `rec`. Returns the files deleted.
fn retire(layout: &Layout, rec: &mut Record, dropped: &[PublishedKernel]) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for rel in unpinned(layout, rec, dropped, &[])? {
        let p = layout.tftp_root.join(&rel);
        match std::fs::remove_file(&p) {
            Ok(()) => {
                removed.push(p);
                crate::crash_point!("publish.retire");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
        rec.files.remove(&rel);
    }
    if let Some(dir) = removed.first().and_then(|p| p.parent()) {
        fsutil::fsync_dir(dir)?;
    }
    Ok(removed)
}

/// Delete the retired files of `image` no config names any more (a
/// per-host config that pinned them is gone) and forget them in its
/// record; the caller holds the image's lock. Returns the files deleted.
pub fn release_pins(layout: &Layout, image: &str) -> Result<Vec<PathBuf>> {
    let Some(mut rec) = Record::load(layout, image)? else {
        return Ok(vec![]);
    };
    let before = rec.files.len();
    let removed = retire(layout, &mut rec, &[])?;
    if rec.files.len() != before {
        rec.save(layout)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_never_says_wrote() {
        let o = Outcome {
            image: "m".into(),
            default: "6.1.0-10".into(),
            changed: true,
            written: vec![PathBuf::from("/tftp/m/vmlinuz-6.1.0-10")],
            removed: vec![PathBuf::from("/tftp/m/vmlinuz-6.1.0-7")],
            kept: vec!["6.1.0-9".into(), "6.1.0-10".into()],
        };
        let dry = o.text(true);
        assert!(!dry.contains("wrote") && !dry.contains("removed "), "{dry}");
        assert!(
            dry.contains("would write  /tftp/m/vmlinuz-6.1.0-10\n"),
            "{dry}"
        );
        assert!(
            dry.contains("would remove /tftp/m/vmlinuz-6.1.0-7\n"),
            "{dry}"
        );
        let real = o.text(false);
        assert!(
            real.contains("wrote   /tftp/m/vmlinuz-6.1.0-10\n"),
            "{real}"
        );
        assert!(real.contains("m: default boots 6.1.0-10 (kept: 6.1.0-9, 6.1.0-10)\n"));
    }
}
