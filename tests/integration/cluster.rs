//! The cluster profile end to end (issues 12, 13 and 16):
//! `profiles/cluster.toml` built unmodified (once per checkout, like the
//! fixture), then a copy booted as deployed, as seed 000 runs its cluster:
//! an inventory host added and `sync`ed, booted through dnsmasq (DHCP and
//! TFTP, with the config sync wrote) on a bridge at 192.168.0.1, its
//! read-write root from there, `/home` and `/cluster_bin` served by
//! boot-test, the host name from the hosts table sync wrote into the image,
//! logs under /var/log/<host> in the shared tree. In the same boot, an hour of timers is simulated: a
//! test-only unit waits for the node's report, proves each extra mount is
//! the right export, starts the service of every timer still loaded,
//! prints what it ran and powers off; the shared tree, compared on the
//! host before and after, may differ only in this node's log directory:
//! its machine id is the initramfs's, bound read-only over the shared
//! empty file, and its login records are its own wtmp, btmp and lastlog
//! there (so `last reboot` on the node shows its boots).

use crate::common::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The node's address and its name in the inventory (cluster.toml's
/// pattern would say node15: the hosts table comes first).
const IP: &str = "192.168.0.15";
const HOST: &str = "hpc15";
/// Seed 000's network: the master at 192.168.0.1 serves DHCP, TFTP, NFS.
const INVENTORY: &str = "[cluster]\nsubnet = \"192.168.0.0/24\"\ngateway = \"192.168.0.1\"\n\
     nfs_server = \"192.168.0.1\"\nimage = \"cluster\"\nhost_files = \"all\"\n\n[hosts]\n";
/// Its boot NIC's MAC (the machine id derives from it).
const MAC: &str = "52:54:00:0f:00:01";
/// Console prefix of the test unit's lines.
const HOUR: &str = "cluster-hour: ";

/// The test-only unit: after the node's report (line and analysis), show
/// each extra mount's marker, start every loaded timer's service (as the
/// timer would within an hour), then power off, so the node's writes
/// reach the server before the tree is compared.
const HOUR_SCRIPT: &str = r#"#!/bin/sh
exec >/dev/console 2>&1
while [ ! -e /run/nfsroot/ready ]; do sleep 1; done
sleep 1
while systemctl -q is-active nfsroot-ready.service; do sleep 1; done
for m in /home /cluster_bin; do
    echo "cluster-hour: mount $m $(cat "$m/nfsroot-boot-test-export" 2>&1)"
done
touch /cluster_bin/x 2>/dev/null && echo "cluster-hour: /cluster_bin is writable"
(echo 0 >/etc/machine-id) 2>/dev/null && echo "cluster-hour: /etc/machine-id is writable"
last -x -n 3 reboot 2>&1 | sed 's/^/cluster-hour: last /'
for t in $(systemctl list-units --type=timer --all --plain --no-legend | awk '$2 == "loaded" { print $1 }'); do
    s=$(systemctl show -p Unit --value "$t")
    systemctl start "$s"
    echo "cluster-hour: timer $t $s $(systemctl show -p Result --value "$s")"
done
masked=
for l in /etc/systemd/system/*.timer; do
    [ "$(readlink "$l")" = /dev/null ] && masked="$masked ${l##*/}"
done
echo "cluster-hour: masked$masked"
sync
echo "cluster-hour: done"
systemctl poweroff
"#;

/// Not ordered after nfsroot-ready.service: multi-user.target is ordered
/// after what it wants, and the ready service after multi-user.target (a
/// cycle systemd breaks by dropping this unit). The script waits instead.
const HOUR_UNIT: &str = "[Unit]\nDescription=test only: an hour of timers, then power off\n\
     \n[Service]\nType=simple\n\
     ExecStart=/usr/local/sbin/cluster-hour\n\n[Install]\nWantedBy=multi-user.target\n";

