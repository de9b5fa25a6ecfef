//! `nfsroot nodes`: which node runs what. Every node writes a small state
//! file, [`STATE_FILE`], into its per-host log directory on the server
//! (`hooks/nfsroot-node state`: at the end of each boot, then every 5
//! minutes from `nfsroot-node-state.timer`, see
//! [`crate::fixups::nodestate`]): `key=value` lines naming its host,
//! address, image, build and tree, kernel, boot id, boot time, uptime and
//! when it wrote them (`seen`, the node's clock). This module finds those
//! files where [`crate::inventory::sync::per_host_logs`] says each image's
//! nodes write, and joins them with the inventory: one row per inventory
//! host, then one per directory holding a state file for a host the
//! inventory does not know.
//!
//! The files are untrusted input (the directory is the node's): each is
//! read through a confined view, must be a regular file at its own name
//! (a symlink is refused, checked by inode against what was opened), at
//! most [`MAX_STATE_BYTES`]; unknown keys are ignored and a bad value
//! makes that one host's row `bad state file`, never the listing fail.
//!
//! A node is `running` when its file was written within the threshold
//! (`--stale-after`, default 15 minutes; a node's clock ahead of the
//! server's counts as now), `stale: reboot to update` when it runs another
//! tree than its image's current one ([`current_tree`]) or another image
//! than the inventory gives it, and otherwise `not seen`. `nfsroot gc`
//! keeps every tree a node reported within the threshold
//! ([`reported_trees`]).

use crate::image::Layout;
use crate::imagefs::ImageRoot;
use crate::inventory::Inventory;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The node's state file, in `<per-host log dir>/<host>/`.
pub const STATE_FILE: &str = "nfsroot-node.state";
/// A state file is about 300 bytes; anything past this is refused.
pub const MAX_STATE_BYTES: u64 = 4096;
/// Nodes write every 5 minutes: three missed writes and a node is not
/// shown as running.
pub const DEFAULT_STALE_AFTER: u64 = 15 * 60;

/// What a node said about itself in its state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeState {
    pub host: String,
    pub address: Option<Ipv4Addr>,
    pub image: String,
    pub build: String,
    /// The tree version it booted (the build id unless trees get ids of
    /// their own).
    pub tree: String,
    pub kernel: String,
    pub boot_id: String,
    /// Unix seconds, node clock.
    pub boot_time: i64,
    pub uptime: u64,
    /// When the node wrote the file: Unix seconds, node clock.
    pub seen: i64,
    /// The kernel module driving its boot interface (`igb`, `virtio_net`;
    /// the driver's name when it is built in): what a profile's
    /// `initramfs.net_drivers` lists. `None` from nodes that do not say.
    pub net_driver: Option<String>,
}

/// `15m`, `900`, `900s`, `2h`, `1d`: seconds. For `--stale-after`.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            format!("{s:?} is not a duration; expected a number with s, m, h or d (15m)")
        })
}

/// A value fit for a table cell and a file name part: 1-`max` characters
/// of `A-Za-z0-9._:+~-`.
fn plain(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:+~-".contains(&b))
}

