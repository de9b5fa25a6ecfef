//! Snapshots through the real binary on the built image: snapshot (zst),
//! verify, sha256sum -c, list, restore into another base dir, diff
//! against the restored tree, and the independent oracles (common.rs's
//! [`tree_oracle`], `tar --compare`) on the same trees. The field-by-field round trips, GNU tar
//! interoperability and hostile archives are in tests/snapshot.rs.

use crate::common::*;
use std::process::Command;

#[test]
fn snapshot_verify_restore_diff() {
    let f = fixture();
    let out_dir = TestLayout::temp();
    let file = out_dir.base.join("minimal.tar.zst");
    let mut c = nfsroot(f);
    c.args([
        "--wait", "--json", "snapshot", "minimal", "--format", "zst", "-o",
    ])
    .arg(&file);
    run(c, true);
    assert!(file.exists());
    let st = Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{}.sha256", file.display()))
        .current_dir(&out_dir.base)
        .status()
        .unwrap();
    assert!(st.success(), "sha256sum -c");
    let mut c = nfsroot(f);
    c.args(["snapshot", "verify"]).arg(&file);
    run(c, true);
    // Restore into a fresh base dir, then nothing differs.
    let l = TestLayout::temp();
    let mut c = nfsroot(&l);
    c.args(["--json", "restore"])
        .arg(&file)
        .args(["--image", "minimal"]);
    let o = run(c, true);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["result"]["entries"].as_u64().unwrap() > 10_000);
    let mut c = nfsroot(&l);
    c.args(["--json", "diff", "minimal"]).arg(&file);
    let o = run(c, true);
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["added", "removed", "modified", "metadata"] {
        assert_eq!(d["result"][k], serde_json::json!([]), "{k}: {d:#}");
    }
    // Second opinions that share nothing with nfsroot's walker: the
    // Python comparer on the restored tree against the image, and GNU tar
    // comparing the snapshot with the image.
    let image = f.image("minimal");
    let restored = l.image("minimal");
    assert_oracle_same(&image, &restored, SNAPSHOT_ORACLE_OPTS, 10_000, "restored");
    let t = tar_compare(&file, &image);
    assert!(t.is_empty(), "tar --compare of the snapshot:\n{t}");
    // A change shows up.
    std::fs::write(l.image("minimal").join("etc/motd"), "changed\n").unwrap();
    let mut c = nfsroot(&l);
    c.args(["diff", "minimal"]).arg(&file);
    let o = run(c, true);
    assert!(String::from_utf8_lossy(&o.stdout).contains("etc/motd"));
    // Restoring over an existing image needs --force; then the change is
    // gone (but for the new version's release stamp), and the admin is
    // told the old tree is kept for the nodes running from it.
    let mut c = nfsroot(&l);
    c.arg("restore").arg(&file).args(["--image", "minimal"]);
    run(c, false);
    let mut c = nfsroot(&l);
    c.arg("restore")
        .arg(&file)
        .args(["--image", "minimal", "--force"]);
    let o = run(c, true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the previous tree is kept as a version"),
        "{err}"
    );
    let mut c = nfsroot(&l);
    c.args(["--json", "diff", "minimal"]).arg(&file);
    let d: serde_json::Value = serde_json::from_slice(&run(c, true).stdout).unwrap();
    let m = d["result"]["modified"].as_array().unwrap();
    assert!(
        m.len() == 1 && m[0].to_string().contains("etc/nfsroot-release"),
        "{d:#}"
    );
}

/// `restore` refuses a device node outside /dev until `--allow-devices`,
/// and lists the setuid and setgid files it restored, as text and JSON.
#[test]
fn restore_devices_flag_and_setid_report() {
    let l = TestLayout::temp();
    let src = l.base.parent().unwrap().join("src");
    let file = l.base.parent().unwrap().join("dev.tar");
    let st = Command::new("sh")
        .arg("-ec")
        .arg(
            "mkdir -p \"$1/etc\" \"$1/usr/bin\" && mknod \"$1/etc/kmem\" c 1 2 && \
             cp /bin/true \"$1/usr/bin/su\" && chmod 4755 \"$1/usr/bin/su\" && \
             tar --numeric-owner -cf \"$2\" -C \"$1\" .",
        )
        .args(["sh"])
        .arg(&src)
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    let mut c = nfsroot(&l);
    c.arg("restore")
        .arg(&file)
        .args(["--image", "img", "--no-checksum"]);
    let o = run(c, false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("member etc/kmem") && err.contains("--allow-devices"),
        "{err}"
    );
    assert!(!l.image("img").exists());
    let mut c = nfsroot(&l);
    c.arg("restore")
        .arg(&file)
        .args(["--image", "img", "--no-checksum", "--allow-devices"]);
    let out = String::from_utf8_lossy(&run(c, true).stdout).into_owned();
    assert!(
        out.contains("1 setuid/setgid files:\n  /usr/bin/su\n"),
        "{out}"
    );
    let mut c = nfsroot(&l);
    c.args(["--json", "restore"]).arg(&file).args([
        "--image",
        "img",
        "--no-checksum",
        "--allow-devices",
        "--force",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&run(c, true).stdout).unwrap();
    assert_eq!(
        v["result"]["setid_files"],
        serde_json::json!(["/usr/bin/su"])
    );
    // The restored image's own snapshots, back to back (most likely in
    // one second: the second gets `<time>.2`): `snapshot list` shows the
    // one `--keep 1` leaves, by name, as text and JSON.
    let mut names = Vec::new();
    for _ in 0..2 {
        let mut c = nfsroot(&l);
        c.args(["--json", "snapshot", "img", "--keep", "1"]);
        let v: serde_json::Value = serde_json::from_slice(&run(c, true).stdout).unwrap();
        let path = v["result"]["path"].as_str().unwrap().to_string();
        names.push(path.rsplit('/').next().unwrap().to_string());
    }
    assert_ne!(names[0], names[1], "two snapshots, two names");
    let mut c = nfsroot(&l);
    c.args(["snapshot", "list", "img"]);
    let text = String::from_utf8_lossy(&run(c, true).stdout).into_owned();
    assert!(
        text.contains(&names[1]) && !text.contains(&names[0]),
        "{text}"
    );
    let mut c = nfsroot(&l);
    c.args(["--json", "snapshot", "list", "img"]);
    let v: serde_json::Value = serde_json::from_slice(&run(c, true).stdout).unwrap();
    let list = v["result"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert!(list[0].to_string().contains(&names[1]), "{v}");
}
