//! Deterministic crash points (issue 12): each command runs with
//! `NFSROOT_CRASH_AT` naming one point of `src/crashpoint.rs` in turn, must
//! die there (SIGKILL, with the binary's `nfsroot: crash point NAME` line on
//! stderr), and leave a state the full invariant holds for: every config
//! under pxelinux.cfg (`default`, `nfsroot-<image>`, per-host links) and
//! under grub/ (`grub.cfg`, `nfsroot-<image>.cfg`, per-host links) and the
//! iPXE script `nfsroot.ipxe` names only files present with the recorded
//! checksums, and at most one pair of one boot config (the image's
//! PXELINUX/GRUB pair; the default's PXELINUX/GRUB and GRUB/iPXE) boots
//! different kernels after a crash, none after a clean run; no archive name without
//! a complete, verifying archive; an image tree that is the old one or the
//! new one. The next run without the crash succeeds and leaves no temp
//! file. `atomic.before_rename` is walked as `@1`, `@2`, ... until a run
//! finishes, which stops each command before every atomic rename it makes.
//! The points each test walks are listed below, and a test checks that
//! together they are every point the binary has. The random-time SIGKILL
//! loop in upgrade.rs stays as a second net.

use crate::common::*;
use nfsroot::crashpoint;
use nfsroot::fsutil::TEMP_PREFIX;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// publish / upgrade-kernel, in the order a run reaches them.
const PUBLISH_POINTS: &[&str] = &[
    "publish.boot_files",
    "publish.record",
    "publish.between_configs",
    // Before the image's GRUB config (its PXELINUX one is switched), then
    // before grub/grub.cfg (pxelinux.cfg/default is switched).
    "publish.grub_config@1",
    "publish.grub_config@2",
    "publish.configs",
    "publish.retire",
    "publish.retired",
];
const ROLLBACK_POINTS: &[&str] = &[
    "rollback.between_configs",
    "rollback.grub_config@1",
    "rollback.grub_config@2",
    "rollback.configs",
];
/// With `--keep 2` and two archives already there, each run prunes one:
/// its three files are removed one by one.
const SNAPSHOT_POINTS: &[&str] = &[
    "snapshot.archive_written",
    "snapshot.manifest",
    "snapshot.checksum",
    "snapshot.prune@1",
    "snapshot.prune@2",
    "snapshot.prune@3",
];
/// restore, and the image swap it shares with build.
const RESTORE_POINTS: &[&str] = &[
    "restore.extracted",
    "swap.before_exchange",
    "swap.after_exchange",
];
/// Walked `@1`, `@2`, ... for upgrade-kernel, rollback and snapshot.
const ATOMIC: &str = "atomic.before_rename";

#[test]
fn every_point_has_a_crash_test() {
    let mut tested: Vec<&str> = [PUBLISH_POINTS, ROLLBACK_POINTS, SNAPSHOT_POINTS]
        .concat()
        .into_iter()
        .chain(RESTORE_POINTS.iter().copied())
        .chain(crate::trees::TREES_POINTS.iter().copied())
        .map(|p| p.split('@').next().unwrap())
        .chain([ATOMIC])
        .collect();
    tested.sort();
    tested.dedup();
    let mut all = crashpoint::POINTS.to_vec();
    all.sort();
    assert_eq!(tested, all, "a crash point without a crash test, or gone");
}

/// How a run with a crash point set ended.
#[derive(Debug, PartialEq)]
enum Ran {
    /// Killed at the point, which it announced.
    Died,
    /// Never reached the point (as often as asked) and succeeded.
    Finished,
}

fn run_at(l: &TestLayout, args: &[&str], point: &str) -> Ran {
    let mut c = nfsroot(l);
    c.env(crashpoint::ENV, point).args(args);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let name = point.split('@').next().unwrap();
    if out.status.signal() == Some(libc::SIGKILL) {
        let marker = format!("nfsroot: crash point {name}\n");
        assert!(
            err.contains(&marker),
            "{args:?} killed, not at {point}:\n{err}"
        );
        return Ran::Died;
    }
    assert!(
        out.status.success() && !err.contains("crash point"),
        "{args:?} at {point}: neither died there nor succeeded ({}):\n{err}",
        out.status
    );
    Ran::Finished
}

