//! `nfsroot build` for real: mmdebstrap from the host's mirror, every
//! fixup checked in the result, --force semantics, and a SIGKILL during
//! bootstrap that must leave no partial image and no mounts.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn minimal_image_has_every_fixup() {
    let f = fixture();
    let r = f.image("minimal");
    let fstab = read(&r, "etc/fstab");
    assert!(fstab.contains("proc\t/proc\tproc"), "{fstab}");
    assert!(
        fstab.contains("tmpfs\t/tmp\ttmpfs\tsize=128m,mode=1777"),
        "{fstab}"
    );
    assert!(
        fstab.contains("tmpfs\t/var/tmp\ttmpfs\tsize=64m"),
        "{fstab}"
    );
    assert!(
        fstab.contains("tmpfs\t/var/log\ttmpfs"),
        "ro root needs a writable /var/log: {fstab}"
    );
    let logs = f.base.join(".logs/minimal");
    assert!(
        fstab.contains(&format!("10.0.2.2:{}\t/var/log/hosts\tnfs", logs.display())),
        "{fstab}"
    );
    assert!(logs.is_dir(), "server-side log export made");
    let ifaces = read(&r, "etc/network/interfaces");
    assert!(ifaces.contains("iface eth0 inet manual") && !ifaces.contains("auto eth0"));
    assert_eq!(
        std::fs::read_link(r.join("etc/mtab")).unwrap(),
        Path::new("../proc/self/mounts")
    );
    assert!(!r.join("etc/hostname").exists(), "no shared hostname");
    let hook = r.join("usr/lib/nfsroot/nfsroot-node");
    assert!(std::fs::metadata(&hook).unwrap().permissions().mode() & 0o111 != 0);
    for (wants, unit) in [
        ("sysinit", "nfsroot-hostname"),
        ("multi-user", "nfsroot-ready"),
    ] {
        let link = r.join(format!(
            "etc/systemd/system/{wants}.target.wants/{unit}.service"
        ));
        let target = std::fs::read_link(&link).unwrap();
        assert!(
            r.join(target.strip_prefix("/").unwrap()).is_file(),
            "{unit} enabled"
        );
    }
    assert!(read(&r, "etc/nfsroot/node.conf").contains("HOSTNAME_PATTERN='node{ip.3:03}'"));
    assert!(
        read(&r, "etc/rsyslog.d/10-perhostname.conf").contains("/var/log/hosts/%HOSTNAME%/syslog")
    );
    assert_eq!(read(&r, "etc/machine-id"), "");
    assert_eq!(
        std::fs::read_link(r.join("etc/resolv.conf")).unwrap(),
        Path::new("/run/nfsroot/resolv.conf")
    );
    let keys: Vec<_> = std::fs::read_dir(r.join("etc/ssh"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("ssh_host_"))
                .collect()
        })
        .unwrap_or_default();
    assert!(keys.is_empty(), "ssh host keys in the image: {keys:?}");
    assert!(
        read(&r, "etc/shadow")
            .lines()
            .any(|l| l.starts_with("root:!:")),
        "root locked"
    );
    assert!(
        !r.join("usr/sbin/policy-rc.d").exists(),
        "policy-rc.d removed after the build"
    );
    let rel = read(&r, "etc/nfsroot-release");
    assert!(rel.starts_with("NAME=minimal\nBUILD_ID="), "{rel}");
    assert!(rel.contains("PROFILE_SHA256="));
    for pkg in [
        "netbase",
        "busybox-static",
        "rsyslog",
        "nfs-common",
        "systemd-sysv",
    ] {
        assert!(
            read(&r, "var/lib/dpkg/status").contains(&format!("Package: {pkg}\n")),
            "{pkg} installed"
        );
    }
    assert!(r.join("bin/busybox").exists());
    // The cache holds the .debs; the image does not.
    assert!(std::fs::read_dir(deb_cache()).unwrap().count() > 50);
    let in_image = std::fs::read_dir(r.join("var/cache/apt/archives")).unwrap();
    assert!(
        in_image
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".deb"))
    );
    // Tool state is outside the image; nothing mounted anywhere in it.
    assert!(!r.join(".nfsroot").exists());
    assert!(
        mounts_under(&f.base).is_empty(),
        "{:?}",
        mounts_under(&f.base)
    );
    // Published.
    let cfg = std::fs::read_to_string(f.tftp.join("pxelinux.cfg/default")).unwrap();
    assert!(
        cfg.contains(&format!("nfsroot=10.0.2.2:{},vers=3,tcp", r.display())),
        "{cfg}"
    );
    assert!(cfg.contains("net.ifnames=0") && cfg.contains("SERIAL 0 115200"));
    // The loaders, BIOS and UEFI (Debian's signed shim, GRUB, MOK manager),
    // are the host packages' files byte for byte.
    for (src, name, pkg) in nfsroot::publish::BOOT_FILES {
        let host = std::fs::read(src).unwrap_or_else(|e| panic!("{src} ({pkg}): {e}"));
        let published = std::fs::read(f.tftp.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(host == published, "{name} differs from {src} ({pkg})");
    }
    let grub = std::fs::read_to_string(f.tftp.join("grub/grub.cfg")).unwrap();
    assert!(
        grub.contains(&format!("nfsroot=10.0.2.2:{},vers=3,tcp", r.display())),
        "{grub}"
    );
}

