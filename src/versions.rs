//! The tree versions `nfsroot status` lists (issue 11): for each version of
//! an image (the current tree first, then the kept ones newest first, as
//! [`crate::image::versions`] orders them), its build id and date, the
//! kernels in it, its size, the bytes on disk it shares with the version
//! after it (reflinks, from [`crate::extents`]), and the hosts whose state
//! file says they run it. "Runs it" uses gc's rule ([`gc::SEEN_WITHIN_SECS`]):
//! a node seen within that window still holds the tree, whatever its age,
//! so `status` and `gc` never disagree on what is in use.

use crate::gc;
use crate::image::{self, Layout};
use crate::imagefs::ImageRoot;
use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;

/// One tree version as `status` shows it.
#[derive(Debug, Serialize)]
pub struct TreeRow {
    pub id: String,
    pub path: PathBuf,
    /// The tree at `<base-dir>/<image>`: what the configs boot.
    pub current: bool,
    pub date: Option<String>,
    pub kernels: Vec<String>,
    pub size_bytes: u64,
    /// Bytes on disk shared with the next version listed (the one it was
    /// most likely cloned from), on a file system with reflinks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<String>,
    /// Hosts whose state file names this version, seen within gc's window.
    pub used_by: Vec<String>,
}

/// The rows of image `name`; unreadable node state files are left out
/// (`gc --dry-run` names them).
pub fn rows(layout: &Layout, name: &str) -> Result<Vec<TreeRow>> {
    let mut rows: Vec<TreeRow> = image::versions(layout, name)?
        .into_iter()
        .map(TreeRow::of)
        .collect();
    share(&mut rows)?;
    if let Ok(p) = crate::state::image_profile(layout, name) {
        let now = crate::clock::now_secs();
        let logs = gc::node_logs_dir(layout, &p);
        let (used, _) = gc::in_use_by_nodes(&logs, now, gc::SEEN_WITHIN_SECS)?;
        for r in &mut rows {
            r.used_by = used.get(&r.id).cloned().unwrap_or_default();
        }
    }
    Ok(rows)
}

/// Each version's extents shared with the next one in the list.
fn share(rows: &mut [TreeRow]) -> Result<()> {
    for i in 1..rows.len() {
        let (new, old) = (&rows[i - 1], &rows[i]);
        if let Some(b) = crate::extents::shared_bytes(&new.path, &old.path)? {
            rows[i - 1].shared_with = Some(old.id.clone());
            rows[i - 1].shared_bytes = Some(b);
        }
    }
    Ok(())
}

impl TreeRow {
    fn of(v: image::Version) -> Self {
        let img = ImageRoot::open(&v.path).ok();
        let release = img.as_ref().and_then(|i| crate::facts::release(i).ok());
        TreeRow {
            date: release.and_then(|mut r| r.remove("BUILD_DATE")),
            kernels: img
                .as_ref()
                .and_then(|i| crate::facts::kernels(i).ok())
                .unwrap_or_default(),
            size_bytes: crate::build::tree_size(&v.path),
            id: v.id,
            path: v.path,
            current: v.current,
            shared_bytes: None,
            shared_with: None,
            used_by: Vec::new(),
        }
    }

    /// `tree      <id> <date> <kernels> <size> [(shared)] [current] [nodes]`
    pub fn line(&self) -> String {
        let mut s = format!(
            "tree      {} {} {} {:.0} MB",
            self.id,
            self.date.as_deref().unwrap_or("-"),
            self.kernels.join(","),
            self.size_bytes as f64 / 1e6,
        );
        if let (Some(b), Some(w)) = (self.shared_bytes, &self.shared_with) {
            s += &format!(" ({:.0} MB shared with {w})", b as f64 / 1e6);
        }
        if self.current {
            s += " (current: the configs boot it)";
        }
        if !self.used_by.is_empty() {
            s += &format!(" (nodes: {})", self.used_by.join(","));
        }
        s + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, current: bool, used_by: &[&str]) -> TreeRow {
        TreeRow {
            id: id.into(),
            path: PathBuf::from("/x"),
            current,
            date: Some("2026-11-29".into()),
            kernels: vec!["6.1.0-50-amd64".into()],
            size_bytes: 715_000_000,
            shared_bytes: None,
            shared_with: None,
            used_by: used_by.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn line_says_current_shared_and_nodes() {
        let mut r = row("B2", true, &[]);
        r.shared_bytes = Some(700_000_000);
        r.shared_with = Some("B1".into());
        assert_eq!(
            r.line(),
            "tree      B2 2026-11-29 6.1.0-50-amd64 715 MB (700 MB shared with B1) \
             (current: the configs boot it)\n"
        );
        assert_eq!(
            row("B1", false, &["n001", "n002"]).line(),
            "tree      B1 2026-11-29 6.1.0-50-amd64 715 MB (nodes: n001,n002)\n"
        );
    }

    #[test]
    fn rows_name_the_hosts_that_run_each_version() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::under(t.path());
        let img = layout.image_dir("img");
        std::fs::create_dir_all(img.join("etc")).unwrap();
        std::fs::write(img.join("etc/nfsroot-release"), "BUILD_ID=B2\n").unwrap();
        let rows = rows(&layout, "img").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, "B2");
        assert!(rows[0].current);
        // No saved profile: no node information, and no error.
        assert!(rows[0].used_by.is_empty());
    }
}
