//! Stage hooks: the profile's scripts for `post-bootstrap`, `post-fixups`
//! and `post-build`, run on the host with a fixed environment:
//! NFSROOT_STAGE, NFSROOT_IMAGE, NFSROOT_ROOT (the tree being built),
//! NFSROOT_PROFILE, NFSROOT_BASE_DIR, NFSROOT_TFTP_ROOT. A hook that wants
//! to run something inside the image can `chroot "$NFSROOT_ROOT"`; during
//! the build policy-rc.d keeps daemons from starting. A failing hook fails
//! the build, naming the hook and its exit status.

use crate::exec::Cmd;
use crate::image::Layout;
use crate::profile::{Hooks, Loaded};
use anyhow::{Context, Result};
use std::path::Path;

/// A build stage that has hooks. A name that is not a stage cannot be
/// written (a misspelt string used to run as post-build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    PostBootstrap,
    PostFixups,
    PostBuild,
}

impl Stage {
    /// Every stage, in build order.
    pub const ALL: [Stage; 3] = [Stage::PostBootstrap, Stage::PostFixups, Stage::PostBuild];

    /// The name in the profile's `[hooks]` table and in `NFSROOT_STAGE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::PostBootstrap => "post-bootstrap",
            Stage::PostFixups => "post-fixups",
            Stage::PostBuild => "post-build",
        }
    }

    /// The profile's scripts for this stage.
    pub fn scripts(self, h: &Hooks) -> &[String] {
        match self {
            Stage::PostBootstrap => &h.post_bootstrap,
            Stage::PostFixups => &h.post_fixups,
            Stage::PostBuild => &h.post_build,
        }
    }
}

/// Run the hooks of `stage` against `root`.
pub fn run_stage(
    stage: Stage,
    loaded: &Loaded,
    layout: &Layout,
    root: &Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<usize> {
    let list = stage.scripts(&loaded.profile.hooks);
    let stage = stage.as_str();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each stage selects its own scripts, under the key its name gives in
    /// the profile's `[hooks]` table.
    #[test]
    fn stages_match_profile_keys() {
        let mut text = String::from("[hooks]\n");
        for s in Stage::ALL {
            text.push_str(&format!("{} = [\"{}.sh\"]\n", s.as_str(), s.as_str()));
        }
        let h: crate::profile::Profile = toml::from_str(&format!("name = \"t\"\n{text}")).unwrap();
        for s in Stage::ALL {
            assert_eq!(s.scripts(&h.hooks), [format!("{}.sh", s.as_str())]);
        }
    }
}
