//! The image tree is untrusted input (issue 9): a hostile-image corpus.
//!
//! Each test copies the shared fixture image, publishes it clean (as an
//! admin would before nodes ever ran it), then lets "a node" turn the tree
//! hostile: a fake `/bin/busybox` that leaves a marker on the host when it
//! runs, absolute and relative symlinks from `/boot`, `lib/modules`,
//! `modules.builtin`, `.ko` files, `etc/hosts`, `usr/sbin/policy-rc.d` and the
//! log directory to secret files outside the image, a poisoned
//! `etc/nfsroot/node.conf`, kernel names with a newline and a space, and
//! symlinks under the temp names nfsroot used to write
//! (`.nfsroot-tmp-<pid>-<name>`) for the next 3000 pids, planted again right
//! before every command. Then it runs the commands that read an image. Each
//! command must succeed or fail naming the offending path; after each one,
//! the world is checked: no marker, no secret token anywhere nfsroot writes
//! (TFTP root, initramfs files, snapshot archives, state, generated configs;
//! compressed files are decompressed), no change to any file outside the
//! image (content, owner, mode, mtime, new or vanished entries), no
//! injected line in a generated file, no export outside the base dir.
//! Findings are collected, not asserted one by one, so a run on code with
//! several holes lists all of them, each with the command that caused it;
//! `hostile_checks_fire` proves the checks themselves can fail.

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

/// Pids planted ahead of the last one the kernel handed out.
const TRAP_PIDS: u32 = 3000;
/// Owner given to the files outside the image, so a chown shows.
const OUTSIDE_ID: u32 = 4321;
/// A node-chosen kernel that sorts newest and injects a PXELINUX line.
const NEWEST_EVIL: &str = "99.0\nDEFAULT evil";
/// Kernel names no config may carry.
const BAD_KERNELS: &[&str] = &["6.1.0-99\nDEFAULT evil", "6 1"];
/// Valid kernel names whose files are hostile.
const ABS_KERNEL: &str = "9.9.9-abs"; // vmlinuz -> absolute symlink out
const MODS_KERNEL: &str = "9.9.8-mods"; // real vmlinuz, module files linked out
const REL_KERNEL: &str = "9.9.7-rel"; // vmlinuz -> ../../.. symlink out
/// The inventory host the sync test adds.
const HOST_MAC: &str = "52-54-00-aa-00-01";
const HOST_IP: &str = "10.0.2.31";

/// Fragments that name a planted path: a refusal must contain one (a
/// command given a kernel name may name that instead).
const OFFENDING: &[&str] = &[
    "vmlinuz-9.9.9-abs",
    "vmlinuz-9.9.7-rel",
    "modules/9.9.9-abs",
    "modules/9.9.8-mods",
    "modules/9.9.7-rel",
    "modules.builtin",
    "virtio_net.ko",
    "nfs.ko",
    "etc/hosts",
    "policy-rc.d",
    "node.conf",
    "bin/busybox",
    "vmlinuz-6 1",
    "vmlinuz-6.1.0-99",
    "vmlinuz-99.0",
    "var/log/hosts",
    ".nfsroot-tmp-",
    "/outside",
    "/secrets/",
];

/// Violations found so far, each reported once (keyed without the command).
#[derive(Default)]
struct Findings {
    seen: BTreeSet<String>,
    list: Vec<String>,
}

impl Findings {
    fn add(&mut self, label: &str, key: String, msg: impl AsRef<str>) {
        if self.seen.insert(key) {
            let m = format!("[{label}] {}", msg.as_ref());
            eprintln!("FINDING {m}");
            self.list.push(m);
        }
    }
}

/// One secret file outside the image, and the symlink in the image to it.
struct Secret {
    name: String,
    path: PathBuf,
    token: String,
    /// The image-relative link that points at it.
    link: String,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    hex::encode(b)
}