fn die_at(l: &TestLayout, args: &[&str], point: &str) {
    assert_eq!(
        run_at(l, args, point),
        Ran::Died,
        "{args:?}: {point} not hit"
    );
}

fn ok(l: &TestLayout, args: &[&str]) {
    let mut c = nfsroot(l);
    c.args(args);
    run(c, true);
}

/// No temp file anywhere under `dirs` (links not followed).
fn assert_no_temps(dirs: &[&Path]) {
    for d in dirs {
        for e in walkdir::WalkDir::new(d).into_iter().flatten() {
            let name = e.file_name().to_string_lossy();
            assert!(
                !name.starts_with(TEMP_PREFIX),
                "left behind: {:?}",
                e.path()
            );
        }
    }
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().unwrap().to_string()
}

/// Every file any publish record lists, with its sha256.
fn recorded_files(l: &TestLayout) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let dir = l.base.join(".nfsroot/published");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) || !name.ends_with(".json") {
            continue;
        }
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        for (f, sha) in rec["files"].as_object().unwrap() {
            files.insert(f.clone(), sha.as_str().unwrap().to_string());
        }
    }
    files
}

/// The full invariant of the TFTP root: every config under pxelinux.cfg
/// (a per-host link read through) parses, its DEFAULT is one of its labels,
/// and every KERNEL and INITRD it names exists with the checksum a record
/// lists. `configs` must all be there.
/// Returns what each config's default boots (kernel and initramfs paths),
/// by name (GRUB ones as `grub/<name>`).
fn check_published(l: &TestLayout, configs: &[&str]) -> BTreeMap<String, String> {
    let files = recorded_files(l);
    let mut hashed: HashMap<String, String> = HashMap::new();
    let mut seen = Vec::new();
    let mut boots = BTreeMap::new();
    let dirs = [
        (
            l.tftp.join("pxelinux.cfg"),
            "",
            named_files as fn(&str, &str) -> (Vec<String>, String),
        ),
        (l.tftp.join("grub"), "grub/", grub_named_files),
    ];
    let entries = dirs.iter().flat_map(|(dir, prefix, parse)| {
        std::fs::read_dir(dir).unwrap().flatten().map(move |e| {
            (
                e.file_name().to_string_lossy().to_string(),
                e.path(),
                *prefix,
                *parse,
            )
        })
    });
    let script = l.tftp.join("nfsroot.ipxe");
    let script = script.exists().then(|| {
        let parse: fn(&str, &str) -> (Vec<String>, String) = ipxe_named_files;
        ("nfsroot.ipxe".to_string(), script, "", parse)
    });
    for (file_name, path, prefix, parse) in entries.chain(script) {
        let name = format!("{prefix}{file_name}");
        if file_name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading config {name} (a link to nothing?): {err}"));
        let (named, default_kernel) = parse(&name, &text);
        boots.insert(name.clone(), default_kernel);
        for f in named {
            let want = files
                .get(&f)
                .unwrap_or_else(|| panic!("{name} names {f}, which no record lists:\n{text}"));
            let got = hashed
                .entry(f.clone())
                .or_insert_with(|| sha256sum(&l.tftp.join(&f)));
            assert_eq!(
                got, want,
                "{name} names {f}, which is not the recorded file"
            );
        }
        seen.push(name);
    }
    for c in configs {
        assert!(seen.iter().any(|s| s == c), "no config {c}: {seen:?}");
    }
    boots
}

/// The PXELINUX and GRUB configs of the image, and the default ones with
/// the iPXE script (written in this order).
const PAIRS: [(&str, &str); 3] = [
    ("nfsroot-minimal", "grub/nfsroot-minimal.cfg"),
    ("default", "grub/grub.cfg"),
    ("grub/grub.cfg", "nfsroot.ipxe"),
];

/// The pairs of one boot config (per-host names link to the image's pair,
/// so they are not counted apart) that boot different kernels. An iPXE
/// script that boots nothing itself (it chains PXELINUX) is no pair.
fn split_pairs(boots: &BTreeMap<String, String>) -> Vec<(&'static str, &'static str)> {
    PAIRS
        .into_iter()
        .filter(|(_, b)| boots.get(*b).is_none_or(|k| !k.is_empty()))
        .filter(|(a, b)| boots.get(*a) != boots.get(*b))
        .collect()
}

