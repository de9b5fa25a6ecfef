//! README commands and flags through the binary that need no image build
//! and no boot (issue 12's audit): `doctor` (text, exit code, `--json`,
//! and real missing prerequisites, hidden in a private mount namespace),
//! a build from an unreachable `--mirror` with `--cache-dir` and `-v`
//! (the error names the mirror, nothing is left on disk), the debootstrap
//! fallback (forced by the profile, and chosen when mmdebstrap is hidden),
//! and `hosts import`, `hosts remove` and `sync --dry-run`.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `nfsroot ARGS` in a private mount namespace where each of `hide` is
/// gone: a directory under an empty tmpfs, a program under an empty file
/// that is not executable. The host's mounts do not change.
fn hidden(l: &TestLayout, hide: &[&Path], args: &[&str]) -> Output {
    let mut script = String::from("set -e\n: > \"$0.empty\"\n");
    for p in hide {
        let p = std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if p.is_dir() {
            script += &format!("mount -t tmpfs none '{}'\n", p.display());
        } else {
            script += &format!("mount --bind \"$0.empty\" '{}'\n", p.display());
        }
    }
    script += "exec \"$@\"\n";
    let plain = nfsroot(l);
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(l.base.parent().unwrap().join("hide"))
        .arg(plain.get_program())
        .args(args);
    for (k, v) in plain.get_envs() {
        c.env(k, v.unwrap());
    }
    c.output().expect("no unshare: apt-get install util-linux")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A prerequisite's line in doctor's table: (state, package).
fn doctor_line<'a>(out: &'a str, what: &str) -> (&'a str, &'a str) {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(what))
        .unwrap_or_else(|| panic!("no line for {what}:\n{out}"));
    let w: Vec<&str> = line.split_whitespace().collect();
    (w[0], w[2])
}

#[test]
fn doctor_names_every_prerequisite_and_its_package() {
    let l = TestLayout::temp();
    let mirror = nfsroot::bootstrap::detect_mirror(Path::new("/etc/apt")).unwrap();
    let out = run(nfsroot(&l).tap(|c| c.arg("doctor")), true);
    let t = text(&out.stdout);
    assert!(t.starts_with(&format!("mirror {mirror} (from the host's apt sources)\n")));
    for (what, pkg, _) in nfsroot::doctor::prerequisites() {
        assert_eq!(
            doctor_line(&t, what),
            ("ok", pkg),
            "the suite needs {what}: apt-get install {pkg}\n{t}"
        );
    }
    assert!(!t.contains("apt-get install"), "{t}");
    let out = run(nfsroot(&l).tap(|c| c.args(["--json", "doctor"])), true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["version"].as_u64(), v["command"].as_str()),
        (Some(1), Some("doctor"))
    );
    assert_eq!(v["result"]["mirror"], mirror.as_str());
    let checks = v["result"]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), nfsroot::doctor::prerequisites().count());

    // Really missing (hidden from this process only): MISS, the package,
    // the install line; still exit 0 (missing optional tools inform).
    let rpcbind = nfsroot::exec::find_tool("rpcbind").unwrap();
    let hide = [Path::new("/usr/lib/PXELINUX"), rpcbind.as_path()];
    let out = hidden(&l, &hide, &["doctor"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert_eq!(doctor_line(&t, "rpcbind"), ("MISS", "rpcbind"), "{t}");
    let pxe = "/usr/lib/PXELINUX/pxelinux.0";
    assert_eq!(doctor_line(&t, pxe), ("MISS", "pxelinux"), "{t}");
    assert_eq!(doctor_line(&t, "mmdebstrap"), ("ok", "mmdebstrap"), "{t}");
    assert!(
        t.ends_with("\ninstall what is missing with: apt-get install pxelinux rpcbind\n"),
        "{t}"
    );
    let out = hidden(&l, &hide, &["--json", "doctor"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let missing: Vec<(&str, &str)> = v["result"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            assert!(c["found"].is_null(), "{c}");
            (c["what"].as_str().unwrap(), c["package"].as_str().unwrap())
        })
        .collect();
    assert_eq!(missing, [(pxe, "pxelinux"), ("rpcbind", "rpcbind")]);
}

/// `Command` methods return `&mut`; this keeps a one-line call a value.
trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self) -> &mut Self) -> Self;
}

impl Tap for Command {
    fn tap(mut self, f: impl FnOnce(&mut Self) -> &mut Self) -> Self {
        f(&mut self);
        self
    }
}

/// Every path under `dir` with its content (files), target (links) or
/// nothing (directories) and its mtime: what a run must not change.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, i64)> {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let md = e.path().symlink_metadata().unwrap();
            let data = if md.is_file() {
                std::fs::read(e.path()).unwrap()
            } else if md.is_symlink() {
                std::fs::read_link(e.path())
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            (
                e.path().to_path_buf(),
                (data, md.mtime_nsec() + md.mtime() * 1_000_000_000),
            )
        })
        .collect()
}