fn symlink(target: impl AsRef<Path>, link: &Path) {
    if std::fs::symlink_metadata(link).is_ok() {
        std::fs::remove_file(link).unwrap();
    }
    std::os::unix::fs::symlink(target.as_ref(), link)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

/// A relative target that climbs out of any image (extra `..` stop at
/// `/` on the host) and lands on `abs`: `../../..(x24)/<abs>`.
fn climbing(abs: &Path) -> PathBuf {
    let mut p = PathBuf::new();
    for _ in 0..24 {
        p.push("..");
    }
    p.join(abs.strip_prefix("/").unwrap())
}

/// `target` as a path relative to the directory `from` (both absolute).
fn relative(target: &Path, from: &Path) -> PathBuf {
    let t: Vec<_> = target.components().collect();
    let f: Vec<_> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..f.len() {
        p.push("..");
    }
    p.extend(&t[common..]);
    p
}

fn set_mtime(p: &Path, t: SystemTime) {
    let f = std::fs::File::open(p).unwrap();
    f.set_modified(t).unwrap();
}

/// Content, owner, mode and mtime of everything under some directories
/// outside the image (no symlink followed), to compare after a command.
#[derive(Debug, Clone, PartialEq)]
struct OutsideSnapshot {
    entries: BTreeMap<PathBuf, String>,
}

impl OutsideSnapshot {
    fn take(dirs: &[&Path]) -> Self {
        let mut entries = BTreeMap::new();
        for d in dirs.iter().filter(|d| d.exists()) {
            for e in walkdir::WalkDir::new(d).follow_links(false) {
                let e = e.unwrap();
                let md = e.path().symlink_metadata().unwrap();
                let what = if md.is_symlink() {
                    format!(
                        "link -> {}",
                        std::fs::read_link(e.path()).unwrap().display()
                    )
                } else if md.is_file() {
                    let data = std::fs::read(e.path()).unwrap();
                    format!("file sha256 {}", sha256(&data))
                } else {
                    format!("type {:o}", md.mode() & 0o170000)
                };
                entries.insert(
                    e.path().to_path_buf(),
                    format!(
                        "{what}, owner {}:{}, mode {:04o}, mtime {}.{:09}",
                        md.uid(),
                        md.gid(),
                        md.mode() & 0o7777,
                        md.mtime(),
                        md.mtime_nsec()
                    ),
                );
            }
        }
        Self { entries }
    }

    /// One line per difference: changed, new or vanished entries.
    fn compare(&self, now: &Self) -> Vec<String> {
        let mut v = Vec::new();
        for (p, before) in &self.entries {
            match now.entries.get(p) {
                None => v.push(format!("{} vanished (was {before})", p.display())),
                Some(after) if after != before => {
                    v.push(format!("{} changed: {before} => {after}", p.display()))
                }
                _ => {}
            }
        }
        for (p, after) in &now.entries {
            if !self.entries.contains_key(p) {
                v.push(format!("{} appeared ({after})", p.display()));
            }
        }
        v
    }
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Which of `needles` (ASCII) does the stream contain? Archives are
/// hundreds of MB decompressed, and this crate's own code runs unoptimized
/// in tests: the bytes go through `grep -aoF` (fast multi-pattern search).
/// Also returns how reading the stream ended (a corrupt compressed file
/// still has its readable part searched).
fn stream_find(
    mut r: impl Read + Send,
    needles: &[&str],
) -> (BTreeSet<usize>, std::io::Result<()>) {
    if needles.is_empty() {
        return (BTreeSet::new(), Ok(()));
    }
    let mut c = Command::new("grep");
    c.args(["-a", "-o", "-F"]);
    for n in needles {
        c.arg("-e").arg(n);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running grep");
    let mut stdin = child.stdin.take().unwrap();
    let (copied, out) = std::thread::scope(|s| {
        let h = s.spawn(move || std::io::copy(&mut r, &mut stdin).map(|_| ()));
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .expect("reading grep's output");
        (h.join().unwrap(), out)
    });
    let st = child.wait().unwrap();
    // 0: found, 1: not found; anything else means the search did not run.
    assert!(matches!(st.code(), Some(0) | Some(1)), "grep exited {st}");
    let found = out
        .lines()
        .filter_map(|l| needles.iter().position(|n| *n == l))
        .collect();
    (found, copied)
}

/// Scan results by (file, size, mtime): archives are read once.
type ScanCache = std::collections::HashMap<(PathBuf, u64, i64, i64), BTreeSet<usize>>;

/// Which tokens a regular file holds, raw or after gzip/zstd decompression
/// (by magic).
fn file_secrets(p: &Path, needles: &[&str]) -> BTreeSet<usize> {
    let Ok(f) = std::fs::File::open(p) else {
        return BTreeSet::new();
    };
    let (mut found, raw) = stream_find(std::io::BufReader::new(f), needles);
    raw.unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    let mut magic = [0u8; 4];
    let head = std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok();
    if head && magic[..2] == [0x1f, 0x8b] {
        let f = std::fs::File::open(p).unwrap();
        let d = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
        let (f, r) = stream_find(d, needles);
        found.extend(f);
        if let Err(e) = r {
            eprintln!("hostile: {} looks gzipped but is not: {e}", p.display());
        }
    } else if head && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        let f = std::fs::File::open(p).unwrap();
        if let Ok(d) = zstd::stream::read::Decoder::new(f) {
            let (f, r) = stream_find(d, needles);
            found.extend(f);
            if let Err(e) = r {
                eprintln!(
                    "hostile: {} looks zstd-compressed but is not: {e}",
                    p.display()
                );
            }
        }
    }
    found
}

/// Every (file, token index) where a token appears in a regular file under
/// `dir` (see [`file_secrets`]). With `follow`, a symlink (other than a
/// planted temp-name trap) counts as the file it reaches: a TFTP server
/// serves what a link in its tree points at. Without, only regular files
/// count (the image's own links to secrets are the attack, not a leak).
fn find_secrets_in(
    dir: &Path,
    tokens: &[&str],
    cache: &mut ScanCache,
    follow: bool,
) -> Vec<(PathBuf, usize)> {
    let mut hits = Vec::new();
    if !dir.exists() {
        return hits;
    }
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        let Ok(e) = e else { continue };
        let link = e.file_type().is_symlink()
            && follow
            && !e.file_name().to_string_lossy().starts_with(".nfsroot-tmp-");
        if !e.file_type().is_file() && !link {
            continue;
        }
        let Ok(p) = std::fs::canonicalize(e.path()) else {
            continue;
        };
        let Ok(md) = p.metadata() else { continue };
        if !md.is_file() {
            continue;
        }
        let key = (p.clone(), md.len(), md.mtime(), md.mtime_nsec());
        let found = cache
            .entry(key)
            .or_insert_with(|| file_secrets(&p, tokens))
            .clone();
        hits.extend(found.into_iter().map(|i| (e.path().to_path_buf(), i)));
    }
    hits
}

/// Lines of generated files that carry an injected directive: anything
/// from the payload `evil`, or a kernel name with a space. A symlink counts
/// as the file it reaches (what tftpd or exportfs would read).
fn injected_lines(files: &[PathBuf]) -> Vec<(PathBuf, String)> {
    let mut v = Vec::new();
    for f in files {
        let Ok(md) = f.metadata() else {
            continue;
        };
        if !md.is_file() {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        for l in text.lines() {
            let t = l.trim_start();
            if t.starts_with("DEFAULT evil") || t.contains("evil") || t.contains("vmlinuz-6 1") {
                v.push((f.clone(), l.to_string()));
            }
        }
    }
    v
}

/// Paths an exports file names that are not under `base`.
fn exports_outside(exports: &Path, base: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(exports) else {
        return vec![];
    };
    let mut v = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let path = if let Some(rest) = l.strip_prefix('"') {
            rest.split('"').next().unwrap_or("").to_string()
        } else {
            l.split_whitespace().next().unwrap_or("").to_string()
        };
        let p = Path::new(&path);
        let clean = p.components().all(|c| {
            !matches!(
                c,
                std::path::Component::ParentDir | std::path::Component::CurDir
            )
        });
        if !(clean && p.starts_with(base)) {
            v.push(l.to_string());
        }
    }
    v
}

/// Every regular file and symlink below `dir`, but the planted temp-name
/// traps (no directory symlink followed).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return vec![];
    }
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() || e.file_type().is_symlink())
        .filter(|e| !e.file_name().to_string_lossy().starts_with(".nfsroot-tmp-"))
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// Symlinks under the temp names nfsroot writes with, for the next pids,
/// each pointing at a victim file outside the image.
struct TempTraps {
    /// (directory, final name, victim file).
    places: Vec<(PathBuf, String, PathBuf)>,
    /// The pids trapped now.
    pids: BTreeSet<u32>,
}