/// The files a config names and the kernel and initramfs its DEFAULT
/// boots; checks that its DEFAULT is one of its labels.
fn named_files(name: &str, text: &str) -> (Vec<String>, String) {
    let mut labels = Vec::new();
    let mut files = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(lbl) = line.strip_prefix("LABEL ") {
            labels.push((lbl.to_string(), String::new()));
        }
        for kw in ["KERNEL ", "INITRD "] {
            if let Some(f) = line.strip_prefix(kw) {
                let Some(last) = labels.last_mut() else {
                    panic!("{name}: {kw}outside a label:\n{text}");
                };
                last.1 = format!("{} {f}", last.1).trim().to_string();
                files.push(f.to_string());
            }
        }
    }
    let default = text.lines().find_map(|l| l.strip_prefix("DEFAULT "));
    let default = default.unwrap_or_else(|| panic!("{name} has no DEFAULT:\n{text}"));
    let k = labels.iter().find(|l| l.0 == default);
    let k = k.unwrap_or_else(|| panic!("{name}:\n{text}"));
    (files, k.1.clone())
}

/// The same for a GRUB config, read on its own terms (not with the
/// library's parser): `menuentry 'T' {`, `linux /K ...`, `initrd /I`, and
/// `set default=T` naming one of the titles.
fn grub_named_files(name: &str, text: &str) -> (Vec<String>, String) {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut files = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix("menuentry ") {
            let t = t.trim_end_matches('{').trim().trim_matches('\'');
            entries.push((t.to_string(), String::new()));
        }
        for kw in ["linux /", "initrd /"] {
            if let Some(rest) = line.strip_prefix(kw) {
                let f = rest.split_whitespace().next().unwrap().to_string();
                let Some(last) = entries.last_mut() else {
                    panic!("{name}: {kw} outside a menuentry:\n{text}");
                };
                last.1 = format!("{} {f}", last.1).trim().to_string();
                files.push(f);
            }
        }
    }
    let default = text.lines().find_map(|l| l.strip_prefix("set default="));
    let default = default.unwrap_or_else(|| panic!("{name} has no default:\n{text}"));
    let k = entries.iter().find(|e| e.0 == default.trim_matches('\''));
    let k = k.unwrap_or_else(|| panic!("{name}: default names no entry:\n{text}"));
    (files, k.1.clone())
}

/// The same for the iPXE script, read on its own terms: `:boot-L`
/// blocks with `kernel /K ...` and `initrd /I`, the first `goto boot-L`
/// naming one of them; a script that only chains `/pxelinux.0` names no
/// file and boots "" itself.
fn ipxe_named_files(name: &str, text: &str) -> (Vec<String>, String) {
    assert!(text.starts_with("#!ipxe\n"), "{name}:\n{text}");
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut files = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(b) = line.strip_prefix(":boot-") {
            blocks.push((b.to_string(), String::new()));
        }
        for kw in ["kernel /", "initrd /"] {
            if let Some(rest) = line.strip_prefix(kw) {
                let f = rest.split_whitespace().next().unwrap().to_string();
                let Some(last) = blocks.last_mut() else {
                    panic!("{name}: {kw} outside a :boot- block:\n{text}");
                };
                last.1 = format!("{} {f}", last.1).trim().to_string();
                files.push(f);
            }
        }
    }
    let Some(default) = text.lines().find_map(|l| l.strip_prefix("goto boot-")) else {
        assert!(
            text.ends_with("chain /pxelinux.0\n") && files.is_empty(),
            "{name}:\n{text}"
        );
        return (files, String::new());
    };
    let k = blocks.iter().find(|b| b.0 == default);
    let k = k.unwrap_or_else(|| panic!("{name}: goto names no block:\n{text}"));
    (files, k.1.clone())
}

/// Two inventory hosts and a sync: per-host links in pxelinux.cfg and
/// grub/.
fn add_hosts(l: &TestLayout) -> [&'static str; 8] {
    write_qemu_inventory(&l.etc().join("nfsroot/inventory.toml"));
    let add = ["hosts", "add", "alpha", "--mac", "52-54-00-AA-00-01"];
    ok(l, &[&add[..], &["--ip", "10.0.2.31"]].concat());
    ok(l, &["-q", "sync"]);
    [
        "default",
        "nfsroot-minimal",
        "01-52-54-00-aa-00-01",
        "0A00021F",
        "grub/grub.cfg",
        "grub/nfsroot-minimal.cfg",
        "grub/grub.cfg-01-52-54-00-aa-00-01",
        "grub/grub.cfg-10.0.2.31",
    ]
}

