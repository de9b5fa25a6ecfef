//! `nfsroot nodes` through the binary on a fake layout (no boot): an
//! image with a release stamp, an inventory, and state files as nodes
//! write them (and as a hostile node might) in the image's per-host log
//! directory. The real boot's files are checked in inventory_boot.rs.

use crate::common::*;
use std::path::Path;

const BOOT_ID: &str = "0f6c2d3a-1b2c-4d5e-8f90-a1b2c3d4e5f6";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn write_state(dir: &Path, host: &str, build: &str, seen: i64) {
    std::fs::create_dir_all(dir.join(host)).unwrap();
    std::fs::write(
        dir.join(host).join("nfsroot-node.state"),
        format!(
            "host={host}\naddress=10.0.2.40\nimage=minimal\nbuild={build}\ntree={build}\n\
             kernel=6.1.0-28-amd64\nboot_id={BOOT_ID}\nboot_time={}\nuptime=600\nseen={seen}\n",
            seen - 600
        ),
    )
    .unwrap();
}

fn nodes_json(l: &TestLayout, args: &[&str]) -> serde_json::Value {
    let mut c = nfsroot(l);
    c.args(["--json", "nodes"]).args(args);
    let out = run(c, true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["version"].as_u64(), v["command"].as_str()),
        (Some(1), Some("nodes"))
    );
    v["result"].clone()
}

#[test]
fn nodes_lists_inventory_hosts_and_strays_from_state_files() {
    let l = TestLayout::temp();
    let etc = l.image("minimal").join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("nfsroot-release"), "NAME=minimal\nBUILD_ID=B2\n").unwrap();
    let inv = l.etc().join("nfsroot/inventory.toml");
    write_qemu_inventory(&inv);
    let mut text = std::fs::read_to_string(&inv).unwrap();
    for (i, h) in ["n1", "n2", "n3", "n4", "n5"].iter().enumerate() {
        text.push_str(&format!(
            "{h} = {{ mac = \"52:54:00:00:00:0{i}\", ip = \"10.0.2.4{i}\" }}\n"
        ));
    }
    std::fs::write(&inv, text).unwrap();
    // The default log export of a read-only image (no saved profile: the
    // defaults).
    let logs = l.base.join(".logs/minimal");
    write_state(&logs, "n1", "B2", now() - 10);
    write_state(&logs, "n2", "B1", now() - 10);
    write_state(&logs, "n3", "B2", now() - 7200);
    std::fs::create_dir_all(logs.join("n4")).unwrap();
    std::os::unix::fs::symlink(
        "../n1/nfsroot-node.state",
        logs.join("n4/nfsroot-node.state"),
    )
    .unwrap();
    std::fs::create_dir_all(logs.join("n5")).unwrap();
    std::fs::write(logs.join("n5/nfsroot-node.state"), vec![b'a'; 1 << 20]).unwrap();
    write_state(&logs, "ghost", "B2", now() - 10);

    let r = nodes_json(&l, &[]);
    assert_eq!(r["stale_after"], 900);
    let rows = r["nodes"].as_array().unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["host"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("n1", "running"),
            ("n2", "stale"),
            ("n3", "not_seen"),
            ("n4", "bad_state"),
            ("n5", "bad_state"),
            ("ghost", "unknown_host"),
        ],
        "{r:#}"
    );
    assert_eq!(rows[0]["node"]["boot_id"], BOOT_ID);
    assert_eq!(rows[0]["node"]["kernel"], "6.1.0-28-amd64");
    assert_eq!(rows[0]["current_tree"], "B2");
    assert!(
        rows[3]["detail"].as_str().unwrap().contains("symlink"),
        "{r:#}"
    );
    assert!(
        rows[4]["detail"].as_str().unwrap().contains("at most 4096"),
        "{r:#}"
    );

    let mut c = nfsroot(&l);
    c.arg("nodes");
    let out = String::from_utf8(run(c, true).stdout).unwrap();
    for want in [
        "HOST ",
        "stale: reboot to update (runs tree B1; the image's is B2)",
        "unknown host",
        "bad state file",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("n1 ") && l.ends_with("running")),
        "{out}"
    );

    // Past the threshold nobody runs.
    let r = nodes_json(&l, &["--stale-after", "0s"]);
    assert!(
        r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] != "running" && n["status"] != "stale"),
        "{r:#}"
    );
    let mut c = nfsroot(&l);
    c.args(["nodes", "--stale-after", "5w"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"5w\" is not a duration"));
    // No inventory: an error naming the file.
    std::fs::remove_file(&inv).unwrap();
    let mut c = nfsroot(&l);
    c.arg("nodes");
    let err = String::from_utf8(run(c, false).stderr).unwrap();
    assert!(err.contains("inventory.toml"), "{err}");
}