impl TempTraps {
    fn new(places: Vec<(PathBuf, String, PathBuf)>) -> Self {
        Self {
            places,
            pids: BTreeSet::new(),
        }
    }

    fn link(dir: &Path, pid: u32, name: &str) -> PathBuf {
        dir.join(format!(".nfsroot-tmp-{pid}-{name}"))
    }

    /// The next `TRAP_PIDS` pids the kernel will hand out: cyclically from
    /// the last one, skipping pids in use, wrapping to 300 at pid_max.
    fn next_pids() -> BTreeSet<u32> {
        let read = |f: &str| -> u32 { std::fs::read_to_string(f).unwrap().trim().parse().unwrap() };
        let pid_max = read("/proc/sys/kernel/pid_max");
        let mut pid = read("/proc/sys/kernel/ns_last_pid");
        let mut v = BTreeSet::new();
        while v.len() < TRAP_PIDS as usize {
            pid += 1;
            if pid >= pid_max {
                pid = 300;
            }
            if !Path::new(&format!("/proc/{pid}")).exists() {
                v.insert(pid);
            }
        }
        v
    }

    /// Trap the next pids: links for pids that fell behind go, missing ones
    /// (new pids, or links a command swept or renamed) are made. Planting
    /// takes seconds on a busy disk while other processes take pids, so it
    /// repeats until the next 1000 pids are still covered.
    fn replant(&mut self) {
        let t = std::time::Instant::now();
        let mut made = self.plant(&Self::next_pids());
        for _ in 0..10 {
            let next = Self::next_pids();
            if next.iter().take(1000).all(|p| self.pids.contains(p)) {
                break;
            }
            made += self.plant(&next);
        }
        eprintln!(
            "hostile: {} temp-name traps ({made} new) in {:.1?}",
            self.pids.len() * self.places.len(),
            t.elapsed()
        );
    }

    /// Make the set of trapped pids `next`; returns the links made.
    fn plant(&mut self, next: &BTreeSet<u32>) -> usize {
        let mut made = 0;
        for (dir, name, victim) in &self.places {
            for pid in self.pids.difference(next) {
                let _ = std::fs::remove_file(Self::link(dir, *pid, name));
            }
            std::fs::create_dir_all(dir).unwrap();
            // Relative and short: ext4 keeps a target under 60 bytes in the
            // inode; longer ones cost a block each (slow with 39000 links).
            let target = relative(victim, dir);
            for pid in next {
                let l = Self::link(dir, *pid, name);
                if l.symlink_metadata().is_err() {
                    std::os::unix::fs::symlink(&target, &l).unwrap();
                    made += 1;
                }
            }
        }
        self.pids = next.clone();
        made
    }
}

/// A test's hostile image and everything needed to check the world after.
struct Hostile {
    l: TestLayout,
    tmp: PathBuf,
    root: PathBuf,
    /// The fixture's real kernel.
    kernel: String,
    secrets: Vec<Secret>,
    marker: PathBuf,
    policy_target: PathBuf,
    outside: PathBuf,
    secrets_dir: PathBuf,
    out_dir: PathBuf,
    traps: TempTraps,
    baseline: Option<OutsideSnapshot>,
    scanned: ScanCache,
    findings: Findings,
}