#[test]
fn second_build_without_force_refuses_and_changes_nothing() {
    let f = fixture();
    let before = read(&f.image("minimal"), "etc/nfsroot-release");
    let mut c = nfsroot(f);
    c.arg("build").arg(repo().join("profiles/minimal.toml"));
    let out = run(c, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(read(&f.image("minimal"), "etc/nfsroot-release"), before);
}

/// A small profile (no kernel, not published) for the build-lifecycle test.
fn tiny_profile(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("tiny.toml");
    std::fs::write(
        &p,
        "name = \"tiny\"\n[hooks]\npost-fixups = [\"mark.sh\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("mark.sh"),
        "#!/bin/sh\nset -e\n[ \"$NFSROOT_STAGE\" = post-fixups ]\n[ -x \"$NFSROOT_ROOT/usr/sbin/policy-rc.d\" ]\necho \"$NFSROOT_IMAGE\" > \"$NFSROOT_ROOT/etc/hook-was-here\"\n",
    )
    .unwrap();
    p
}

#[test]
fn sigkill_during_bootstrap_then_build_then_force() {
    let l = TestLayout::temp();
    let profile = tiny_profile(l.base.parent().unwrap());
    let image = l.image("tiny");
    // 1. Kill the build while mmdebstrap is working.
    let mut c = nfsroot(&l);
    c.arg("build").arg(&profile).arg("--no-publish");
    let mut child = c.spawn().unwrap();
    let staging = l.base.join(".nfsroot/staging/tiny");
    let t = Instant::now();
    while !staging.join("var/lib/dpkg").exists() && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(staging.exists(), "bootstrap never started");
    std::thread::sleep(Duration::from_secs(3));
    child.kill().unwrap();
    child.wait().unwrap();
    // The namespace dies with it; give the kernel a moment to tear it down.
    let t = Instant::now();
    while !mounts_under(&l.base).is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        mounts_under(&l.base).is_empty(),
        "mounts left: {:?}",
        mounts_under(&l.base)
    );
    assert!(!image.exists(), "a partial image at the image path");
    // 2. The next build succeeds (and runs the hook with the fixed env).
    let mut c = nfsroot(&l);
    c.arg("build").arg(&profile).arg("--no-publish");
    run(c, true);
    assert_eq!(read(&image, "etc/hook-was-here"), "tiny\n");
    assert!(!staging.exists());
    let first = read(&image, "etc/nfsroot-release");
    // 3. Without --force: refused. With --force: replaced.
    let mut c = nfsroot(&l);
    c.arg("build").arg(&profile).arg("--no-publish");
    run(c, false);
    // A broken inventory stops the build before anything changes; a good
    // one puts its /etc/hosts block into the new tree.
    let inv = l.etc().join("nfsroot/inventory.toml");
    std::fs::create_dir_all(inv.parent().unwrap()).unwrap();
    let good = "[cluster]\nsubnet = \"10.0.2.0/24\"\nnfs_server = \"10.0.2.2\"\nimage = \"tiny\"\n\n[hosts]\n\
                alpha = { mac = \"52:54:00:aa:00:01\", ip = \"10.0.2.31\" }\n";
    std::fs::write(&inv, good.replace("10.0.2.31", "10.0.3.31")).unwrap();
    let mut c = nfsroot(&l);
    c.arg("build")
        .arg(&profile)
        .args(["--no-publish", "--force"]);
    let out = run(c, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&inv.display().to_string()) && err.contains("10.0.3.31"),
        "{err}"
    );
    assert_eq!(read(&image, "etc/nfsroot-release"), first);
    std::fs::write(&inv, good).unwrap();
    let mut c = nfsroot(&l);
    c.args(["--json", "build"])
        .arg(&profile)
        .args(["--no-publish", "--force"]);
    let out = run(c, true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"]["replaced"], true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the previous tree is kept as a version"),
        "{err}"
    );
    assert!(v["result"]["previous"].is_string(), "{v:#}");
    assert!(v["result"]["packages"].as_u64().unwrap() > 50);
    assert_ne!(read(&image, "etc/nfsroot-release"), first, "a new build id");
    let hosts = read(&image, "etc/hosts");
    assert!(
        hosts.contains("localhost") && hosts.contains("10.0.2.31\talpha"),
        "{hosts}"
    );
    assert!(mounts_under(&l.base).is_empty());
}

