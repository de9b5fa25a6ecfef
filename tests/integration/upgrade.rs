//! Boot artifacts over an image's life: publish, a second real kernel
//! (the cloud flavour of the image's own kernel ABI, unpacked into a copy
//! of the image: see [`second_kernel_deb`]), upgrade-kernel and rollback
//! each followed by a PXE boot that checks which kernel and build came up,
//! retention, status drift, bad input, two runs at once, and SIGKILLs at
//! 50 points of an upgrade.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Run `nfsroot --json ARGS`; a success prints the README's envelope
/// (`version` 1, `command` the subcommand, `result`).
fn json(l: &TestLayout, args: &[&str], ok: bool) -> Value {
    let mut c = nfsroot(l);
    c.arg("--json").args(args);
    let out = run(c, ok);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if ok {
        assert_eq!(v["version"], 1, "{v}");
        assert_eq!(v["command"], args[0], "{v}");
        assert!(v["result"].is_object(), "{v}");
    }
    v
}

fn kernels_in(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("boot"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(String::from)
        })
        .collect();
    v.sort();
    v
}

/// The second kernel: the `cloud-amd64` flavour of the image's own kernel
/// ABI, at the image's kernel package version (`linux-image-6.1.0-50-amd64`
/// 6.1.176-1 in the image -> `linux-image-6.1.0-50-cloud-amd64` 6.1.176-1).
/// Built from the same source upload, it sits next to the image's kernel in
/// the same mirror for as long as that kernel does, so the test never
/// depends on a point release's timing. It is a real, different kernel:
/// `uname -r` changes (`kernel=` on the node line proves which one booted),
/// it has virtio-net, virtio-pci and the NFS client as modules (our QEMU
/// setup), and dpkg's order puts `6.1.0-50-cloud-amd64` after
/// `6.1.0-50-amd64` (a longer upstream part wins), so `upgrade-kernel`
/// moves to it and `rollback` back to the image's own. A repack of the
/// image's kernel under a bumped version would keep the binary, hence
/// `uname -r`, and prove nothing. Downloaded once by exact name and
/// version into `work_dir()/kernel-debs`.
fn second_kernel_deb(root: &Path) -> PathBuf {
    let kernels = kernels_in(root);
    let [abi] = kernels.as_slice() else {
        panic!("the fixture image should have one kernel, has {kernels:?}")
    };
    let image_pkg = format!("linux-image-{abi}");
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Version}", &image_pkg])
        .output()
        .expect("running dpkg-query");
    assert!(
        out.status.success(),
        "{image_pkg} is not installed in the image"
    );
    let version = String::from_utf8(out.stdout).unwrap();
    let flavour = abi.strip_suffix("-amd64").expect("an amd64 kernel");
    let pkg = format!("linux-image-{flavour}-cloud-amd64");
    let dir = work_dir().join("kernel-debs");
    std::fs::create_dir_all(&dir).unwrap();
    let deb = dir.join(format!("{pkg}_{}_amd64.deb", version.replace(':', "%3a")));
    if deb.is_file() {
        return deb;
    }
    let spec = format!("{pkg}={version}");
    let out = Command::new("apt-get")
        .args(["download", &spec])
        .current_dir(&dir)
        .output()
        .expect("running apt-get");
    assert!(
        out.status.success() && deb.is_file(),
        "cannot download the second kernel {spec} (the cloud flavour of the image's \
         kernel) into {}: run `apt-get update` so the host's apt knows the image's \
         mirror and version, then `cd {} && apt-get download {spec}`\n{}",
        dir.display(),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

/// Unpack a real kernel package into the image (kernel + modules tree) and
/// run depmod in the image, as the package's postinst would.
fn add_kernel(l: &TestLayout) -> String {
    let root = &l.image("minimal");
    let before = kernels_in(root);
    let deb = second_kernel_deb(root);
    // As dpkg unpacks: keep the image's /lib -> usr/lib symlink (plain
    // `dpkg-deb -x` would replace it with a directory).
    let st = Command::new("sh")
        .arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -x --keep-directory-symlink -C \"$2\"")
        .arg("sh")
        .arg(&deb)
        .arg(root)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        root.join("lib").is_symlink(),
        "unpacking kept /lib a symlink"
    );
    let after = kernels_in(root);
    let new: Vec<_> = after
        .iter()
        .filter(|k| !before.contains(k))
        .cloned()
        .collect();
    assert_eq!(
        new.len(),
        1,
        "expected one new kernel, got {new:?} (before {before:?})"
    );
    let mut c = nfsroot(l);
    c.args(["--wait", "exec", "minimal", "--", "depmod", &new[0]]);
    run(c, true);
    new[0].clone()
}

