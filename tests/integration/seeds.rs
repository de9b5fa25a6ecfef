//! Several seed nodes at once against one server (issue 13). Seed 002
//! (ORBIT's PXE service, tftpd-hpa and ISC dhcpd): each node boots the
//! image the inventory picks for it, its config found by its hex-IP
//! name, and a node with nothing to boot goes back to its local disk.
//! One `boot-test --hosts` run boots four nodes on two images (two each)
//! and the local-boot one together, from the files `sync` wrote and the
//! real daemons, and reports each node and the server's load.

use crate::common::*;
use crate::inventory_boot::assert_check;
use std::path::Path;

/// Seed 002's cluster: no image for all, per-host images; the `spare`
/// group boots from local disk.
const SEED_002: &str = "[cluster]\nsubnet = \"10.0.2.0/24\"\ngateway = \"10.0.2.2\"\n\
     nfs_server = \"10.0.2.2\"\nhost_files = \"all\"\n\n\
     [groups.spare]\nboot = \"localboot\"\n\n[hosts]\n";

#[test]
fn seed_002_two_images_and_local_boot_in_one_storm() {
    let l = clone_fixture();
    copy_image_as(&l, "minimal", "second");
    for image in ["minimal", "second"] {
        let mut c = nfsroot(&l);
        c.args(["publish", image]);
        run(c, true);
    }
    let etc = l.base.parent().unwrap().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let inv = l.base.parent().unwrap().join("inventory.toml");
    std::fs::write(&inv, SEED_002).unwrap();
    let nodes = [
        ("n1", Some("minimal")),
        ("n2", Some("second")),
        ("n3", Some("minimal")),
        ("n4", Some("second")),
        ("n5", None),
    ];
    for (i, (name, image)) in nodes.iter().enumerate() {
        let (mac, ip) = (mac(i), ip(i));
        let mut args = vec!["hosts", "add", name, "--mac", &mac, "--ip", &ip];
        match image {
            Some(img) => args.extend(["--image", img]),
            None => args.extend(["--group", "spare"]),
        }
        inventory_cmd(&l, &inv, &etc, &args);
    }
    inventory_cmd(&l, &inv, &etc, &["sync"]);
    // Seed 002 names a node's config by its address in hex: the
    // second image's nodes keep only that name.
    let cfgd = l.tftp.join("pxelinux.cfg");
    for i in [1, 3] {
        let m = mac(i).to_ascii_lowercase().replace(':', "-");
        std::fs::remove_file(cfgd.join(format!("01-{m}"))).unwrap();
    }

    let names: Vec<&str> = nodes.iter().map(|n| n.0).collect();
    let r = boot_hosts(
        &l,
        &inv,
        &etc,
        &names,
        "dhcpd",
        &["--timeout", "900", "--no-analysis"],
    );
    let hosts = r["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 5, "{r:#}");
    for (i, ((name, image), h)) in nodes.iter().zip(hosts).enumerate() {
        assert_eq!(h["host"], *name, "{h:#}");
        assert_eq!(h["passed"], true, "{name}: {h:#}");
        let hex = format!("pxelinux.cfg/0A0002{:02X}", 41 + i);
        let by_mac = format!(
            "pxelinux.cfg/01-{}",
            mac(i).to_ascii_lowercase().replace(':', "-")
        );
        let Some(image) = image else {
            // Local boot, diagnosed from the console after its own config.
            assert!(h["node_line"].is_null(), "{h:#}");
            assert!(
                h["diagnosis"].as_str().unwrap().contains("local boot"),
                "{h:#}"
            );
            assert_check(h, "host config", &by_mac);
            continue;
        };
        assert_eq!(h["image"], *image, "{h:#}");
        assert_eq!(h["fields"]["image"], *image, "{h:#}");
        assert_eq!(h["fields"]["host"], *name, "{h:#}");
        assert_eq!(h["fields"]["ip"], ip(i), "{h:#}");
        assert_check(h, "kernel", &format!("{image}/vmlinuz-"));
        assert_check(h, "dhcp boot file", "pxelinux.0 first");
        let cfg = if *image == "second" { &hex } else { &by_mac };
        assert_check(h, "host config", cfg);
    }
    assert_eq!(r["passed"], true, "{r:#}");
    let s = &r["server"];
    assert_eq!(
        s["daemons"],
        serde_json::json!(["dhcpd", "in.tftpd", "rpcbind", "ganesha.nfsd"]),
        "{s:#}"
    );
    assert!(s["cpu_secs"].as_f64().unwrap() > 0.0, "{s:#}");
    assert!(s["peak_rss_kib"].as_u64().unwrap() > 1024, "{s:#}");
    assert!(s["samples"].as_u64().unwrap() > 10, "{s:#}");
    eprintln!(
        "seed 002 storm: 4 nodes up + 1 local boot in {:.1} s; server cpu {:.1} s ({:.0}% of a core), \
         peak RSS {} KiB",
        r["wall_secs"].as_f64().unwrap(),
        s["cpu_secs"].as_f64().unwrap(),
        s["cpu_percent"].as_f64().unwrap(),
        s["peak_rss_kib"]
    );
}

fn mac(i: usize) -> String {
    format!("52:54:00:02:00:{:02X}", i + 1)
}

fn ip(i: usize) -> String {
    format!("10.0.2.{}", 41 + i)
}

/// Run nfsroot with this test's inventory and --etc-dir; must succeed.
pub fn inventory_cmd(l: &TestLayout, inv: &Path, etc: &Path, args: &[&str]) {
    let mut c = nfsroot(l);
    c.arg("--inventory")
        .arg(inv)
        .arg("--etc-dir")
        .arg(etc)
        .args(args);
    run(c, true);
}

/// A copy of image `from` named `to` in the same layout, as if built
/// from a profile of that name: its node.conf, fstab and release name
/// it, its log export is its own, its saved profile is a renamed copy.
pub fn copy_image_as(l: &TestLayout, from: &str, to: &str) {
    copy_image(&l.image(from), &l.image(to));
    let logs = |n: &str| format!("/.logs/{n}\t");
    for (rel, pairs) in [
        (
            "etc/nfsroot/node.conf",
            vec![
                (format!("IMAGE='{from}'"), format!("IMAGE='{to}'")),
                (format!("/.logs/{from}'"), format!("/.logs/{to}'")),
            ],
        ),
        ("etc/fstab", vec![(logs(from), logs(to))]),
        (
            "etc/nfsroot-release",
            vec![(format!("NAME={from}\n"), format!("NAME={to}\n"))],
        ),
    ] {
        let p = l.image(to).join(rel);
        let mut text = std::fs::read_to_string(&p).unwrap();
        for (a, b) in pairs {
            assert!(text.contains(&a), "{}: no {a:?} in\n{text}", p.display());
            text = text.replace(&a, &b);
        }
        std::fs::write(&p, text).unwrap();
    }
    let prof = l.base.join(".nfsroot/profiles");
    let text = std::fs::read_to_string(prof.join(format!("{from}.toml"))).unwrap();
    let want = format!("name = \"{from}\"");
    assert!(text.contains(&want), "{text}");
    std::fs::write(
        prof.join(format!("{to}.toml")),
        text.replace(&want, &format!("name = \"{to}\"")),
    )
    .unwrap();
}

/// `boot-test --mode pxe --hosts ... --dhcp DHCP` with this test's
/// inventory and `etc`; the JSON report, after checking that nothing it
/// started still runs.
pub fn boot_hosts(
    l: &TestLayout,
    inv: &Path,
    etc: &Path,
    hosts: &[&str],
    dhcp: &str,
    more: &[&str],
) -> serde_json::Value {
    let _g = qemu_lock();
    let list = hosts.join(",");
    let mut c = nfsroot(l);
    c.arg("--inventory").arg(inv).arg("--etc-dir").arg(etc);
    c.args([
        "--json",
        "boot-test",
        "--mode",
        "pxe",
        "--hosts",
        &list,
        "--dhcp",
        dhcp,
    ]);
    c.args(more);
    let (r, out) = boot_report(c);
    assert_eq!(
        out.status.success(),
        r["passed"] == true,
        "exit code: {r:#}"
    );
    for h in r["hosts"].as_array().unwrap() {
        eprintln!(
            "boot-test --hosts {list}: {} passed={} timings={} diagnosis={}",
            h["host"], h["passed"], h["timings"], h["diagnosis"]
        );
        assert_nothing_outlived(h);
    }
    r
}