#[test]
fn exec_runs_inside_and_unmounts() {
    // A clone: exec writes policy-rc.d into the image while it runs, and
    // other tests assert the shared fixture has none.
    let f = &clone_fixture();
    let mut c = nfsroot(f);
    c.args(["--wait", "exec", "minimal", "--", "sh", "-c", "test -e /proc/self/mounts && test -e /dev/null && test -x /usr/sbin/policy-rc.d && cat /etc/nfsroot-release"]);
    let out = run(c, true);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("NAME=minimal"));
    assert!(!f.image("minimal").join("usr/sbin/policy-rc.d").exists());
    assert!(mounts_under(&f.base).is_empty());
    // A failing command's status comes back.
    let mut c = nfsroot(f);
    c.args(["--wait", "exec", "minimal", "--", "sh", "-c", "exit 7"]);
    assert_eq!(c.output().unwrap().status.code(), Some(7));
}

#[test]
fn non_root_run_is_refused_clearly() {
    let f = TestLayout::temp();
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_nfsroot"))
        .arg("--base-dir")
        .arg(&f.base)
        .arg("build")
        .arg(repo().join("profiles/minimal.toml"));
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");
}

/// Every file nfsroot writes that can hold a secret is root-only: the
/// state directory, the saved profile (it may hold the root hash), each
/// host's ssh keys (snapshots: tests/snapshot.rs). The TFTP tree, which
/// any node may read, holds none of them.
#[test]
fn secrets_are_private_and_the_tftp_tree_holds_none() {
    let l = clone_fixture();
    let mut c = nfsroot(&l);
    c.args(["publish", "minimal"]);
    run(c, true);
    let inv = l.base.parent().unwrap().join("inventory.toml");
    std::fs::write(
        &inv,
        "[cluster]\nsubnet = \"10.0.2.0/24\"\nnfs_server = \"10.0.2.2\"\nimage = \"minimal\"\n\n\
         [hosts]\nalpha = { mac = \"52:54:00:aa:00:01\", ip = \"10.0.2.31\" }\n",
    )
    .unwrap();
    let mut c = nfsroot(&l);
    c.arg("--inventory").arg(&inv).arg("sync");
    run(c, true);

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let state = l.base.join(".nfsroot");
    // The state dir is the barrier (this test's copy made `profiles/`
    // itself; a build makes it 0700 too).
    assert_eq!(mode(&state), 0o700, "{}", state.display());
    assert_eq!(mode(&state.join("profiles/minimal.toml")), 0o600);
    let fixture_profiles = fixture().base.join(".nfsroot/profiles");
    assert_eq!(mode(&fixture_profiles), 0o700, "as build made it");
    let keys = state.join("hostkeys/alpha");
    assert_eq!(mode(&keys), 0o700);
    let mut private = Vec::new();
    for e in std::fs::read_dir(&keys).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".pub") {
            assert_eq!(mode(&e.path()), 0o600, "{name}");
            private.push(std::fs::read(e.path()).unwrap());
        }
    }
    assert_eq!(private.len(), 2, "ed25519 and ecdsa");

    // Nothing under the TFTP root is secret: no private key, no shadow
    // line, nothing a node could not read anyway.
    let shadow = std::fs::read_to_string(l.image("minimal").join("etc/shadow")).unwrap();
    let root_line = shadow
        .lines()
        .find(|x| x.starts_with("root:"))
        .unwrap()
        .to_string();
    let (mut files, mut unpacked) = (0, 0);
    for e in walkdir(&l.tftp) {
        let mut data = std::fs::read(&e).unwrap();
        if data.starts_with(&[0x1f, 0x8b]) {
            // An initramfs: search what is inside.
            let mut raw = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&data[..]), &mut raw)
                .unwrap();
            data = raw;
            unpacked += 1;
        } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            data = zstd::stream::decode_all(&data[..]).unwrap();
            unpacked += 1;
        }
        files += 1;
        let hay = String::from_utf8_lossy(&data);
        assert!(!hay.contains("PRIVATE KEY"), "{}", e.display());
        assert!(!hay.contains(&root_line), "{}", e.display());
        for k in &private {
            assert!(
                !data.windows(k.len()).any(|w| w == k.as_slice()),
                "{}",
                e.display()
            );
        }
        assert_eq!(mode(&e) & 0o044, 0o044, "{} readable by nodes", e.display());
    }
    assert!(files >= 4, "kernel, initramfs, pxelinux.0, configs");
    assert!(unpacked >= 1, "the initramfs was searched unpacked");
}

/// Regular files below `dir`, following no links.
fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}
