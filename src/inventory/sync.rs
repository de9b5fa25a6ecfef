//! `nfsroot sync`: make the disk match the inventory.
//!
//! A sync is a plan, then an apply. [`plan`] renders every output (pure
//! functions in [`super::render`]) and reads what is on disk now, giving a
//! list of items — a file's whole new content, a symlink, a directory with
//! owner and mode, a removal — each compared with the disk; `--dry-run`
//! prints the differences and stops there. Apply writes only what differs,
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
//! hand-made file is never swept.

use super::render::{self, Export};
use super::{BootMode, Host, Inventory};
use crate::fsutil::{self, Lock};
use crate::image::Layout;
use crate::imagefs::ImageRoot;
use crate::publish::{Record, cfg_dir, image_config_name};
use crate::pxelinux;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Owner of per-host log directories on an export nodes write as squashed
/// root (nobody:nogroup on Debian).
pub const ANON_ID: u32 = 65534;

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

/// One difference between the disk and the inventory.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    /// `write`, `link`, `remove`, `mkdir` or `chown`.
    pub action: String,
    pub path: PathBuf,
    /// Link target, or owner and mode.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Line diff of a file (dry runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
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
    let mut image_locks = Vec::new();
    let roots = Roots::default();
    let p = plan(layout, &inv, &o.etc_dir, &roots)?;
    if !o.dry_run {
        for img in &p.locked_images {
            image_locks.push(layout.lock(img, "sync", o.wait)?);
        }
    }
    // Compare after taking the locks: a build may have just finished.
    let p = if o.dry_run || p.locked_images.is_empty() {
        p
    } else {
        plan(layout, &inv, &o.etc_dir, &roots)?
    };
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for it in &p.items {
        match it.change(layout, &roots, o.dry_run)? {
            Some(c) => changes.push((it, c)),
            None => unchanged += 1,
        }
    }
    let mut next_steps = Vec::new();
    let changed = |needle: &Path| changes.iter().any(|(_, c)| c.path == needle);
    if changed(&p.exports_path) {
        next_steps.push("exportfs -ra".to_string());
    }
    if changed(&p.dnsmasq_path) {
        next_steps.push("systemctl restart dnsmasq (if it serves DHCP here)".to_string());
    }
    if changed(&p.dhcpd_path) {
        next_steps.push("systemctl restart isc-dhcp-server (if it serves DHCP here)".to_string());
    }
    if !o.dry_run && !changes.is_empty() {
        apply(layout, &p, &changes, &roots)?;
    }
    drop(image_locks);
    Ok(SyncReport {
        dry_run: o.dry_run,
        inventory: o.inventory.clone(),
        hosts: inv.hosts.len(),
        host_files: p.host_files,
        following_default: p.following_default,
        changes: changes.into_iter().map(|(_, c)| c).collect(),
        unchanged,
        next_steps,
    })
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

/// Where an image's per-host logs go, as its saved profile says: a
/// directory inside the image (read-write roots) or one on the server that
/// nodes write through an export (read-only roots). Either way it is a
/// tree nodes write, so sync touches it only through a confined view.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogPlace {
    /// The confined root (the image, or the export's directory).
    root: PathBuf,
    /// Where the per-host directories go, inside `root`.
    rel: PathBuf,
    uid: u32,
    gid: u32,
    /// Exported read-write from here (read-only roots).
    export: bool,
}

/// What the server needs to know about an image.
#[derive(Debug, Clone)]
struct ImageFacts {
    rw: bool,
    logs: Option<LogPlace>,
}

