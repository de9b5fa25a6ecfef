//! The inventory drives a real boot, through the configs `sync` wrote and
//! the real daemons (issue 13): a VM with an inventory host's MAC gets
//! its address from ISC dhcpd (or dnsmasq), loads its per-host PXELINUX
//! file (by MAC, or by hex-IP name) from tftpd-hpa (or dnsmasq), and
//! takes the inventory's host name (from the /etc/hosts block sync wrote
//! into the image); after `hosts set --disable` and a sync, the same VM
//! does not boot the image. Two boots of two VMs each (`--hosts`), one
//! through dhcpd, one through dnsmasq; then beta alone through dhcpd,
//! whose host no longer has per-host names: both daemons answer its iPXE
//! with the iPXE script.
//! Each host's ssh host key comes from the master: the same across a
//! host's reboots, different between hosts, and the one sync made.
//! `nfsroot nodes` then lists both nodes from the state files their boots
//! wrote (no boot of its own).

use crate::common::*;
use crate::seeds::boot_hosts;

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
        let layout = l.layout();
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

    // beta, named by its hex-IP file only (seed 003 names hosts that
    // way): its 01-<mac> file goes, the hex-IP name keeps the config.
    let beta_mac = cfgd.join("01-52-54-00-aa-00-02");
    let beta_hex = cfgd.join("0A000220");
    let text = std::fs::read(&beta_hex).unwrap();
    std::fs::remove_file(&beta_mac).unwrap();
    std::fs::remove_file(&beta_hex).unwrap();
    std::fs::write(&beta_hex, text).unwrap();

    // Through the real daemons (seed 001/003), both hosts at once: ISC
    // dhcpd with the dhcpd.conf sync wrote and tftpd-hpa serving the TFTP
    // root, on a bridge at the inventory's server address. The TFTP
    // server's log shows alpha's loader fetched its 01-<mac> file and
    // beta's its hex-IP file; the pattern would say node031, the
    // inventory says alpha.
    // With the analysis: the state files `nodes` reads below are written
    // after the node line, before the analysis ends.
    let r = boot_hosts(&l, &inv, &etc, &["alpha", "beta"], "dhcpd", &[]);
    assert_eq!(r["passed"], true, "{r:#}");
    let (alpha, beta) = (&r["hosts"][0], &r["hosts"][1]);
    assert_eq!(alpha["fields"]["host"], "alpha");
    assert_eq!(alpha["fields"]["ip"], "10.0.2.31");
    assert_check(
        alpha,
        "host config",
        "pxelinux.cfg/01-52-54-00-aa-00-01 sent",
    );
    assert_check(alpha, "dhcp boot file", "pxelinux.0 first");
    assert_check(alpha, "kernel", "minimal/vmlinuz-");
    assert_eq!(alpha["fields"]["hostkey"], fp("alpha").as_str(), "{r:#}");
    assert_eq!(beta["fields"]["host"], "beta");
    assert_eq!(beta["fields"]["ip"], "10.0.2.32");
    assert_check(beta, "host config", "pxelinux.cfg/0A000220 sent");
    assert_check(beta, "kernel", "minimal/vmlinuz-");
    assert_eq!(beta["fields"]["hostkey"], fp("beta").as_str(), "{r:#}");
    assert_ne!(fp("alpha"), fp("beta"));
    nodes_after_boots(&l, &inv, alpha, beta);

    // alpha disabled, and a reboot of beta through dnsmasq (DHCP and
    // TFTP, seed 000's setup) this time, at once: another boot of beta
    // with the same key; alpha loads its config and does not boot. The
    // inventory now writes per-host names only for hosts that differ from
    // the default: beta has none left, so dnsmasq answers its iPXE with
    // the iPXE script, which boots the default itself (`minimal` sets
    // boot.ipxe); alpha, disabled, keeps its file and gets pxelinux.0.
    hosts(&["hosts", "set", "alpha", "--disable"]);
    let text = std::fs::read_to_string(&inv).unwrap();
    std::fs::write(&inv, text.replace("host_files = \"all\"\n", "")).unwrap();
    hosts(&["sync"]);
    assert!(!cfgd.join("0A000220").exists() && !beta_mac.exists());
    let r2 = boot_hosts(
        &l,
        &inv,
        &etc,
        &["alpha", "beta"],
        "dnsmasq",
        &["--no-analysis"],
    );
    assert_eq!(r2["passed"], true, "{r2:#}");
    let (off, beta2) = (&r2["hosts"][0], &r2["hosts"][1]);
    assert_eq!(beta2["fields"]["host"], "beta");
    assert_ne!(
        beta2["fields"]["boot"], beta["fields"]["boot"],
        "a second boot"
    );
    assert_eq!(beta2["fields"]["hostkey"], fp("beta").as_str(), "{r2:#}");
    assert_check(beta2, "dhcp boot file", "nfsroot.ipxe first");
    assert_check(beta2, "host config", "nfsroot.ipxe sent");
    assert_check(beta2, "kernel", "minimal/vmlinuz-");
    let t = &beta2["timings"];
    assert!(
        t["loader"].as_f64().is_some(),
        "the script's line: {beta2:#}"
    );
    assert!(off["node_line"].is_null(), "{off:#}");
    assert_check(off, "dhcp boot file", "pxelinux.0 first");
    assert_check(off, "host config", "pxelinux.cfg/01-52-54-00-aa-00-01 sent");
    // PXELINUX's SAY line reached the serial console: the disabled
    // host's config carries the image's SERIAL directive.
    let d = off["diagnosis"].as_str().unwrap();
    assert!(d.contains("host alpha is disabled by nfsroot"), "{off:#}");

    // beta once more, through ISC dhcpd and tftpd-hpa: dhcpd tells iPXE
    // by its user class and answers with the script too.
    let r3 = boot_hosts(&l, &inv, &etc, &["beta"], "dhcpd", &["--no-analysis"]);
    assert_eq!(r3["passed"], true, "{r3:#}");
    let beta3 = &r3["hosts"][0];
    assert_eq!(beta3["fields"]["host"], "beta");
    assert_check(beta3, "dhcp boot file", "nfsroot.ipxe first");
    assert_check(beta3, "kernel", "minimal/vmlinuz-");
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

/// boot-test of inventory host `host` through the real `dhcp` daemons
/// and the configs sync wrote to `etc`.
pub fn boot_host(
    l: &TestLayout,
    inv: &std::path::Path,
    etc: &std::path::Path,
    host: &str,
    dhcp: &str,
    more: &[&str],
) -> serde_json::Value {
    let (inv, etc) = (inv.to_str().unwrap(), etc.to_str().unwrap());
    let mut args = vec![
        "--mode",
        "pxe",
        "--host",
        host,
        "--dhcp",
        dhcp,
        "--inventory",
        inv,
        "--etc-dir",
        etc,
    ];
    args.extend(more);
    boot_test_image(l, "minimal", &args)
}

/// The report has check `name`, passed, its detail containing `want`.
pub fn assert_check(r: &serde_json::Value, name: &str, want: &str) {
    let checks = r["checks"].as_array().unwrap();
    let c = checks
        .iter()
        .find(|c| c[0] == name)
        .unwrap_or_else(|| panic!("no {name} check: {checks:?}"));
    assert_eq!(c[1], true, "{c:?}");
    assert!(c[2].as_str().unwrap().contains(want), "{c:?}");
}
