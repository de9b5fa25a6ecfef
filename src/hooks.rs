//! Stage hooks: the profile's scripts for `post-bootstrap`, `post-fixups`
//! and `post-build`, run on the host with a fixed environment:
//! NFSROOT_STAGE, NFSROOT_IMAGE, NFSROOT_ROOT (the tree being built),
//! NFSROOT_PROFILE, NFSROOT_BASE_DIR, NFSROOT_TFTP_ROOT. A hook that wants
//! to run something inside the image can `chroot "$NFSROOT_ROOT"`; during
//! the build policy-rc.d keeps daemons from starting. A failing hook fails
//! the build, naming the hook and its exit status.

use crate::exec::Cmd;
use crate::image::Layout;
use crate::profile::Loaded;
use anyhow::{Context, Result};
use std::path::Path;

/// The stage names, in order.
pub const STAGES: [&str; 3] = ["post-bootstrap", "post-fixups", "post-build"];

/// Run the hooks of `stage` against `root`.
pub fn run_stage(
    stage: &str,
    loaded: &Loaded,
    layout: &Layout,
    root: &Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<usize> {
    let h = &loaded.profile.hooks;
    let list = match stage {
        "post-bootstrap" => &h.post_bootstrap,
        "post-fixups" => &h.post_fixups,
        _ => &h.post_build,
    };
    for hook in list {
        let path = loaded.hook_path(hook);
        Cmd::new("/bin/sh")
            .arg(&path)
            .env("NFSROOT_STAGE", stage)
            .env("NFSROOT_IMAGE", &loaded.profile.name)
            .env("NFSROOT_ROOT", root)
            .env("NFSROOT_PROFILE", &loaded.origin)
            .env("NFSROOT_BASE_DIR", &layout.base_dir)
            .env("NFSROOT_TFTP_ROOT", &layout.tftp_root)
            .run_lines(&mut *on_line)
            .with_context(|| format!("{stage} hook {} failed", path.display()))?;
    }
    Ok(list.len())
}