/// Server-side facts of an image, from its saved profile and the layout
/// only: never from a file inside the image, which nodes can write.
fn image_facts(layout: &Layout, inv: &Inventory, image: &str) -> Result<ImageFacts> {
    let p = crate::state::image_profile(layout, image)?;
    let rw = p.nfs.root_mode == crate::profile::RootMode::Rw;
    if p.logs.layout != crate::profile::LogLayout::PerHost {
        return Ok(ImageFacts { rw, logs: None });
    }
    let logs = if rw {
        Some(LogPlace {
            root: layout.image_dir(image),
            rel: PathBuf::from(p.logs.dir.trim_start_matches('/')),
            uid: 0,
            gid: 0,
            export: false,
        })
    } else {
        match p.logs.export.split_once(':') {
            Some((server, path)) if !path.is_empty() => {
                // Only a log export this server provides is ours to manage,
                // and only below the base dir.
                if server != inv.cluster.nfs_server.to_string() {
                    None
                } else {
                    Some(LogPlace {
                        root: confined_export(layout, image, Path::new(path))?,
                        rel: PathBuf::new(),
                        uid: ANON_ID,
                        gid: ANON_ID,
                        export: true,
                    })
                }
            }
            _ => Some(LogPlace {
                root: layout.logs_dir(image),
                rel: PathBuf::new(),
                uid: ANON_ID,
                gid: ANON_ID,
                export: true,
            }),
        }
    };
    Ok(ImageFacts { rw, logs })
}

/// A log export path from a profile, checked to lie below the base dir
/// (sync and boot-test create and export it read-write).
pub fn confined_export(layout: &Layout, image: &str, path: &Path) -> Result<PathBuf> {
    let clean = path.is_absolute()
        && path.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
    if !clean || !path.starts_with(&layout.base_dir) || path == layout.base_dir {
        bail!(
            "image {image}: logs.export path {} is not below the base dir {}; sync only \
             creates, chowns and exports log directories there (leave logs.export empty \
             for the default {})",
            path.display(),
            layout.base_dir.display(),
            layout.logs_dir(image).display()
        );
    }
    Ok(path.to_path_buf())
}

/// A file or directory sync manages: on the server, or inside a tree nodes
/// write (an image, a log export), reached only through its confined view.
#[derive(Debug, Clone)]
enum Place {
    Host(PathBuf),
    Confined { root: PathBuf, rel: PathBuf },
}

impl Place {
    /// The host path, for reports and messages.
    fn shown(&self) -> PathBuf {
        match self {
            Place::Host(p) => p.clone(),
            Place::Confined { root, rel } if rel.as_os_str().is_empty() => root.clone(),
            Place::Confined { root, rel } => root.join(rel),
        }
    }
}

/// Confined views of the trees a sync touches, opened once each.
#[derive(Debug, Default)]
struct Roots(std::cell::RefCell<BTreeMap<PathBuf, std::rc::Rc<ImageRoot>>>);

impl Roots {
    /// The view of `root`, created (a log export's directory) when
    /// `create`; `None` when it does not exist and may not be created.
    fn open(&self, root: &Path, create: bool) -> Result<Option<std::rc::Rc<ImageRoot>>> {
        if let Some(r) = self.0.borrow().get(root) {
            return Ok(Some(r.clone()));
        }
        if !root.is_dir() {
            if !create {
                return Ok(None);
            }
            fsutil::mkdir_p(root)?;
        }
        let r = std::rc::Rc::new(ImageRoot::open(root)?);
        self.0.borrow_mut().insert(root.to_path_buf(), r.clone());
        Ok(Some(r))
    }

    /// The view of `root` for writing (created when missing).
    fn get(&self, root: &Path) -> Result<std::rc::Rc<ImageRoot>> {
        self.open(root, true)?
            .with_context(|| format!("opening {}", root.display()))
    }

    fn read(&self, place: &Place) -> Result<Option<String>> {
        match place {
            Place::Host(p) => read_opt(p),
            Place::Confined { root, rel } => match self.open(root, false)? {
                Some(r) => r.read_to_string_opt(rel),
                None => Ok(None),
            },
        }
    }

