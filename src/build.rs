//! `nfsroot build`: a profile becomes an image.
//!
//! A straight list of steps over one context, under the image's lock:
//! bootstrap into a staging tree beside the image, post-bootstrap hooks,
//! fixups, post-fixups hooks, swap the tree into `<base-dir>/<name>` (an
//! atomic exchange when replacing with --force, the old tree kept as a
//! version for the nodes still running it: [`image`]), post-build hooks, then
//! publish the boot artifacts. Until the swap nothing is visible at the
//! image path; a failed bootstrap leaves nothing, a killed build or a
//! later failure only a staging tree, which the next build removes.

use crate::bootstrap;
use crate::exec::{self, POLICY_RC_D};
use crate::fixups;
use crate::fsutil;
use crate::hooks;
use crate::image::{self, Layout};
use crate::profile::Loaded;
use crate::progress::Progress;
use anyhow::{Result, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What `build` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub force: bool,
    pub publish: bool,
    /// Mirror override (flag); the profile's or the host's otherwise.
    pub mirror: Option<String>,
    pub wait: bool,
    /// Where the host's apt sources are (for mirror detection).
    pub apt_dir: PathBuf,
    /// The cluster inventory, when there is one: its `/etc/hosts` block
    /// goes into the new tree, so a rebuild keeps the nodes' names.
    pub inventory: Option<crate::inventory::Inventory>,
}

/// The `--json` summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub image: String,
    pub path: PathBuf,
    pub build_id: String,
    pub bootstrapper: String,
    pub mirror: String,
    pub size_bytes: u64,
    pub packages: usize,
    pub replaced: bool,
    /// The version the new tree replaced (kept until `gc`).
    pub previous: Option<String>,
    pub published: Option<crate::publish::Outcome>,
    pub seconds: Vec<(String, f64)>,
}

impl Summary {
    /// The lines `nfsroot build` prints: the image, and where its kernel
    /// was published.
    pub fn text(&self, tftp_root: &Path) -> String {
        let mut s = format!(
            "built image {} at {} ({} packages, {:.0} MB, build {})\n",
            self.image,
            self.path.display(),
            self.packages,
            self.size_bytes as f64 / 1e6,
            self.build_id
        );
        if let Some(p) = &self.published {
            s += &format!(
                "published kernel {} to {}\n",
                p.default,
                tftp_root.display()
            );
        }
        s
    }
}

/// One build: what every step reads.
struct Build<'a> {
    layout: &'a Layout,
    loaded: &'a Loaded,
    opts: &'a Options,
    mirror: String,
    build_id: String,
    now: i64,
    staging: PathBuf,
    dest: PathBuf,
    prog: Progress,
}

pub fn run(layout: &Layout, loaded: &Loaded, opts: &Options) -> Result<Summary> {
    let p = &loaded.profile;
    exec::require_root("nfsroot build")?;
    let (tool, _) = bootstrap::choose(p)?;
    exec::require(exec::UNSHARE)?;
    let mirror = match (&opts.mirror, p.mirror.as_str()) {
        (Some(m), _) => m.clone(),
        (None, "") => bootstrap::detect_mirror(&opts.apt_dir)?,
        (None, m) => m.to_string(),
    };
    let dest = layout.image_dir(&p.name);
    if dest.exists() && !opts.force {
        bail!(
            "image {} already exists at {}; pass --force to replace it (the old \
             tree stays in place until the new one is ready)",
            p.name,
            dest.display()
        );
    }
    if opts.publish {
        crate::publish::preflight(layout)?;
    }
    fsutil::mkdir_p(&layout.base_dir)?;
    let _lock = layout.lock(&p.name, "build", opts.wait)?;
    let now = crate::clock::now_secs();
    let mut b = Build {
        layout,
        loaded,
        opts,
        build_id: image::new_version_id(now),
        mirror,
        now,
        staging: layout.staging_dir(&p.name),
        dest,
        prog: Progress::new(if opts.publish { 7 } else { 6 }),
    };

    b.prog.stage("clean staging");
    fsutil::remove_tree(&b.staging)?;
    fsutil::mkdir_p(b.staging.parent().expect("staging has a parent"))?;
    b.prog
        .stage(&format!("bootstrap ({}, {})", tool.name, p.suite));
    let staged = b.bootstrap()?;
    b.prog.stage("post-bootstrap hooks");
    b.hooks(hooks::Stage::PostBootstrap, &b.staging.clone())?;
    b.prog.stage("fixups");
    b.fixups(&staged)?;
    b.prog.stage("move into place");
    let size = tree_size(&b.staging);
    let packages = count_packages(&staged);
    let previous = b.move_into_place()?;
    b.prog.stage("post-build hooks");
    b.hooks(hooks::Stage::PostBuild, &b.dest.clone())?;
    let published = if opts.publish {
        b.prog.stage("publish");
        let mut on_line = |l: &str| b.prog.line(l);
        Some(crate::publish::publish(
            layout,
            loaded,
            &b.dest,
            &mut on_line,
        )?)
    } else {
        None
    };
    b.prog.finish();
    Ok(Summary {
        image: p.name.clone(),
        path: b.dest,
        build_id: b.build_id,
        bootstrapper: tool.name.to_string(),
        mirror: b.mirror,
        size_bytes: size,
        packages,
        replaced: previous.is_some(),
        previous,
        published,
        seconds: b.prog.timings.clone(),
    })
}

