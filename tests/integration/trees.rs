//! Versioned trees (issue 11): an image changes by a new version of its
//! tree while a node runs from the old one. One boot: a node with a
//! read-only root reads files it never read before, one a second (its
//! ready hook wrote the node state file, `nfsroot nodes`' format, into its
//! per-host log directory); meanwhile the test restores a
//! snapshot with --force, runs `update`, then `gc` with keep_trees = 1,
//! letting the node read for a minute after each. The node must see no
//! I/O error and keep its own version to the end; gc must keep that
//! version because the node reported it, and remove the one between.
//! That node idles, so it boots outside the QEMU lock; a second boot
//! (locked) must come up on the version `update` made. (The test is
//! started from boot.rs, so that it runs first.)
//! A second test kills `update` and `gc` at their crash points.

use crate::common::*;
use nfsroot::crashpoint;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Console prefix of the reader's lines.
const READER: &str = "trees-reader: ";

/// The node side: report the tree, then read every file under /usr in
/// order, one a second, until the test writes `stop` into the
/// `trees-stop` file the reader made in its log directory; print a line a
/// minute and every error.
///
/// The file is made by the node and read with O_DIRECT: the name is then
/// known to every cache on the way, and each read goes to the server for
/// the bytes. Dropping a new file into the directory from the server side
/// was the signal before, and in one run the node did not see it for 17
/// minutes: NFS-Ganesha's directory cache and the node's negative-lookup
/// cache both kept the name absent.
const READER_SCRIPT: &str = r#"#!/bin/sh
exec >/dev/console 2>&1
while [ ! -e /run/nfsroot/ready ]; do sleep 1; done
. /etc/nfsroot-release
d=/var/log/hosts/$(hostname)
mkdir -p "$d" && : >"$d/trees-stop"
echo "trees-reader: started build=$BUILD_ID"
told() {
    dd if="$d/trees-stop" iflag=direct bs=512 count=1 2>/dev/null | grep -q stop
}
find /usr -xdev -type f | sort >/run/trees-files
n=0; e=0; stopped=no
while read -r f; do
    if told; then stopped=yes; break; fi
    if ! cat "$f" >/dev/null 2>/run/trees-err; then
        e=$((e + 1)); echo "trees-reader: error $f: $(cat /run/trees-err)"
    fi
    n=$((n + 1))
    if [ $((n % 60)) -eq 0 ]; then echo "trees-reader: minute $((n / 60)) read $n errors $e"; fi
    sleep 1
done </run/trees-files
. /etc/nfsroot-release
u=no; [ -e /etc/trees-updated ] && u=yes
echo "trees-reader: done read=$n errors=$e build=$BUILD_ID updated=$u stopped=$stopped"
sync
systemctl poweroff
"#;

const READER_UNIT: &str = "[Unit]\nDescription=test only: read the root while it changes\n\
     \n[Service]\nType=simple\nExecStart=/usr/local/sbin/trees-reader\n\n\
     [Install]\nWantedBy=multi-user.target\n";

fn install_reader(img: &Path) {
    let script = img.join("usr/local/sbin/trees-reader");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, READER_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let units = img.join("etc/systemd/system");
    std::fs::create_dir_all(units.join("multi-user.target.wants")).unwrap();
    std::fs::write(units.join("trees-reader.service"), READER_UNIT).unwrap();
    std::os::unix::fs::symlink(
        "../trees-reader.service",
        units.join("multi-user.target.wants/trees-reader.service"),
    )
    .unwrap();
}

fn json(l: &TestLayout, args: &[&str]) -> serde_json::Value {
    let mut c = nfsroot(l);
    c.arg("--json").args(args);
    let out = run(c, true);
    eprintln!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["result"].clone()
}

/// The acceptance's minute: how long the node reads on after each step.
const READ_ON: Duration = Duration::from_secs(60);

/// Let the node read on until a minute after `what` ended (at `done`;
/// the test's checks since then count), while its version is no longer
/// current; it must still be running then.
fn node_reads_for(
    done: Instant,
    what: &str,
    boot: &std::thread::ScopedJoinHandle<'_, serde_json::Value>,
) {
    let left = READ_ON.saturating_sub(done.elapsed());
    eprintln!(
        "after {what}: the node reads on for {} s more",
        left.as_secs()
    );
    std::thread::sleep(left);
    assert!(
        !boot.is_finished(),
        "the node stopped within {READ_ON:?} after {what}"
    );
}