    fn lstat(&self, place: &Place) -> Result<Option<std::fs::Metadata>> {
        match place {
            Place::Host(p) => Ok(std::fs::symlink_metadata(p).ok()),
            Place::Confined { root, rel } => match self.open(root, false)? {
                Some(r) => r.symlink_metadata(rel),
                None => Ok(None),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Dirs,
    HostFiles,
    HostLinks,
    ImageHosts,
    Exports,
    Dhcp,
    Remove,
}

#[derive(Debug, Clone)]
enum Item {
    File {
        place: Place,
        text: String,
        phase: Phase,
    },
    Link {
        path: PathBuf,
        target: String,
    },
    Remove {
        path: PathBuf,
    },
    /// A host's ssh keys, made when missing.
    HostKeys {
        host: String,
        path: PathBuf,
    },
    /// The keys of a host that left the inventory.
    RemoveKeys {
        host: String,
        path: PathBuf,
    },
    Dir {
        place: Place,
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

impl Item {
    fn phase(&self) -> Phase {
        match self {
            Item::File { phase, .. } => *phase,
            Item::Link { .. } => Phase::HostLinks,
            Item::Remove { .. } | Item::RemoveKeys { .. } => Phase::Remove,
            Item::HostKeys { .. } => Phase::Dirs,
            Item::Dir { .. } => Phase::Dirs,
        }
    }

    /// The difference from the disk, if any.
    fn change(&self, layout: &Layout, roots: &Roots, with_diff: bool) -> Result<Option<Change>> {
        let mk = |action: &str, path: &Path, detail: String, diff: Option<String>| Change {
            action: action.into(),
            path: path.to_path_buf(),
            detail,
            diff,
        };
        Ok(match self {
            Item::File { place, text, .. } => {
                let path = &place.shown();
                let old = roots.read(place)?;
                if old.as_deref() == Some(text.as_str())
                    && roots.lstat(place)?.is_some_and(|m| m.is_file())
                {
                    None
                } else {
                    let diff = with_diff
                        .then(|| crate::textdiff::line_diff(old.as_deref().unwrap_or(""), text));
                    let detail = if old.is_none() {
                        "(new)".into()
                    } else {
                        String::new()
                    };
                    Some(mk("write", path, detail, diff))
                }
            }
            Item::Link { path, target } => match std::fs::read_link(path) {
                Ok(t) if t == Path::new(target) => None,
                _ => Some(mk("link", path, format!("-> {target}"), None)),
            },
            Item::Remove { path } => Some(mk("remove", path, String::new(), None)),
            Item::RemoveKeys { path, .. } => {
                Some(mk("remove", path, "(ssh host keys)".into(), None))
            }
            Item::HostKeys { host, path } => (!crate::hostkeys::complete(layout, host))
                .then(|| mk("keygen", path, "(ssh host keys)".into(), None)),
            Item::Dir {
                place,
                uid,
                gid,
                mode,
            } => {
                let path = &place.shown();
                let detail = format!("(owner {uid}:{gid}, mode {mode:04o})");
                match roots.lstat(place)? {
                    Some(m) if m.is_dir() => {
                        if m.uid() == *uid
                            && m.gid() == *gid
                            && m.permissions().mode() & 0o7777 == *mode
                        {
                            None
                        } else {
                            Some(mk("chown", path, detail, None))
                        }
                    }
                    Some(_) => bail!(
                        "{} exists and is not a directory; move it away so sync can \
                         create the host's log directory",
                        path.display()
                    ),
                    None => Some(mk("mkdir", path, detail, None)),
                }
            }
        })
    }
}

fn read_opt(p: &Path) -> Result<Option<String>> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Everything sync would make true.
struct Plan {
    items: Vec<Item>,
    host_files: Vec<String>,
    following_default: Vec<String>,
    /// Images whose trees sync writes into.
    locked_images: BTreeSet<String>,
    /// Per-host names owned after this sync, and before it.
    names_now: BTreeSet<String>,
    names_before: BTreeSet<String>,
    exports_path: PathBuf,
    dnsmasq_path: PathBuf,
    dhcpd_path: PathBuf,
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
fn load_names(layout: &Layout) -> Result<BTreeSet<String>> {
    let p = names_record(layout);
    match std::fs::read(&p) {
        Ok(b) => {
            let all: BTreeSet<String> =
                serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display()))?;
            Ok(all.into_iter().filter(|n| is_host_name(n)).collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn save_names(layout: &Layout, names: &BTreeSet<String>) -> Result<()> {
    let p = names_record(layout);
    fsutil::mkdir_p(p.parent().expect("has a parent"))?;
    let mut t = serde_json::to_string_pretty(names)?;
    t.push('\n');
    fsutil::atomic_write(&p, t.as_bytes())
}

/// Config text without comment lines, to compare configs by meaning.
fn body(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
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

fn plan(layout: &Layout, inv: &Inventory, etc_dir: &Path, roots: &Roots) -> Result<Plan> {
    let mut items = Vec::new();
    let mut locked_images = BTreeSet::new();

    // Records and facts of every image a host names.
    let mut records: BTreeMap<String, Option<Record>> = BTreeMap::new();
    let mut facts: BTreeMap<String, ImageFacts> = BTreeMap::new();
    for h in &inv.hosts {
        if let Some(img) = &h.image {
            if h.boot == BootMode::Image {
                // Its root is exported: it must exist.
                layout
                    .existing_image(img)
                    .with_context(|| format!("host {}", h.name))?;
            }
            // Also for localboot and disabled hosts: their config takes
            // the serial console from it, so PXELINUX's SAY reaches it.
            if !records.contains_key(img) {
                records.insert(img.clone(), Record::load(layout, img)?);
            }
            if !facts.contains_key(img) {
                facts.insert(img.clone(), image_facts(layout, inv, img)?);
            }
        }
    }

    // 1. Per-host log directories (never removed: they hold logs).
    let mut seen_dirs = BTreeSet::new();
    for h in &inv.hosts {
        let Some(img) = &h.image else { continue };
        let Some(lp) = facts[img].logs.as_ref() else {
            continue;
        };
        let place = Place::Confined {
            root: lp.root.clone(),
            rel: lp.rel.join(&h.name),
        };
        if !lp.export {
            locked_images.insert(img.clone());
        }
        if seen_dirs.insert(place.shown()) {
            items.push(Item::Dir {
                place,
                uid: lp.uid,
                gid: lp.gid,
                mode: 0o755,
            });
        }
    }

    // Every host's ssh keys; the keys of hosts no longer listed go.
    for h in &inv.hosts {
        items.push(Item::HostKeys {
            host: h.name.clone(),
            path: crate::hostkeys::host_dir(layout, &h.name),
        });
    }
    for gone in crate::hostkeys::hosts_with_keys(layout)? {
        if inv.host(&gone).is_none() {
            items.push(Item::RemoveKeys {
                path: crate::hostkeys::host_dir(layout, &gone),
                host: gone,
            });
        }
    }

    // 2. Per-host PXELINUX names.
    let cfgd = cfg_dir(layout);
    let default_body = read_opt(&cfgd.join("default"))?.map(|t| body(&t));
    let mut host_files = Vec::new();
    let mut following_default = Vec::new();
    let mut names_now = BTreeSet::new();
    for h in &inv.hosts {
        let rec = h
            .image
            .as_ref()
            .and_then(|i| records.get(i))
            .and_then(Option::as_ref);
        let text = pxelinux::try_render(&render::boot_config(h, rec)?)?;
        let differs = inv.cluster.host_files == super::HostFiles::All
            || default_body.as_deref() != Some(body(&text).as_str());
        if !differs {
            following_default.push(h.name.clone());
            continue;
        }
        host_files.push(h.name.clone());
        host_names(h, &cfgd, text, &mut items, &mut names_now);
    }
    // Names owned before: the record, plus any file with our header.
    let mut names_before = load_names(layout)?;
    if let Ok(rd) = std::fs::read_dir(&cfgd) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if is_host_name(&n)
                && e.file_type().is_ok_and(|t| t.is_file())
                && read_opt(&e.path())?.is_some_and(|t| render::is_host_config(&t))
            {
                names_before.insert(n);
            }
        }
    }
    for n in names_before.difference(&names_now) {
        let path = cfgd.join(n);
        if std::fs::symlink_metadata(&path).is_ok() {
            items.push(Item::Remove { path });
        }
    }

    // 3. /etc/hosts of every image.
    for img in layout.list_images()? {
        let place = Place::Confined {
            root: layout.image_dir(&img),
            rel: PathBuf::from("etc/hosts"),
        };
        let old = roots.read(&place)?;
        let text = render::image_hosts(old.as_deref(), inv, &place.shown())?;
        locked_images.insert(img);
        items.push(Item::File {
            place,
            text,
            phase: Phase::ImageHosts,
        });
    }

    // 4. Exports: roots of images some host boots, and their log trees.
    let mut exports: Vec<Export> = Vec::new();
    for (img, f) in &facts {
        if !inv
            .hosts
            .iter()
            .any(|h| h.boot == BootMode::Image && h.image.as_deref() == Some(img))
        {
            continue;
        }
        exports.push(Export {
            path: layout.image_dir(img),
            rw: f.rw,
            no_root_squash: true,
            what: format!(
                "image {img}: root file system ({})",
                if f.rw { "rw" } else { "ro" }
            ),
            client: None,
        });
        if let Some(lp) = &f.logs
            && lp.export
        {
            exports.push(Export {
                path: Place::Confined {
                    root: lp.root.clone(),
                    rel: lp.rel.clone(),
                }
                .shown(),
                rw: true,
                no_root_squash: false,
                what: format!("image {img}: per-host logs, written as squashed root"),
                client: None,
            });
        }
    }
    // Each booting host's ssh keys, to that host's address alone.
    for h in inv.hosts.iter().filter(|h| h.boot == BootMode::Image) {
        exports.push(Export {
            path: crate::hostkeys::host_dir(layout, &h.name),
            rw: false,
            no_root_squash: true,
            what: format!("host {}: its ssh host keys, for it alone", h.name),
            client: Some(h.ip),
        });
    }
    render::check_tftp_root(&layout.tftp_root)?;
    let exports_path = etc_dir.join("exports.d/nfsroot.exports");
    let dnsmasq_path = etc_dir.join("dnsmasq.d/nfsroot.conf");
    let dhcpd_path = etc_dir.join("dhcp/dhcpd.conf");
    let shared: [(&PathBuf, String, String, Phase); 3] = [
        (
            &exports_path,
            render::try_exports(inv, &exports)?,
            String::new(),
            Phase::Exports,
        ),
        (
            &dnsmasq_path,
            render::dnsmasq(inv, &layout.tftp_root),
            String::new(),
            Phase::Dhcp,
        ),
        (
            &dhcpd_path,
            render::dhcpd_hosts(inv),
            render::dhcpd_prologue(inv),
            Phase::Dhcp,
        ),
    ];
    for (path, body, prologue, phase) in shared {
        let old = read_opt(path)?;
        let text = render::splice(old.as_deref(), &body, &prologue, path)?;
        items.push(Item::File {
            place: Place::Host(path.clone()),
            text,
            phase,
        });
    }
    items.sort_by_key(Item::phase);
    Ok(Plan {
        items,
        host_files,
        following_default,
        locked_images,
        names_now,
        names_before,
        exports_path,
        dnsmasq_path,
        dhcpd_path,
    })
}

/// `01-aa-bb-..` or an 8-digit upper-case hex address: names PXELINUX
/// looks up per host.
fn is_host_name(n: &str) -> bool {
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

/// The items for one host's names: see the module docs.
fn host_names(
    h: &Host,
    cfgd: &Path,
    text: String,
    items: &mut Vec<Item>,
    names: &mut BTreeSet<String>,
) {
    let primary = pxelinux::mac_file_name(&h.macs[0]);
    let mut links: Vec<String> = h.macs[1..]
        .iter()
        .map(|m| pxelinux::mac_file_name(m))
        .collect();
    links.push(pxelinux::hex_ip(h.ip));
    let image_cfg = h.image.as_deref().map(image_config_name);
    let target = match image_cfg {
        Some(c) if render::is_plain(h) && cfgd.join(&c).is_file() => {
            links.insert(0, primary.clone());
            c
        }
        _ => {
            items.push(Item::File {
                place: Place::Host(cfgd.join(&primary)),
                text,
                phase: Phase::HostFiles,
            });
            primary.clone()
        }
    };
    names.insert(primary);
    for l in links {
        items.push(Item::Link {
            path: cfgd.join(&l),
            target: target.clone(),
        });
        names.insert(l);
    }
}

fn apply(layout: &Layout, p: &Plan, changes: &[(&Item, Change)], roots: &Roots) -> Result<()> {
    // Record the superset of names first, so a crash never leaves a file
    // the tool made but does not know it owns.
    let union: BTreeSet<String> = p.names_before.union(&p.names_now).cloned().collect();
    if union != load_names(layout)? {
        save_names(layout, &union)?;
    }
    // New hosts' ssh keys first, all cores at once.
    let keygen: Vec<String> = changes
        .iter()
        .filter_map(|(it, _)| match it {
            Item::HostKeys { host, .. } => Some(host.clone()),
            _ => None,
        })
        .collect();
    crate::hostkeys::ensure_many(layout, &keygen)?;
    let cfgd = cfg_dir(layout);
    let mut dirty_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut phase = None;
    for (it, _) in changes {
        if phase != Some(it.phase()) {
            for d in std::mem::take(&mut dirty_dirs) {
                fsutil::fsync_dir(&d)?;
            }
            phase = Some(it.phase());
            if it.phase() == Phase::HostFiles || it.phase() == Phase::HostLinks {
                fsutil::mkdir_p(&cfgd)?;
                fsutil::sweep_temps(&cfgd)?;
            }
        }
        match it {
            Item::File { place, text, .. } => {
                // Keep the mode of a regular file in place; a link's target
                // never lends its mode.
                let mode = roots
                    .lstat(place)?
                    .filter(|m| m.is_file())
                    .map(|m| m.permissions().mode() & 0o7777)
                    .unwrap_or(0o644);
                match place {
                    Place::Host(path) => {
                        fsutil::mkdir_p(path.parent().context("file has a parent")?)?;
                        fsutil::atomic_write_mode(path, text.as_bytes(), mode)?;
                    }
                    Place::Confined { root, rel } => {
                        roots.get(root)?.write(rel, text.as_bytes(), mode)?;
                    }
                }
            }
            Item::Link { path, target } => {
                let dir = path.parent().context("link has a parent")?;
                let tmp = dir.join(format!(
                    "{}{}-{}",
                    fsutil::TEMP_PREFIX,
                    std::process::id(),
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(target, &tmp)
                    .with_context(|| format!("creating symlink {}", tmp.display()))?;
                std::fs::rename(&tmp, path)
                    .with_context(|| format!("renaming into place {}", path.display()))?;
                dirty_dirs.insert(dir.to_path_buf());
            }
            Item::HostKeys { host, .. } => {
                crate::hostkeys::ensure(layout, host)?;
            }
            Item::RemoveKeys { host, .. } => {
                crate::hostkeys::remove(layout, host)?;
            }
            Item::Remove { path } => {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("removing {}", path.display()));
                    }
                }
                if let Some(d) = path.parent() {
                    dirty_dirs.insert(d.to_path_buf());
                }
            }
            Item::Dir {
                place,
                uid,
                gid,
                mode,
            } => match place {
                Place::Host(path) => bail!("{}: log directories are confined", path.display()),
                Place::Confined { root, rel } => {
                    let r = roots.get(root)?;
                    r.create_dir_all(rel, *mode)?;
                    r.chown(rel, *uid, *gid)
                        .context("changing a log directory's owner (run sync as root)")?;
                    r.set_mode(rel, *mode)?;
                }
            },
        }
    }
    for d in dirty_dirs {
        fsutil::fsync_dir(&d)?;
    }
    if p.names_now != union {
        save_names(layout, &p.names_now)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_pattern() {
        assert!(is_host_name("01-52-54-00-ab-cd-01"));
        assert!(is_host_name("0A120102"));
        assert!(!is_host_name("default"));
        assert!(!is_host_name("nfsroot-minimal"));
        assert!(!is_host_name("0a120102"));
    }
}