fn is_boot_id(v: &str) -> bool {
    v.len() == 36
        && v.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// At most 60 characters of a value, for an error message.
fn clip(v: &str) -> String {
    v.chars().take(60).collect()
}

/// Parse a state file's bytes; `file` names it in errors
/// (`FILE:LINE: KEY: expected ..., got ...`). Unknown keys are ignored;
/// every known key must appear once (`address` may be empty, `tree`
/// defaults to `build`).
pub fn parse_state(bytes: &[u8], file: &str) -> Result<NodeState> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{file}: not text (invalid UTF-8 at byte {})",
            e.valid_up_to()
        )
    })?;
    let mut kv: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            bail!("{file}:{n}: expected key=value, got {:?}", clip(line));
        };
        if kv.insert(k, (n, v)).is_some() {
            bail!("{file}:{n}: {k}: given twice");
        }
    }
    let get = |k: &str, what: &str, ok: &dyn Fn(&str) -> bool| -> Result<String> {
        match kv.get(k) {
            None => bail!("{file}: {k}: missing; expected {what}"),
            Some((n, v)) if !ok(v) => {
                bail!("{file}:{n}: {k}: expected {what}, got {:?}", clip(v))
            }
            Some((_, v)) => Ok(v.to_string()),
        }
    };
    let word = |v: &str| plain(v, 128);
    let int = |v: &str| v.parse::<i64>().is_ok_and(|x| x >= 0);
    let address = get("address", "an IPv4 address or nothing", &|v| {
        v.is_empty() || v.parse::<Ipv4Addr>().is_ok()
    })?;
    let build = get("build", "a build id", &word)?;
    Ok(NodeState {
        host: get("host", "a host name", &|v| plain(v, 63))?,
        address: address.parse().ok(),
        image: get("image", "an image name", &|v| {
            crate::image::check_name(v).is_ok()
        })?,
        tree: match kv.get("tree") {
            Some(_) => get("tree", "a tree version", &word)?,
            None => build.clone(),
        },
        build,
        kernel: get("kernel", "a kernel release", &word)?,
        boot_id: get(
            "boot_id",
            "a boot id (36 hex digits and dashes)",
            &is_boot_id,
        )?,
        boot_time: get("boot_time", "Unix seconds", &int)?.parse()?,
        uptime: get("uptime", "seconds", &int)?.parse()?,
        seen: get("seen", "Unix seconds", &int)?.parse()?,
        net_driver: match kv.get("net_driver") {
            Some((_, "")) | None => None,
            Some(_) => Some(get("net_driver", "a kernel module name", &|v| {
                plain(v, 64)
            })?),
        },
    })
}

/// Read `<dir>/nfsroot-node.state` inside the confined `root`: `None`
/// when there is none. A symlink, anything but a regular file, a file
/// swapped between the check and the open, or a file over
/// [`MAX_STATE_BYTES`] is an error naming it.
pub fn read_state(root: &ImageRoot, dir: &Path) -> Result<Option<NodeState>> {
    use std::os::unix::fs::MetadataExt;
    let rel = dir.join(STATE_FILE);
    let shown = root.show(&rel);
    let Some(md) = root.symlink_metadata(&rel)? else {
        return Ok(None);
    };
    if !md.is_file() {
        bail!(
            "{shown} is a {}, not a regular file; refusing to read it",
            crate::imagefs::kind_word(&md)
        );
    }
    let Some(f) = root.open_file_opt(&rel)? else {
        return Ok(None);
    };
    let opened = f
        .metadata()
        .with_context(|| format!("reading metadata of {shown}"))?;
    if (opened.dev(), opened.ino()) != (md.dev(), md.ino()) {
        bail!("{shown} changed while it was opened (a link swapped in?); refusing it");
    }
    if opened.len() > MAX_STATE_BYTES {
        bail!(
            "{shown} is {} bytes; a state file holds at most {MAX_STATE_BYTES}",
            opened.len()
        );
    }
    let mut bytes = Vec::new();
    f.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {shown}"))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        bail!("{shown} grew past {MAX_STATE_BYTES} bytes while read; refusing it");
    }
    parse_state(&bytes, &shown).map(Some)
}

/// One state file found on the server: the directory's name (the host
/// it is for), where it is, and what it says or why it is unusable.
#[derive(Debug, Clone)]
pub struct Found {
    pub host: String,
    pub path: PathBuf,
    pub state: Result<NodeState, String>,
}

/// Every state file found, by host (directory name), and notes on images
/// whose per-host log directory could not be found or read.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub found: BTreeMap<String, Vec<Found>>,
    pub notes: Vec<String>,
}