/// A file's identity for the comparison: kind, owner, mode; and for files
/// size, mtime and content hash; for links the target. Directories leave
/// out their times (a new entry shows as its own path).
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let walk = walkdir::WalkDir::new(root).into_iter();
    for e in walk.filter_entry(|e| e.path() != skip) {
        let e = e.unwrap();
        let md = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let who = format!("{}:{} {:o}", md.uid(), md.gid(), md.mode());
        let what = if md.is_file() {
            let hash = hex::encode(Sha256::digest(std::fs::read(e.path()).unwrap()));
            format!(
                "file {who} {} {}.{} {hash}",
                md.len(),
                md.mtime(),
                md.mtime_nsec()
            )
        } else if md.is_symlink() {
            format!("link {:?}", std::fs::read_link(e.path()).unwrap())
        } else if md.is_dir() {
            format!("dir {who}")
        } else {
            format!("other {who} {}", md.rdev())
        };
        out.insert(rel, what);
    }
    out
}

/// Paths added, removed or changed between two snapshots.
fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| match (a.get(k), b.get(k)) {
            (None, _) => format!("+ {k}"),
            (_, None) => format!("- {k}"),
            (Some(x), Some(y)) => format!("~ {k} ({x} -> {y})"),
        })
        .collect()
}

/// A copy of the cluster image with the test unit installed, published.
fn cluster_copy() -> TestLayout {
    let built = built_once("cluster", "cluster");
    let l = clone_image(&built, "cluster");
    let img = l.image("cluster");
    let script = img.join("usr/local/sbin/cluster-hour");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, HOUR_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let units = img.join("etc/systemd/system");
    std::fs::create_dir_all(units.join("multi-user.target.wants")).unwrap();
    std::fs::write(units.join("cluster-hour.service"), HOUR_UNIT).unwrap();
    std::os::unix::fs::symlink(
        "../cluster-hour.service",
        units.join("multi-user.target.wants/cluster-hour.service"),
    )
    .unwrap();
    let mut c = nfsroot(&l);
    c.args(["publish", "cluster"]);
    run(c, true);
    l
}