/// A port on 127.0.0.1 that nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// A failed bootstrap leaves no image, no staging tree and nothing in the
/// TFTP root: only the build lock file and empty directories.
fn assert_nothing_left(l: &TestLayout, what: &str) {
    let files: Vec<PathBuf> = walkdir::WalkDir::new(&l.base)
        .into_iter()
        .flatten()
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_none_or(|x| x != "lock"))
        .collect();
    assert!(files.is_empty(), "{what}: left {files:?}");
    assert!(!l.base.join(".nfsroot/staging/tiny").exists(), "{what}");
    assert!(!l.image("tiny").exists(), "{what}");
    assert_eq!(std::fs::read_dir(&l.tftp).unwrap().count(), 0, "{what}");
    assert!(mounts_under(&l.base).is_empty(), "{what}");
}

#[test]
fn unreachable_mirror_fails_naming_it_and_leaves_nothing() {
    let l = TestLayout::temp();
    let dir = l.base.parent().unwrap();
    let auto = dir.join("tiny.toml");
    std::fs::write(&auto, "name = \"tiny\"\n").unwrap();
    let forced = dir.join("forced.toml");
    std::fs::write(&forced, "name = \"tiny\"\nbootstrapper = \"debootstrap\"\n").unwrap();
    let url = format!("http://127.0.0.1:{}/debian", closed_port());
    let cache = dir.join("own-cache");
    let build = |verbose: bool, profile: &Path| {
        let mut c = nfsroot(&l);
        c.args(if verbose { &["-v"][..] } else { &[] })
            .arg("build")
            .arg(profile)
            .args(["--no-publish", "--mirror", &url, "--cache-dir"])
            .arg(&cache);
        text(&run(c, false).stderr)
    };
    let cache_s = cache.display().to_string();
    let env_cache = deb_cache().display().to_string();

    // mmdebstrap (the host has it): the error line names the mirror and
    // the tool; --cache-dir (over NFSROOT_CACHE_DIR) is what it was given.
    let err = build(false, &auto);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or("");
    assert!(
        line.contains(&format!("from {url} with mmdebstrap")),
        "{err}"
    );
    assert!(
        line.contains(&cache_s) && !line.contains(&env_cache),
        "{err}"
    );
    assert!(!err.lines().any(|l| l.starts_with("+ ")), "no -v:\n{err}");
    assert!(cache.is_dir(), "--cache-dir not created");
    assert_nothing_left(&l, "mmdebstrap");

    // Forced by the profile, with -v: debootstrap runs (the command is
    // shown), gets the mirror and --cache-dir, and fails on the mirror.
    let err = build(true, &forced);
    let shown = err
        .lines()
        .find(|l| l.starts_with("+ ") && l.contains("debootstrap"))
        .unwrap_or_else(|| panic!("-v shows no debootstrap command:\n{err}"));
    assert!(shown.contains(&format!("--cache-dir={cache_s}")), "{shown}");
    assert!(
        shown.ends_with(&url) || shown.ends_with(&format!("{url}'")),
        "{shown}"
    );
    assert!(
        err.contains(&format!("from {url} with debootstrap")),
        "{err}"
    );
    // debootstrap's own complaint, about this mirror.
    assert!(err.contains(&format!("{url}/dists/bookworm/")), "{err}");
    assert_nothing_left(&l, "debootstrap");

    // The fallback: with mmdebstrap gone, the same profile without a
    // choice bootstraps with debootstrap.
    let mm = nfsroot::exec::find_tool("mmdebstrap").unwrap();
    let mut args = vec!["build", auto.to_str().unwrap(), "--no-publish", "--mirror"];
    args.extend([url.as_str(), "--cache-dir", cache_s.as_str()]);
    let out = hidden(&l, &[&mm], &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("[2/6 bootstrap (debootstrap, bookworm)]"),
        "{err}"
    );
    assert!(
        err.contains(&format!("from {url} with debootstrap")),
        "{err}"
    );
    assert_nothing_left(&l, "fallback");
}

