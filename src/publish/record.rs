//! The publish record: what is published for one image, kept in
//! `<state>/published/<image>.json` outside the exported tree, and the
//! facts derived from it (the image's boot configs, PXELINUX and GRUB
//! rendered from one model, their file names, the files every config
//! names). The record is a superset of what any config names, so a config
//! can be checked against it at any moment.
//!
//! The boot config of an image is one thing in several files
//! ([`config_files`]): `pxelinux.cfg/nfsroot-<image>` and
//! `grub/nfsroot-<image>.cfg`, and for the default image
//! `pxelinux.cfg/default`, `grub/grub.cfg` and the iPXE script
//! `nfsroot.ipxe`, listed so the files of each set are renamed one right
//! after the other.

use crate::fsutil;
use crate::image::Layout;
use crate::{bootcfg, grub, ipxe, pxelinux};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One published kernel with its initramfs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishedKernel {
    pub version: String,
    /// Paths relative to the TFTP root.
    pub kernel: String,
    pub initrd: String,
    pub kernel_sha256: String,
    pub initrd_sha256: String,
    /// Initramfs backend that built it (`nfsroot` or `initramfs-tools`).
    pub backend: String,
    /// Kernel command line the labels use.
    pub append: String,
    /// RFC 3339 UTC time it was published.
    pub published_at: String,
}

/// What is published for one image; kept in `<state>/published/<image>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Record {
    pub image: String,
    /// Oldest first.
    pub kernels: Vec<PublishedKernel>,
    /// The version the image's config boots by default.
    pub default: Option<String>,
    /// Serial console for configs (`ttyS0,115200`), if any.
    pub serial: Option<String>,
    /// Prompt timeout in seconds.
    pub timeout_s: u32,
    /// The iPXE script boots this image itself when it is the default
    /// (the profile's `boot.ipxe`); else it hands iPXE clients to PXELINUX.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipxe: bool,
    /// Every published file (TFTP-relative) and its sha256: always a
    /// superset of what any config names, so a config can be checked
    /// against it at any moment, even mid-update.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
}

impl Record {
    /// Load the record of `image`, or `None` if nothing is published.
    pub fn load(layout: &Layout, image: &str) -> Result<Option<Record>> {
        let p = layout.record_path(image);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// The labels of this image, default first, for a PXELINUX config.
    pub fn entries(&self) -> Vec<bootcfg::Entry> {
        let mut ks: Vec<&PublishedKernel> = self.kernels.iter().rev().collect();
        if let Some(d) = &self.default
            && let Some(i) = ks.iter().position(|k| &k.version == d)
        {
            let k = ks.remove(i);
            ks.insert(0, k);
        }
        ks.into_iter()
            .map(|k| bootcfg::Entry {
                label: format!("{}-{}", self.image, k.version),
                kernel: k.kernel.clone(),
                initrd: k.initrd.clone(),
                append: k.append.clone(),
            })
            .collect()
    }
}

impl Record {
    /// Save atomically (outside the exported tree).
    pub fn save(&self, layout: &Layout) -> Result<()> {
        let p = layout.record_path(&self.image);
        fsutil::mkdir_p(p.parent().expect("record has a parent"))?;
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        fsutil::atomic_write(&p, text.as_bytes())
    }

    /// Files the record lists that no kept kernel names: retired (with a
    /// dropped kernel, or an initramfs rebuilt) while some config still
    /// named them, typically a per-host config pinning an older kernel.
    /// They stay listed until a later publish, upgrade-kernel, rollback or
    /// sync finds nothing naming them and deletes them.
    pub fn retired(&self) -> Vec<String> {
        let kept: std::collections::BTreeSet<&str> = self
            .kernels
            .iter()
            .flat_map(|k| [k.kernel.as_str(), k.initrd.as_str()])
            .collect();
        self.files
            .keys()
            .filter(|f| !kept.contains(f.as_str()))
            .cloned()
            .collect()
    }

    pub fn find(&self, ver: &str) -> Option<&PublishedKernel> {
        self.kernels.iter().find(|k| k.version == ver)
    }

