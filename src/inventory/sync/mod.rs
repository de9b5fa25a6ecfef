//! `nfsroot sync`: make the disk match the inventory.
//!
//! A sync is a plan ([`plan`]), then an apply ([`apply`]). Planning
//! renders every output (pure functions in [`super::render`]) and reads
//! what is on disk now, giving a list of [`items`] — a file's whole new
//! content, a symlink, a directory with owner and mode, a removal — each
//! compared with the disk; `--dry-run` reports the differences and stops
//! there. Apply writes only what differs,
//! each file through [`fsutil::atomic_write_mode`], in an order that never
//! lets a node see a half-done state: log directories, then per-host boot
//! files and links, then the images' `/etc/hosts`, exports, and last the
//! DHCP configs (a new host gets an address only once its boot file
//! exists); stale per-host files are removed after DHCP no longer names
//! their host.
//!
//! Per-host PXELINUX names. A host whose config is exactly its image's
//! published one gets `01-<mac>` as a relative symlink to
//! `nfsroot-<image>`, so `upgrade-kernel` and `rollback` reach it with no
//! sync; a host with a pinned kernel, extra cmdline, localboot or disabled
//! gets a rendered file. The hex-IP name (and the names of further MACs)
//! is always a relative symlink to the same target, never a copy: one
//! content per host means the names cannot disagree, a link is replaced
//! atomically by rename like a file, relative links in the same directory
//! work under a chrooted tftpd, and `ls -l pxelinux.cfg` shows which image
//! each address boots (the relink habit of seed 002, made by the tool).
//! Hosts whose config equals `pxelinux.cfg/default` get no names (unless
//! `host_files = "all"`). Which names the tool owns is recorded in
//! `<state>/inventory/pxelinux-names.json` (a superset is recorded before
//! writing), so removing a host removes exactly its names and a
//! hand-made file is never swept ([`names`]).
//!
//! Per-host GRUB names (UEFI nodes) follow the same rules from the same
//! rendered model, in `grub/`: `grub.cfg-01-<mac>` is a link to
//! `nfsroot-<image>.cfg` or the host's own file, the further MACs' names
//! and `grub.cfg-<ip>` link to it ([`crate::grub`] says why those names:
//! `grub/grub.cfg` looks them up). A host has both sets or neither. The
//! DHCP configs answer each client with its loader by the architecture it
//! announces (option 93), or by the host's pinned `firmware`.
//!
//! After applying, the kernel files retention kept only because a
//! per-host config pinned them go once no config names them
//! ([`crate::publish::release_pins`]); a dry run does not predict that.
//!
//! Neither step prints: [`SyncReport::text`] is the one place a sync's
//! result becomes text.

mod apply;
mod items;
mod names;
mod plan;

pub use items::Change;
pub use plan::{ANON_ID, DHCPD_CONF, DNSMASQ_CONF, confined_export, per_host_logs};

use super::Inventory;
use super::render;
use crate::fsutil::{self, Lock};
use crate::image::Layout;
use crate::imagefs::ImageRoot;
use crate::publish::Record;
use crate::pxelinux;
use anyhow::{Context, Result};
use items::{Item, Roots};
use plan::SyncPlan;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What `sync` needs besides the layout.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub inventory: PathBuf,
    /// Server-side files go to `<etc_dir>/dnsmasq.d/`, `exports.d/`, `dhcp/`.
    pub etc_dir: PathBuf,
    pub dry_run: bool,
    /// Wait for image locks instead of failing.
    pub wait: bool,
}

/// What a sync did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub dry_run: bool,
    pub inventory: PathBuf,
    pub hosts: usize,
    /// Hosts with per-host PXELINUX names.
    pub host_files: Vec<String>,
    /// Hosts that boot `pxelinux.cfg/default` (no per-host names).
    pub following_default: Vec<String>,
    pub changes: Vec<Change>,
    /// Outputs that were already right.
    pub unchanged: usize,
    /// Commands that make running services pick the changes up.
    pub next_steps: Vec<String>,
}

impl SyncReport {
    /// Human-readable summary (with diffs on a dry run).
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.changes {
            let _ = write!(s, "{:6} {}", c.action, c.path.display());
            if !c.detail.is_empty() {
                let _ = write!(s, " {}", c.detail);
            }
            s.push('\n');
            if let Some(d) = &c.diff {
                s.push_str(d);
            }
        }
        let _ = writeln!(
            s,
            "{} hosts: {} with per-host boot files, {} following default; {} {}, {} unchanged",
            self.hosts,
            self.host_files.len(),
            self.following_default.len(),
            self.changes.len(),
            if self.dry_run {
                "changes (dry run: nothing written)"
            } else {
                "changes"
            },
            self.unchanged
        );
        for n in &self.next_steps {
            let _ = writeln!(s, "next: {n}");
        }
        s
    }
}

