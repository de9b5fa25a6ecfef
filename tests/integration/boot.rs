//! Boot tests: the built image really boots in QEMU (TCG) against a real
//! nfs-ganesha, in direct and PXE mode, with both initramfs backends, and
//! known-bad boots fail fast with a diagnosis and leave no process behind.
//! The fixture's plain direct boot is `units_as_the_profile_says`; its PXE
//! boot through the published `default` config is the boot after
//! `rollback` in upgrade.rs (the fixture's own kernel, same config path),
//! so neither costs a boot of its own.

use crate::common::*;
use crate::inventory_boot::{assert_check, boot_host};

/// trees.rs's node that reads on while its image is restored, updated and
/// gc'ed: the suite's longest test (about seven minutes), mostly a node
/// idling outside the QEMU lock. The runner starts tests in name order,
/// so it is named to start first; started last, as `trees::...`, it made
/// the suite six minutes longer.
#[test]
fn a_node_keeps_its_tree_through_restore_update_and_gc() {
    crate::trees::a_running_node_keeps_its_tree_through_restore_update_and_gc();
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
    let r = boot_test_analysed(f, &["--mode", "direct"]);
    assert_boot_passed(&r);
    assert_machine_id(&r, "52:54:00:12:34:56");
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

/// Seed 004 (issue 13): the admin's dhcpd.conf, written by hand before
/// nfsroot ever ran, is kept byte for byte; one `hosts add` and a `sync`
/// put the host below it, and the host boots through ISC dhcpd and
/// tftpd-hpa on those files, by its `01-<mac>` PXELINUX file. The same
/// boot has an NFSv4.2 root (issue 13): the image copy's profile asks for
/// `vers=4.2` and a re-publish (no rebuild) puts it on the command line;
/// the node line's `rootfs=` says what the node mounted.
#[test]
fn boots_pxe_through_per_host_file() {
    let l = clone_fixture();
    let prof = l.base.join(".nfsroot/profiles/minimal.toml");
    let text = std::fs::read_to_string(&prof).unwrap();
    let v42 = text.replace("options = \"vers=3,tcp\"", "options = \"vers=4.2\"");
    assert_ne!(v42, text, "{text}");
    std::fs::write(&prof, v42).unwrap();
    let mut c = nfsroot(&l);
    c.args(["publish", "minimal"]);
    run(c, true);
    let root = l.base.parent().unwrap();
    let (etc, inv) = (root.join("etc"), root.join("inventory.toml"));
    write_qemu_inventory(&inv);
    // The admin's own file: no markers, its own subnet (without
    // next-server or filename: the host blocks carry those), comments.
    let conf = etc.join("dhcp/dhcpd.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    let prologue = "# Hand-written for rack 4; nfsroot appends its hosts below.\n\
                    authoritative;\nddns-update-style none;\n\
                    default-lease-time 600;  # ten minutes\nmax-lease-time 7200;\n\n\
                    subnet 10.0.2.0 netmask 255.255.255.0 {\n\toption routers 10.0.2.2;\n}\n";
    std::fs::write(&conf, prologue).unwrap();
    for args in [
        &[
            "hosts",
            "add",
            "rack4n1",
            "--mac",
            "52:54:00:aa:bb:cc",
            "--ip",
            "10.0.2.23",
        ][..],
        &["sync"][..],
    ] {
        let mut c = nfsroot(&l);
        c.arg("--inventory").arg(&inv).arg("--etc-dir").arg(&etc);
        c.args(args);
        run(c, true);
    }
    let after = std::fs::read_to_string(&conf).unwrap();
    let block = after
        .strip_prefix(prologue)
        .unwrap_or_else(|| panic!("{after}"));
    assert!(
        block.starts_with(nfsroot::inventory::render::BEGIN),
        "{after}"
    );
    assert!(block.contains("host rack4n1 {"), "{after}");

    let r = boot_host(&l, &inv, &etc, "rack4n1", "dhcpd", &[]);
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["fields"]["host"], "rack4n1");
    assert_eq!(r["fields"]["ip"], "10.0.2.23");
    assert_check(&r, "host config", "pxelinux.cfg/01-52-54-00-aa-bb-cc sent");
    assert_eq!(r["fields"]["rootfs"], "nfs4,vers=4.2,nocto", "{r:#}");
    // The file dhcpd served from is still the admin's, byte for byte.
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), after);
    // Another MAC, another machine id.
    assert_machine_id(&r, "52:54:00:aa:bb:cc");
}

#[test]
fn boots_with_initramfs_tools_backend() {
    let l = clone_fixture();
    let prof = l.base.join(".nfsroot/profiles/minimal.toml");
    // initramfs-tools takes every network driver (MODULES=netboot): the
    // profile's net_drivers would be an error with it.
    let text: String = std::fs::read_to_string(&prof)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("net_drivers"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &prof,
        with_initramfs(&text, "backend = \"initramfs-tools\""),
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
    // The same machine id as nfsroot's own initramfs gives (issue 16): its
    // derivation runs as initramfs-tools' nfs-bottom script. One boot, over
    // PXE: direct mode would load the same published kernel, initrd and
    // APPEND line, only without PXELINUX.
    let r = boot_test(&l, &["--mode", "pxe"]);
    assert_boot_passed(&r);
    assert_machine_id(&r, "52:54:00:12:34:56");
}

/// The iPXE script's hand-overs to PXELINUX, booted for real. With
/// `--per-host` the script's default boots nothing, so only its lookup of
/// `pxelinux.cfg/01-<mac>` and PXELINUX reading that file bring the node
/// up; with `--pxelinux` DHCP names `pxelinux.0`, as for a vendor PXE ROM,
/// and the script never runs. (The fixture's other PXE boots go through
/// the script to the kernel.)
#[test]
fn pxe_hands_per_host_configs_and_vendor_roms_to_pxelinux() {
    let f = fixture();
    for (flag, through_script) in [("--per-host", true), ("--pxelinux", false)] {
        let r = boot_test(f, &["--mode", "pxe", "--keep-logs", flag]);
        assert_boot_passed(&r);
        let logs = std::path::Path::new(r["logs_dir"].as_str().unwrap());
        let console =
            String::from_utf8_lossy(&std::fs::read(logs.join("console.log")).unwrap()).into_owned();
        assert_eq!(
            console.contains(nfsroot::ipxe::BANNER),
            through_script,
            "{flag}: {console}"
        );
        assert_eq!(
            console.contains("pxelinux.cfg/01-52-54-00-12-34-56... ok"),
            through_script,
            "{flag}: the script found the host's own file"
        );
        assert!(
            console.contains("PXELINUX 6."),
            "{flag}: PXELINUX booted it"
        );
        let cmdline = std::fs::read_to_string(logs.join("qemu.cmdline")).unwrap();
        let file = if through_script {
            "nfsroot.ipxe"
        } else {
            "pxelinux.0"
        };
        assert!(cmdline.contains(&format!(",bootfile={file} ")), "{cmdline}");
        std::fs::remove_dir_all(logs).unwrap();
    }
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
    // It names the card that has no driver: QEMU's virtio-net.
    assert!(d.contains("PCI network devices: 1af4:1000;"), "{d}");
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
