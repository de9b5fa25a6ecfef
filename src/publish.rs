//! Publishing boot artifacts into the TFTP root.
//!
//! Layout: `<tftp-root>/<image>/vmlinuz-<ver>` and
//! `<tftp-root>/<image>/initrd.img-<ver>-<hash8>` (the initramfs name carries
//! a content hash, so a rebuild never overwrites a file a live config names),
//! the image's own config `<tftp-root>/pxelinux.cfg/nfsroot-<image>`, and
//! `pxelinux.cfg/default` when this image is the default one.
//!
//! Order of writes: files first (temp, fsync, rename, verify sha256), then
//! the record (outside the exported tree), then the config, last. Retention
//! deletes files only after the switch, and never one a config names.

use crate::image::Layout;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

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
    pub fn entries(&self) -> Vec<crate::pxelinux::Entry> {
        let mut ks: Vec<&PublishedKernel> = self.kernels.iter().rev().collect();
        if let Some(d) = &self.default
            && let Some(i) = ks.iter().position(|k| &k.version == d)
        {
            let k = ks.remove(i);
            ks.insert(0, k);
        }
        ks.into_iter()
            .map(|k| crate::pxelinux::Entry {
                label: format!("{}-{}", self.image, k.version),
                kernel: k.kernel.clone(),
                initrd: k.initrd.clone(),
                append: k.append.clone(),
            })
            .collect()
    }
}
