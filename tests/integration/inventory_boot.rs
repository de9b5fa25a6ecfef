//! The inventory drives a real boot: a VM with an inventory host's MAC boots
//! through its per-host PXELINUX file and takes the inventory's host name
//! (from the /etc/hosts block sync wrote into the image); after
//! `hosts set --disable` and a sync, the same VM does not boot the image.
//! Each host's ssh host key comes from the master: the same across a
//! host's reboots, different between hosts, and the one sync made.

use crate::common::*;

#[test]
fn inventory_host_boots_per_host_then_disabled_does_not() {
    let l = clone_fixture();
    let mut c = nfsroot(&l);
    c.args(["publish", "minimal"]);
    run(c, true);
    let etc = l.base.parent().unwrap().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let inv = l.base.parent().unwrap().join("inventory.toml");
    write_qemu_inventory(&inv);
    let hosts = |args: &[&str]| {
        let mut c = nfsroot(&l);
        c.arg("--inventory")
            .arg(&inv)
            .arg("--etc-dir")
            .arg(&etc)
            .args(args);
        run(c, true)
    };
    hosts(&[
        "hosts",
        "add",
        "alpha",
        "--mac",
        "52-54-00-AA-00-01",
        "--ip",
        "10.0.2.31",
    ]);
    hosts(&[
        "hosts",
        "add",
        "beta",
        "--mac",
        "52-54-00-AA-00-02",
        "--ip",
        "10.0.2.32",
    ]);
    hosts(&["sync"]);
    let fp = |h: &str| {
        let layout = nfsroot::image::Layout {
            base_dir: l.base.clone(),
            tftp_root: l.tftp.clone(),
            cache_dir: deb_cache(),
        };
        nfsroot::hostkeys::host_fingerprint(&layout, h)
            .unwrap()
            .unwrap_or_else(|| panic!("sync made no keys for {h}"))
    };
    let cfgd = l.tftp.join("pxelinux.cfg");
    assert!(cfgd.join("01-52-54-00-aa-00-01").exists());
    assert!(cfgd.join("0A00021F").exists(), "hex-IP name");
    let etc_hosts = std::fs::read_to_string(l.image("minimal").join("etc/hosts")).unwrap();
    assert!(
        etc_hosts.contains("10.0.2.31") && etc_hosts.contains("alpha"),
        "{etc_hosts}"
    );

    // --per-host makes boot-test's `default` boot nothing: only the
    // 01-<mac> lookup can bring the node up. The pattern would say
    // node031; the inventory says alpha.
    let r = boot_test(
        &l,
        &[
            "--mode",
            "pxe",
            "--per-host",
            "--mac",
            "52:54:00:aa:00:01",
            "--ip",
            "10.0.2.31",
        ],
    );
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["fields"]["host"], "alpha");
    assert_eq!(r["fields"]["hostkey"], fp("alpha").as_str(), "{r:#}");
    let boot1 = r["fields"]["boot"].clone();

    // A reboot of alpha: another boot, the same key. beta: its own key.
    let alpha_again = [
        "--mode",
        "direct",
        "--mac",
        "52:54:00:aa:00:01",
        "--ip",
        "10.0.2.31",
    ];
    let r = boot_test(&l, &alpha_again);
    assert_eq!(r["passed"], true, "{r:#}");
    assert_ne!(r["fields"]["boot"], boot1, "a second boot");
    assert_eq!(r["fields"]["hostkey"], fp("alpha").as_str(), "{r:#}");
    let r = boot_test(
        &l,
        &[
            "--mode",
            "direct",
            "--mac",
            "52:54:00:aa:00:02",
            "--ip",
            "10.0.2.32",
        ],
    );
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["fields"]["host"], "beta");
    assert_eq!(r["fields"]["hostkey"], fp("beta").as_str(), "{r:#}");
    assert_ne!(fp("alpha"), fp("beta"));

    hosts(&["hosts", "set", "alpha", "--disable"]);
    hosts(&["sync"]);
    let r = boot_test(
        &l,
        &[
            "--mode",
            "pxe",
            "--per-host",
            "--mac",
            "52:54:00:aa:00:01",
            "--ip",
            "10.0.2.31",
            "--expect-no-boot",
            "--timeout",
            "90",
        ],
    );
    assert_eq!(r["passed"], true, "{r:#}");
    assert!(r["node_line"].is_null());
    // PXELINUX's SAY line reached the serial console: the disabled
    // host's config carries the image's SERIAL directive.
    let d = r["diagnosis"].as_str().unwrap();
    assert!(d.contains("host alpha is disabled by nfsroot"), "{r:#}");
}
