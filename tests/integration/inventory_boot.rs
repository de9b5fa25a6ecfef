//! The inventory drives a real boot: a VM with an inventory host's MAC boots
//! through its per-host PXELINUX file and takes the inventory's host name
//! (from the /etc/hosts block sync wrote into the image); after
//! `hosts set --disable` and a sync, the same VM does not boot the image.
//! Each host's ssh host key comes from the master: the same across a
//! host's reboots, different between hosts, and the one sync made.
//! `nfsroot nodes` then lists both nodes from the state files their boots
//! wrote (no boot of its own).

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
    let alpha = boot_test(&l, &alpha_again);
    let r = &alpha;
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
    nodes_after_boots(&l, &inv, &alpha, &r);

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

/// Issue 11: the state files the boots wrote (the ready hook, through the
/// root-squashed log export) say what each node runs: `nodes` lists
/// alpha (its last boot) and beta as running the image's build, with
/// the kernel and boot id of their node lines; past a threshold of 0 s
/// neither is shown as running.
fn nodes_after_boots(
    l: &TestLayout,
    inv: &std::path::Path,
    alpha: &serde_json::Value,
    beta: &serde_json::Value,
) {
    let nodes = |extra: &[&str]| {
        let mut c = nfsroot(l);
        c.arg("--inventory")
            .arg(inv)
            .args(["--json", "nodes"])
            .args(extra);
        let v: serde_json::Value = serde_json::from_slice(&run(c, true).stdout).unwrap();
        v["result"]["nodes"].as_array().unwrap().clone()
    };
    let build = release_field(&l.image("minimal"), "BUILD_ID");
    let rows = nodes(&[]);
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for (row, boot) in rows.iter().zip([alpha, beta]) {
        let f = &boot["fields"];
        assert_eq!(row["host"], f["host"], "{row:#}");
        assert_eq!(row["status"], "running", "{row:#}");
        let n = &row["node"];
        assert_eq!(n["image"], "minimal", "{row:#}");
        assert_eq!(n["build"], build.as_str(), "{row:#}");
        assert_eq!(n["tree"], build.as_str(), "{row:#}");
        assert_eq!(n["kernel"], f["kernel"], "{row:#}");
        assert_eq!(n["address"], f["ip"], "{row:#}");
        let id = n["boot_id"].as_str().unwrap();
        assert!(
            id.starts_with(f["boot"].as_str().unwrap()),
            "{row:#} vs {f:#}"
        );
        assert!(n["uptime"].as_u64().unwrap() > 0, "{row:#}");
    }
    for row in nodes(&["--stale-after", "0s"]) {
        assert_eq!(row["status"], "not_seen", "{row:#}");
    }
}
