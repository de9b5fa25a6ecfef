//! Shared helpers: run the binary, make temp layouts, and the shared
//! fixture image (built once from profiles/minimal.toml, then reused by
//! every test and every later run in this checkout; tests must not change
//! it — copy it with [`copy_image`] first).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The crate root (where profiles/ and hooks/ are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Scratch space for tests that persists across runs of one checkout.
pub fn work_dir() -> PathBuf {
    let d = repo().join("target").join("nfsroot-it");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Where every test build caches .debs, so only the first build downloads.
pub fn deb_cache() -> PathBuf {
    work_dir().join("debs")
}

/// A Command for the real binary, with paths pointing into `root`.
pub fn nfsroot(layout: &TestLayout) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nfsroot"));
    c.env("NFSROOT_BASE_DIR", &layout.base)
        .env("NFSROOT_TFTP_ROOT", &layout.tftp)
        .env("NFSROOT_CACHE_DIR", deb_cache())
        // A per-test stand-in for /etc: never the host's inventory.
        .env(
            "NFSROOT_INVENTORY",
            layout.etc().join("nfsroot/inventory.toml"),
        )
        .env("NFSROOT_ETC_DIR", layout.etc());
    c
}

/// Run and capture; panics with the full output when `ok` is not met.
pub fn run(mut c: Command, expect_ok: bool) -> Output {
    let out = c.output().expect("running nfsroot");
    if out.status.success() != expect_ok {
        panic!(
            "{:?} exited {} (expected success={expect_ok})\nstdout:\n{}\nstderr:\n{}",
            c,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Base dir and TFTP root of one test.
#[derive(Debug)]
pub struct TestLayout {
    pub base: PathBuf,
    pub tftp: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestLayout {
    /// A fresh, empty layout under a temp dir removed at drop.
    pub fn temp() -> Self {
        let t = tempfile::Builder::new()
            .prefix("nfsroot-test-")
            .tempdir_in(work_dir())
            .unwrap();
        let base = t.path().join("base");
        let tftp = t.path().join("tftp");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&tftp).unwrap();
        Self {
            base,
            tftp,
            _tmp: Some(t),
        }
    }

    pub fn image(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// The library's view of this layout, with the shared .deb cache.
    pub fn layout(&self) -> nfsroot::image::Layout {
        nfsroot::image::Layout {
            base_dir: self.base.clone(),
            tftp_root: self.tftp.clone(),
            cache_dir: deb_cache(),
        }
    }

    /// This test's stand-in for the host's /etc (may not exist).
    pub fn etc(&self) -> PathBuf {
        self.base.parent().unwrap().join("etc")
    }
}

/// A profile's text with `lines` added to its `[initramfs]` table (TOML
/// has one table per name: a second `[initramfs]` is a parse error), or
/// with the table appended when the profile has none.
pub fn with_initramfs(profile: &str, lines: &str) -> String {
    match profile.find("\n[initramfs]\n") {
        Some(i) => {
            let at = i + "\n[initramfs]\n".len();
            format!("{}{lines}\n{}", &profile[..at], &profile[at..])
        }
        None => format!("{profile}\n[initramfs]\n{lines}\n"),
    }
}

/// The shared image built from profiles/minimal.toml and published.
/// Built once per checkout (guarded by a file lock across test processes).
pub fn fixture() -> &'static TestLayout {
    static F: OnceLock<TestLayout> = OnceLock::new();
    F.get_or_init(|| built_once("fixture", "minimal"))
}

/// `profiles/<name>.toml` built into `work_dir()/<dir>` when the
/// checkout's inputs changed since ([`fixture_digest`]), then published
/// with the current code. Tests must not change it: copy it first.
pub fn built_once(dir: &str, name: &str) -> TestLayout {
    let root = work_dir().join(dir);
    let layout = TestLayout {
        base: root.join("base"),
        tftp: root.join("tftp"),
        _tmp: None,
    };
    std::fs::create_dir_all(&layout.base).unwrap();
    std::fs::create_dir_all(&layout.tftp).unwrap();
    let lock = std::fs::File::create(root.join("lock")).unwrap();
    flock(&lock);
    let stamp = root.join("built");
    let digest = fixture_digest();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(digest.as_str()) {
        // Boots of the previous build left per-host logs, written under
        // that code's export rules (a root-owned syslog from before the
        // log export was root-squashed fails every later boot's per-host
        // log check): the new build starts without them.
        let logs = layout.base.join(".logs");
        if logs.exists() {
            std::fs::remove_dir_all(&logs).unwrap();
        }
        let mut c = nfsroot(&layout);
        c.arg("build")
            .arg(repo().join(format!("profiles/{name}.toml")))
            .arg("--force");
        run(c, true);
        std::fs::write(&stamp, &digest).unwrap();
    }
    // Publish with the current code (idempotent, seconds): boot
    // artifacts always match this checkout's initramfs builder.
    let mut c = nfsroot(&layout);
    c.args(["--wait", "publish", name]);
    run(c, true);
    layout
}

/// The fixture is rebuilt when anything that can change an image changes:
/// every file under `src/`, `hooks/` and `profiles/`, and `Cargo.lock`
/// (names and contents), so no image assertion passes on an image that
/// older code built.
fn fixture_digest() -> String {
    let mut files = vec![repo().join("Cargo.lock")];
    for dir in ["src", "hooks", "profiles"] {
        let mut v: Vec<PathBuf> = walkdir::WalkDir::new(repo().join(dir))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect();
        v.sort();
        files.extend(v);
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for f in files {
        let name = f
            .strip_prefix(repo())
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        for b in name
            .bytes()
            .chain([0])
            .chain(std::fs::read(&f).unwrap_or_default())
        {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

fn flock(f: &std::fs::File) {
    rustix::fs::flock(f, rustix::fs::FlockOperation::LockExclusive).expect("locking the fixture");
}

/// Copy an image tree (for tests that change it), preserving everything.
pub fn copy_image(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Mount points under `path` in this process's mount table.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&p))
        .map(String::from)
        .collect()
}

/// QEMU boots share two cores: run them one at a time. The boots are the
/// suite's critical path, so the thread holding the lock runs at nice
/// [`BOOT_NICE`] until it lets go: the boot-test it starts (and its QEMU
/// and NFS server) inherit that, and the other test threads (the runner
/// starts four) take what CPU the boot leaves. Each turn is logged to
/// `target/nfsroot-it/qemu-turns.log` (test, seconds waited, seconds held,
/// the end's Unix time).
pub fn qemu_lock() -> QemuTurn {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let asked = std::time::Instant::now();
    let guard = M.lock().unwrap_or_else(|e| e.into_inner());
    set_thread_nice(BOOT_NICE).expect("raising the boot's priority (tests run as root)");
    QemuTurn {
        _guard: guard,
        waited: asked.elapsed(),
        got: std::time::Instant::now(),
    }
}

/// The QEMU lock, held until dropped; see [`qemu_lock`].
pub struct QemuTurn {
    _guard: std::sync::MutexGuard<'static, ()>,
    waited: std::time::Duration,
    got: std::time::Instant,
}

/// The niceness of a boot (see [`qemu_lock`]): CFS gives it about nine
/// times the CPU share of a test thread at 0.
pub const BOOT_NICE: i32 = -10;

/// Set this thread's niceness (on Linux, `setpriority(PRIO_PROCESS, 0)`
/// is per thread, and a child inherits its parent thread's).
fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: a plain system call on the calling thread.
    match unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

impl Drop for QemuTurn {
    fn drop(&mut self) {
        use std::io::Write;
        // Back to the default, which a thread may always do.
        let _ = set_thread_nice(0);
        let test = std::thread::current().name().unwrap_or("?").to_string();
        let ended = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let line = format!(
            "{test} waited {:.1} held {:.1} ended {ended}\n",
            self.waited.as_secs_f64(),
            self.got.elapsed().as_secs_f64()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(work_dir().join("qemu-turns.log"));
        if let Ok(mut f) = log {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// A new layout holding a copy of the fixture image (and the profile it
/// was built from), for tests that change an image or what is published.
pub fn clone_fixture() -> TestLayout {
    clone_image(fixture(), "minimal")
}

/// A new layout holding a copy of image `name` of `f` and its saved
/// profile. The build wrote the server's paths of its layout into the
/// image (the log export in fstab and node.conf, the ssh key export in
/// node.conf): the copy gets this layout's, as if it had been built here.
pub fn clone_image(f: &TestLayout, name: &str) -> TestLayout {
    let l = TestLayout::temp();
    copy_image(&f.image(name), &l.image(name));
    for rel in ["etc/fstab", "etc/nfsroot/node.conf"] {
        let p = l.image(name).join(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        let moved = text.replace(
            &format!("{}/", f.base.display()),
            &format!("{}/", l.base.display()),
        );
        std::fs::write(&p, moved).unwrap();
    }
    let prof = l.base.join(".nfsroot/profiles");
    std::fs::create_dir_all(&prof).unwrap();
    let file = format!("{name}.toml");
    std::fs::copy(
        f.base.join(".nfsroot/profiles").join(&file),
        prof.join(&file),
    )
    .unwrap();
    l
}

/// Run boot-test with `args` on the fixture's image; the JSON report.
pub fn boot_test(l: &TestLayout, args: &[&str]) -> serde_json::Value {
    boot_test_image(l, "minimal", args)
}

/// Run boot-test of `image` with `args`; return the parsed JSON report.
pub fn boot_test_image(l: &TestLayout, image: &str, args: &[&str]) -> serde_json::Value {
    boot_test_with(nfsroot(l), image, args)
}

/// Run boot-test of `image` with `args` through `c` (nfsroot with this
/// test's layout, and whatever environment the caller set); return the
/// parsed JSON report, after checking nothing it started still runs.
///
/// These boots pass at the node line (`--no-analysis`): the node's
/// systemd-analyze after it holds the QEMU lock 10-20 s more under TCG.
/// [`boot_test_analysed`] waits for it, where a test checks it or the
/// node's state file (written after the line, before the analysis ends).
pub fn boot_test_with(c: Command, image: &str, args: &[&str]) -> serde_json::Value {
    let _g = qemu_lock();
    boot_test_unlocked(c, image, args)
}

/// [`boot_test`] that also waits for the node's boot analysis and
/// reports it (`analysis`).
pub fn boot_test_analysed(l: &TestLayout, args: &[&str]) -> serde_json::Value {
    let _g = qemu_lock();
    run_boot_test(nfsroot(l), "minimal", args, true)
}

/// [`boot_test_with`] without taking [`qemu_lock`]: for a long-running
/// node that is mostly idle (the trees test's node reads a file a second
/// for minutes), so other boots may run beside it instead of waiting.
/// Not for a boot whose node is busy or whose timing matters.
pub fn boot_test_unlocked(c: Command, image: &str, args: &[&str]) -> serde_json::Value {
    run_boot_test(c, image, args, false)
}

fn run_boot_test(mut c: Command, image: &str, args: &[&str], analysis: bool) -> serde_json::Value {
    c.args(["--json", "boot-test", image]).args(args);
    if !analysis {
        c.arg("--no-analysis");
    }
    let (r, _) = boot_report(c);
    eprintln!(
        "boot-test {args:?}: passed={} timings={} diagnosis={}",
        r["passed"], r["timings"], r["diagnosis"]
    );
    assert_nothing_outlived(&r);
    r
}

/// Run a `--json boot-test` command: its report (the `result` object)
/// and the command's output; the stderr is printed when it failed.
pub fn boot_report(mut c: Command) -> (serde_json::Value, Output) {
    let out = c.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "boot-test printed no report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let r = v["result"].clone();
    if r["passed"] != true {
        eprintln!("stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    (r, out)
}

/// Whatever the verdict, nothing one boot's report lists (`pids`) may
/// still run, and it lists something.
pub fn assert_nothing_outlived(r: &serde_json::Value) {
    let pids = r["pids"].as_array().unwrap();
    assert!(!pids.is_empty(), "no processes recorded");
    for pid in pids {
        let pid = pid.as_u64().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "process {pid} outlived boot-test: {stat}"
        );
    }
}

/// What every passing boot of a fixture-built image shows: the node line
/// from node015 (boot-test's default address) with a read-only root
/// mounted `nocto` (NFSv3, as the profile asks; either backend), its
/// per-host log written through the root-squashed export, the tmpfs
/// mounts, and no failed or wrongly started unit.
pub fn assert_boot_passed(r: &serde_json::Value) {
    assert_eq!(r["passed"], true, "boot failed: {r:#}");
    assert_eq!(r["fields"]["host"], "node015");
    assert_eq!(r["fields"]["root"], "ro");
    assert_eq!(r["fields"]["rootfs"], "nfs,vers=3,nocto", "{r:#}");
    let checks = r["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c[0] == "per-host log" && c[1] == true),
        "{checks:?}"
    );
    assert!(checks.iter().any(|c| c[0] == "tmpfs"));
    // The ready hook found no failed unit and no masked unit that ran.
    assert_eq!(r["fields"]["units"], "none", "{r:#}");
}

/// One `KEY=value` line of an image's release stamp
/// (`/etc/nfsroot-release`, written by the build's release fixup).
pub fn release_field(image_root: &Path, key: &str) -> String {
    let p = image_root.join("etc/nfsroot-release");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {}:\n{text}", p.display()))
        .to_string()
}

/// The independent tree comparer (tests/oracle/treecmp.py: Python's
/// lstat/listxattr/readlink, nothing shared with nfsroot's walker) on
/// trees `a` and `b` with its `opts`: (equal, its report).
pub fn tree_oracle(a: &Path, b: &Path, opts: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(repo().join("tests/oracle/treecmp.py"))
        .arg(a)
        .arg(b)
        .args(opts)
        .output()
        .expect("no python3: apt-get install python3 (scripts/setup installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => (true, text),
        Some(1) => (false, text),
        _ => panic!("treecmp.py failed: {}\n{text}", out.status),
    }
}

/// Options for [`tree_oracle`] matching what a snapshot leaves out by
/// design (README, Snapshots): the contents of the mount points, sockets,
/// and the image root's own metadata (restore sets root:root 0755).
pub const SNAPSHOT_ORACLE_OPTS: &[&str] = &[
    "--empty",
    "proc",
    "--empty",
    "sys",
    "--empty",
    "dev",
    "--empty",
    "run",
    "--empty",
    "tmp",
    "--skip-sockets",
    "--root-meta",
];

/// Assert the oracle finds `a` and `b` equal, having compared at least
/// `min_entries` entries (so an empty walk cannot pass).
pub fn assert_oracle_same(a: &Path, b: &Path, opts: &[&str], min_entries: usize, what: &str) {
    let (same, text) = tree_oracle(a, b, opts);
    assert!(same, "{what}: the oracle finds differences:\n{text}");
    let n: usize = text
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("compared "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no summary line in:\n{text}"));
    assert!(n >= min_entries, "{what}: compared only {n} entries");
}

/// GNU tar's own opinion (`tar --compare`) of `archive` against `dir`:
/// each member's type, mode, owner, size, content, link target, and a
/// regular file's mtime (to the nanosecond from pax times), as the file
/// system has them. GNU tar 1.34 compares neither xattrs nor the mtimes of
/// other kinds (the Python oracle does), and ignores files the archive
/// lacks. Empty when they agree, else tar's report.
pub fn tar_compare(archive: &Path, dir: &Path) -> String {
    let out = Command::new("tar")
        .args([
            "--compare",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
        ])
        .arg("-f")
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .output()
        .expect("no tar: apt-get install tar");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => String::new(),
        Some(1) if !text.is_empty() => text,
        _ => panic!("tar --compare failed: {}\n{text}", out.status),
    }
}

/// QEMU's user network as a cluster: the inventory header every boot and
/// sync test starts from (no hosts yet; `host_files = "all"` so every host
/// gets its per-host PXELINUX file).
pub const QEMU_CLUSTER: &str = "[cluster]\nsubnet = \"10.0.2.0/24\"\ngateway = \"10.0.2.2\"\n\
     nfs_server = \"10.0.2.2\"\nimage = \"minimal\"\nhost_files = \"all\"\n\n[hosts]\n";

/// Write [`QEMU_CLUSTER`] to `path`, creating its directory.
pub fn write_qemu_inventory(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, QEMU_CLUSTER).unwrap();
}