/// Boot what is published (boot-test `args`, e.g. PXE through the default
/// config) and check the node came up as every fixture boot must, running
/// `kernel` (`uname -r` on the node line) and the image's build (`build=`
/// against BUILD_ID of the image's release stamp, `image=` against NAME).
fn boot_and_check(l: &TestLayout, args: &[&str], kernel: &str) -> Value {
    let r = boot_test(l, args);
    assert_boot_passed(&r);
    let root = l.image("minimal");
    let fields = &r["fields"];
    assert_eq!(fields["kernel"], kernel, "booted the wrong kernel: {r:#}");
    assert_eq!(fields["build"], release_field(&root, "BUILD_ID").as_str());
    assert_eq!(fields["image"], release_field(&root, "NAME").as_str());
    r
}

fn default_version(l: &TestLayout) -> String {
    let s = json(l, &["status", "minimal"], true);
    s["result"]["default_boots"]
        .as_str()
        .unwrap()
        .trim_start_matches("minimal-")
        .to_string()
}

#[test]
fn publish_upgrade_rollback_retention() {
    let l = clone_fixture();
    let root = l.image("minimal");
    let old = kernels_in(&root)[0].clone();
    let p = json(&l, &["publish", "minimal"], true);
    assert_eq!(p["result"]["default"], old.as_str());
    assert_eq!(
        json(&l, &["publish", "minimal"], true)["result"]["changed"],
        false
    );

    let new = add_kernel(&l);
    // status reports the unpublished kernel as drift (exit 3).
    let mut c = nfsroot(&l);
    c.args(["status", "minimal"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("kernel {new} is in the image but not published"))
    );

    // --dry-run names the files and changes nothing.
    let cfg_before = std::fs::read_to_string(l.tftp.join("pxelinux.cfg/default")).unwrap();
    let mut c = nfsroot(&l);
    c.args(["upgrade-kernel", "minimal", "--dry-run"]);
    let out = run(c, true);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("vmlinuz-{new}")), "{text}");
    assert!(text.contains(&format!("+DEFAULT minimal-{new}")), "{text}");
    assert_eq!(
        std::fs::read_to_string(l.tftp.join("pxelinux.cfg/default")).unwrap(),
        cfg_before
    );
    assert!(!l.tftp.join(format!("minimal/vmlinuz-{new}")).exists());

    let u = json(&l, &["upgrade-kernel", "minimal"], true);
    assert_eq!(u["result"]["default"], new.as_str());
    assert_eq!(default_version(&l), new);
    boot_and_check(&l, &["--mode", "pxe"], &new);
    let cfg = std::fs::read_to_string(l.tftp.join("pxelinux.cfg/default")).unwrap();
    assert!(
        cfg.contains(&format!("LABEL minimal-{old}")),
        "old kernel still a label:\n{cfg}"
    );
    let s = json(&l, &["status", "minimal"], true);
    assert_eq!(s["result"]["drift"], serde_json::json!([]));
    // Nothing changed: says so, exits 0.
    assert_eq!(
        json(&l, &["upgrade-kernel", "minimal"], true)["result"]["changed"],
        false
    );

    both_loaders_boot(&l, &new);

    // rollback and forward again: BIOS and UEFI configs switch together.
    json(&l, &["rollback", "minimal"], true);
    assert_eq!(default_version(&l), old);
    both_loaders_boot(&l, &old);
    // The fixture's kernel again, now through UEFI with Secure Boot and
    // GRUB's default config (the BIOS default config booted the new kernel
    // above; uefi.rs boots a per-host GRUB config, boot.rs a per-host
    // PXELINUX one).
    let sb = [
        "--mode",
        "pxe",
        "--firmware",
        "uefi",
        "--secure-boot",
        "--timeout",
        "300",
    ];
    let r = boot_and_check(&l, &sb, &old);
    crate::uefi::assert_uefi_sb_up(&r, "node015");
    json(&l, &["rollback", "minimal", "--to", &new], true);
    assert_eq!(default_version(&l), new);
    both_loaders_boot(&l, &new);

    // A GRUB config that boots another kernel than its PXELINUX pair is
    // drift; publish puts it right.
    let grub_cfg = l.tftp.join("grub/nfsroot-minimal.cfg");
    let good = std::fs::read_to_string(&grub_cfg).unwrap();
    let bad = good.replace(
        &format!("set default=minimal-{new}"),
        &format!("set default=minimal-{old}"),
    );
    assert_ne!(bad, good);
    std::fs::write(&grub_cfg, bad).unwrap();
    let mut c = nfsroot(&l);
    c.args(["status", "minimal"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("boots minimal/vmlinuz-{new} but"))
            && text.contains(&format!(
                "{} boots minimal/vmlinuz-{old}",
                grub_cfg.display()
            )),
        "{text}"
    );
    assert_eq!(
        json(&l, &["publish", "minimal"], true)["result"]["changed"],
        true
    );
    assert_eq!(std::fs::read_to_string(&grub_cfg).unwrap(), good);
    let e = run(
        {
            let mut c = nfsroot(&l);
            c.args(["rollback", "minimal", "--to", "9.9.9"]);
            c
        },
        false,
    );
    assert!(String::from_utf8_lossy(&e.stderr).contains("not published"));

    retention(&l, &old, &new);
}