impl Build<'_> {
    /// Bootstrap into the staging tree, then keep daemons from starting in
    /// the chroot while hooks run. Packages of the bootstrap wrote this
    /// tree: it is reached only through its confined view from here on.
    fn bootstrap(&mut self) -> Result<crate::imagefs::ImageRoot> {
        let p = &self.loaded.profile;
        self.prog.note(&format!(
            "nfsroot: bootstrapping {} {} from {}",
            p.suite, p.architecture, self.mirror
        ));
        let mut packages = bootstrap::required_packages(p);
        for pkg in &p.packages {
            if !packages.contains(pkg) {
                packages.push(pkg.clone());
            }
        }
        let req = bootstrap::Request {
            profile: p,
            mirror: &self.mirror,
            packages,
            target: &self.staging,
            cache_dir: &self.layout.cache_dir,
        };
        if let Err(e) = bootstrap::run(&req, &mut |l| self.prog.line(l)) {
            // A half-bootstrapped tree helps no retry (the next build starts
            // from scratch) and can be large: a failed bootstrap leaves
            // nothing behind.
            let _ = fsutil::remove_tree(&self.staging);
            return Err(e);
        }
        let staged = crate::imagefs::ImageRoot::open(&self.staging)?;
        staged.write("usr/sbin/policy-rc.d", POLICY_RC_D.as_bytes(), 0o755)?;
        Ok(staged)
    }

    fn hooks(&mut self, stage: hooks::Stage, root: &Path) -> Result<()> {
        let (loaded, layout) = (self.loaded, self.layout);
        hooks::run_stage(stage, loaded, layout, root, &mut |l| self.prog.line(l))?;
        Ok(())
    }

    /// The diskless fixups and the inventory's hosts block, the
    /// post-fixups hooks, then the daemon guard goes again.
    fn fixups(&mut self, staged: &crate::imagefs::ImageRoot) -> Result<()> {
        let ctx = fixup_ctx(self.layout, self.loaded, &self.build_id, self.now);
        let mut changed = fixups::apply_all(staged, &ctx)?;
        if let Some(inv) = &self.opts.inventory
            && crate::inventory::image_hosts_into(staged, inv)?
        {
            changed.push("inventory-hosts");
        }
        self.prog.line(&changed.join(" "));
        self.hooks(hooks::Stage::PostFixups, &self.staging.clone())?;
        staged.remove_file("usr/sbin/policy-rc.d")?;
        Ok(())
    }

    /// Swap the staged tree into place, save the profile it was built
    /// from, and create a managed log export below the base dir.
    fn move_into_place(&mut self) -> Result<Option<String>> {
        let name = &self.loaded.profile.name;
        let replaced =
            image::swap_into_place(self.layout, name, &self.staging, self.opts.force, false)?;
        crate::state::save_profile(self.layout, self.loaded)?;
        if let Some(export) = self.loaded.profile.logs_export(self.layout)
            && let Some((_, path)) = export.split_once(':')
            && Path::new(path).starts_with(&self.layout.base_dir)
        {
            fsutil::mkdir_p(Path::new(path))?;
        }
        Ok(replaced)
    }
}

/// What the fixups of version `build_id`, made at `now`, are given.
pub fn fixup_ctx<'a>(
    layout: &Layout,
    loaded: &'a Loaded,
    build_id: &str,
    now: i64,
) -> fixups::Ctx<'a> {
    let p = &loaded.profile;
    fixups::Ctx {
        profile: p,
        logs_export: p.logs_export(layout),
        hostkeys_export: format!(
            "{}:{}",
            p.nfs.server,
            crate::hostkeys::dir(layout).display()
        ),
        build_id: build_id.to_string(),
        build_date: crate::clock::rfc3339(now),
        profile_digest: loaded.digest(),
    }
}

/// Bytes used by regular files in a tree (hardlinks counted once).
pub fn tree_size(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    walkdir::WalkDir::new(root)
        .same_file_system(true)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))))
        .map(|m| m.len())
        .sum()
}

/// Installed packages, from dpkg's status file.
pub fn count_packages(root: &crate::imagefs::ImageRoot) -> usize {
    crate::facts::packages(root).map_or(0, |p| p.len())
}
