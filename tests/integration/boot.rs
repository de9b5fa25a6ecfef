//! Boot tests: the built image really boots in QEMU (TCG) against a real
//! nfs-ganesha, in direct and PXE mode, with both initramfs backends, and
//! known-bad boots fail fast with a diagnosis and leave no process behind.

use crate::common::*;

fn assert_passed(r: &serde_json::Value) {
    assert_eq!(r["passed"], true, "boot failed: {r:#}");
    assert_eq!(r["fields"]["host"], "node015");
    assert_eq!(r["fields"]["root"], "ro");
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

/// Issue 16: the image is born diskless. On the node, the ready hook finds
/// no failed unit, every unit build masked (node.conf's UNITS_MASK: the
/// defaults and minimal.toml's `mask`) masked and never started, and the
/// unit minimal.toml enables (getty@tty1) active; it reports the boot's
/// slowest units, which boot-test reads from the per-host log.
#[test]
fn units_as_the_profile_says() {
    let f = fixture();
    let img = f.image("minimal");
    let etc = img.join("etc/systemd/system");
    for masked in ["systemd-pstore.service", "apt-daily.timer", "fstrim.timer"] {
        assert_eq!(
            std::fs::read_link(etc.join(masked)).ok(),
            Some("/dev/null".into()),
            "{masked}"
        );
    }
    assert!(
        etc.join("getty.target.wants/getty@tty1.service")
            .is_symlink()
    );
    let conf = std::fs::read_to_string(img.join("etc/nfsroot/node.conf")).unwrap();
    assert!(
        conf.contains("UNITS_ENABLE='getty@tty1.service'\n"),
        "{conf}"
    );
    assert!(conf.contains(" systemd-pstore.service'\n"), "{conf}");
    let r = boot_test(f, &["--mode", "direct"]);
    assert_passed(&r);
    let checks = r["checks"].as_array().unwrap();
    assert!(
        checks.iter().any(|c| c[0] == "units" && c[1] == true),
        "{checks:?}"
    );
    let analysis: Vec<&str> = r["analysis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    for section in ["== blame (top 10)", "== critical-chain"] {
        assert!(analysis.contains(&section), "{analysis:#?}");
    }
    assert!(
        analysis.iter().any(|l| l.contains("multi-user.target @")),
        "no critical chain: {analysis:#?}"
    );
}

/// The node's machine id is the one the initramfs derives from its MAC
/// (bound read-only over the image's empty /etc/machine-id).
fn assert_machine_id(r: &serde_json::Value, mac: &str) {
    let want = nfsroot::initramfs::machine_id(mac);
    assert_eq!(r["fields"]["machine-id"], want.as_str(), "{mac}: {r:#}");
}

#[test]
fn boots_direct() {
    let f = fixture();
    let r = boot_test(f, &["--mode", "direct"]);
    assert_passed(&r);
    assert_machine_id(&r, "52:54:00:12:34:56");
}

#[test]
fn boots_pxe() {
    let f = fixture();
    let r = boot_test(f, &["--mode", "pxe"]);
    assert_passed(&r);
}

#[test]
fn boots_pxe_through_per_host_file() {
    let f = fixture();
    // boot-test's view makes `default` boot nothing, so only the 01-<mac>
    // lookup can bring the node up.
    let r = boot_test(
        f,
        &[
            "--mode",
            "pxe",
            "--per-host",
            "--mac",
            "52:54:00:aa:bb:cc",
            "--ip",
            "10.0.2.23",
        ],
    );
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["fields"]["host"], "node023");
    // Another MAC, another id.
    assert_machine_id(&r, "52:54:00:aa:bb:cc");
}

#[test]
fn boots_with_initramfs_tools_backend() {
    let l = clone_fixture();
    let prof = l.base.join(".nfsroot/profiles/minimal.toml");
    let text = std::fs::read_to_string(&prof).unwrap();
    std::fs::write(
        &prof,
        format!("{text}\n[initramfs]\nbackend = \"initramfs-tools\"\n"),
    )
    .unwrap();
    let mut c = nfsroot(&l);
    c.args(["publish", "minimal"]);
    run(c, true);
    let cfg = std::fs::read_to_string(l.tftp.join("pxelinux.cfg/default")).unwrap();
    assert!(cfg.contains(&format!(
        "nfsroot=10.0.2.2:{}",
        l.image("minimal").display()
    )));
    assert_passed(&boot_test(&l, &["--mode", "direct"]));
    assert_passed(&boot_test(&l, &["--mode", "pxe"]));
}

#[test]
fn initramfs_without_nic_driver_fails_fast() {
    let f = fixture();
    let l = TestLayout::temp();
    let initrd = l.base.join("no-nic.img");
    let mut c = nfsroot(f);
    c.args([
        "initramfs",
        "build",
        "minimal",
        "--exclude-module",
        "virtio_net",
        "-o",
    ])
    .arg(&initrd);
    run(c, true);
    let kernel = std::fs::read_dir(f.tftp.join("minimal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .unwrap();
    let r = boot_test(
        f,
        &[
            "--timeout",
            "120",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
        ],
    );
    assert_eq!(r["passed"], false);
    let d = r["diagnosis"].as_str().unwrap();
    assert!(d.contains("no network interface"), "{d}");
    // Detected from the console, not by running out of time (the wall
    // clock here would include waiting for other tests' VMs).
    assert!(!d.contains("no node line within"), "{d}");
    assert!(r["logs_dir"].is_string(), "logs kept on failure");
}

#[test]
fn wrong_export_fails_fast() {
    let f = fixture();
    let cfg = std::fs::read_to_string(f.tftp.join("pxelinux.cfg/default")).unwrap();
    let append = cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("APPEND "))
        .unwrap()
        .replace(&f.image("minimal").display().to_string(), "/no/such/export");
    let r = boot_test(f, &["--timeout", "150", "--append", &append]);
    assert_eq!(r["passed"], false);
    let d = r["diagnosis"].as_str().unwrap();
    assert!(
        d.contains("cannot mount") && d.contains("/no/such/export"),
        "{d}"
    );
    // Detected from the console, not by running out of time (the wall
    // clock here would include waiting for other tests' VMs).
    assert!(!d.contains("no node line within"), "{d}");
}
