//! `nfsroot rollback`: switch an image's default to another published
//! kernel. Only the record and the configs (PXELINUX and GRUB, one pair
//! after the other, see [`super::record::config_files`]) change; the
//! target's files are verified against their checksums first, and temp
//! files of killed runs are swept as publish does; retired files no config
//! pins any more are deleted after the switch, as publish does.

use super::Outcome;
use super::record::{Loader, Record, cfg_dir, config_files, default_owner, verify};
use crate::fsutil;
use crate::image::Layout;
use anyhow::{Context, Result, bail};

/// Switch the default to another published version (atomic: config last).
pub fn rollback(layout: &Layout, image: &str, to: Option<&str>) -> Result<Outcome> {
    let mut rec = Record::load(layout, image)?.with_context(|| {
        format!("nothing is published for image {image}; run nfsroot publish {image}")
    })?;
    let cur = rec.default.clone().unwrap_or_default();
    let target = match to {
        Some(v) => rec
            .find(v)
            .with_context(|| {
                format!(
                    "kernel {v} is not published for {image}; published: {}",
                    rec.kernels
                        .iter()
                        .map(|k| k.version.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?
            .version
            .clone(),
        None => {
            let i = rec
                .kernels
                .iter()
                .position(|k| k.version == cur)
                .unwrap_or(0);
            if i == 0 {
                bail!(
                    "{image}: {cur} is the oldest published kernel; there is nothing older to roll back to"
                );
            }
            rec.kernels[i - 1].version.clone()
        }
    };
    let k = rec.find(&target).expect("found above").clone();
    verify(&layout.tftp_root, &k).with_context(|| format!("cannot roll back to {target}"))?;
    rec.default = Some(target.clone());
    let owns_default = default_owner(&cfg_dir(layout).join("default")).as_deref() == Some(image);
    let configs = config_files(layout, &rec, owns_default)?;
    super::sweep_leftovers(layout, image)?;
    fsutil::mkdir_p(&super::grub_dir(layout))?;
    // Configs first, the record last: the record's default is what the
    // next `rollback` steps back from, so a run killed between them must
    // leave the old default there, and running it again finishes the same
    // switch instead of stepping back one kernel further. The record lists
    // the same files either way: a rollback publishes none.
    let mut written = vec![];
    for (i, c) in configs.iter().enumerate() {
        if i > 0 {
            crate::crash_point!("rollback.between_configs");
        }
        if c.loader == Loader::Grub {
            crate::crash_point!("rollback.grub_config");
        }
        fsutil::atomic_write(&c.path, c.text.as_bytes())?;
        written.push(c.path.clone());
    }
    crate::crash_point!("rollback.configs");
    rec.save(layout)?;
    // Files a per-host config pinned past retention go once it is gone.
    let removed = super::release_pins(layout, image)?;
    Ok(Outcome {
        image: image.to_string(),
        default: target,
        changed: cur != k.version || !removed.is_empty(),
        written,
        removed,
        kept: rec.kernels.iter().map(|k| k.version.clone()).collect(),
    })
}
