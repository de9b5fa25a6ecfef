//! What a sync manages, one [`Item`] each, and how an item compares with
//! the disk ([`Item::change`]).
//!
//! A [`Place`] is a path on the server or a path inside a tree nodes
//! write (an image, a log export); the latter is read only through that
//! tree's confined view ([`Roots`], one [`ImageRoot`] per tree, opened
//! once). Each item belongs to a [`Phase`]; apply runs the phases in
//! order (see the parent module).

use crate::fsutil;
use crate::image::Layout;
use crate::imagefs::ImageRoot;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// One difference between the disk and the inventory.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    /// `write`, `link`, `remove`, `mkdir` or `chown`.
    pub action: String,
    pub path: PathBuf,
    /// Link target, or owner and mode.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Line diff of a file (dry runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Change {
    fn new(action: &str, path: &Path, detail: String, diff: Option<String>) -> Change {
        Change {
            action: action.into(),
            path: path.to_path_buf(),
            detail,
            diff,
        }
    }
}

/// A file or directory sync manages: on the server, or inside a tree nodes
/// write (an image, a log export), reached only through its confined view.
#[derive(Debug, Clone)]
pub(super) enum Place {
    Host(PathBuf),
    Confined { root: PathBuf, rel: PathBuf },
}

impl Place {
    /// The host path, for reports and messages.
    pub(super) fn shown(&self) -> PathBuf {
        match self {
            Place::Host(p) => p.clone(),
            Place::Confined { root, rel } if rel.as_os_str().is_empty() => root.clone(),
            Place::Confined { root, rel } => root.join(rel),
        }
    }
}

/// Confined views of the trees a sync touches, opened once each.
#[derive(Debug, Default)]
pub(super) struct Roots(RefCell<BTreeMap<PathBuf, Rc<ImageRoot>>>);

impl Roots {
    /// The view of `root`, created (a log export's directory) when
    /// `create`; `None` when it does not exist and may not be created.
    fn open(&self, root: &Path, create: bool) -> Result<Option<Rc<ImageRoot>>> {
        if let Some(r) = self.0.borrow().get(root) {
            return Ok(Some(r.clone()));
        }
        if !root.is_dir() {
            if !create {
                return Ok(None);
            }
            fsutil::mkdir_p(root)?;
        }
        let r = Rc::new(ImageRoot::open(root)?);
        self.0.borrow_mut().insert(root.to_path_buf(), r.clone());
        Ok(Some(r))
    }

    /// The view of `root` for writing (created when missing).
    pub(super) fn get(&self, root: &Path) -> Result<Rc<ImageRoot>> {
        self.open(root, true)?
            .with_context(|| format!("opening {}", root.display()))
    }

    pub(super) fn read(&self, place: &Place) -> Result<Option<String>> {
        match place {
            Place::Host(p) => read_opt(p),
            Place::Confined { root, rel } => match self.open(root, false)? {
                Some(r) => r.read_to_string_opt(rel),
                None => Ok(None),
            },
        }
    }

    pub(super) fn lstat(&self, place: &Place) -> Result<Option<std::fs::Metadata>> {
        match place {
            Place::Host(p) => Ok(std::fs::symlink_metadata(p).ok()),
            Place::Confined { root, rel } => match self.open(root, false)? {
                Some(r) => r.symlink_metadata(rel),
                None => Ok(None),
            },
        }
    }
}

/// The order apply writes in; see the parent module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    Dirs,
    HostFiles,
    HostLinks,
    ImageHosts,
    Exports,
    Dhcp,
    Remove,
}

#[derive(Debug, Clone)]
pub(super) enum Item {
    File {
        place: Place,
        text: String,
        phase: Phase,
    },
    Link {
        path: PathBuf,
        target: String,
    },
    Remove {
        path: PathBuf,
    },
    /// A host's ssh keys, made when missing.
    HostKeys {
        host: String,
        path: PathBuf,
    },
    /// The keys of a host that left the inventory.
    RemoveKeys {
        host: String,
        path: PathBuf,
    },
    Dir {
        place: Place,
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

impl Item {
    pub(super) fn phase(&self) -> Phase {
        match self {
            Item::File { phase, .. } => *phase,
            Item::Link { .. } => Phase::HostLinks,
            Item::Remove { .. } | Item::RemoveKeys { .. } => Phase::Remove,
            Item::HostKeys { .. } => Phase::Dirs,
            Item::Dir { .. } => Phase::Dirs,
        }
    }

    /// The difference from the disk, if any.
    pub(super) fn change(
        &self,
        layout: &Layout,
        roots: &Roots,
        with_diff: bool,
    ) -> Result<Option<Change>> {
        Ok(match self {
            Item::File { place, text, .. } => file_change(roots, place, text, with_diff)?,
            Item::Link { path, target } => match std::fs::read_link(path) {
                Ok(t) if t == Path::new(target) => None,
                _ => Some(Change::new("link", path, format!("-> {target}"), None)),
            },
            Item::Remove { path } => Some(Change::new("remove", path, String::new(), None)),
            Item::RemoveKeys { path, .. } => {
                Some(Change::new("remove", path, "(ssh host keys)".into(), None))
            }
            Item::HostKeys { host, path } => (!crate::hostkeys::complete(layout, host))
                .then(|| Change::new("keygen", path, "(ssh host keys)".into(), None)),
            Item::Dir {
                place,
                uid,
                gid,
                mode,
            } => dir_change(roots, place, *uid, *gid, *mode)?,
        })
    }
}

/// A file differs unless it is a regular file with exactly `text`.
fn file_change(
    roots: &Roots,
    place: &Place,
    text: &str,
    with_diff: bool,
) -> Result<Option<Change>> {
    let old = roots.read(place)?;
    if old.as_deref() == Some(text) && roots.lstat(place)?.is_some_and(|m| m.is_file()) {
        return Ok(None);
    }
    let diff = with_diff.then(|| crate::textdiff::line_diff(old.as_deref().unwrap_or(""), text));
    let detail = if old.is_none() {
        "(new)".into()
    } else {
        String::new()
    };
    Ok(Some(Change::new("write", &place.shown(), detail, diff)))
}

/// A log directory differs when missing or with another owner or mode; a
/// non-directory in its place is an error.
fn dir_change(
    roots: &Roots,
    place: &Place,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<Option<Change>> {
    let path = &place.shown();
    let detail = format!("(owner {uid}:{gid}, mode {mode:04o})");
    match roots.lstat(place)? {
        Some(m) if m.is_dir() => {
            let same = m.uid() == uid && m.gid() == gid && m.permissions().mode() & 0o7777 == mode;
            Ok((!same).then(|| Change::new("chown", path, detail, None)))
        }
        Some(_) => bail!(
            "{} exists and is not a directory; move it away so sync can \
             create the host's log directory",
            path.display()
        ),
        None => Ok(Some(Change::new("mkdir", path, detail, None))),
    }
}

/// A server file's text (lossy UTF-8), `None` when missing.
pub(super) fn read_opt(p: &Path) -> Result<Option<String>> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}