/// Retention with `keep_kernels = 1`: the next switch deletes the files of
/// the kernel it drops (and says so), but not those a per-host config
/// still names (what happens once that config goes:
/// [`retention_deletes_pinned_files_once_unpinned`]).
fn retention(l: &TestLayout, old: &str, new: &str) {
    let prof = l.base.join(".nfsroot/profiles/minimal.toml");
    let text = std::fs::read_to_string(&prof)
        .unwrap()
        .replace("keep_kernels = 3", "keep_kernels = 1");
    // An extra module changes the initramfs, so publishing has work to do.
    std::fs::write(
        &prof,
        with_initramfs(&text, "modules = [\"default\", \"dummy\"]"),
    )
    .unwrap();
    let files_of = |v: &str| files_of(l, v);
    let old_files = files_of(old);
    assert_eq!(old_files.len(), 2, "{old_files:?}");
    let u = json(l, &["upgrade-kernel", "minimal"], true);
    assert_eq!(u["result"]["kept"], serde_json::json!([new]));
    for f in &old_files {
        assert!(!f.exists(), "{} survived retention", f.display());
        assert!(
            u["result"]["removed"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == f.to_str().unwrap()),
            "{} not reported removed: {u}",
            f.display()
        );
    }
    check_consistent(l);
    // A per-host config naming `new` pins its files when a newer kernel
    // takes over.
    let cfgd = l.tftp.join("pxelinux.cfg");
    let host_cfg = cfgd.join("01-52-54-00-00-00-01");
    std::fs::copy(cfgd.join("default"), &host_cfg).unwrap();
    let newest = add_fake_newer_kernel(l, old);
    let u = json(l, &["upgrade-kernel", "minimal"], true);
    assert_eq!(u["result"]["kept"], serde_json::json!([newest]));
    assert_eq!(files_of(new).len(), 2, "referenced by a per-host file");
    let cfg = std::fs::read_to_string(cfgd.join("default")).unwrap();
    assert!(!cfg.contains(&format!("LABEL minimal-{new}")), "{cfg}");
    check_consistent(l);
}