/// Every state file under the per-host log directories of the images the
/// layout holds or the inventory names.
pub fn scan(layout: &Layout, inv: &Inventory) -> Result<Scan> {
    let mut images: BTreeSet<String> = layout.list_images()?.into_iter().collect();
    images.extend(inv.hosts.iter().filter_map(|h| h.image.clone()));
    let mut places = BTreeSet::new();
    let mut notes = Vec::new();
    let mut found: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    for image in &images {
        match crate::inventory::sync::per_host_logs(layout, inv, image) {
            Ok(Some(p)) => {
                places.insert(p);
            }
            Ok(None) => {}
            Err(e) => notes.push(format!("image {image}: {e:#}")),
        }
    }
    for (root, rel) in &places {
        if let Err(e) = scan_place(root, rel, &mut found) {
            notes.push(format!("{}: {e:#}", root.join(rel).display()));
        }
    }
    Ok(Scan { found, notes })
}

/// The state files in one per-host log directory: each subdirectory
/// (not a link to one) holding one is a host.
fn scan_place(root: &Path, rel: &Path, found: &mut BTreeMap<String, Vec<Found>>) -> Result<()> {
    if !root.is_dir() {
        return Ok(());
    }
    let view = ImageRoot::open(root)?;
    for e in view.read_dir(rel)?.unwrap_or_default() {
        let name = e.name.to_string_lossy().into_owned();
        let dir = rel.join(&e.name);
        let state = match e.kind {
            crate::imagefs::Kind::Dir => match read_state(&view, &dir) {
                Ok(None) => continue,
                Ok(Some(s)) if s.host != name => Err(format!(
                    "{} names host {}, not {name}",
                    view.show(dir.join(STATE_FILE)),
                    s.host
                )),
                Ok(Some(s)) => Ok(s),
                Err(e) => Err(format!("{e:#}")),
            },
            // A link in place of the directory: shown (when a state file
            // is behind it) but never read.
            crate::imagefs::Kind::Symlink => match view.symlink_metadata(dir.join(STATE_FILE)) {
                Ok(Some(_)) => Err(format!(
                    "{} is a symlink; refusing to read a state file through it",
                    view.show(&dir)
                )),
                _ => continue,
            },
            _ => continue,
        };
        found.entry(name.clone()).or_default().push(Found {
            host: name,
            path: root.join(&dir).join(STATE_FILE),
            state,
        });
    }
    Ok(())
}

/// The tree an image boots now, as its nodes report theirs: the build id
/// of its release stamp (`/etc/nfsroot-release`); `None` when the image is
/// not here or has no stamp.
pub fn current_tree(layout: &Layout, image: &str) -> Result<Option<String>> {
    let dir = layout.image_dir(image);
    if !dir.is_dir() {
        return Ok(None);
    }
    let img = ImageRoot::open(&dir)?;
    Ok(crate::facts::release(&img)?.remove("BUILD_ID"))
}

/// Seconds since a node wrote its file, never negative: a node's clock a
/// little ahead of the server's counts as now.
fn age(now: i64, seen: i64) -> u64 {
    now.saturating_sub(seen).max(0) as u64
}

/// The trees of `image` that nodes reported within `stale_after` seconds
/// of `now` (inventory hosts or not): `gc` must keep them.
pub fn reported_trees(
    layout: &Layout,
    inv: &Inventory,
    image: &str,
    stale_after: u64,
    now: i64,
) -> Result<BTreeSet<String>> {
    Ok(scan(layout, inv)?
        .found
        .values()
        .flatten()
        .filter_map(|f| f.state.as_ref().ok())
        .filter(|s| s.image == image && age(now, s.seen) < stale_after)
        .map(|s| s.tree.clone())
        .collect())
}

/// A row's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Seen within the threshold, on its image's current tree.
    Running,
    /// Seen within the threshold, on another tree or image.
    Stale,
    /// No state file, or none written within the threshold.
    NotSeen,
    /// A state file for a host the inventory does not list.
    UnknownHost,
    /// A state file that cannot be used (the detail says why).
    BadState,
}