/// A second, newer kernel `99.0`: a copy of the image's kernel whose
/// module tree links to the real one (enough to publish; never booted).
/// Returns the image's own kernel version.
fn add_fake_newer_kernel(l: &TestLayout) -> String {
    let root = l.image("minimal");
    let old = std::fs::read_dir(root.join("boot"))
        .unwrap()
        .flatten()
        .find_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("vmlinuz-").map(String::from)
        })
        .unwrap();
    std::fs::copy(
        root.join(format!("boot/vmlinuz-{old}")),
        root.join("boot/vmlinuz-99.0"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&old, root.join("usr/lib/modules/99.0")).unwrap();
    old
}

/// Sets the profile to one of two initramfs module sets, so every
/// upgrade-kernel run has a new initramfs to publish and an old one to
/// retire.
fn initramfs_variant(l: &TestLayout) -> impl Fn(usize) {
    let prof = l.base.join(".nfsroot/profiles/minimal.toml");
    let base = std::fs::read_to_string(&prof).unwrap();
    move |i: usize| {
        let text = match i % 2 {
            0 => base.clone(),
            _ => with_initramfs(&base, "modules = [\"default\", \"dummy\"]"),
        };
        std::fs::write(&prof, text).unwrap();
    }
}

/// One command's walk over `atomic.before_rename@1`, `@2`, ...
struct AtomicWalk<'a> {
    l: &'a TestLayout,
    /// The command line of the nth run.
    args: &'a dyn Fn(usize) -> Vec<String>,
    /// What changes before the nth run, so that it has work to do.
    prepare: &'a dyn Fn(usize),
    /// The invariant after a crash, and after a clean run.
    after_crash: &'a dyn Fn(),
    after_run: &'a dyn Fn(),
}