/// A published fake image `minimal` (the record and config as publish
/// writes them; no kernel needed, sync reads only the record) with an
/// /etc/hosts, and the QEMU cluster inventory.
fn fake_published(l: &TestLayout) {
    use nfsroot::publish::{PublishedKernel, Record};
    let img = l.image("minimal");
    std::fs::create_dir_all(img.join("etc")).unwrap();
    std::fs::write(img.join("etc/hosts"), "127.0.0.1\tlocalhost\n").unwrap();
    let v = "6.1.0-9-amd64";
    let rec = Record {
        image: "minimal".into(),
        kernels: vec![PublishedKernel {
            version: v.into(),
            kernel: format!("minimal/vmlinuz-{v}"),
            initrd: format!("minimal/initrd.img-{v}-0123abcd"),
            kernel_sha256: "00".repeat(32),
            initrd_sha256: "11".repeat(32),
            backend: "nfsroot".into(),
            append: "root=/dev/nfs nfsroot=10.0.2.2:/srv/minimal,vers=3 ip=dhcp ro".into(),
            published_at: "2026-01-01T00:00:00Z".into(),
        }],
        default: Some(v.into()),
        serial: Some("ttyS0,115200".into()),
        timeout_s: 3,
        ipxe: false,
        files: Default::default(),
    };
    let layout = l.layout();
    rec.save(&layout).unwrap();
    let cfgd = l.tftp.join("pxelinux.cfg");
    std::fs::create_dir_all(&cfgd).unwrap();
    let cfg = nfsroot::pxelinux::render(&rec.config());
    std::fs::write(cfgd.join("nfsroot-minimal"), &cfg).unwrap();
    std::fs::write(cfgd.join("default"), &cfg).unwrap();
    write_qemu_inventory(&l.etc().join("nfsroot/inventory.toml"));
}

#[test]
fn hosts_import_remove_and_sync_dry_run() {
    let l = TestLayout::temp();
    fake_published(&l);
    let inv = l.etc().join("nfsroot/inventory.toml");
    let dir = l.base.parent().unwrap();
    let nf = |args: &[&str], ok: bool| run(nfsroot(&l).tap(|c| c.args(args)), ok);

    // A bad row: file, line and field named, the inventory unchanged.
    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        "name,mac,ip\nalpha,52:54:00:aa:00:01,10.0.2.31\nbeta,52:54:00:zz:00:02,10.0.2.32\n",
    )
    .unwrap();
    let before = std::fs::read(&inv).unwrap();
    let err = text(&nf(&["hosts", "import", bad.to_str().unwrap()], false).stderr);
    assert!(err.contains(&format!("{}:3: mac", bad.display())), "{err}");
    assert_eq!(
        std::fs::read(&inv).unwrap(),
        before,
        "a failed import wrote"
    );

    let csv = dir.join("hosts.csv");
    std::fs::write(
        &csv,
        "name,mac,ip,cmdline\nalpha,52:54:00:aa:00:01,10.0.2.31,\n\
         beta,52:54:00:aa:00:02,10.0.2.32,\"console=ttyS0,115200 quiet\"\n",
    )
    .unwrap();
    nf(&["hosts", "import", csv.to_str().unwrap()], true);
    let v: serde_json::Value =
        serde_json::from_slice(&nf(&["--json", "hosts", "list"], true).stdout).unwrap();
    let listed = v["result"].to_string();
    for want in [
        "alpha",
        "10.0.2.31",
        "beta",
        "10.0.2.32",
        "console=ttyS0,115200 quiet",
    ] {
        assert!(listed.contains(want), "{want} not in {v:#}");
    }
    nf(&["sync"], true);
    let beta_cfg = l.tftp.join("pxelinux.cfg/01-52-54-00-aa-00-02");
    assert!(beta_cfg.exists());

    // remove: the inventory drops beta; its boot files wait for a sync.
    nf(&["hosts", "remove", "beta"], true);
    assert!(!std::fs::read_to_string(&inv).unwrap().contains("beta"));
    assert!(beta_cfg.exists());

    // --dry-run prints what sync would change, with diffs, and changes
    // nothing in the base dir, the TFTP root or the etc dir.
    let trees = || [tree(&l.base), tree(&l.tftp), tree(&l.etc())];
    let before = trees();
    let out = text(&nf(&["sync", "--dry-run"], true).stdout);
    assert!(
        out.contains(&format!("remove {}", beta_cfg.display())),
        "{out}"
    );
    assert!(
        out.contains("-10.0.2.32\tbeta"),
        "no /etc/hosts diff:\n{out}"
    );
    assert!(out.contains("(dry run: nothing written)"), "{out}");
    let v: serde_json::Value =
        serde_json::from_slice(&nf(&["--json", "sync", "--dry-run"], true).stdout).unwrap();
    assert_eq!(v["command"], "sync");
    assert_eq!(v["result"]["dry_run"], true);
    let planned: Vec<String> = v["result"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_string())
        .collect();
    assert!(trees() == before, "sync --dry-run changed files");

    // The real sync does what the dry run listed, and then nothing is left.
    nf(&["sync"], true);
    assert!(!beta_cfg.exists());
    let after = trees();
    for p in &planned {
        let p = PathBuf::from(p);
        let was = before.iter().find_map(|t| t.get(&p));
        let now = after.iter().find_map(|t| t.get(&p));
        assert!(was != now, "{} was listed but did not change", p.display());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&nf(&["--json", "sync", "--dry-run"], true).stdout).unwrap();
    assert_eq!(v["result"]["changes"], serde_json::json!([]), "{v:#}");
}
