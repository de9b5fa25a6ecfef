//! `nfsroot gc [IMAGE] [--dry-run]`: remove old tree versions no one uses.
//!
//! The versions of an image ([`image::versions`]) are judged in one pure
//! function, [`decide`], by these rules in order: the current tree stays
//! (every boot config names its stable path, so it is what the default and
//! every pinned host boots); a version a node reported within
//! [`SEEN_WITHIN_SECS`] stays; the newest `boot.keep_trees` versions (the
//! current one counted) stay; the rest go. What nodes run comes from the
//! state files they write into their per-host log directory on the server
//! (`<logs dir>/<host>/nfsroot-node.state`: the format and its reader are
//! [`crate::nodes`]'s), read by [`in_use_by_nodes`] through a confined
//! view: nodes write that directory. A version is
//! removed by renaming it to a dot name first (no longer a version) and
//! then deleting it, so a killed gc leaves no half-removed version; the
//! next gc finishes those. `--dry-run` says what would go and why each
//! other version stays.

use crate::fsutil;
use crate::image::{self, Layout, Version};
use crate::imagefs::ImageRoot;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A node that reported within this long may still run what it reported
/// (nodes report every few minutes; an hour rides out a server restart).
pub const SEEN_WITHIN_SECS: i64 = 3600;
/// Prefix of a version being removed (not listed as a version).
const REMOVING: &str = ".gc-";

/// What `gc` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub image: Option<String>,
    pub dry_run: bool,
    pub wait: bool,
}

/// The verdict on one version.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decision {
    pub id: String,
    pub path: PathBuf,
    pub remove: bool,
    pub why: String,
}

/// `gc` of one image.
#[derive(Debug, Serialize)]
pub struct Report {
    pub image: String,
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
    /// State files that could not be read (named, with why).
    pub notes: Vec<String>,
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::new();
        for d in &self.decisions {
            let verb = match (d.remove, self.dry_run) {
                (false, _) => "keep",
                (true, true) => "would remove",
                (true, false) => "removed",
            };
            s += &format!("{}: {verb} {} ({})\n", self.image, d.id, d.why);
        }
        for n in &self.notes {
            s += &format!("{}: note: {n}\n", self.image);
        }
        s
    }
}

/// Judge `versions` (current first, then newest first): see the module
/// paragraph for the rules. `nodes` maps a version to the hosts that
/// reported it recently.
pub fn decide(versions: &[Version], keep: usize, nodes: &InUse) -> Vec<Decision> {
    let hours = SEEN_WITHIN_SECS / 3600;
    versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (remove, why) = if v.current {
                (
                    false,
                    "current: the tree every boot config names".to_string(),
                )
            } else if let Some(hosts) = nodes.get(&v.id) {
                let why = format!("reported by {} within {hours} h", hosts.join(", "));
                (false, why)
            } else if i < keep {
                (false, format!("one of the newest {keep} (boot.keep_trees)"))
            } else {
                let why =
                    format!("older than the newest {keep}, no node reported it within {hours} h");
                (true, why)
            };
            Decision {
                id: v.id.clone(),
                path: v.path.clone(),
                remove,
                why,
            }
        })
        .collect()
}

/// Where the nodes of profile `p` write their per-host directories.
pub fn node_logs_dir(layout: &Layout, p: &crate::profile::Profile) -> PathBuf {
    p.logs_export(layout)
        .and_then(|e| e.split_once(':').map(|(_, path)| PathBuf::from(path)))
        .unwrap_or_else(|| layout.logs_dir(&p.name))
}

/// Version -> the hosts that reported it.
pub type InUse = BTreeMap<String, Vec<String>>;