/// The files of image `minimal`'s kernel `v` under the TFTP root.
fn files_of(l: &TestLayout, v: &str) -> Vec<PathBuf> {
    let mut f: Vec<PathBuf> = std::fs::read_dir(l.tftp.join("minimal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n == format!("vmlinuz-{v}") || n.starts_with(&format!("initrd.img-{v}-"))
        })
        .collect();
    f.sort();
    f
}

fn paths(v: &Value) -> Vec<PathBuf> {
    let mut p: Vec<PathBuf> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    p.sort();
    p
}

/// Retention leak (found after issue 10): a kernel dropped while per-host
/// configs pinned it keeps its files only while some config, PXELINUX or
/// GRUB, names them. Once the last pin goes the next run deletes them and
/// says so: `publish` after a hand-made pin is removed, `sync` after the
/// inventory's pin is. No boots.
#[test]
fn retention_deletes_pinned_files_once_unpinned() {
    let l = clone_fixture();
    let old = kernels_in(&l.image("minimal"))[0].clone();
    let prof = l.base.join(".nfsroot/profiles/minimal.toml");
    let text = std::fs::read_to_string(&prof).unwrap();
    assert!(text.contains("keep_kernels = 3"), "{text}");
    std::fs::write(&prof, text.replace("keep_kernels = 3", "keep_kernels = 1")).unwrap();
    json(&l, &["publish", "minimal"], true);
    let old_files = files_of(&l, &old);
    assert_eq!(old_files.len(), 2, "{old_files:?}");
    // Hand-made pins, one per loader: copies of the image's own configs.
    let pxe_pin = l.tftp.join("pxelinux.cfg/01-52-54-00-00-00-01");
    let grub_pin = l.tftp.join("grub/grub.cfg-01-52-54-00-00-00-02");
    std::fs::copy(l.tftp.join("pxelinux.cfg/nfsroot-minimal"), &pxe_pin).unwrap();
    std::fs::copy(l.tftp.join("grub/nfsroot-minimal.cfg"), &grub_pin).unwrap();
    let k99 = add_fake_newer_kernel(&l, &old);
    let u = json(&l, &["upgrade-kernel", "minimal"], true);
    assert_eq!(u["result"]["kept"], serde_json::json!([k99]));
    assert_eq!(paths(&u["result"]["removed"]), Vec::<PathBuf>::new());
    assert_eq!(files_of(&l, &old), old_files, "pinned");
    check_consistent(&l);
    // The PXELINUX pin goes; the GRUB one alone still holds the files.
    std::fs::remove_file(&pxe_pin).unwrap();
    let p = json(&l, &["publish", "minimal"], true);
    assert_eq!(p["result"]["changed"], false, "{p}");
    assert_eq!(files_of(&l, &old), old_files, "pinned by GRUB alone");
    // The last pin goes: publish deletes them, says so, forgets them.
    std::fs::remove_file(&grub_pin).unwrap();
    let p = json(&l, &["publish", "minimal"], true);
    assert_eq!(p["result"]["changed"], true, "{p}");
    assert_eq!(paths(&p["result"]["removed"]), old_files);
    assert_eq!(files_of(&l, &old), Vec::<PathBuf>::new());
    let rec = std::fs::read_to_string(l.base.join(".nfsroot/published/minimal.json")).unwrap();
    assert!(!rec.contains(&format!("-{old}")), "{rec}");
    let p = json(&l, &["publish", "minimal"], true);
    assert_eq!(p["result"]["changed"], false, "{p}");

    // The inventory's pin (`hosts set --kernel`: sync writes the host's
    // PXELINUX and GRUB configs) holds 99.0 past an upgrade to 99.1; the
    // sync that unpins it deletes its files.
    write_qemu_inventory(&l.etc().join("nfsroot/inventory.toml"));
    let mac = ["--mac", "52-54-00-AA-00-01", "--ip", "10.0.2.31"];
    let hosts = |args: &[&str]| {
        let mut c = nfsroot(&l);
        c.arg("hosts").args(args);
        run(c, true);
    };
    hosts(&[&["add", "alpha"][..], &mac].concat());
    hosts(&["set", "alpha", "--kernel", &k99]);
    json(&l, &["sync"], true);
    let k99_files = files_of(&l, &k99);
    let root = l.image("minimal");
    std::fs::copy(
        root.join("boot/vmlinuz-99.0"),
        root.join("boot/vmlinuz-99.1"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&old, root.join("usr/lib/modules/99.1")).unwrap();
    let u = json(&l, &["upgrade-kernel", "minimal"], true);
    assert_eq!(u["result"]["kept"], serde_json::json!(["99.1"]));
    assert_eq!(files_of(&l, &k99), k99_files, "pinned by alpha");
    hosts(&["set", "alpha", "--kernel", ""]);
    let s = json(&l, &["sync"], true);
    let removed: Vec<PathBuf> = s["result"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "remove" && c["path"].as_str().unwrap().contains("/minimal/"))
        .map(|c| PathBuf::from(c["path"].as_str().unwrap()))
        .collect();
    assert_eq!(removed, k99_files, "{s}");
    assert_eq!(files_of(&l, &k99), Vec::<PathBuf>::new());
    check_consistent(&l);
    // The only drift: the older kernels keep_kernels = 1 leaves
    // unpublished, no config naming a missing file.
    let st = json(&l, &["status", "minimal"], false);
    let drift = st["result"]["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 2, "{st}");
    assert!(
        drift.iter().all(|d| d
            .as_str()
            .unwrap()
            .contains("is in the image but not published")),
        "{st}"
    );
}

/// Every boot config of the image, BIOS (PXELINUX) and UEFI (GRUB), the
/// image's own and the default ones, boots kernel `ver` by default with
/// the same initramfs and command line.
fn both_loaders_boot(l: &TestLayout, ver: &str) {
    use nfsroot::{grub, pxelinux};
    let read = |p: &str| std::fs::read_to_string(l.tftp.join(p)).unwrap();
    let parsed = [
        (
            "pxelinux.cfg/default",
            pxelinux::parse(&read("pxelinux.cfg/default")),
        ),
        (
            "pxelinux.cfg/nfsroot-minimal",
            pxelinux::parse(&read("pxelinux.cfg/nfsroot-minimal")),
        ),
        ("grub/grub.cfg", grub::parse(&read("grub/grub.cfg"))),
        (
            "grub/nfsroot-minimal.cfg",
            grub::parse(&read("grub/nfsroot-minimal.cfg")),
        ),
    ];
    let mut seen = Vec::new();
    for (name, p) in parsed {
        let p = p.unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let d = p
            .default_entry()
            .unwrap_or_else(|| panic!("{name}: no default"))
            .clone();
        assert_eq!(d.kernel, format!("minimal/vmlinuz-{ver}"), "{name}");
        seen.push((name, d, p.entries));
    }
    for (name, d, entries) in &seen[1..] {
        assert_eq!(d, &seen[0].1, "{name} and {} boot differently", seen[0].0);
        assert_eq!(
            entries, &seen[0].2,
            "{name} and {} list different entries",
            seen[0].0
        );
    }
}

/// The default config parses and names files that exist with the recorded
/// checksums.
fn check_consistent(l: &TestLayout) {
    let cfg = std::fs::read_to_string(l.tftp.join("pxelinux.cfg/default")).unwrap();
    let rec: Value = serde_json::from_slice(
        &std::fs::read(l.base.join(".nfsroot/published/minimal.json")).unwrap(),
    )
    .unwrap();
    let mut labels = 0;
    let mut cur: Option<String> = None;
    for line in cfg.lines() {
        let line = line.trim();
        if let Some(lbl) = line.strip_prefix("LABEL ") {
            cur = Some(lbl.trim_start_matches("minimal-").to_string());
            labels += 1;
        }
        for kw in ["KERNEL ", "INITRD "] {
            if let Some(f) = line.strip_prefix(kw) {
                assert!(cur.is_some(), "{kw} outside a label");
                let want = rec["files"][f]
                    .as_str()
                    .unwrap_or_else(|| panic!("{f} not in the record:\n{cfg}\n{rec:#}"));
                let data =
                    std::fs::read(l.tftp.join(f)).unwrap_or_else(|e| panic!("{f}: {e}\n{cfg}"));
                assert_eq!(sha256_hex(&data), want, "{f}");
                if kw == "INITRD " {
                    // The initramfs name carries its content hash.
                    assert!(f.ends_with(&format!("-{}", &want[..8])), "{f}: {want}");
                }
            }
        }
    }
    assert!(labels >= 1, "{cfg}");
    let default = cfg
        .lines()
        .find_map(|l| l.strip_prefix("DEFAULT "))
        .unwrap();
    assert!(cfg.contains(&format!("LABEL {default}")));
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn sigkill_upgrade_kernel_at_50_points() {
    let l = clone_fixture();
    json(&l, &["publish", "minimal"], true);
    add_kernel(&l);
    // Alternate between two initramfs variants so every run has work to do.
    let prof = l.base.join(".nfsroot/profiles/minimal.toml");
    let base = std::fs::read_to_string(&prof).unwrap();
    let variant = |i: usize| {
        let text = if i % 2 == 0 {
            base.clone()
        } else {
            with_initramfs(&base, "modules = [\"default\", \"dummy\"]")
        };
        std::fs::write(&prof, text).unwrap();
    };
    // How long does an uninterrupted run take?
    variant(1);
    let t = Instant::now();
    json(&l, &["upgrade-kernel", "minimal"], true);
    let full = t.elapsed();
    check_consistent(&l);
    let runs = 50;
    for i in 0..runs {
        variant(i);
        let delay = full.mul_f64((i as f64 + 0.5) / runs as f64);
        let mut c = nfsroot(&l);
        c.args(["-q", "upgrade-kernel", "minimal"]);
        let mut child = c.spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().unwrap();
        check_consistent(&l);
    }
    // The next run completes, and leaves no temp files behind: not even
    // when it has nothing to do because a killed run had finished the work
    // before it died. Plant such leftovers (a pid that cannot be alive) to
    // make that case certain, and one of a live process (this test), which
    // a shared directory must keep.
    variant(runs + 1);
    json(&l, &["upgrade-kernel", "minimal"], true);
    let dirs = [
        l.tftp.clone(),
        l.tftp.join("minimal"),
        l.tftp.join("pxelinux.cfg"),
    ];
    for d in &dirs {
        std::fs::write(d.join(".nfsroot-tmp-999999999-left"), b"x").unwrap();
    }
    let live = l.tftp.join(format!(
        "pxelinux.cfg/.nfsroot-tmp-{}-live",
        std::process::id()
    ));
    std::fs::write(&live, b"x").unwrap();
    json(&l, &["upgrade-kernel", "minimal"], true);
    check_consistent(&l);
    assert!(live.exists(), "a live run's temp file was swept");
    std::fs::remove_file(&live).unwrap();
    for d in dirs {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            assert!(
                !e.file_name().to_string_lossy().starts_with(".nfsroot-tmp-"),
                "{:?}",
                e.path()
            );
        }
    }
}

#[test]
fn concurrent_upgrades_serialise() {
    let l = clone_fixture();
    json(&l, &["publish", "minimal"], true);
    add_kernel(&l);
    let spawn = |wait: bool| {
        let mut c = nfsroot(&l);
        if wait {
            c.arg("--wait");
        }
        c.args(["upgrade-kernel", "minimal"]);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    // Deterministic first: while another nfsroot holds the image's lock
    // (an exec that sleeps), an upgrade fails naming the holder, and one
    // with --wait completes once the lock is free.
    let mut holder = nfsroot(&l);
    holder.args(["exec", "minimal", "--", "sleep", "10"]);
    let mut holder = holder.spawn().unwrap();
    let lock = l.base.join(".nfsroot/locks/minimal.lock");
    // The lock file names this holder (an earlier exec left its own pid).
    let held = format!("{} exec", holder.id());
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default() != held
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = spawn(false).wait_with_output().unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!(
            "image minimal is locked by pid {} (exec)",
            holder.id()
        )),
        "{err}"
    );
    let waited = spawn(true).wait_with_output().unwrap();
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(holder.wait().unwrap().success());
    check_consistent(&l);
    // Then two upgrades racing: one may be refused (naming the other), the
    // other completes; the published state is consistent either way.
    let a = spawn(false);
    let b = spawn(false);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() || b.status.success());
    for o in [&a, &b] {
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("is locked by pid") && err.contains("(upgrade-kernel)"),
                "{err}"
            );
        }
    }
    check_consistent(&l);
}

