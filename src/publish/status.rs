//! `nfsroot status`: what an image holds, what is published for it, what
//! its configs boot, and every drift between them (a file that no longer
//! matches its checksum, a config naming a missing file, a kernel in the
//! image that is not published).

use super::record::{PublishedKernel, Record, cfg_dir, image_config_name, verify};
use crate::image::Layout;
use crate::imagefs::ImageRoot;
use crate::{kernel, pxelinux};
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
    let cfgd = cfg_dir(layout);
    let mut default_boots = None;
    for name in [image_config_name(image), "default".to_string()] {
        let c = cfgd.join(&name);
        let Ok(text) = std::fs::read_to_string(&c) else {
            if name != "default" && !rec.kernels.is_empty() {
                drift.push(format!("{} is missing", c.display()));
            }
            continue;
        };
        match pxelinux::parse(&text) {
            Ok(parsed) => {
                for e in &parsed.entries {
                    for f in [&e.kernel, &e.initrd] {
                        if !layout.tftp_root.join(f).is_file() {
                            drift.push(format!("{} names {f}, which does not exist", c.display()));
                        }
                    }
                }
                if name != "default" {
                    default_boots = parsed.default_entry().map(|e| e.label.clone());
                }
            }
            Err(e) => drift.push(format!("{}: {e:#}", c.display())),
        }
    }
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