/// Versions reported by nodes within `within` seconds before `now`, from
/// `<logs_dir>/<host>/nfsroot-node.state`: version -> hosts. Unreadable
/// or malformed state files are listed in the second value, by path.
pub fn in_use_by_nodes(logs_dir: &Path, now: i64, within: i64) -> Result<(InUse, Vec<String>)> {
    let mut used = InUse::new();
    let mut notes = Vec::new();
    if !logs_dir.is_dir() {
        return Ok((used, notes));
    }
    let root = ImageRoot::open(logs_dir)?;
    let mut hosts: Vec<String> = std::fs::read_dir(logs_dir)
        .with_context(|| format!("reading {}", logs_dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    hosts.sort();
    for host in hosts {
        let rel = Path::new(&host);
        match read_state(&root, rel) {
            Ok(None) => {}
            Ok(Some((tree, seen))) => {
                if now - seen <= within {
                    used.entry(tree).or_default().push(host);
                }
            }
            Err(e) => notes.push(format!("{}: {e:#}", root.show(rel))),
        }
    }
    Ok((used, notes))
}

/// `(tree, seen)` of `<host>/`'s state file, `None` when there is none.
fn read_state(root: &ImageRoot, host: &Path) -> Result<Option<(String, i64)>> {
    let Some(st) = crate::nodes::read_state(root, host)? else {
        return Ok(None);
    };
    image::check_version_id(&st.tree)?;
    Ok(Some((st.tree, st.seen)))
}

pub fn run(layout: &Layout, opts: &Options) -> Result<Vec<Report>> {
    let images = match &opts.image {
        Some(i) => vec![layout.resolve_image(Some(i))?],
        None => layout.list_images()?,
    };
    images.iter().map(|i| gc_image(layout, i, opts)).collect()
}

fn gc_image(layout: &Layout, name: &str, opts: &Options) -> Result<Report> {
    let _lock = layout.lock(name, "gc", opts.wait)?;
    let p = crate::state::image_profile(layout, name)?;
    let dir = layout.trees_dir(name);
    if !opts.dry_run {
        finish_removals(&dir)?;
    }
    let now = crate::clock::now_secs();
    let (nodes, notes) = in_use_by_nodes(&node_logs_dir(layout, &p), now, SEEN_WITHIN_SECS)?;
    let decisions = decide(
        &image::versions(layout, name)?,
        p.boot.keep_trees.max(1) as usize,
        &nodes,
    );
    if !opts.dry_run {
        for d in decisions.iter().filter(|d| d.remove) {
            let doomed = dir.join(format!("{REMOVING}{}", d.id));
            std::fs::rename(&d.path, &doomed)
                .with_context(|| format!("moving {} aside", d.path.display()))?;
            fsutil::fsync_dir(&dir)?;
            crate::crash_point!("gc.remove");
            fsutil::remove_tree(&doomed)?;
        }
    }
    Ok(Report {
        image: name.to_string(),
        dry_run: opts.dry_run,
        decisions,
        notes,
    })
}

/// Delete what a killed gc had moved aside.
fn finish_removals(dir: &Path) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(REMOVING) {
            fsutil::remove_tree(&e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::STATE_FILE;

    fn v(id: &str, current: bool) -> Version {
        Version {
            id: id.into(),
            path: PathBuf::from("/t").join(id),
            current,
        }
    }

    fn removed(d: &[Decision]) -> Vec<&str> {
        d.iter()
            .filter(|d| d.remove)
            .map(|d| d.id.as_str())
            .collect()
    }

    #[test]
    fn keeps_current_newest_and_reported() {
        let vs = [
            v("v5", true),
            v("v4", false),
            v("v3", false),
            v("v2", false),
        ];
        let none = BTreeMap::new();
        // keep_trees counts the current version.
        assert_eq!(removed(&decide(&vs, 2, &none)), ["v3", "v2"]);
        assert_eq!(removed(&decide(&vs, 4, &none)), Vec::<&str>::new());
        // keep_trees 1: only the current one, whatever its place.
        let d = decide(&vs, 1, &none);
        assert_eq!(removed(&d), ["v4", "v3", "v2"]);
        assert!(d[0].why.starts_with("current"), "{d:?}");
        // A reported version stays beyond keep_trees, with who reported it.
        let nodes = BTreeMap::from([("v2".to_string(), vec!["node015".to_string()])]);
        let d = decide(&vs, 1, &nodes);
        assert_eq!(removed(&d), ["v4", "v3"]);
        assert_eq!(d[3].why, "reported by node015 within 1 h");
        assert!(d[1].why.contains("no node reported it"), "{d:?}");
        // The current tree is never removed, even when it sorts oldest.
        let odd = [v("a-old", true), v("z-new", false)];
        assert_eq!(removed(&decide(&odd, 1, &none)), ["z-new"]);
    }

    #[test]
    fn node_state_files_by_age_and_format() {
        let d = tempfile::tempdir().unwrap();
        let put = |host: &str, text: &str| {
            std::fs::create_dir_all(d.path().join(host)).unwrap();
            std::fs::write(d.path().join(host).join(STATE_FILE), text).unwrap();
        };
        // What the node hook writes, with `tree` and `seen` as given.
        let state = |host: &str, tree: &str, seen: &str| {
            format!(
                "host={host}\naddress=10.0.2.15\nimage=minimal\nbuild=b1\ntree={tree}\n\
                 kernel=6.1.0-9-amd64\nboot_id=0f0e0d0c-0b0a-0908-0706-050403020100\n\
                 boot_time=900\nuptime=100\nseen={seen}\n"
            )
        };
        put("node001", &state("node001", "v1", "1000"));
        put("node002", &state("node002", "v1", "990"));
        put("node003", &state("node003", "v2", "100")); // too old
        put("node004", &state("node004", "..", "1000"));
        put("node005", "host=node005\nseen=1000\n");
        put("node006", &state("node006", "v3", "yesterday"));
        std::fs::create_dir_all(d.path().join("node007")).unwrap(); // no file yet
        // A link planted by a node resolves inside the directory, never
        // to the host file it names.
        let outside = tempfile::tempdir().unwrap();
        let host_file = outside.path().join("state");
        std::fs::write(&host_file, state("node008", "v9", "1000")).unwrap();
        std::fs::create_dir_all(d.path().join("node008")).unwrap();
        std::os::unix::fs::symlink(&host_file, d.path().join("node008").join(STATE_FILE)).unwrap();
        let (used, notes) = in_use_by_nodes(d.path(), 1000, 600).unwrap();
        assert_eq!(
            used,
            BTreeMap::from([(
                "v1".to_string(),
                vec!["node001".to_string(), "node002".to_string()]
            )])
        );
        let notes = notes.join("\n");
        for want in [
            "node004",
            "node005",
            "address: missing",
            "node006",
            "seen: expected Unix seconds",
            "node008",
        ] {
            assert!(notes.contains(want), "{want}: {notes}");
        }
        assert!(
            !notes.contains("node007") && !notes.contains("node003"),
            "{notes}"
        );
        // No logs directory yet: nothing reported.
        let (used, _) = in_use_by_nodes(&d.path().join("none"), 1000, 600).unwrap();
        assert!(used.is_empty());
    }
}