#[test]
fn bad_input_leaves_published_state_untouched() {
    let l = clone_fixture();
    let root = l.image("minimal");
    json(&l, &["publish", "minimal"], true);
    let snap = |l: &TestLayout| {
        let mut v: Vec<(String, Vec<u8>)> = walk(&l.tftp);
        v.sort();
        v
    };
    let before = snap(&l);
    let expect_err = |args: &[&str], frag: &str, env: Option<(&str, &str)>| {
        let mut c = nfsroot(&l);
        c.args(args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = run(c, false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(frag), "{args:?}: {frag:?} not in {err}");
    };
    // A host without pxelinux.
    let empty = tempfile::tempdir().unwrap();
    expect_err(
        &["publish", "minimal"],
        "apt-get install pxelinux",
        Some(("NFSROOT_SYSLINUX_ROOT", empty.path().to_str().unwrap())),
    );
    // An unknown module name in the profile.
    let prof = l.base.join(".nfsroot/profiles/minimal.toml");
    let good = std::fs::read_to_string(&prof).unwrap();
    std::fs::write(
        &prof,
        with_initramfs(&good, "modules = [\"no_such_module\"]"),
    )
    .unwrap();
    expect_err(&["upgrade-kernel", "minimal"], "no_such_module", None);
    std::fs::write(&prof, &good).unwrap();
    // An unwritable TFTP root (a file where the directory should be).
    let file_root = l.base.join("tftp-is-a-file");
    std::fs::write(&file_root, "").unwrap();
    expect_err(
        &[
            "--tftp-root",
            file_root.to_str().unwrap(),
            "publish",
            "minimal",
        ],
        "tftp-is-a-file",
        None,
    );
    // A kernel without its modules tree.
    let k = kernels_in(&root)[0].clone();
    std::fs::rename(
        root.join(format!("lib/modules/{k}")),
        root.join("modules.away"),
    )
    .unwrap();
    expect_err(&["upgrade-kernel", "minimal"], &k, None);
    // No kernel at all.
    std::fs::rename(
        root.join(format!("boot/vmlinuz-{k}")),
        root.join("vmlinuz.away"),
    )
    .unwrap();
    expect_err(&["upgrade-kernel", "minimal"], "no kernel", None);
    assert_eq!(snap(&l), before, "published state changed");
}

fn walk(d: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    v
}

/// A second, newer kernel made from the image's own: `99.0` is a copy of
/// the kernel with a module tree that links to the real one (enough to
/// build and publish an initramfs; never booted).
fn add_fake_newer_kernel(l: &TestLayout, old: &str) -> String {
    let root = l.image("minimal");
    std::fs::copy(
        root.join(format!("boot/vmlinuz-{old}")),
        root.join("boot/vmlinuz-99.0"),
    )
    .unwrap();
    std::os::unix::fs::symlink(old, root.join("usr/lib/modules/99.0")).unwrap();
    "99.0".to_string()
}

#[test]
fn publish_heals_files_deleted_or_altered_by_hand() {
    let l = clone_fixture();
    let root = l.image("minimal");
    let old = kernels_in(&root)[0].clone();
    json(&l, &["publish", "minimal"], true);
    let new = add_fake_newer_kernel(&l, &old);
    let u = json(&l, &["upgrade-kernel", "minimal"], true);
    assert_eq!(u["result"]["default"], new.as_str());
    let rec: Value = serde_json::from_slice(
        &std::fs::read(l.base.join(".nfsroot/published/minimal.json")).unwrap(),
    )
    .unwrap();
    let old_entry = rec["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["version"] == old.as_str())
        .unwrap()
        .clone();
    let old_kernel = l.tftp.join(old_entry["kernel"].as_str().unwrap());
    let old_initrd = l.tftp.join(old_entry["initrd"].as_str().unwrap());

    // By hand: the old initramfs deleted, the old kernel altered.
    std::fs::remove_file(&old_initrd).unwrap();
    std::fs::write(&old_kernel, b"edited by hand").unwrap();
    let p = json(&l, &["publish", "minimal"], true);
    assert_eq!(p["result"]["changed"], true);
    check_consistent(&l);
    let cfg = std::fs::read_to_string(l.tftp.join("pxelinux.cfg/default")).unwrap();
    assert!(cfg.contains(&format!("LABEL minimal-{old}")), "{cfg}");
    assert!(old_initrd.is_file());
    let s = json(&l, &["status", "minimal"], true);
    assert_eq!(s["result"]["drift"], serde_json::json!([]));

    // When the image no longer has those bytes, the label leaves the menu
    // and the tree is consistent again.
    std::fs::remove_file(&old_kernel).unwrap();
    let img_kernel = root.join(format!("boot/vmlinuz-{old}"));
    let mut data = std::fs::read(&img_kernel).unwrap();
    data.extend_from_slice(b"changed");
    std::fs::write(&img_kernel, data).unwrap();
    let mut c = nfsroot(&l);
    c.args(["publish", "minimal"]);
    let out = run(c, true);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dropping it from the boot menu"), "{text}");
    check_consistent(&l);
    let cfg = std::fs::read_to_string(l.tftp.join("pxelinux.cfg/default")).unwrap();
    assert!(!cfg.contains(&format!("LABEL minimal-{old}")), "{cfg}");
    assert!(cfg.contains("LABEL minimal-99.0"), "{cfg}");

    // The bootloader's own files, deleted or altered by hand, come back
    // even when nothing else changed.
    std::fs::remove_file(l.tftp.join("pxelinux.0")).unwrap();
    std::fs::write(l.tftp.join("ldlinux.c32"), b"edited by hand").unwrap();
    std::fs::remove_file(l.tftp.join("shimx64.efi")).unwrap();
    std::fs::write(l.tftp.join("grubx64.efi"), b"edited by hand").unwrap();
    let p = json(&l, &["publish", "minimal"], true);
    assert_eq!(p["result"]["changed"], true, "{p}");
    for (f, src) in [
        ("pxelinux.0", "PXELINUX/pxelinux.0"),
        ("ldlinux.c32", "syslinux/modules/bios/ldlinux.c32"),
        ("shimx64.efi", "shim/shimx64.efi.signed"),
        ("mmx64.efi", "shim/mmx64.efi.signed"),
        (
            "grubx64.efi",
            "grub/x86_64-efi-signed/grubnetx64.efi.signed",
        ),
    ] {
        let host = std::fs::read(Path::new("/usr/lib").join(src)).unwrap();
        assert_eq!(std::fs::read(l.tftp.join(f)).unwrap(), host, "{f}");
    }
}

/// `with_initramfs` (common.rs, included by `tests/snapshot.rs` too, so
/// tested here once) adds to the profile's own table.
#[test]
fn with_initramfs_keeps_one_table() {
    let with: toml::Table = with_initramfs(
        "name = \"x\"\n[initramfs]\ncompression = \"zstd\"\n[boot]\nkeep_kernels = 1\n",
        "modules = [\"dummy\"]",
    )
    .parse()
    .unwrap();
    assert_eq!(with["initramfs"]["compression"].as_str(), Some("zstd"));
    assert_eq!(with["initramfs"]["modules"][0].as_str(), Some("dummy"));
    assert_eq!(with["boot"]["keep_kernels"].as_integer(), Some(1));
    let without: toml::Table = with_initramfs("name = \"x\"\n", "backend = \"nfsroot\"")
        .parse()
        .unwrap();
    assert_eq!(without["initramfs"]["backend"].as_str(), Some("nfsroot"));
}