    /// The image's boot config.
    pub fn config(&self) -> bootcfg::Config {
        bootcfg::Config {
            header: format!(
                "generated by nfsroot for image {}; do not edit: use nfsroot \
                 upgrade-kernel / rollback",
                self.image
            ),
            serial: self.serial.as_deref().and_then(pxelinux::serial_of),
            timeout_s: self.timeout_s,
            boot: bootcfg::Boot::Entries(self.entries()),
        }
    }
}

/// The image's own config name under pxelinux.cfg/.
pub fn image_config_name(image: &str) -> String {
    format!("nfsroot-{image}")
}

/// Where pxelinux.cfg lives.
pub fn cfg_dir(layout: &Layout) -> PathBuf {
    layout.tftp_root.join("pxelinux.cfg")
}

/// Where the GRUB configs live (the signed GRUB's prefix).
pub fn grub_dir(layout: &Layout) -> PathBuf {
    layout.tftp_root.join(grub::DIR)
}

/// Where the iPXE script lives: [`ipxe::TOP`] at the TFTP root.
pub fn ipxe_path(layout: &Layout) -> PathBuf {
    layout.tftp_root.join(ipxe::TOP)
}

/// Which loader reads a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    Pxelinux,
    Grub,
    Ipxe,
}

impl Loader {
    /// Parse a config of this loader.
    pub fn parse(self, text: &str) -> Result<bootcfg::Parsed> {
        match self {
            Loader::Pxelinux => pxelinux::parse(text),
            Loader::Grub => grub::parse(text),
            Loader::Ipxe => ipxe::parse(text),
        }
    }
}

/// One file of an image's boot config: where, for which loader, and its
/// text.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub loader: Loader,
    pub text: String,
}

/// The files of `rec`'s boot config, in write order: the image's own
/// PXELINUX and GRUB configs, then with `default` `pxelinux.cfg/default`,
/// `grub/grub.cfg` (which also searches per-host GRUB configs) and
/// `nfsroot.ipxe` (which hands hosts with a per-host config to PXELINUX).
pub fn config_files(layout: &Layout, rec: &Record, default: bool) -> Result<Vec<ConfigFile>> {
    let c = rec.config();
    let (pxe, grub_text) = (pxelinux::try_render(&c)?, grub::try_render(&c)?);
    let file = |path: PathBuf, loader, text: &String| ConfigFile {
        path,
        loader,
        text: text.clone(),
    };
    let mut v = vec![
        file(
            cfg_dir(layout).join(image_config_name(&rec.image)),
            Loader::Pxelinux,
            &pxe,
        ),
        file(
            grub_dir(layout).join(grub::image_config_name(&rec.image)),
            Loader::Grub,
            &grub_text,
        ),
    ];
    if default {
        v.push(file(
            cfg_dir(layout).join("default"),
            Loader::Pxelinux,
            &pxe,
        ));
        v.push(file(
            grub_dir(layout).join(grub::TOP),
            Loader::Grub,
            &grub::try_render_top(&c)?,
        ));
        v.push(file(
            ipxe_path(layout),
            Loader::Ipxe,
            &ipxe::try_render_top(&c, rec.ipxe)?,
        ));
    }
    Ok(v)
}

/// Check a published kernel's files against the recorded checksums.
pub fn verify(tftp: &Path, k: &PublishedKernel) -> Result<()> {
    for (rel, want) in [(&k.kernel, &k.kernel_sha256), (&k.initrd, &k.initrd_sha256)] {
        let p = tftp.join(rel);
        let got = fsutil::sha256_file(&p)?;
        if &got != want {
            bail!("{}: sha256 {got}, recorded {want}", p.display());
        }
    }
    Ok(())
}

/// Which image owns pxelinux.cfg/default (from its header line).
pub fn default_owner(default_cfg: &Path) -> Option<String> {
    let text = std::fs::read_to_string(default_cfg).ok()?;
    let first = text.lines().next()?;
    let rest = first.strip_prefix("# generated by nfsroot for image ")?;
    Some(rest.split(';').next()?.to_string())
}

/// Every TFTP-relative path named by any config under pxelinux.cfg/ or
/// grub/ (per-host ones included) or by the iPXE script, as it will be
/// once `pending` (configs about to be written) are: their new text
/// counts, not what is on disk.
pub fn referenced(
    layout: &Layout,
    pending: &[ConfigFile],
) -> Result<std::collections::BTreeSet<String>> {
    let mut set = std::collections::BTreeSet::new();
    let mut add = |loader: Loader, text: &str| {
        if let Ok(parsed) = loader.parse(text) {
            for en in parsed.entries {
                set.insert(en.kernel);
                set.insert(en.initrd);
            }
        }
    };
    for c in pending {
        add(c.loader, &c.text);
    }
    for (dir, loader) in [
        (cfg_dir(layout), Loader::Pxelinux),
        (grub_dir(layout), Loader::Grub),
    ] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(fsutil::TEMP_PREFIX) || pending.iter().any(|c| c.path == e.path()) {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(e.path()) {
                add(loader, &text);
            }
        }
    }
    let top = ipxe_path(layout);
    if !pending.iter().any(|c| c.path == top)
        && let Ok(text) = std::fs::read_to_string(&top)
    {
        add(Loader::Ipxe, &text);
    }
    Ok(set)
}