/// Sync with default options (no waiting for locks).
pub fn run_sync(
    layout: &Layout,
    inv_path: &Path,
    etc_dir: &Path,
    dry_run: bool,
) -> Result<SyncReport> {
    run_sync_with(
        layout,
        &SyncOptions {
            inventory: inv_path.to_path_buf(),
            etc_dir: etc_dir.to_path_buf(),
            dry_run,
            wait: false,
        },
    )
}

/// The lock serialising inventory edits and syncs.
pub fn inventory_lock(layout: &Layout, op: &str, wait: bool) -> Result<Lock> {
    // Image names cannot start with '.', so this never is an image's lock.
    let p = layout
        .ensure_state_dir()?
        .join("locks")
        .join(".inventory.lock");
    Lock::acquire(&p, "the inventory", op, wait)
}

/// Plan and (unless dry) apply.
pub fn run_sync_with(layout: &Layout, o: &SyncOptions) -> Result<SyncReport> {
    let _lock = if o.dry_run {
        None
    } else {
        fsutil::mkdir_p(&layout.base_dir)?;
        Some(inventory_lock(layout, "sync", o.wait)?)
    };
    let inv = super::load(&o.inventory)?;
    let roots = Roots::default();
    let (p, image_locks) = plan_locked(layout, &inv, o, &roots)?;
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for it in &p.items {
        match it.change(layout, &roots, o.dry_run)? {
            Some(c) => changes.push((it, c)),
            None => unchanged += 1,
        }
    }
    let next_steps = next_steps(&p, &changes);
    if !o.dry_run && !changes.is_empty() {
        apply::apply(layout, &p, &changes, &roots)?;
    }
    let released = if o.dry_run {
        vec![]
    } else {
        release_pins(layout, &p)?
    };
    drop(image_locks);
    Ok(SyncReport {
        dry_run: o.dry_run,
        inventory: o.inventory.clone(),
        hosts: inv.hosts.len(),
        host_files: p.host_files,
        following_default: p.following_default,
        changes: changes
            .into_iter()
            .map(|(_, c)| c)
            .chain(released)
            .collect(),
        unchanged,
        next_steps,
    })
}

/// Delete the kernel files retention left because a per-host config
/// pinned them, now that none does (this sync may have removed or
/// rewritten that config): see [`crate::publish::release_pins`]. Only
/// images whose lock the sync holds.
fn release_pins(layout: &Layout, p: &SyncPlan) -> Result<Vec<Change>> {
    let mut v = Vec::new();
    for img in &p.locked_images {
        for path in crate::publish::release_pins(layout, img)? {
            v.push(Change {
                action: "remove".into(),
                path,
                detail: "(a retired kernel's file no config names any more)".into(),
                diff: None,
            });
        }
    }
    Ok(v)
}

/// The plan, with the locks of the images it writes into held (unless
/// dry).
fn plan_locked(
    layout: &Layout,
    inv: &Inventory,
    o: &SyncOptions,
    roots: &Roots,
) -> Result<(SyncPlan, Vec<Lock>)> {
    let p = plan::plan(layout, inv, &o.etc_dir, roots)?;
    if o.dry_run || p.locked_images.is_empty() {
        return Ok((p, Vec::new()));
    }
    let mut image_locks = Vec::new();
    for img in &p.locked_images {
        image_locks.push(layout.lock(img, "sync", o.wait)?);
    }
    // Compare after taking the locks: a build may have just finished.
    let p = plan::plan(layout, inv, &o.etc_dir, roots)?;
    Ok((p, image_locks))
}

/// Commands that make running services pick the changes up.
fn next_steps(p: &SyncPlan, changes: &[(&Item, Change)]) -> Vec<String> {
    let changed = |needle: &Path| changes.iter().any(|(_, c)| c.path == needle);
    let mut steps = Vec::new();
    if changed(&p.exports_path) {
        steps.push("exportfs -ra".to_string());
    }
    if changed(&p.dnsmasq_path) {
        steps.push("systemctl restart dnsmasq (if it serves DHCP here)".to_string());
    }
    if changed(&p.dhcpd_path) {
        steps.push("systemctl restart isc-dhcp-server (if it serves DHCP here)".to_string());
    }
    steps
}

/// A host's PXELINUX config, from its image's published record.
pub fn host_boot_config(layout: &Layout, inv: &Inventory, host: &str) -> Result<pxelinux::Config> {
    let h = inv
        .host(host)
        .with_context(|| format!("no host {host} in {}", inv.path.display()))?;
    let rec = match &h.image {
        Some(img) => Record::load(layout, img)?,
        None => None,
    };
    render::boot_config(h, rec.as_ref())
}

/// Put the inventory's `/etc/hosts` block into the image tree at `root`
/// (a build's staging tree, so a rebuilt image keeps the names the last
/// sync wrote). Returns whether the file changed.
pub fn image_hosts_into(img: &ImageRoot, inv: &Inventory) -> Result<bool> {
    let old = img.read_to_string_opt("etc/hosts")?;
    let text = render::image_hosts(old.as_deref(), inv, Path::new(&img.show("etc/hosts")))?;
    if old.as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    img.write("etc/hosts", text.as_bytes(), 0o644)?;
    Ok(true)
}