impl AtomicWalk<'_> {
    /// Die before the 1st, 2nd, ... atomic rename of the command (each
    /// crash checked, then a clean run checked) until a run finishes;
    /// returns how many renames it died before.
    fn run(&self) -> usize {
        for n in 1.. {
            (self.prepare)(n);
            let args = (self.args)(n);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if run_at(self.l, &args, &format!("{ATOMIC}@{n}")) == Ran::Finished {
                (self.after_run)();
                return n - 1;
            }
            (self.after_crash)();
            ok(self.l, &args);
            (self.after_run)();
        }
        unreachable!()
    }
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn publish_upgrade_and_rollback_die_at_every_point() {
    let l = clone_fixture();
    ok(&l, &["-q", "publish", "minimal"]);
    let configs = add_hosts(&l);
    let after_crash = || {
        let boots = check_published(&l, &configs);
        let split = split_pairs(&boots);
        assert!(
            split.len() <= 1,
            "more than one pair mid-switch: {split:?} {boots:?}"
        );
    };
    let after_run = || {
        let boots = check_published(&l, &configs);
        assert_eq!(split_pairs(&boots), [], "{boots:?}");
        // Per-host names (links) boot what the image's configs boot.
        assert_eq!(
            boots["01-52-54-00-aa-00-01"],
            boots["grub/grub.cfg-10.0.2.31"]
        );
        assert_no_temps(&[&l.tftp, &l.base.join(".nfsroot")]);
    };
    after_run();
    // The first run upgrades to 99.0; each later one switches initramfs.
    let old = add_fake_newer_kernel(&l);
    let variant = initramfs_variant(&l);
    let upgrade = ["-q", "upgrade-kernel", "minimal"];
    for (i, p) in PUBLISH_POINTS.iter().enumerate() {
        variant(i);
        die_at(&l, &upgrade, p);
        after_crash();
        // Killed between the two renames of a pair, exactly that pair is
        // split (each run switches the initramfs at least).
        let split = split_pairs(&check_published(&l, &configs));
        match *p {
            "publish.between_configs" | "publish.grub_config@1" => {
                assert_eq!(split, [PAIRS[0]], "{p}")
            }
            "publish.grub_config@2" => assert_eq!(split, [PAIRS[1]], "{p}"),
            _ => assert_eq!(split, [], "{p}"),
        }
        ok(&l, &upgrade);
        after_run();
    }
    // Every atomic rename, the host's PXELINUX files included.
    let renames = AtomicWalk {
        l: &l,
        args: &|_| argv(&upgrade),
        prepare: &|n| {
            variant(PUBLISH_POINTS.len() + n - 1);
            for f in [
                "pxelinux.0",
                "ldlinux.c32",
                "shimx64.efi",
                "grubx64.efi",
                "mmx64.efi",
            ] {
                std::fs::remove_file(l.tftp.join(f)).unwrap();
            }
        },
        after_crash: &after_crash,
        after_run: &after_run,
    }
    .run();
    assert!(renames >= 7, "upgrade-kernel made {renames} atomic renames");

    // 99.0 is the default now: odd runs roll back to the old kernel, even
    // ones forward again, so every run switches.
    let rollback = |n: usize| {
        let to = if n % 2 == 1 { old.as_str() } else { "99.0" };
        argv(&["-q", "rollback", "minimal", "--to", to])
    };
    for (i, p) in ROLLBACK_POINTS.iter().enumerate() {
        let args = rollback(i + 1);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        die_at(&l, &args, p);
        after_crash();
        ok(&l, &args);
        after_run();
    }
    // Killed after its configs and run again, a rollback without --to
    // finishes the same switch (99.0 -> old), not one kernel further back
    // (here: "nothing older to roll back to").
    assert_eq!(ROLLBACK_POINTS.len() % 2, 0, "99.0 is the default here");
    die_at(&l, &["-q", "rollback", "minimal"], "rollback.configs");
    after_crash();
    ok(&l, &["-q", "rollback", "minimal"]);
    after_run();
    let mut c = nfsroot(&l);
    c.args(["--json", "status", "minimal"]);
    let status: serde_json::Value = serde_json::from_slice(&c.output().unwrap().stdout).unwrap();
    assert_eq!(
        status["result"]["default_boots"].as_str(),
        Some(format!("minimal-{old}").as_str()),
        "{status}"
    );
    ok(&l, &["-q", "rollback", "minimal", "--to", "99.0"]);
    let renames = AtomicWalk {
        l: &l,
        args: &|n| rollback(n + ROLLBACK_POINTS.len()),
        prepare: &|_| {},
        after_crash: &after_crash,
        after_run: &after_run,
    }
    .run();
    assert!(renames >= 3, "rollback made {renames} atomic renames");
}

/// A small image tree, quick to archive and restore; `generation` tells
/// two of them apart (the second also has one more file).
fn tiny_image(root: &Path, generation: &str) {
    for d in ["etc", "usr/bin", "var/lib/data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/generation"), generation).unwrap();
    std::fs::write(root.join("usr/bin/tool"), vec![7u8; 200_000]).unwrap();
    for i in 0..40 {
        let f = root.join(format!("var/lib/data/f{i}"));
        std::fs::write(f, format!("{generation} {i}\n").repeat(i + 1)).unwrap();
    }
    if generation == "B" {
        std::fs::write(root.join("etc/only-in-b"), "b\n").unwrap();
    }
    let link = root.join("etc/tool");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("../usr/bin/tool", link).unwrap();
    }
}

/// A tree as path -> kind and content, for "old or new, never half";
/// without the release stamp, which restore gives each version anew.
fn tree_of(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        if rel == Path::new("etc/nfsroot-release") {
            continue;
        }
        let v = if e.file_type().is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            [b"-> ", t.as_os_str().as_bytes()].concat()
        } else if e.file_type().is_dir() {
            b"dir".to_vec()
        } else {
            [&b"file "[..], &std::fs::read(e.path()).unwrap()].concat()
        };
        m.insert(rel, v);
    }
    m
}

/// Wait for the next wall-clock second: snapshot names carry the time to
/// the second, and a run must not find its name taken.
fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let ms = 1000 - u64::from(now.subsec_millis()) + 20;
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Archives in a snapshots dir (no temp files, no side files), sorted.
fn archives(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            !n.starts_with(TEMP_PREFIX) && n.ends_with(".tar.zst")
        })
        .collect();
    v.sort();
    v
}