fn kept_ids(l: &TestLayout) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(l.base.join(".nfsroot/trees/minimal"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Run as `boot::a_node_keeps_its_tree_through_restore_update_and_gc`,
/// which the test runner starts first (see there).
pub fn a_running_node_keeps_its_tree_through_restore_update_and_gc() {
    let l = clone_fixture();
    let img = l.image("minimal");
    install_reader(&img);
    run(
        {
            let mut c = nfsroot(&l);
            c.args(["-q", "publish", "minimal"]);
            c
        },
        true,
    );
    let snap = l.base.parent().unwrap().join("before.tar.zst");
    run(
        {
            let mut c = nfsroot(&l);
            c.args(["-q", "snapshot", "minimal", "--format", "zst", "-o"])
                .arg(&snap);
            c
        },
        true,
    );
    let v0 = release_field(&img, "BUILD_ID");
    let v0_ino = std::fs::metadata(&img).unwrap().ino();
    // gc's rules are exercised with the smallest keep: only the current
    // version and what a node reported may stay.
    let prof = l.base.join(".nfsroot/profiles/minimal.toml");
    let text = std::fs::read_to_string(&prof).unwrap();
    assert!(text.contains("keep_kernels = 3"), "{text}");
    std::fs::write(
        &prof,
        text.replace("keep_kernels = 3", "keep_kernels = 3\nkeep_trees = 1"),
    )
    .unwrap();
    let state = l.base.join(".logs/minimal/node015/nfsroot-node.state");

    let (r, ids) = std::thread::scope(|s| {
        // Unlocked: the node idles (a file a second) for minutes; other
        // tests' boots run beside it, so it takes one CPU, not two.
        let boot = s.spawn(|| {
            let args = ["--until-poweroff", "--timeout", "1500", "--cpus", "1"];
            boot_test_unlocked(nfsroot(&l), "minimal", &args)
        });
        let started = Instant::now();
        while !state.exists() {
            assert!(!boot.is_finished(), "the node ended before reporting");
            assert!(
                started.elapsed() < Duration::from_secs(1200),
                "no node state"
            );
            std::thread::sleep(Duration::from_secs(2));
        }
        let reported = std::fs::read_to_string(&state).unwrap();
        assert!(reported.contains(&format!("tree={v0}\n")), "{reported}");
        // The module of its boot interface, for a profile's net_drivers.
        assert!(reported.contains("\nnet_driver=virtio_net\n"), "{reported}");

        let r1 = json(
            &l,
            &[
                "restore",
                snap.to_str().unwrap(),
                "--image",
                "minimal",
                "--force",
            ],
        );
        let done = Instant::now();
        let v1 = r1["version"].as_str().unwrap().to_string();
        assert_eq!(r1["previous"], v0.as_str(), "{r1:#}");
        assert_eq!(r1["restored_from"], v0.as_str(), "{r1:#}");
        assert_ne!(v1, v0);
        assert_eq!(release_field(&img, "BUILD_ID"), v1);
        // Moved, not copied: the node's handles name these inodes.
        let kept = l.base.join(".nfsroot/trees/minimal").join(&v0);
        assert_eq!(std::fs::metadata(&kept).unwrap().ino(), v0_ino);
        node_reads_for(done, "restore --force", &boot);

        // The new version also drops the reader, so the next boot is a
        // plain one.
        let cmd = "date > /etc/trees-updated && rm -r /usr/share/doc && \
                   rm /etc/systemd/system/multi-user.target.wants/trees-reader.service";
        let u = json(&l, &["update", "minimal", "--", "sh", "-c", cmd]);
        let done = Instant::now();
        let v2 = u["version"].as_str().unwrap().to_string();
        assert_eq!(u["previous"], v1.as_str(), "{u:#}");
        assert_eq!(release_field(&img, "BUILD_ID"), v2);
        assert!(img.join("etc/trees-updated").exists());
        assert!(!img.join("usr/share/doc").exists());
        assert!(
            kept.join("usr/share/doc").is_dir(),
            "the node's tree changed"
        );
        eprintln!(
            "update: clone {:.1} s, command {:.1} s, total {:.1} s",
            u["clone_seconds"].as_f64().unwrap(),
            u["command_seconds"].as_f64().unwrap(),
            u["seconds"].as_f64().unwrap()
        );
        node_reads_for(done, "update", &boot);

        let dry = json(&l, &["gc", "minimal", "--dry-run"]);
        let d = &dry[0]["decisions"];
        eprintln!("gc --dry-run: {d:#}");
        let why = |id: &str| {
            d.as_array()
                .unwrap()
                .iter()
                .find(|x| x["id"] == id)
                .unwrap_or_else(|| panic!("{id}: {d:#}"))
                .clone()
        };
        assert_eq!(why(&v2)["remove"], false);
        assert_eq!(why(&v0)["remove"], false);
        assert_eq!(why(&v0)["why"], "reported by node015 within 1 h", "{d:#}");
        assert_eq!(why(&v1)["remove"], true);
        assert_eq!(kept_ids(&l), [v0.clone(), v1.clone()], "dry run removed");
        // status says the same: the running node holds v0, nobody v2 yet.
        let st = json(&l, &["status", "minimal"]);
        let used = |id: &str| {
            let t = st["trees"].as_array().unwrap().iter();
            let row = t.clone().find(|t| t["id"] == id);
            row.unwrap_or_else(|| panic!("{id}: {st:#}"))["used_by"].clone()
        };
        assert_eq!(used(&v0), serde_json::json!(["node015"]), "{st:#}");
        assert_eq!(used(&v2), serde_json::json!([]), "{st:#}");
        json(&l, &["gc", "minimal"]);
        let done = Instant::now();
        assert_eq!(kept_ids(&l), std::slice::from_ref(&v0));
        node_reads_for(done, "gc", &boot);

        // Into the file the node made and reads (see READER_SCRIPT).
        let stop = state.with_file_name("trees-stop");
        assert!(stop.exists(), "the reader made no trees-stop");
        std::fs::write(&stop, "stop\n").unwrap();
        (boot.join().unwrap(), (v0, v2))
    });
    let (v0, v2) = ids;
    assert_boot_passed(&r);
    assert_eq!(r["fields"]["build"], v0.as_str(), "{r:#}");
    let after: Vec<String> = r["after"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| Some(l.as_str()?.split_once(READER)?.1.to_string()))
        .collect();
    eprintln!(
        "the node while its image changed:\n  {}",
        after.join("\n  ")
    );
    let errors: Vec<&String> = after.iter().filter(|l| l.starts_with("error ")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let done = after
        .iter()
        .find(|l| l.starts_with("done "))
        .unwrap_or_else(|| panic!("the reader did not finish: {after:#?}"));
    // Its own version to the end, without the update's change, still
    // reading when the test stopped it (not out of files), a minute after
    // gc; it was also running at the end of each step's minute (checked
    // in the loop above), with no error line at any time.
    assert!(
        done.ends_with(&format!("errors=0 build={v0} updated=no stopped=yes")),
        "{done}"
    );
    // The next boot mounts the stable path, which holds the new version.
    let cfg = std::fs::read_to_string(l.tftp.join("pxelinux.cfg/nfsroot-minimal")).unwrap();
    assert!(cfg.contains(&img.display().to_string()), "{cfg}");
    let st = json(&l, &["status", "minimal"]);
    let trees = st["trees"].as_array().unwrap();
    assert_eq!(trees[0]["id"], v2.as_str(), "{st:#}");
    assert_eq!(trees[0]["current"], true);
    assert_eq!(trees[1]["id"], v0.as_str(), "{st:#}");
    assert!(
        trees[1]["size_bytes"].as_u64().unwrap() > 50_000_000,
        "{st:#}"
    );
    // The next boot (one, locked as usual) comes up on the new version:
    // its node line and the state file its ready hook writes say so
    // (after the line, before the analysis ends: so with the analysis).
    let r = boot_test_analysed(&l, &[]);
    assert_boot_passed(&r);
    assert_eq!(r["fields"]["build"], v2.as_str(), "{r:#}");
    let reported = std::fs::read_to_string(&state).unwrap();
    assert!(reported.contains(&format!("tree={v2}\n")), "{reported}");
}

/// The points `update` and `gc` pass, each killed once: the image is
/// always a complete tree (the old or the new version), and the next run
/// cleans up and succeeds.
pub const TREES_POINTS: &[&str] = &["update.cloned", "update.ready", "swap.kept", "gc.remove"];

fn die(l: &TestLayout, args: &[&str], point: &str) {
    let mut c = nfsroot(l);
    c.env(crashpoint::ENV, point).args(args);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{point}: {err}");
    let name = point.split('@').next().unwrap();
    assert!(
        err.contains(&format!("nfsroot: crash point {name}\n")),
        "{err}"
    );
}

#[test]
fn update_and_gc_die_at_their_points() {
    let l = clone_fixture();
    let img = l.image("minimal");
    let mut c = nfsroot(&l);
    c.args(["-q", "publish", "minimal"]);
    run(c, true);
    let upd = ["-q", "update", "minimal", "--", "touch", "/etc/updated"];
    let clone = l.base.join(".nfsroot/staging/minimal/update");
    let v0 = release_field(&img, "BUILD_ID");
    let cfg = l.tftp.join("pxelinux.cfg/nfsroot-minimal");
    let complete = |p: &str| {
        assert!(img.join("etc/nfsroot-release").is_file(), "{p}");
        assert!(
            img.join("usr/bin/sh").exists() || img.join("bin/sh").exists(),
            "{p}"
        );
        let c = std::fs::read_to_string(&cfg).unwrap();
        assert!(c.contains(&img.display().to_string()), "{p}: {c}");
    };
    // Before the swap: the old version stays current, the clone goes
    // with the next run.
    for p in ["update.cloned", "update.ready", "swap.before_exchange"] {
        die(&l, &upd, p);
        complete(p);
        assert_eq!(release_field(&img, "BUILD_ID"), v0, "{p}");
        assert!(!img.join("etc/updated").exists(), "{p}");
    }
    // After the exchange, and after the old tree was kept: the new one is
    // current, the next run finishes the switch (keeps the old one). That
    // run passes `swap.kept` first while finishing the previous switch.
    let mut ids = vec![v0.clone()];
    for p in ["swap.after_exchange", "swap.kept@2"] {
        die(&l, &upd, p);
        complete(p);
        let now = release_field(&img, "BUILD_ID");
        assert!(!ids.contains(&now), "{p}");
        assert!(img.join("etc/updated").exists(), "{p}");
        ids.push(now);
    }
    run(
        {
            let mut c = nfsroot(&l);
            c.args(upd);
            c
        },
        true,
    );
    assert!(!clone.exists(), "{} left", clone.display());
    let mut kept = kept_ids(&l);
    assert_eq!(kept.len(), 3, "{kept:?}");
    ids.sort();
    kept.retain(|k| !ids.contains(k));
    assert!(
        kept.is_empty(),
        "versions kept under other ids: {kept:?} vs {ids:?}"
    );
    // gc (keep_trees 3) removes the oldest; killed there, the version is
    // already no version, and the next gc finishes it.
    die(&l, &["-q", "gc", "minimal"], "gc.remove");
    assert_eq!(
        kept_ids(&l).iter().filter(|k| !k.starts_with('.')).count(),
        2
    );
    run(
        {
            let mut c = nfsroot(&l);
            c.args(["-q", "gc", "minimal"]);
            c
        },
        true,
    );
    let left = kept_ids(&l);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&v0), "{left:?}");
    complete("after gc");
}

/// `snapshot --tree` and `diff --tree` read a kept version through its
/// confined view (default: the current tree); an unknown id is refused
/// naming the known ones, writing nothing. No boot, a tiny image: the
/// current tree `B2` and kept version `B1` as the layout holds them.
#[test]
fn snapshot_and_diff_read_a_named_version() {
    let l = TestLayout::temp();
    let cur = l.image("img");
    let kept = l.base.join(".nfsroot/trees/img/B1");
    for (root, id) in [(&cur, "B2"), (&kept, "B1")] {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/nfsroot-release"),
            format!("NAME=img\nBUILD_ID={id}\n"),
        )
        .unwrap();
    }
    std::fs::write(cur.join("etc/only-in-b2"), "new\n").unwrap();
    // A link in the kept tree resolves inside it, never to the host.
    std::os::unix::fs::symlink("/etc/only-in-b2", kept.join("etc/link")).unwrap();
    let out = l.base.parent().unwrap();
    let snap = |tree: Option<&str>, file: &str| {
        let mut c = nfsroot(&l);
        c.args(["-q", "snapshot", "img", "--format", "zst", "-o"])
            .arg(out.join(file));
        if let Some(t) = tree {
            c.args(["--tree", t]);
        }
        c
    };
    run(snap(Some("B1"), "b1.tar.zst"), true);
    run(snap(None, "b2.tar.zst"), true);
    let man: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("b1.tar.zst.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(man["release"]["BUILD_ID"], "B1", "{man:#}");
    let entries = man["entries"].as_object().unwrap();
    assert!(entries.keys().any(|k| k.ends_with("etc/link")), "{man:#}");
    assert!(
        !entries.keys().any(|k| k.ends_with("only-in-b2")),
        "{man:#}"
    );

    let diff = |file: &str, tree: Option<&str>| {
        let mut args = vec!["diff", "img", file];
        args.extend(tree.map(|t| ["--tree", t]).iter().flatten());
        json(&l, &args)
    };
    let b1 = out.join("b1.tar.zst");
    let b1 = b1.to_str().unwrap();
    let same = diff(b1, Some("B1"));
    assert_eq!(same["added"], serde_json::json!([]), "{same:#}");
    assert_eq!(same["removed"], serde_json::json!([]), "{same:#}");
    assert_eq!(same["modified"], serde_json::json!([]), "{same:#}");
    // The current tree (by default and by its id) against B1's archive.
    for t in [None, Some("B2")] {
        let d = diff(b1, t);
        assert!(d["added"].to_string().contains("only-in-b2"), "{d:#}");
        assert!(d["removed"].to_string().contains("etc/link"), "{d:#}");
    }

    for (args, what) in [
        (vec!["snapshot", "img", "--tree", "B0", "-o"], "snapshot"),
        (vec!["diff", "img", b1, "--tree", "B0"], "diff"),
        (vec!["snapshot", "img", "--tree", "../B1", "-o"], "snapshot"),
    ] {
        let mut c = nfsroot(&l);
        c.args(&args);
        if what == "snapshot" {
            c.arg(out.join("bad.tar.zst"));
        }
        let o = run(c, false);
        let err = String::from_utf8_lossy(&o.stderr);
        if args.contains(&"B0") {
            assert!(
                err.contains("image img has no tree version B0 (versions: B2, B1)"),
                "{args:?}: {err}"
            );
        } else {
            assert!(err.contains("invalid tree version \"../B1\""), "{err}");
        }
        assert!(!out.join("bad.tar.zst").exists(), "{args:?}");
    }
}

/// An XFS file system (`reflink=1`) in a loop file mounted on a layout's
/// base directory, unmounted (and its loop device freed) at drop.
struct XfsBase(std::path::PathBuf);

impl XfsBase {
    fn mount(l: &TestLayout) -> Self {
        let img = l.base.parent().unwrap().join("xfs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(320 << 20)
            .unwrap();
        let out = std::process::Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img)
            .output()
            .expect("no mkfs.xfs: apt-get install xfsprogs (scripts/setup installs it)");
        assert!(out.status.success(), "mkfs.xfs: {out:?}");
        let out = std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&l.base)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {out:?}");
        XfsBase(l.base.clone())
    }
}

impl Drop for XfsBase {
    fn drop(&mut self) {
        let out = std::process::Command::new("umount").arg(&self.0).output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("umount {}: {out:?}", self.0.display());
        }
    }
}