#[test]
fn cluster_profile_boots_and_an_hour_writes_only_its_logs() {
    let l = cluster_copy();
    let img = l.image("cluster");
    // The profile as written: the node reaches its server at 192.168.0.1.
    let cfg = std::fs::read_to_string(l.tftp.join("pxelinux.cfg/nfsroot-cluster")).unwrap();
    assert!(
        cfg.contains(&format!("192.168.0.1:{}", img.display())),
        "{cfg}"
    );
    let etc = l.base.parent().unwrap().join("etc");
    let inv = l.base.parent().unwrap().join("inventory.toml");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(&inv, INVENTORY).unwrap();
    let add = ["hosts", "add", HOST, "--mac", MAC, "--ip", IP];
    crate::seeds::inventory_cmd(&l, &inv, &etc, &add);
    crate::seeds::inventory_cmd(&l, &inv, &etc, &["sync"]);
    let own_logs = img.join("var/log").join(HOST);
    let before = snapshot(&img, &own_logs);
    let (inv, etc) = (inv.to_str().unwrap(), etc.to_str().unwrap());
    let r = boot_test_image(
        &l,
        "cluster",
        &[
            "--mode",
            "pxe",
            "--host",
            HOST,
            "--dhcp",
            "dnsmasq",
            "--inventory",
            inv,
            "--etc-dir",
            etc,
            "--write-root",
            "--until-poweroff",
            "--timeout",
            "480",
        ],
    );
    assert_eq!(r["passed"], true, "boot failed: {r:#}");
    let own_cfg = format!("pxelinux.cfg/01-{}", MAC.replace(':', "-"));
    crate::inventory_boot::assert_check(&r, "host config", &own_cfg);
    crate::inventory_boot::assert_check(&r, "kernel", "cluster/vmlinuz-");
    let f = &r["fields"];
    assert_eq!(f["host"], HOST, "{r:#}");
    assert_eq!(f["ip"], IP);
    assert_eq!(f["root"], "rw");
    // A read-write root keeps close-to-open: nodes write it.
    assert_eq!(f["rootfs"], "nfs,vers=3", "{r:#}");
    // In mount order, which is not the profile's.
    let mut nfs: Vec<&str> = f["nfs"].as_str().unwrap().split(',').collect();
    nfs.sort();
    assert_eq!(nfs, ["/cluster_bin", "/home"], "{r:#}");
    assert_eq!(f["units"], "none", "{r:#}");
    assert_eq!(
        f["machine-id"],
        nfsroot::initramfs::machine_id(MAC).as_str()
    );
    let checks = r["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c[1] == true), "{checks:#?}");
    for name in ["nfs mount", "per-host log", "tmpfs", "hostname", "root"] {
        assert!(checks.iter().any(|c| c[0] == name), "{name}: {checks:#?}");
    }

    // What the test unit printed after the node's report.
    let after: Vec<String> = r["after"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| Some(l.as_str()?.split_once(HOUR)?.1.to_string()))
        .collect();
    eprintln!("the simulated hour on {HOST}:\n  {}", after.join("\n  "));
    assert!(after.iter().any(|l| l == "done"), "{after:#?}");
    for (m, src) in [("/home", "/home"), ("/cluster_bin", "/cluster_bin")] {
        let want = format!("mount {m} 192.168.0.1:{src}");
        assert!(after.contains(&want), "{want}: {after:#?}");
    }
    assert!(!after.iter().any(|l| l.contains("writable")), "{after:#?}");
    let timers: Vec<&String> = after.iter().filter(|l| l.starts_with("timer ")).collect();
    eprintln!("timers triggered: {timers:?}");
    let masked = after.iter().find(|l| l.starts_with("masked")).unwrap();
    // (man-db and logrotate are not in cluster.toml's packages.)
    for t in [
        "apt-daily.timer",
        "dpkg-db-backup.timer",
        "systemd-tmpfiles-clean.timer",
    ] {
        assert!(masked.contains(t), "{t} not masked: {masked}");
    }
    for t in &timers {
        assert!(t.ends_with(" success"), "{t}");
    }

    // The node wrote its own log directory in the shared tree...
    let syslog = std::fs::read_to_string(own_logs.join("syslog")).unwrap();
    assert!(syslog.contains(&format!("boot={}", f["boot"].as_str().unwrap())));
    own_logins(&img, &own_logs, &after);
    // ...and nothing else there.
    let after_tree = snapshot(&img, &own_logs);
    let diff = changed(&before, &after_tree);
    assert!(
        diff.is_empty(),
        "the node wrote the shared tree outside {}:\n{}",
        own_logs.display(),
        diff.join("\n")
    );
}

/// The node's login records, in its log directory: wtmp, btmp, lastlog
/// root:utmp as Debian makes them; wtmp holds this boot's record and its
/// shutdown's (written while it was still bound), and `last` on the node
/// read it.
fn own_logins(img: &Path, own_logs: &Path, after: &[String]) {
    let group = std::fs::read_to_string(img.join("etc/group")).unwrap();
    let utmp: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("utmp:x:")?.split(':').next()?.parse().ok())
        .unwrap();
    for (f, mode) in [("wtmp", 0o664), ("btmp", 0o660), ("lastlog", 0o664)] {
        let md = std::fs::symlink_metadata(own_logs.join(f)).unwrap();
        assert!(md.is_file(), "{f}");
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (0, utmp, mode),
            "{f}"
        );
    }
    let wtmp = std::fs::read(own_logs.join("wtmp")).unwrap();
    for user in [&b"reboot"[..], b"shutdown"] {
        assert!(
            wtmp.windows(user.len()).any(|w| w == user),
            "no {} record in {HOST}'s wtmp",
            String::from_utf8_lossy(user)
        );
    }
    assert!(
        after
            .iter()
            .any(|l| l.starts_with("last reboot ") && l.contains("system boot")),
        "{after:#?}"
    );
}
