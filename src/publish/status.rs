//! `nfsroot status`: what an image holds, what is published for it, what
//! its configs boot, and every drift between them (a file that no longer
//! matches its checksum, a config naming a missing file, a kernel in the
//! image that is not published, two configs of one set (PXELINUX, GRUB and
//! for the default the iPXE script) booting different kernels).

use super::record::{
    self, Loader, PublishedKernel, Record, cfg_dir, grub_dir, image_config_name, ipxe_path, verify,
};
use crate::image::Layout;
use crate::imagefs::ImageRoot;
use crate::{grub, kernel};
use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;

/// `nfsroot status`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub image: String,
    pub path: PathBuf,
    pub release: std::collections::BTreeMap<String, String>,
    pub kernels_in_image: Vec<String>,
    pub published: Vec<PublishedKernel>,
    pub default_boots: Option<String>,
    pub drift: Vec<String>,
}

impl Status {
    /// The status table `nfsroot status` prints.
    pub fn text(&self) -> String {
        let mut s = format!("image     {} ({})\n", self.image, self.path.display());
        if let Some(b) = self.release.get("BUILD_ID") {
            s += &format!("build     {b}\n");
        }
        s += &format!("in image  {}\n", self.kernels_in_image.join(", "));
        for k in &self.published {
            s += &format!(
                "published {} ({}, {})\n",
                k.version, k.backend, k.published_at
            );
        }
        s += &format!(
            "default   {}\n",
            self.default_boots.as_deref().unwrap_or("(nothing)")
        );
        if self.drift.is_empty() {
            s += "drift     none\n";
        }
        for d in &self.drift {
            s += &format!("DRIFT     {d}\n");
        }
        s
    }
}

/// Drift in the image's configs (PXELINUX and GRUB) and the default set
/// (with the iPXE script): a missing or unreadable config, a named file
/// that does not exist, two loaders booting different kernels. Returns
/// what the image's PXELINUX config boots.
fn config_drift(
    layout: &Layout,
    image: &str,
    published: bool,
    drift: &mut Vec<String>,
) -> Option<String> {
    let cfgd = cfg_dir(layout);
    let grubd = grub_dir(layout);
    let sets = [
        vec![
            (cfgd.join(image_config_name(image)), Loader::Pxelinux),
            (grubd.join(grub::image_config_name(image)), Loader::Grub),
        ],
        vec![
            (cfgd.join("default"), Loader::Pxelinux),
            (grubd.join(grub::TOP), Loader::Grub),
            (ipxe_path(layout), Loader::Ipxe),
        ],
    ];
    let mut default_boots = None;
    for (i, set) in sets.into_iter().enumerate() {
        let own = i == 0;
        if !own && record::default_owner(&set[0].0).as_deref() != Some(image) {
            continue;
        }
        let mut boots = Vec::new();
        for (c, loader) in set {
            let Ok(text) = std::fs::read_to_string(&c) else {
                if published {
                    drift.push(format!("{} is missing", c.display()));
                }
                continue;
            };
            match loader.parse(&text) {
                Ok(parsed) => {
                    for e in &parsed.entries {
                        for f in [&e.kernel, &e.initrd] {
                            if !layout.tftp_root.join(f).is_file() {
                                drift.push(format!(
                                    "{} names {f}, which does not exist",
                                    c.display()
                                ));
                            }
                        }
                    }
                    if loader == Loader::Ipxe && parsed.default.is_none() {
                        // Hands every client to PXELINUX (boot.ipxe off).
                        continue;
                    }
                    let d = parsed.default_entry().cloned();
                    if own && loader == Loader::Pxelinux {
                        default_boots = d.as_ref().map(|e| e.label.clone());
                    }
                    boots.push((c, d));
                }
                Err(e) => drift.push(format!("{}: {e:#}", c.display())),
            }
        }
        let Some((a, da)) = boots.first() else {
            continue;
        };
        for (b, db) in boots.iter().skip(1).filter(|(_, db)| {
            da.as_ref().map(|e| (&e.kernel, &e.initrd))
                != db.as_ref().map(|e| (&e.kernel, &e.initrd))
        }) {
            let name = |d: &Option<crate::bootcfg::Entry>| {
                d.as_ref()
                    .map_or("nothing".to_string(), |e| e.kernel.clone())
            };
            drift.push(format!(
                "{} boots {} but {} boots {} (run nfsroot publish {image})",
                a.display(),
                name(da),
                b.display(),
                name(db)
            ));
        }
    }
    default_boots
}

pub fn status(layout: &Layout, image: &str) -> Result<Status> {
    let path = layout.existing_image(image)?;
    let img = ImageRoot::open(&path)?;
    let release = crate::facts::release(&img).unwrap_or_default();
    let in_image: Vec<String> = kernel::find_kernels(&img)
        .unwrap_or_default()
        .into_iter()
        .map(|k| k.version)
        .collect();
    let rec = Record::load(layout, image)?.unwrap_or_default();
    let mut drift = Vec::new();
    for k in &rec.kernels {
        if let Err(e) = verify(&layout.tftp_root, k) {
            drift.push(format!("{}: {e:#}", k.version));
        }
    }
    for v in &in_image {
        if rec.find(v).is_none() {
            drift.push(format!(
                "kernel {v} is in the image but not published (run nfsroot upgrade-kernel {image})"
            ));
        }
    }
    let default_boots = config_drift(layout, image, !rec.kernels.is_empty(), &mut drift);
    Ok(Status {
        image: image.to_string(),
        path,
        release,
        kernels_in_image: in_image,
        published: rec.kernels,
        default_boots,
        drift,
    })
}