impl Status {
    /// The words `nodes` prints.
    pub fn text(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Stale => "stale: reboot to update",
            Status::NotSeen => "not seen",
            Status::UnknownHost => "unknown host",
            Status::BadState => "bad state file",
        }
    }
}

/// One host: what the inventory says, what its state file says, and the
/// verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub host: String,
    /// The image the inventory gives it (`None`: not in the inventory, or
    /// a host that boots no image).
    pub inventory_image: Option<String>,
    pub in_inventory: bool,
    pub status: Status,
    /// Why (stale, not seen, a bad file), in words.
    pub detail: String,
    /// What the node reported, when its file could be read.
    pub node: Option<NodeState>,
    /// The tree its image boots now, when known.
    pub current_tree: Option<String>,
    /// Seconds since the node wrote its file (node clock vs. this one).
    pub age: Option<u64>,
    pub file: Option<PathBuf>,
}

/// What `nfsroot nodes` prints.
#[derive(Debug, Clone, Serialize)]
pub struct NodesReport {
    /// Unix seconds on this server when the files were read.
    pub now: i64,
    pub stale_after: u64,
    pub nodes: Vec<Row>,
    /// Images whose per-host log directory could not be found or read.
    pub notes: Vec<String>,
}

/// The listing: each inventory host in file order, then unknown hosts by
/// name. Only an unreadable layout or inventory is an error.
pub fn list(layout: &Layout, inv: &Inventory, stale_after: u64, now: i64) -> Result<NodesReport> {
    let Scan { mut found, notes } = scan(layout, inv)?;
    let mut trees: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut current = |image: &str| -> Option<String> {
        trees
            .entry(image.to_string())
            .or_insert_with(|| current_tree(layout, image).ok().flatten())
            .clone()
    };
    let mut nodes = Vec::new();
    for h in &inv.hosts {
        let f = found.remove(&h.name).unwrap_or_default();
        let image = h.image.clone();
        let tree = image.as_deref().and_then(&mut current);
        nodes.push(judge(&h.name, image, tree, &f, stale_after, now));
    }
    for (host, f) in found {
        let mut row = judge(&host, None, None, &f, stale_after, now);
        row.in_inventory = false;
        if row.status != Status::BadState {
            let age = row
                .age
                .map_or(String::new(), |a| format!("; last seen {}", ago(a)));
            row.detail = format!("not in the inventory{age}");
            row.status = Status::UnknownHost;
        }
        row.current_tree = row.node.as_ref().and_then(|n| current(&n.image));
        nodes.push(row);
    }
    Ok(NodesReport {
        now,
        stale_after,
        nodes,
        notes,
    })
}