/// `status` reports each version's size and the bytes it shares on disk
/// with the next version listed: on XFS with reflinks, a kept version
/// cloned as `update` clones (`cp --reflink`) shares every file but the
/// one rewritten; on the work directory's file system (no reflinks) the
/// field is absent.
#[test]
fn status_shows_the_space_versions_share_with_reflinks() {
    let l = TestLayout::temp();
    let _xfs = XfsBase::mount(&l);
    let cur = l.image("img");
    std::fs::create_dir_all(cur.join("etc")).unwrap();
    std::fs::create_dir_all(cur.join("usr/lib")).unwrap();
    std::fs::write(cur.join("etc/nfsroot-release"), "NAME=img\nBUILD_ID=B1\n").unwrap();
    // Not a whole number of blocks: shared bytes count up to the length.
    let big: Vec<u8> = (0..(4u32 << 20) + 100).map(|i| (i % 251) as u8).collect();
    std::fs::write(cur.join("usr/lib/big"), &big).unwrap();
    std::fs::write(cur.join("usr/lib/changed"), &big[..1 << 20]).unwrap();
    let kept = l.base.join(".nfsroot/trees/img/B1");
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    let out = std::process::Command::new("cp")
        .args(["-a", "--reflink=always"])
        .arg(&cur)
        .arg(&kept)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp: {out:?}");
    // The current tree is now B2: one file rewritten, one added.
    std::fs::write(cur.join("etc/nfsroot-release"), "NAME=img\nBUILD_ID=B2\n").unwrap();
    std::fs::write(cur.join("usr/lib/changed"), &big[1..(1 << 20) + 1]).unwrap();
    std::fs::write(cur.join("usr/lib/new"), &big[..1 << 20]).unwrap();
    let st = json(&l, &["status", "img"]);
    let trees = st["trees"].as_array().unwrap();
    assert_eq!(trees[0]["id"], "B2", "{st:#}");
    assert_eq!(trees[0]["shared_with"], "B1", "{st:#}");
    // big is shared block for block; changed, new and the release
    // stamp (rewritten) are not.
    assert_eq!(trees[0]["shared_bytes"], (4u64 << 20) + 100, "{st:#}");
    assert!(trees[1].get("shared_bytes").is_none(), "{st:#}");
    assert_eq!(trees[1]["size_bytes"].as_u64().unwrap(), (5 << 20) + 121);
    let out = nfsroot(&l).args(["status", "img"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("(4 MB shared with B1)"), "{text}");
}