impl Hostile {
    /// A copy of the fixture, published clean; not yet hostile.
    fn prepare() -> Self {
        let t = std::time::Instant::now();
        let l = clone_fixture();
        eprintln!("hostile: copied the fixture in {:.1?}", t.elapsed());
        let t = std::time::Instant::now();
        let mut c = nfsroot(&l);
        c.args(["publish", "minimal"]);
        run(c, true);
        eprintln!("hostile: published it clean in {:.1?}", t.elapsed());
        let tmp = l.base.parent().unwrap().to_path_buf();
        let root = l.image("minimal");
        let kernel = std::fs::read_dir(root.join("boot"))
            .unwrap()
            .flatten()
            .find_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("vmlinuz-"))
                    .map(String::from)
            })
            .expect("the fixture has a kernel");
        let out_dir = tmp.join("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        Self {
            marker: tmp.join("MARKER-busybox"),
            policy_target: tmp.join("outside/policy-rc.d-target"),
            outside: tmp.join("outside"),
            secrets_dir: tmp.join("secrets"),
            out_dir,
            l,
            tmp,
            root,
            kernel,
            secrets: vec![],
            traps: TempTraps::new(vec![]),
            baseline: None,
            scanned: ScanCache::new(),
            findings: Findings::default(),
        }
    }

    /// Prepare, then make the image hostile.
    fn new() -> Self {
        let mut h = Self::prepare();
        h.make_hostile();
        h
    }

    fn make_hostile(&mut self) {
        let t = std::time::Instant::now();
        std::fs::create_dir_all(&self.secrets_dir).unwrap();
        std::fs::set_permissions(&self.secrets_dir, PermissionsExt::from_mode(0o700)).unwrap();
        std::fs::create_dir_all(self.outside.join("logdir")).unwrap();
        self.fake_busybox();
        self.hostile_kernels();
        self.plant_symlinks();
        self.poison_node_conf();
        self.plant_traps();
        self.outside_owners();
        self.verify_hostile();
        self.baseline = Some(self.snapshot_outside());
        // New tokens: files scanned before are scanned again.
        self.scanned.clear();
        eprintln!("hostile: made the image hostile in {:.1?}", t.elapsed());
    }

    /// Compile the fake busybox, prove that running it leaves the marker,
    /// and put it in the image.
    fn fake_busybox(&self) {
        let src = repo().join("tests/corpus/hostile/fake_busybox.c");
        let bin = self.tmp.join("fake-busybox");
        let st = Command::new("gcc")
            .args(["-static", "-O1", "-o"])
            .arg(&bin)
            .arg(format!("-DMARKER=\"{}\"", self.marker.display()))
            .arg(&src)
            .status()
            .expect("gcc (scripts/setup installs gcc libc6-dev)");
        assert!(st.success(), "compiling {}", src.display());
        // The check can fire: run it once here, on purpose.
        let out = Command::new(&bin).arg("--list").output().unwrap();
        assert!(self.marker.exists(), "the fake busybox left no marker");
        std::fs::remove_file(&self.marker).unwrap();
        let listed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        let data = std::fs::read(&bin).unwrap();
        for a in nfsroot::initramfs::APPLETS {
            assert!(
                listed.contains(*a),
                "fake busybox lacks applet {a}: extend {}",
                src.display()
            );
            let needle = format!("\0{a}\0");
            assert!(
                data.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "fake busybox binary lacks NUL-delimited {a}"
            );
        }
        let dest = self.root.join("bin/busybox");
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(&bin, &dest).unwrap();
        std::fs::set_permissions(&dest, PermissionsExt::from_mode(0o755)).unwrap();
    }

    fn modules(&self, ver: &str) -> PathBuf {
        self.root.join("usr/lib/modules").join(ver)
    }

    /// A kernel `ver` whose vmlinuz is a hard link of the real one and whose
    /// modules tree is a hard-link copy (files are then replaced, never
    /// written, so the real tree stays intact).
    fn add_kernel(&self, ver: &str) {
        let st = Command::new("cp")
            .arg("-al")
            .arg(self.modules(&self.kernel))
            .arg(self.modules(ver))
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::hard_link(
            self.root.join(format!("boot/vmlinuz-{}", self.kernel)),
            self.root.join(format!("boot/vmlinuz-{ver}")),
        )
        .unwrap();
    }

    fn hostile_kernels(&self) {
        for v in [ABS_KERNEL, MODS_KERNEL, REL_KERNEL]
            .iter()
            .chain(BAD_KERNELS)
        {
            self.add_kernel(v);
        }
    }

    /// A secret file (0600, random token) and a link to it at `link`.
    fn secret(&mut self, name: &str, link: &str, relative: bool) {
        let token = random_hex(16);
        let path = self.secrets_dir.join(name);
        std::fs::write(&path, format!("{token}\n").repeat(8)).unwrap();
        std::fs::set_permissions(&path, PermissionsExt::from_mode(0o600)).unwrap();
        let at = self.root.join(link);
        if relative {
            symlink(climbing(&path), &at);
        } else {
            symlink(&path, &at);
        }
        self.secrets.push(Secret {
            name: name.into(),
            path,
            token,
            link: link.into(),
        });
    }

    /// Symlinks to secrets from every place nfsroot reads, plus the log
    /// directory and a dangling policy-rc.d.
    fn plant_symlinks(&mut self) {
        let ml = |v: &str, rel: &str| format!("usr/lib/modules/{v}/{rel}");
        self.secret("vmlinuz-abs", &format!("boot/vmlinuz-{ABS_KERNEL}"), false);
        self.secret("vmlinuz-rel", &format!("boot/vmlinuz-{REL_KERNEL}"), true);
        self.secret("builtin-abs", &ml(ABS_KERNEL, "modules.builtin"), false);
        self.secret("nfs-ko-rel", &ml(ABS_KERNEL, "kernel/fs/nfs/nfs.ko"), true);
        self.secret("builtin-rel", &ml(MODS_KERNEL, "modules.builtin"), true);
        self.secret(
            "virtio-net-ko-abs",
            &ml(MODS_KERNEL, "kernel/drivers/net/virtio_net.ko"),
            false,
        );
        self.secret("etc-hosts-rel", "etc/hosts", true);
        // The log directory (node.conf's LOG_DIR and the profile's).
        let logs = self.root.join("var/log/hosts");
        let _ = std::fs::remove_dir_all(&logs);
        symlink(self.outside.join("logdir"), &logs);
        symlink(&self.policy_target, &self.root.join("usr/sbin/policy-rc.d"));
    }

    /// node.conf names an outside dir as this server's log export.
    fn poison_node_conf(&self) {
        let p = self.root.join("etc/nfsroot/node.conf");
        let old = std::fs::read_to_string(&p).unwrap();
        let mut text: String = old
            .lines()
            .filter(|l| !l.starts_with("LOG_") && !l.starts_with("ROOT_MODE"))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(&format!(
            "ROOT_MODE='ro'\nLOG_LAYOUT='per-host'\nLOG_DIR='/../../..'\n\
             LOG_EXPORT='10.0.2.2:{}'\n",
            self.outside.display()
        ));
        std::fs::write(&p, text).unwrap();
    }

    /// Where temp-name traps go: the image's etc (node-writable) and the
    /// TFTP tree, for each name nfsroot writes there.
    fn plant_traps(&mut self) {
        let mut places = Vec::new();
        let mut add = |dir: PathBuf, tag: &str, name: &str| {
            let victim = self.outside.join(format!("{tag}.{name}"));
            std::fs::write(&victim, format!("victim {tag}/{name}\n")).unwrap();
            places.push((dir, name.to_string(), victim));
        };
        let etc = self.root.join("etc");
        for n in ["hosts", "fstab", "hostname", "mtab"] {
            add(etc.clone(), "etc", n);
        }
        add(etc.join("nfsroot"), "etc.nfsroot", "node.conf");
        let sub = self.l.tftp.join("minimal");
        for v in [&self.kernel, ABS_KERNEL, MODS_KERNEL, REL_KERNEL] {
            add(sub.clone(), "tftp.minimal", &format!("vmlinuz-{v}"));
        }
        let cfg = self.l.tftp.join("pxelinux.cfg");
        let mac = format!("01-{HOST_MAC}");
        for n in ["default", "nfsroot-minimal", mac.as_str()] {
            add(cfg.clone(), "cfg", n);
        }
        add(self.l.tftp.clone(), "tftp", "pxelinux.0");
        add(self.l.tftp.clone(), "tftp", "nfsroot.ipxe");
        self.traps.places = places;
        self.traps.replant();
    }

    /// Outside files: another owner, a narrow mode, an old mtime.
    fn outside_owners(&self) {
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(978_307_200);
        for e in walkdir::WalkDir::new(&self.outside).contents_first(true) {
            let e = e.unwrap();
            std::os::unix::fs::chown(e.path(), Some(OUTSIDE_ID), Some(OUTSIDE_ID)).unwrap();
            let mode = if e.file_type().is_dir() { 0o750 } else { 0o640 };
            std::fs::set_permissions(e.path(), PermissionsExt::from_mode(mode)).unwrap();
            set_mtime(e.path(), old);
        }
    }

    /// The hostile tree is what it claims: followed on the host, each link
    /// reaches its secret, each trap its victim.
    fn verify_hostile(&self) {
        for s in &self.secrets {
            let got = std::fs::read_to_string(self.root.join(&s.link))
                .unwrap_or_else(|e| panic!("{} does not reach {}: {e}", s.link, s.path.display()));
            assert!(got.contains(&s.token), "{} reads {got:?}", s.link);
        }
        let (dir, name, victim) = &self.traps.places[0];
        let pid = self.traps.pids.iter().next().unwrap();
        let l = dir.join(format!(".nfsroot-tmp-{pid}-{name}"));
        assert_eq!(std::fs::canonicalize(l).unwrap(), *victim);
        assert!(!self.policy_target.exists());
    }

    fn snapshot_outside(&self) -> OutsideSnapshot {
        OutsideSnapshot::take(&[&self.outside, &self.secrets_dir])
    }

    fn tokens(&self) -> Vec<&str> {
        self.secrets.iter().map(|s| s.token.as_str()).collect()
    }

    /// Run nfsroot with `args` against freshly planted temp-name traps;
    /// checks its output and the world afterwards.
    fn cmd(&mut self, label: &str, args: &[&str]) -> Output {
        self.traps.replant();
        let t = std::time::Instant::now();
        let mut c = nfsroot(&self.l);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().expect("running nfsroot");
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let ran = t.elapsed();
        assert!(
            self.traps.pids.contains(&pid),
            "nfsroot ran as pid {pid}, outside the planted window (the machine \
             made more than {TRAP_PIDS} processes in between): rerun"
        );
        eprintln!(
            "--- [{label}] nfsroot {args:?}: {} in {ran:.1?}\nstdout: {}\nstderr: {}",
            out.status,
            tail(&out.stdout),
            tail(&out.stderr)
        );
        let text = [&out.stdout[..], &out.stderr[..]].concat();
        for i in stream_find(&text[..], &self.tokens()).0 {
            let s = &self.secrets[i];
            self.findings.add(
                label,
                format!("output {label} {}", s.name),
                format!(
                    "printed the content of {} (linked from {})",
                    s.path.display(),
                    s.link
                ),
            );
        }
        let t = std::time::Instant::now();
        self.check_world(label);
        eprintln!("hostile: checked the world in {:.1?}", t.elapsed());
        out
    }

    /// The command succeeded (exit 0, or one of `ok_codes`), or failed
    /// naming an offending path (or one of `also`).
    fn judge(&mut self, label: &str, out: &Output, ok_codes: &[i32], also: &[&str]) {
        let code = out.status.code();
        if code == Some(0) || code.is_some_and(|c| ok_codes.contains(&c)) {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if code.is_none() || code == Some(101) {
            self.findings.add(
                label,
                format!("crash {label}"),
                format!("crashed ({}): {}", out.status, err.trim()),
            );
            return;
        }
        if !OFFENDING.iter().chain(also).any(|f| err.contains(f)) {
            self.findings.add(
                label,
                format!("unnamed {label}"),
                format!("failed without naming an offending path: {}", err.trim()),
            );
        }
    }

    /// A successful run over kernels warns about the badly named ones.
    fn judge_warned(&mut self, label: &str, out: &Output) {
        if !matches!(out.status.code(), Some(0) | Some(3)) {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        for name in ["vmlinuz-6 1", "vmlinuz-6.1.0-99"] {
            if !err.contains(name) {
                self.findings.add(
                    label,
                    format!("warn {label} {name}"),
                    format!("succeeded without a warning naming boot/{name}"),
                );
            }
        }
    }

    /// Everything that must hold after any command.
    fn check_world(&mut self, label: &str) {
        if let Ok(m) = std::fs::read_to_string(&self.marker) {
            self.findings.add(
                label,
                format!("marker {label}"),
                format!(
                    "executed the image's /bin/busybox on the host: {}",
                    m.trim()
                ),
            );
            std::fs::remove_file(&self.marker).unwrap();
        }
        if self.policy_target.exists() {
            self.findings.add(
                label,
                "policy-target".into(),
                format!(
                    "wrote through the dangling usr/sbin/policy-rc.d: {} exists",
                    self.policy_target.display()
                ),
            );
        }
        let now = self.snapshot_outside();
        if let Some(before) = &self.baseline {
            for d in before.compare(&now) {
                self.findings.add(
                    label,
                    format!("outside {d}"),
                    format!("outside the image: {d}"),
                );
            }
        }
        self.baseline = Some(now);
        self.check_secrets(label);
        self.check_generated(label);
    }

    /// No token in anything nfsroot writes: TFTP, state (records, saved
    /// profiles, snapshots), the test's etc, initramfs outputs, image etc.
    fn check_secrets(&mut self, label: &str) {
        let dirs = [
            (self.l.tftp.clone(), true),
            (self.l.base.join(".nfsroot"), true),
            (self.l.base.join(".logs"), true),
            (self.l.etc(), true),
            (self.out_dir.clone(), true),
            (self.root.join("etc"), false),
        ];
        let tokens: Vec<&str> = self.secrets.iter().map(|s| s.token.as_str()).collect();
        let mut hits = Vec::new();
        for (d, follow) in &dirs {
            hits.extend(find_secrets_in(d, &tokens, &mut self.scanned, *follow));
        }
        for (file, i) in hits {
            let s = &self.secrets[i];
            self.findings.add(
                label,
                format!("leak {} {}", file.display(), s.name),
                format!(
                    "{} holds the content of {} (linked from {})",
                    file.display(),
                    s.path.display(),
                    s.link
                ),
            );
        }
    }

    /// Generated files hold no injected line, the TFTP tree no name with a
    /// control character, exports nothing outside the base dir.
    fn check_generated(&mut self, label: &str) {
        let mut files = files_under(&self.l.tftp.join("pxelinux.cfg"));
        let script = self.l.tftp.join("nfsroot.ipxe");
        if !script.is_symlink() {
            files.push(script);
        }
        files.extend(files_under(&self.l.etc()));
        files.push(self.root.join("etc/hosts"));
        for (f, line) in injected_lines(&files) {
            self.findings.add(
                label,
                format!("inject {} {line}", f.display()),
                format!("{} has an injected line {line:?}", f.display()),
            );
        }
        for e in walkdir::WalkDir::new(&self.l.tftp).into_iter().flatten() {
            let n = e.file_name().to_string_lossy();
            if n.chars().any(|c| c.is_control()) {
                self.findings.add(
                    label,
                    format!("tftp-name {}", e.path().display()),
                    format!("TFTP file with a control character: {:?}", e.path()),
                );
            }
        }
        let exports = self.l.etc().join("exports.d/nfsroot.exports");
        for l in exports_outside(&exports, &self.l.base) {
            self.findings.add(
                label,
                format!("export {l}"),
                format!("{} exports outside the base dir: {l}", exports.display()),
            );
        }
    }

    /// Fail the test with every finding.
    fn finish(self) {
        assert!(
            self.findings.list.is_empty(),
            "{} violation(s) on the hostile image:\n  {}",
            self.findings.list.len(),
            self.findings.list.join("\n  ")
        );
    }
}

fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[test]
fn hostile_checks_fire() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let token = random_hex(16);
    let other = random_hex(16);
    // Raw, gzip and zstd files holding the token are found; a clean one
    // and a symlink to a holder are not.
    std::fs::write(d.join("raw"), format!("xx{token}yy")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, format!("pad{token}").as_bytes()).unwrap();
    std::fs::write(d.join("f.gz"), gz.finish().unwrap()).unwrap();
    let big: Vec<u8> = std::iter::repeat_n(b'a', 3 << 20)
        .chain(token.bytes())
        .collect();
    std::fs::write(d.join("f.zst"), zstd::encode_all(&big[..], 1).unwrap()).unwrap();
    std::fs::write(d.join("clean"), "nothing here").unwrap();
    std::os::unix::fs::symlink(d.join("raw"), d.join("link")).unwrap();
    std::os::unix::fs::symlink(d.join("raw"), d.join(".nfsroot-tmp-1-x")).unwrap();
    let hits = find_secrets_in(d, &[&other, &token], &mut ScanCache::new(), false);
    let names: BTreeSet<String> = hits
        .iter()
        .map(|(p, i)| {
            assert_eq!(*i, 1);
            p.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(
        names,
        ["f.gz", "f.zst", "raw"].map(String::from).into(),
        "{hits:?}"
    );
    // Following links (not traps), the link counts too.
    let hits = find_secrets_in(d, &[&token], &mut ScanCache::new(), true);
    let names: BTreeSet<String> = hits
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["f.gz", "f.zst", "link", "raw"].map(String::from).into()
    );

    // Every kind of change outside is reported.
    let o = d.join("outside");
    std::fs::create_dir(&o).unwrap();
    for n in ["a", "b", "c", "d", "e"] {
        std::fs::write(o.join(n), n).unwrap();
    }
    let before = OutsideSnapshot::take(&[&o]);
    assert!(before.compare(&OutsideSnapshot::take(&[&o])).is_empty());
    std::fs::write(o.join("a"), "changed").unwrap();
    std::fs::set_permissions(o.join("b"), PermissionsExt::from_mode(0o604)).unwrap();
    std::os::unix::fs::chown(o.join("c"), Some(OUTSIDE_ID), None).unwrap();
    set_mtime(&o.join("d"), SystemTime::UNIX_EPOCH);
    std::fs::remove_file(o.join("e")).unwrap();
    std::fs::write(o.join("new"), "").unwrap();
    let diffs = before.compare(&OutsideSnapshot::take(&[&o]));
    for want in [
        "a changed",
        "b changed",
        "c changed",
        "d changed",
        "e vanished",
    ] {
        assert!(
            diffs.iter().any(|x| x.contains(&format!("/{want}"))),
            "{want}: {diffs:#?}"
        );
    }
    assert!(
        diffs.iter().any(|x| x.contains("/new appeared")),
        "{diffs:#?}"
    );

    // Injected PXELINUX lines and outside exports are found.
    let cfg = d.join("cfg");
    std::fs::write(&cfg, "LABEL minimal-6.1.0-99\nDEFAULT evil\nLABEL ok\n").unwrap();
    assert_eq!(injected_lines(std::slice::from_ref(&cfg)).len(), 1);
    // Through a symlink too; planted traps are not generated files.
    std::os::unix::fs::symlink(&cfg, d.join("cfg-link")).unwrap();
    std::os::unix::fs::symlink(&cfg, d.join(".nfsroot-tmp-1-cfg")).unwrap();
    let listed = files_under(d);
    assert!(listed.contains(&d.join("cfg-link")) && listed.contains(&cfg));
    assert!(!listed.contains(&d.join(".nfsroot-tmp-1-cfg")));
    assert_eq!(injected_lines(&[d.join("cfg-link")]).len(), 1);
    std::fs::write(&cfg, "LABEL ok\n  KERNEL minimal/vmlinuz-6 1\n").unwrap();
    assert_eq!(injected_lines(std::slice::from_ref(&cfg)).len(), 1);
    std::fs::write(&cfg, "DEFAULT minimal-6.1.0-50-amd64\n").unwrap();
    assert!(injected_lines(&[cfg]).is_empty());
    let ex = d.join("exports");
    let base = d.join("base");
    std::fs::write(
        &ex,
        format!(
            "# c\n{b}/minimal 10.0.2.0/24(ro)\n\"{b}/a b\" x(rw)\n/ 10.0.2.0/24(rw)\n\
             {b}/../outside x(rw)\n{d}/outside x(rw)\n",
            b = base.display(),
            d = d.display()
        ),
    )
    .unwrap();
    let out = exports_outside(&ex, &base);
    assert_eq!(out.len(), 3, "{out:#?}");

    // The temp-name traps cover the pid of the next process.
    let mut traps = TempTraps::new(vec![(d.join("traps"), "hosts".into(), o.join("a"))]);
    traps.replant();
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(traps.pids.contains(&pid));
    let link = d.join(format!("traps/.nfsroot-tmp-{pid}-hosts"));
    assert_eq!(std::fs::canonicalize(link).unwrap(), o.join("a"));
}

/// publish, status, upgrade-kernel (also after a node plants a newest
/// kernel named to inject a line), rollback.
#[test]
fn hostile_publish_upgrade_rollback_status() {
    let mut h = Hostile::new();
    let out = h.cmd("publish", &["publish", "minimal"]);
    h.judge("publish", &out, &[], &[]);
    h.judge_warned("publish", &out);
    let out = h.cmd("status", &["status", "minimal"]);
    h.judge("status", &out, &[3], &[]);
    h.judge_warned("status", &out);
    let out = h.cmd("upgrade-kernel", &["upgrade-kernel", "minimal"]);
    h.judge("upgrade-kernel", &out, &[], &[]);

    // A node installs a kernel whose name sorts newest and carries a line.
    h.add_kernel(NEWEST_EVIL);
    let out = h.cmd(
        "upgrade-kernel (newest evil)",
        &["upgrade-kernel", "minimal"],
    );
    h.judge("upgrade-kernel (newest evil)", &out, &[], &[]);
    let out = h.cmd("rollback", &["rollback", "minimal"]);
    h.judge("rollback", &out, &[], &["oldest published kernel"]);
    let k = h.kernel.clone();
    let out = h.cmd("rollback --to", &["rollback", "minimal", "--to", &k]);
    h.judge("rollback --to", &out, &[], &[]);
    let out = h.cmd("status (after)", &["status", "minimal"]);
    h.judge("status (after)", &out, &[3], &[]);
    h.finish();
}

/// `initramfs build` for the default kernel and each hostile one.
#[test]
fn hostile_initramfs_build() {
    let mut h = Hostile::new();
    let mut runs: Vec<(String, Vec<String>)> = vec![("default".into(), vec![])];
    let k = h.kernel.clone();
    for v in [MODS_KERNEL, ABS_KERNEL, REL_KERNEL, k.as_str()]
        .iter()
        .chain(BAD_KERNELS)
    {
        runs.push((
            format!("--kernel {v:?}"),
            vec!["--kernel".into(), v.to_string()],
        ));
    }
    for (i, (what, extra)) in runs.iter().enumerate() {
        let out_file = h.out_dir.join(format!("initrd-{i}.img"));
        let comp = if i % 2 == 0 { "gzip" } else { "zstd" };
        let mut args = vec![
            "initramfs",
            "build",
            "minimal",
            "-o",
            out_file.to_str().unwrap(),
            "--compression",
            comp,
        ];
        args.extend(extra.iter().map(String::as_str));
        let label = format!("initramfs build {what}");
        let out = h.cmd(&label, &args);
        let named: Vec<&str> = extra.get(1).map(String::as_str).into_iter().collect();
        h.judge(&label, &out, &[], &named);
    }
    h.finish();
}

/// `exec` never writes through the dangling policy-rc.d.
#[test]
fn hostile_exec() {
    let mut h = Hostile::new();
    let out = h.cmd("exec", &["exec", "minimal", "--", "true"]);
    h.judge("exec", &out, &[], &[]);
    h.finish();
}

/// `sync` with a host of the hostile image: node.conf's log export, the
/// etc/hosts link and the temp-name traps steer nothing.
#[test]
fn hostile_sync() {
    let mut h = Hostile::new();
    let inv = h.l.etc().join("nfsroot/inventory.toml");
    write_qemu_inventory(&inv);
    let mut c = nfsroot(&h.l);
    c.args(["hosts", "add", "alpha", "--mac", HOST_MAC, "--ip", HOST_IP]);
    run(c, true);
    let out = h.cmd("sync", &["sync"]);
    h.judge("sync", &out, &[], &[]);

    // A node puts a regular etc/hosts back; the other traps stay.
    let hosts = h.root.join("etc/hosts");
    let _ = std::fs::remove_file(&hosts);
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let out = h.cmd("sync (regular etc/hosts)", &["sync"]);
    h.judge("sync (regular etc/hosts)", &out, &[], &[]);
    // A sync that succeeds did its job from the server's facts: the image
    // root exported, the host's log directory under <base-dir>/.logs.
    if out.status.success() {
        let exports = h.l.etc().join("exports.d/nfsroot.exports");
        let text = std::fs::read_to_string(&exports).unwrap_or_default();
        let logs = h.l.base.join(".logs/minimal/alpha");
        for (ok, what) in [
            (
                text.contains(&h.root.display().to_string()),
                format!("exports no image root:\n{text}"),
            ),
            (
                logs.is_dir(),
                format!("made no log directory {}", logs.display()),
            ),
        ] {
            if !ok {
                let label = "sync (regular etc/hosts)";
                h.findings.add(
                    label,
                    format!("did-job {what}"),
                    format!("succeeded but {what}"),
                );
            }
        }
    }
    h.finish();
}

/// `snapshot` of a clean and of the hostile image, `diff` against both.
#[test]
fn hostile_snapshot_diff() {
    let mut h = Hostile::prepare();
    let snap = |h: &mut Hostile, label: &str| -> Option<PathBuf> {
        let out = h.cmd(
            label,
            &[
                "--json", "--quiet", "snapshot", "minimal", "--format", "zst", "--level", "1",
            ],
        );
        h.judge(label, &out, &[], &[]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["result"]["path"].as_str().map(PathBuf::from)
    };
    let clean = snap(&mut h, "snapshot (clean)").expect("snapshot of the clean image");
    h.make_hostile();
    let hostile = snap(&mut h, "snapshot (hostile)");
    for (label, file) in [
        ("diff (clean snapshot)", Some(clean)),
        ("diff (hostile snapshot)", hostile),
    ] {
        let Some(f) = file else { continue };
        let out = h.cmd(label, &["diff", "minimal", f.to_str().unwrap()]);
        h.judge(label, &out, &[], &[]);
    }
    h.finish();
}

/// `boot-test` of an image whose node.conf a node poisoned (log export
/// and log directory outside, a root mode of its choosing), with the
/// temp-name traps in place. The image still boots: its kernel, initramfs,
/// fstab and exports are the server's. The NFS server the test starts
/// exports nothing the image named, and nothing outside changes.
#[test]
fn hostile_boot_test() {
    let mut h = Hostile::prepare();
    std::fs::create_dir_all(h.outside.join("logdir")).unwrap();
    h.poison_node_conf();
    h.plant_traps();
    h.baseline = Some(h.snapshot_outside());
    let out = {
        let _g = qemu_lock();
        h.cmd(
            "boot-test",
            &[
                "--json",
                "boot-test",
                "minimal",
                "--mode",
                "direct",
                "--no-analysis",
            ],
        )
    };
    h.judge("boot-test", &out, &[], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let r = &v["result"];
    if r["passed"] != true {
        h.findings.add(
            "boot-test",
            "boot".into(),
            format!("the image did not boot: {}", r["diagnosis"]),
        );
    }
    for f in files_under(&h.l.base.join(".nfsroot/boot-tests")) {
        if f.file_name().is_some_and(|n| n == "ganesha.conf") {
            let text = std::fs::read_to_string(&f).unwrap();
            if text.contains(&h.outside.display().to_string()) {
                h.findings.add(
                    "boot-test",
                    "export".into(),
                    format!("{} exports a path from node.conf:\n{text}", f.display()),
                );
            }
        }
    }
    h.finish();
}
