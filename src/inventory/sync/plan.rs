//! Planning a sync: render every output and list it as an [`Item`], in
//! the steps the parent module describes (log directories, ssh keys,
//! per-host PXELINUX and GRUB names, images' `/etc/hosts`, exports, DHCP). Planning
//! reads the disk (published records, saved profiles, the files sync
//! shares with the admin) but writes nothing and prints nothing.

use super::items::{Item, Phase, Place, Roots, read_opt};
use super::names::{grub_record_name, is_pxelinux_host_file, load_names, name_path};
use crate::image::Layout;
use crate::inventory::render::{self, Export};
use crate::inventory::{BootMode, Host, HostFiles, Inventory};
use crate::publish::{Record, cfg_dir, grub_dir, image_config_name};
use crate::{grub, pxelinux};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where `sync` writes the dnsmasq config, under the etc dir.
pub const DNSMASQ_CONF: &str = "dnsmasq.d/nfsroot.conf";
/// Where `sync` writes (splices) the ISC dhcpd config, under the etc dir.
pub const DHCPD_CONF: &str = "dhcp/dhcpd.conf";

/// Owner of per-host log directories on an export nodes write as squashed
/// root (nobody:nogroup on Debian).
pub const ANON_ID: u32 = 65534;

/// Everything sync would make true.
pub(super) struct SyncPlan {
    pub(super) items: Vec<Item>,
    pub(super) host_files: Vec<String>,
    pub(super) following_default: Vec<String>,
    /// Images whose trees sync writes into.
    pub(super) locked_images: BTreeSet<String>,
    /// Per-host names owned after this sync, and before it.
    pub(super) names_now: BTreeSet<String>,
    pub(super) names_before: BTreeSet<String>,
    pub(super) exports_path: PathBuf,
    pub(super) dnsmasq_path: PathBuf,
    pub(super) dhcpd_path: PathBuf,
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

/// What the server needs to know about an image it serves (not
/// [`crate::facts`], which is what an image says about itself).
#[derive(Debug, Clone)]
struct ServedImage {
    rw: bool,
    logs: Option<LogPlace>,
}

/// Server-side facts of an image, from its saved profile and the layout
/// only: never from a file inside the image, which nodes can write.
fn served_image(layout: &Layout, inv: &Inventory, image: &str) -> Result<ServedImage> {
    let p = crate::state::image_profile(layout, image)?;
    let rw = p.nfs.root_mode == crate::profile::RootMode::Rw;
    if p.logs.layout != crate::profile::LogLayout::PerHost {
        return Ok(ServedImage { rw, logs: None });
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
    Ok(ServedImage { rw, logs })
}

/// Where `image`'s per-host log directories are on this server, from its
/// saved profile: the confined root nodes write and the directory in it
/// holding one directory per host; `None` when its nodes keep none here
/// (`nfsroot nodes` reads their state files there).
pub fn per_host_logs(
    layout: &Layout,
    inv: &Inventory,
    image: &str,
) -> Result<Option<(PathBuf, PathBuf)>> {
    Ok(served_image(layout, inv, image)?
        .logs
        .map(|l| (l.root, l.rel)))
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

/// Published records and server-side settings of every image a host
/// names.
struct Images {
    records: BTreeMap<String, Option<Record>>,
    served: BTreeMap<String, ServedImage>,
}

impl Images {
    fn load(layout: &Layout, inv: &Inventory) -> Result<Images> {
        let mut records = BTreeMap::new();
        let mut served = BTreeMap::new();
        for h in &inv.hosts {
            let Some(img) = &h.image else { continue };
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
            if !served.contains_key(img) {
                served.insert(img.clone(), served_image(layout, inv, img)?);
            }
        }
        Ok(Images { records, served })
    }

    fn record(&self, h: &Host) -> Option<&Record> {
        h.image
            .as_ref()
            .and_then(|i| self.records.get(i))
            .and_then(Option::as_ref)
    }
}

/// Plan a sync of `inv` with server files under `etc_dir`.
pub(super) fn plan(
    layout: &Layout,
    inv: &Inventory,
    etc_dir: &Path,
    roots: &Roots,
) -> Result<SyncPlan> {
    let images = Images::load(layout, inv)?;
    let mut p = SyncPlan {
        items: Vec::new(),
        host_files: Vec::new(),
        following_default: Vec::new(),
        locked_images: BTreeSet::new(),
        names_now: BTreeSet::new(),
        names_before: BTreeSet::new(),
        exports_path: etc_dir.join("exports.d/nfsroot.exports"),
        dnsmasq_path: etc_dir.join(DNSMASQ_CONF),
        dhcpd_path: etc_dir.join(DHCPD_CONF),
    };
    p.log_dirs(inv, &images);
    p.host_keys(layout, inv)?;
    p.pxelinux_names(layout, inv, &images)?;
    p.image_hosts(layout, inv, roots)?;
    let exports = exports(layout, inv, &images);
    render::check_tftp_root(&layout.tftp_root)?;
    p.shared_files(layout, inv, &exports)?;
    p.items.sort_by_key(Item::phase);
    Ok(p)
}

impl SyncPlan {
    /// Step 1: per-host log directories (never removed: they hold logs).
    fn log_dirs(&mut self, inv: &Inventory, images: &Images) {
        let mut seen_dirs = BTreeSet::new();
        for h in &inv.hosts {
            let Some(img) = &h.image else { continue };
            let Some(lp) = images.served[img].logs.as_ref() else {
                continue;
            };
            let place = Place::Confined {
                root: lp.root.clone(),
                rel: lp.rel.join(&h.name),
            };
            if !lp.export {
                self.locked_images.insert(img.clone());
            }
            if seen_dirs.insert(place.shown()) {
                self.items.push(Item::Dir {
                    place,
                    uid: lp.uid,
                    gid: lp.gid,
                    mode: 0o755,
                });
            }
        }
    }

    /// Every host's ssh keys; the keys of hosts no longer listed go.
    fn host_keys(&mut self, layout: &Layout, inv: &Inventory) -> Result<()> {
        for h in &inv.hosts {
            self.items.push(Item::HostKeys {
                host: h.name.clone(),
                path: crate::hostkeys::host_dir(layout, &h.name),
            });
        }
        for gone in crate::hostkeys::hosts_with_keys(layout)? {
            if inv.host(&gone).is_none() {
                self.items.push(Item::RemoveKeys {
                    path: crate::hostkeys::host_dir(layout, &gone),
                    host: gone,
                });
            }
        }
        Ok(())
    }

    /// Step 2: per-host PXELINUX and GRUB names (one decision for both:
    /// a host following `pxelinux.cfg/default` also follows
    /// `grub/grub.cfg`, which publish writes from the same record), and
    /// the removal of names owned before that no host has now.
    fn pxelinux_names(&mut self, layout: &Layout, inv: &Inventory, images: &Images) -> Result<()> {
        let cfgd = cfg_dir(layout);
        let grubd = grub_dir(layout);
        let default_body = read_opt(&cfgd.join("default"))?.map(|t| body(&t));
        for h in &inv.hosts {
            let config = render::boot_config(h, images.record(h))?;
            let text = pxelinux::try_render(&config)?;
            let grub_text =
                grub::try_render(&config).map_err(|e| anyhow::anyhow!("host {}: {e:#}", h.name))?;
            let differs = inv.cluster.host_files == HostFiles::All
                || default_body.as_deref() != Some(body(&text).as_str());
            if !differs {
                self.following_default.push(h.name.clone());
                continue;
            }
            self.host_files.push(h.name.clone());
            let pxe_names = HostNames {
                dir: &cfgd,
                image_cfg: h.image.as_deref().map(image_config_name),
                primary: pxelinux::mac_file_name(&h.macs[0]),
                others: (h.macs[1..].iter().map(|m| pxelinux::mac_file_name(m)))
                    .chain([pxelinux::hex_ip(h.ip)])
                    .collect(),
                record: |n: &str| n.to_string(),
            };
            self.host_names(h, pxe_names, text);
            let grub_names = HostNames {
                dir: &grubd,
                image_cfg: h.image.as_deref().map(grub::image_config_name),
                primary: grub::mac_file_name(&h.macs[0]),
                others: (h.macs[1..].iter().map(|m| grub::mac_file_name(m)))
                    .chain([grub::ip_file_name(h.ip)])
                    .collect(),
                record: grub_record_name,
            };
            self.host_names(h, grub_names, grub_text);
        }
        self.names_before = names_owned_before(layout, &cfgd, &grubd)?;
        for n in self.names_before.difference(&self.names_now) {
            let path = name_path(layout, n);
            if std::fs::symlink_metadata(&path).is_ok() {
                self.items.push(Item::Remove { path });
            }
        }
        Ok(())
    }

    /// The items for one host's names of one loader: see the parent
    /// module's docs.
    fn host_names(&mut self, h: &Host, n: HostNames<'_, impl Fn(&str) -> String>, text: String) {
        let (cfgd, primary, mut links) = (n.dir, n.primary, n.others);
        let target = match n.image_cfg {
            Some(c) if render::is_plain(h) && cfgd.join(&c).is_file() => {
                links.insert(0, primary.clone());
                c
            }
            _ => {
                self.items.push(Item::File {
                    place: Place::Host(cfgd.join(&primary)),
                    text,
                    phase: Phase::HostFiles,
                });
                primary.clone()
            }
        };
        self.names_now.insert((n.record)(&primary));
        for l in links {
            self.items.push(Item::Link {
                path: cfgd.join(&l),
                target: target.clone(),
            });
            self.names_now.insert((n.record)(&l));
        }
    }

    /// Step 3: `/etc/hosts` of every image.
    fn image_hosts(&mut self, layout: &Layout, inv: &Inventory, roots: &Roots) -> Result<()> {
        for img in layout.list_images()? {
            let place = Place::Confined {
                root: layout.image_dir(&img),
                rel: PathBuf::from("etc/hosts"),
            };
            let old = roots.read(&place)?;
            let text = render::image_hosts(old.as_deref(), inv, &place.shown())?;
            self.locked_images.insert(img);
            self.items.push(Item::File {
                place,
                text,
                phase: Phase::ImageHosts,
            });
        }
        Ok(())
    }

    /// Which iPXE clients the DHCP configs give the iPXE script: not the
    /// hosts this sync gives per-host names, nor those with a PXELINUX
    /// name of any owner that stays on disk (a hand-made hex-IP or subnet
    /// file: the script cannot look those up).
    fn ipxe_route(&self, layout: &Layout, inv: &Inventory) -> render::IpxeRoute {
        let cfgd = cfg_dir(layout);
        let mut on_disk = BTreeSet::new();
        if let Ok(rd) = std::fs::read_dir(&cfgd) {
            for e in rd.flatten() {
                on_disk.insert(e.file_name().to_string_lossy().to_string());
            }
        }
        for gone in self.names_before.difference(&self.names_now) {
            on_disk.remove(gone);
        }
        let mut hosts: BTreeSet<String> = self.host_files.iter().cloned().collect();
        for h in &inv.hosts {
            if render::pxelinux_lookup_names(h)
                .iter()
                .any(|n| on_disk.contains(n))
            {
                hosts.insert(h.name.clone());
            }
        }
        render::IpxeRoute::new(inv, crate::publish::ipxe_path(layout).is_file(), hosts)
    }

    /// Step 4: the files shared with the admin (exports, dnsmasq, dhcpd),
    /// each with the new block spliced between the markers.
    fn shared_files(&mut self, layout: &Layout, inv: &Inventory, exports: &[Export]) -> Result<()> {
        let ipxe = self.ipxe_route(layout, inv);
        let shared: [(&PathBuf, String, String, Phase); 3] = [
            (
                &self.exports_path,
                render::try_exports(inv, exports)?,
                String::new(),
                Phase::Exports,
            ),
            (
                &self.dnsmasq_path,
                render::dnsmasq(inv, &layout.tftp_root, &ipxe),
                String::new(),
                Phase::Dhcp,
            ),
            (
                &self.dhcpd_path,
                render::dhcpd_hosts(inv, &ipxe),
                render::dhcpd_prologue(inv, ipxe.file),
                Phase::Dhcp,
            ),
        ];
        let mut items = Vec::new();
        for (path, body, prologue, phase) in shared {
            let old = read_opt(path)?;
            let text = render::splice(old.as_deref(), &body, &prologue, path)?;
            items.push(Item::File {
                place: Place::Host(path.clone()),
                text,
                phase,
            });
        }
        self.items.extend(items);
        Ok(())
    }
}

/// One loader's per-host names for a host.
struct HostNames<'a, R> {
    /// The loader's config directory.
    dir: &'a Path,
    /// The image's own config there, the target of a plain host's links.
    image_cfg: Option<String>,
    /// The primary MAC's name: the file, when the host has its own.
    primary: String,
    /// Further MACs' and the IP's names: always links.
    others: Vec<String>,
    /// A name as the owned-names record spells it.
    record: R,
}

/// Names owned before this sync: the record, plus any per-host file with
/// our header, PXELINUX's or GRUB's.
fn names_owned_before(layout: &Layout, cfgd: &Path, grubd: &Path) -> Result<BTreeSet<String>> {
    let mut names = load_names(layout)?;
    /// A loader's directory, its per-host name rule, its record spelling.
    type Dir<'a> = (&'a Path, fn(&str) -> bool, fn(&str) -> String);
    let pxe: Dir = (cfgd, is_pxelinux_host_file, |n| n.to_string());
    let grub: Dir = (grubd, grub::is_host_file, grub_record_name);
    for (dir, is_host, record) in [pxe, grub] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if is_host(&n)
                && e.file_type().is_ok_and(|t| t.is_file())
                && read_opt(&e.path())?.is_some_and(|t| render::is_host_config(&t))
            {
                names.insert(record(&n));
            }
        }
    }
    Ok(names)
}

/// Exports: roots of images some host boots and their log trees, then
/// each booting host's ssh keys, to that host's address alone.
fn exports(layout: &Layout, inv: &Inventory, images: &Images) -> Vec<Export> {
    let mut exports: Vec<Export> = Vec::new();
    for (img, f) in &images.served {
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
    for h in inv.hosts.iter().filter(|h| h.boot == BootMode::Image) {
        exports.push(Export {
            path: crate::hostkeys::host_dir(layout, &h.name),
            rw: false,
            no_root_squash: true,
            what: format!("host {}: its ssh host keys, for it alone", h.name),
            client: Some(h.ip),
        });
    }
    exports
}

/// Config text without comment lines, to compare configs by meaning.
fn body(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}