/// Every archive under its final name is complete: checksum and manifest
/// beside it, and `snapshot verify` passes.
fn check_archives(l: &TestLayout, dir: &Path) {
    for a in archives(dir) {
        for side in [".sha256", ".manifest.json"] {
            let mut s = a.clone().into_os_string();
            s.push(side);
            assert!(
                Path::new(&s).is_file(),
                "{} without its {side}",
                a.display()
            );
        }
        let mut c = nfsroot(l);
        c.args(["snapshot", "verify"]).arg(&a);
        run(c, true);
    }
}

/// After a clean run: `keep` complete archives, every other file beside one
/// of them, no temp file.
fn check_snapshot_dir(l: &TestLayout, dir: &Path, keep: usize) {
    check_archives(l, dir);
    let arch = archives(dir);
    assert_eq!(arch.len(), keep, "{arch:?}");
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let owner = n
            .strip_suffix(".sha256")
            .or_else(|| n.strip_suffix(".manifest.json"))
            .unwrap_or(&n);
        assert!(
            arch.iter().any(|a| a.file_name().unwrap() == owner),
            "{n} left in {} without its archive",
            dir.display()
        );
    }
    assert_no_temps(&[&l.base]);
}

#[test]
fn snapshot_and_restore_die_at_every_point() {
    let l = TestLayout::temp();
    let root = l.image("tiny");
    tiny_image(&root, "A");
    let dir = l.base.join(".nfsroot/snapshots/tiny");
    let snap = ["-q", "snapshot", "tiny", "--format", "zst", "--keep", "2"];
    // Two archives first, so every later run prunes the oldest.
    for _ in 0..2 {
        next_second();
        ok(&l, &snap);
    }
    for p in SNAPSHOT_POINTS {
        next_second();
        let before = archives(&dir);
        die_at(&l, &snap, p);
        check_archives(&l, &dir);
        if !p.starts_with("snapshot.prune") {
            assert_eq!(archives(&dir), before, "{p}: an archive name appeared");
        }
        next_second();
        ok(&l, &snap);
        check_snapshot_dir(&l, &dir, 2);
    }
    let before = std::cell::RefCell::new(Vec::new());
    let renames = AtomicWalk {
        l: &l,
        args: &|_| argv(&snap),
        prepare: &|_| {
            next_second();
            *before.borrow_mut() = archives(&dir);
        },
        after_crash: &|| {
            check_archives(&l, &dir);
            // The archive's own rename is the last: nothing new by then.
            assert_eq!(archives(&dir), *before.borrow());
            next_second();
        },
        after_run: &|| check_snapshot_dir(&l, &dir, 2),
    }
    .run();
    assert!(renames >= 3, "snapshot made {renames} atomic renames");
    restore_dies_at_every_point(&l);
}

/// Restore over an image, alternating two archives: after each crash the
/// image is the old tree or the new one, whole; the next run restores.
fn restore_dies_at_every_point(l: &TestLayout) {
    let root = l.image("tiny");
    let out = l.base.parent().unwrap().join("archives");
    let mut trees = Vec::new();
    let mut files = Vec::new();
    for generation in ["A", "B"] {
        tiny_image(&root, generation);
        trees.push(tree_of(&root));
        let file = out.join(format!("{generation}.tar.zst"));
        let mut c = nfsroot(l);
        c.args(["-q", "snapshot", "tiny", "-o"]).arg(&file);
        run(c, true);
        files.push(file.to_string_lossy().into_owned());
    }
    // The image is B now; the first restore brings A back.
    for (i, p) in RESTORE_POINTS.iter().enumerate() {
        let (from, to) = (&trees[(i + 1) % 2], &trees[i % 2]);
        let args = ["-q", "restore", &files[i % 2], "--image", "tiny", "--force"];
        die_at(l, &args, p);
        let now = tree_of(&root);
        assert!(
            now == *from || now == *to,
            "{p}: the image is neither the old tree nor the new one"
        );
        ok(l, &args);
        assert!(tree_of(&root) == *to, "{p}: the next run did not restore");
        let kept = l.base.join(".nfsroot/trees/tiny");
        assert!(
            std::fs::read_dir(&kept).unwrap().count() > i,
            "{p}: the replaced tree was not kept in {}",
            kept.display()
        );
        let staging = l.base.join(".nfsroot/staging/tiny");
        assert!(!staging.exists(), "{p}: {} left", staging.display());
        assert_no_temps(&[&l.base]);
    }
}