/// The verdict on one host from the state files found for it (a host
/// whose image changed may have one in each image's directory: the
/// newest readable one counts; a bad one only when none is readable).
fn judge(
    host: &str,
    image: Option<String>,
    tree: Option<String>,
    found: &[Found],
    stale_after: u64,
    now: i64,
) -> Row {
    let mut row = Row {
        host: host.to_string(),
        in_inventory: true,
        inventory_image: image.clone(),
        status: Status::NotSeen,
        detail: "no state file".into(),
        node: None,
        current_tree: tree.clone(),
        age: None,
        file: None,
    };
    let best = found
        .iter()
        .filter(|f| f.state.is_ok())
        .max_by_key(|f| f.state.as_ref().map(|s| s.seen).unwrap_or(i64::MIN));
    let Some(f) = best.or(found.first()) else {
        return row;
    };
    row.file = Some(f.path.clone());
    let s = match &f.state {
        Ok(s) => s.clone(),
        Err(e) => {
            row.status = Status::BadState;
            row.detail = e.clone();
            return row;
        }
    };
    let a = age(now, s.seen);
    row.age = Some(a);
    (row.status, row.detail) = if a >= stale_after {
        (Status::NotSeen, format!("last seen {}", ago(a)))
    } else if image.as_ref().is_some_and(|i| *i != s.image) {
        (
            Status::Stale,
            format!(
                "runs image {}; the inventory gives it {}",
                s.image,
                image.unwrap_or_default()
            ),
        )
    } else if let Some(t) = tree.filter(|t| *t != s.tree) {
        (
            Status::Stale,
            format!("runs tree {}; the image's is {t}", s.tree),
        )
    } else {
        (Status::Running, String::new())
    };
    row.node = Some(s);
    row
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
fn ago(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

impl NodesReport {
    /// A table, one line per host, then the notes.
    pub fn text(&self) -> String {
        let mut lines = vec![
            [
                "HOST",
                "IMAGE",
                "BUILD",
                "KERNEL",
                "UP SINCE",
                "LAST SEEN",
                "STATE",
            ]
            .map(String::from),
        ];
        for r in &self.nodes {
            let n = r.node.as_ref();
            let field = |f: fn(&NodeState) -> String| n.map_or("-".into(), f);
            let image = n.map(|n| n.image.clone()).or(r.inventory_image.clone());
            let state = match r.status {
                Status::Stale | Status::BadState => format!("{} ({})", r.status.text(), r.detail),
                _ => r.status.text().to_string(),
            };
            lines.push([
                r.host.clone(),
                image.unwrap_or_else(|| "-".into()),
                field(|n| n.build.clone()),
                field(|n| n.kernel.clone()),
                field(|n| crate::clock::rfc3339(n.boot_time)),
                r.age.map_or("never".into(), ago),
                state,
            ]);
        }
        let mut widths = [0usize; 7];
        for l in &lines {
            for (w, c) in widths.iter_mut().zip(l) {
                *w = (*w).max(c.len());
            }
        }
        let mut out = String::new();
        for l in &lines {
            let cells: Vec<String> = l
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const BOOT_ID: &str = "38e5bc9f-72d8-4486-a5d0-15e1cc7f949b";
    const NOW: i64 = 1_795_910_271;

    fn state_text(host: &str, tree: &str, seen: i64) -> String {
        format!(
            "host={host}\naddress=10.0.2.31\nimage=minimal\nbuild={tree}\ntree={tree}\n\
             kernel=6.1.0-28-amd64\nboot_id={BOOT_ID}\nboot_time={}\nuptime=120\nseen={seen}\n",
            seen - 120
        )
    }

    #[test]
    fn parses_a_good_file_and_ignores_unknown_keys() {
        let text = state_text("alpha", "B1", NOW) + "future_key=whatever\n";
        let s = parse_state(text.as_bytes(), "f").unwrap();
        assert_eq!(s.host, "alpha");
        assert_eq!(s.address, Some(Ipv4Addr::new(10, 0, 2, 31)));
        assert_eq!((s.build.as_str(), s.tree.as_str()), ("B1", "B1"));
        assert_eq!((s.boot_time, s.uptime, s.seen), (NOW - 120, 120, NOW));
        assert_eq!(s.net_driver, None, "nodes before net_driver= say nothing");
        let text = state_text("alpha", "B1", NOW) + "net_driver=mlx5_core\n";
        let s = parse_state(text.as_bytes(), "f").unwrap();
        assert_eq!(s.net_driver.as_deref(), Some("mlx5_core"));
        // `tree` defaults to `build`; an empty address is none.
        let text = state_text("alpha", "B1", NOW)
            .replace("tree=B1\n", "")
            .replace("address=10.0.2.31", "address=");
        let s = parse_state(text.as_bytes(), "f").unwrap();
        assert_eq!((s.tree.as_str(), s.address), ("B1", None));
    }

    #[test]
    fn bad_values_name_file_line_and_field() {
        let good = state_text("alpha", "B1", NOW);
        for (bad, want) in [
            (
                good.replace("seen=", "seen=-"),
                "f:10: seen: expected Unix seconds",
            ),
            (
                good.replace(BOOT_ID, "x"),
                "f:7: boot_id: expected a boot id",
            ),
            (
                good.replace("kernel=6", "kernel=6 $(rm)"),
                "f:6: kernel: expected a kernel release",
            ),
            (
                good.replace("address=10.0.2.31", "address=10.0.2"),
                "f:2: address",
            ),
            (good.replace("image=minimal", "image=../etc"), "f:3: image"),
            (good.replace("host=alpha\n", ""), "f: host: missing"),
            (
                good.clone() + "net_driver=igb;reboot\n",
                "f:11: net_driver: expected a kernel module name",
            ),
            (good.clone() + "host=beta\n", "f:11: host: given twice"),
            (
                good.replace("uptime=120", "uptime 120"),
                "f:9: expected key=value",
            ),
        ] {
            let e = format!("{:#}", parse_state(bad.as_bytes(), "f").unwrap_err());
            assert!(e.contains(want), "{e} (wanted {want})");
        }
        let long = good.replace("host=alpha", &format!("host={}", "x".repeat(500)));
        let e = format!("{:#}", parse_state(long.as_bytes(), "f").unwrap_err());
        assert!(e.ends_with(&format!("got \"{}\"", "x".repeat(60))), "{e}");
        let e = parse_state(b"host=a\n\xff\xfe", "f").unwrap_err();
        assert!(format!("{e}").contains("not text"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    /// Hostile files in a node-writable directory: a link, a FIFO, a huge
    /// file, garbage. Each is one host's error, read without blocking or
    /// following anything.
    #[test]
    fn hostile_state_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for h in ["good", "link", "fifo", "huge", "garbage", "dirlink"] {
            std::fs::create_dir(r.join(h)).unwrap();
        }
        std::fs::write(
            r.join("good").join(STATE_FILE),
            state_text("good", "B", NOW),
        )
        .unwrap();
        symlink(
            "../good/nfsroot-node.state",
            r.join("link").join(STATE_FILE),
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            r.join("fifo").join(STATE_FILE),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        std::fs::write(r.join("huge").join(STATE_FILE), "x=y\n".repeat(10_000)).unwrap();
        std::fs::write(r.join("garbage").join(STATE_FILE), [0xffu8; 100]).unwrap();
        std::fs::remove_dir(r.join("dirlink")).unwrap();
        symlink("good", r.join("dirlink")).unwrap();
        let view = ImageRoot::open(r).unwrap();
        assert_eq!(
            read_state(&view, Path::new("good")).unwrap().unwrap().host,
            "good"
        );
        assert!(read_state(&view, Path::new("none")).unwrap().is_none());
        for (h, want) in [
            ("link", "is a symlink"),
            ("fifo", "is a fifo"),
            ("huge", "40000 bytes"),
            ("garbage", "not text"),
        ] {
            let e = format!("{:#}", read_state(&view, Path::new(h)).unwrap_err());
            assert!(e.contains(want), "{h}: {e}");
        }
        let mut found = BTreeMap::new();
        scan_place(r, Path::new(""), &mut found).unwrap();
        let err = |h: &str| found[h][0].state.clone().unwrap_err();
        assert!(found["good"][0].state.is_ok());
        assert!(
            err("dirlink").contains("is a symlink; refusing"),
            "{}",
            err("dirlink")
        );
        assert!(err("fifo").contains("fifo"));
        assert_eq!(found.len(), 6);
    }

    /// A layout with image `minimal` (release stamp B2, per-host logs on
    /// the default export) and an inventory of alpha..delta; the files
    /// each host's directory gets are the test's.
    fn layout_with(files: &[(&str, String)]) -> (tempfile::TempDir, Layout, Inventory) {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::under(d.path());
        let etc = layout.image_dir("minimal").join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("nfsroot-release"), "NAME=minimal\nBUILD_ID=B2\n").unwrap();
        let logs = layout.logs_dir("minimal");
        for (host, text) in files {
            std::fs::create_dir_all(logs.join(host)).unwrap();
            std::fs::write(logs.join(host).join(STATE_FILE), text).unwrap();
        }
        let mut inv = String::from(
            "[cluster]\nsubnet = \"10.0.2.0/24\"\nnfs_server = \"10.0.2.2\"\nimage = \"minimal\"\n[hosts]\n",
        );
        for (i, h) in ["alpha", "beta", "gamma", "delta", "eps"]
            .iter()
            .enumerate()
        {
            inv.push_str(&format!(
                "{h} = {{ mac = \"52:54:00:00:00:0{i}\", ip = \"10.0.2.3{i}\" }}\n"
            ));
        }
        let inv = crate::inventory::parse(&inv, Path::new("inv.toml")).unwrap();
        (d, layout, inv)
    }

    #[test]
    fn rows_running_stale_old_missing_bad_and_unknown() {
        let (_d, layout, inv) = layout_with(&[
            ("alpha", state_text("alpha", "B2", NOW - 60)),
            ("beta", state_text("beta", "B1", NOW - 30)),
            ("gamma", state_text("gamma", "B2", NOW - 3600)),
            ("eps", "garbage\n".into()),
            ("stray", state_text("stray", "B2", NOW + 5)),
        ]);
        let r = list(&layout, &inv, DEFAULT_STALE_AFTER, NOW).unwrap();
        let got: Vec<(&str, Status)> = r
            .nodes
            .iter()
            .map(|r| (r.host.as_str(), r.status))
            .collect();
        assert_eq!(
            got,
            [
                ("alpha", Status::Running),
                ("beta", Status::Stale),
                ("gamma", Status::NotSeen),
                ("delta", Status::NotSeen),
                ("eps", Status::BadState),
                ("stray", Status::UnknownHost),
            ]
        );
        assert_eq!(r.nodes[0].age, Some(60));
        assert_eq!(r.nodes[1].detail, "runs tree B1; the image's is B2");
        assert_eq!(r.nodes[2].detail, "last seen 60m ago");
        assert_eq!(r.nodes[3].detail, "no state file");
        assert!(
            r.nodes[4]
                .detail
                .contains("eps/nfsroot-node.state:1: expected key=value")
        );
        // A node clock ahead of the server's counts as now.
        assert_eq!(r.nodes[5].age, Some(0));
        assert!(!r.nodes[5].in_inventory);
        let text = r.text();
        assert!(text.starts_with("HOST   IMAGE    BUILD"), "{text}");
        assert!(
            text.contains("stale: reboot to update (runs tree B1"),
            "{text}"
        );
        assert!(text.contains("\ndelta  minimal  -"), "{text}");
        // A threshold of 0: nobody is running.
        let r = list(&layout, &inv, 0, NOW).unwrap();
        assert!(
            r.nodes.iter().all(|r| matches!(
                r.status,
                Status::NotSeen | Status::BadState | Status::UnknownHost
            )),
            "{r:#?}"
        );
        // What gc keeps: trees reported within the threshold, any host.
        let kept = reported_trees(&layout, &inv, "minimal", DEFAULT_STALE_AFTER, NOW).unwrap();
        assert_eq!(kept, BTreeSet::from(["B1".to_string(), "B2".to_string()]));
        assert!(
            reported_trees(&layout, &inv, "minimal", 0, NOW)
                .unwrap()
                .is_empty()
        );
    }

    /// A read-write root keeps per-host logs in its tree
    /// (`<logs.dir>/<host>/`, as its saved profile says): the state files
    /// are read there, through the image's confined view, and the log
    /// directory's other entries (apt/, a stray file) are not hosts.
    #[test]
    fn read_write_root_keeps_them_in_the_tree() {
        let (_d, layout, inv) = layout_with(&[]);
        let text = "name = \"minimal\"\n[nfs]\nroot_mode = \"rw\"\n[logs]\ndir = \"/var/log\"\n";
        let l = crate::profile::parse(text, Path::new("t.toml"), Path::new(".")).unwrap();
        crate::state::save_profile(&layout, &l).unwrap();
        let logs = layout.image_dir("minimal").join("var/log");
        for dir in ["alpha", "apt"] {
            std::fs::create_dir_all(logs.join(dir)).unwrap();
        }
        std::fs::write(
            logs.join("alpha").join(STATE_FILE),
            state_text("alpha", "B2", NOW),
        )
        .unwrap();
        std::fs::write(logs.join("syslog"), "").unwrap();
        // The default export directory is not where this image's nodes write.
        let export = layout.logs_dir("minimal").join("beta");
        std::fs::create_dir_all(&export).unwrap();
        std::fs::write(export.join(STATE_FILE), state_text("beta", "B2", NOW)).unwrap();
        let r = list(&layout, &inv, DEFAULT_STALE_AFTER, NOW).unwrap();
        assert_eq!(r.nodes.len(), 5, "{r:#?}");
        assert_eq!(
            (r.nodes[0].host.as_str(), r.nodes[0].status),
            ("alpha", Status::Running)
        );
        assert_eq!(r.nodes[1].status, Status::NotSeen);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    /// A file in one host's directory naming another host is that row's
    /// error (a node of a read-write root could write any directory).
    #[test]
    fn a_file_naming_another_host_is_refused() {
        let (_d, layout, inv) = layout_with(&[("alpha", state_text("beta", "B2", NOW))]);
        let r = list(&layout, &inv, DEFAULT_STALE_AFTER, NOW).unwrap();
        assert_eq!(r.nodes[0].status, Status::BadState);
        assert!(
            r.nodes[0].detail.contains("names host beta, not alpha"),
            "{:?}",
            r.nodes[0]
        );
        assert_eq!(r.nodes[1].status, Status::NotSeen);
    }

    /// The boot hook writes what this parser reads (on this machine's
    /// /proc: its boot id, boot time, uptime), atomically, and only in
    /// the node's own directory.
    #[test]
    fn hook_writes_what_nodes_reads() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("nfsroot-node");
        std::fs::write(&script, crate::fixups::hostname::NODE_SCRIPT).unwrap();
        let logs = d.path().join("logs");
        let conf = d.path().join("node.conf");
        std::fs::write(
            &conf,
            format!(
                "IMAGE='minimal'\nLOG_LAYOUT='per-host'\nLOG_DIR='{}'\nLOG_EXPORT=''\n",
                logs.display()
            ),
        )
        .unwrap();
        let release = d.path().join("release");
        std::fs::write(&release, "NAME=minimal\nBUILD_ID=20260101T000000Z-abcdef\n").unwrap();
        let before = crate::clock::now_secs();
        let out = std::process::Command::new("sh")
            .arg(&script)
            .arg("state")
            .env("NFSROOT_NODE_CONF", &conf)
            .env("NFSROOT_RELEASE", &release)
            .env("NFSROOT_RUN", d.path().join("run"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let dir = Path::new(host.trim());
        let names: Vec<_> = std::fs::read_dir(logs.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATE_FILE], "no temp file left");
        let s = read_state(&ImageRoot::open(&logs).unwrap(), dir)
            .unwrap()
            .unwrap();
        assert_eq!(s.host, host.trim());
        assert_eq!(
            (s.image.as_str(), s.build.as_str()),
            ("minimal", "20260101T000000Z-abcdef")
        );
        assert_eq!(s.tree, s.build);
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        assert_eq!(s.boot_id, boot_id.trim());
        assert_eq!(
            s.kernel,
            rustix::system::uname().release().to_str().unwrap()
        );
        assert!(
            s.seen >= before && s.seen <= crate::clock::now_secs(),
            "{s:?}"
        );
        assert!(s.boot_time > 0 && s.boot_time <= s.seen, "{s:?}");
        assert!(s.uptime > 0, "{s:?}");
    }
}
