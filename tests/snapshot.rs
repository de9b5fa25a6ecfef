//! Snapshot and restore end to end, through the library's `run_*`
//! functions (the CLI is wired separately): round trips of a tree holding
//! every kind of entry, GNU tar interoperability both ways, hostile
//! archives, diff, locking, a full disk, and a real image when one is at
//! hand (`NFSROOT_TEST_IMAGE`, default: the shared fixture image).
//!
//! Needs root and the host tools setfacl (acl), setfattr (attr), setcap
//! (libcap2-bin), tar and sha256sum.

#[path = "integration/common.rs"]
mod common;

use nfsroot::image::Layout;
use nfsroot::snapshot::{
    self, Compression, DiffOpts, EntryMeta, RestoreOpts, SnapshotOpts, VerifyOpts, diff_maps,
    scan_tree,
};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The host tools the scripts here run, and the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("setfacl", "acl"),
    ("setfattr", "attr"),
    ("setcap", "libcap2-bin"),
    ("tar", "tar"),
    ("bsdtar", "libarchive-tools"),
    ("sha256sum", "coreutils"),
    ("mknod", "coreutils"),
    ("mkfifo", "coreutils"),
    ("truncate", "coreutils"),
    ("dd", "coreutils"),
];

/// Run `script` with `sh -e`, first failing by name and package on a tool
/// of [`TOOLS`] it uses that the host lacks (not a shell's "not found").
fn sh(script: &str) {
    let words: Vec<&str> = script
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .collect();
    for (tool, package) in TOOLS {
        assert!(
            !words.contains(tool) || nfsroot::exec::find_tool(tool).is_some(),
            "{tool} is missing: apt-get install {package} (scripts/setup installs it)"
        );
    }
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn layout(base: &Path) -> Layout {
    Layout {
        base_dir: base.to_path_buf(),
        tftp_root: base.join("tftp"),
        cache_dir: base.join("cache"),
    }
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// A tree with every kind of entry a snapshot must keep.
fn make_tree(root: &Path) -> std::os::unix::net::UnixListener {
    fs::create_dir_all(root).unwrap();
    let r = q(root);
    sh(&format!(
        r#"cd {r}
mkdir -p etc boot usr/bin empty/dir proc/1 dev tmp/junk run sys 'näme with space'
echo stamp > etc/nfsroot-release
printf 'hello\n' > etc/plain
: > etc/empty-file
echo kernel > boot/vmlinuz-6.1.0-9-amd64
echo kernel > boot/vmlinuz-6.1.0-10-amd64
echo ignored > proc/1/status
echo ignored > tmp/junk/x
cp /bin/true usr/bin/ping
setcap cap_net_raw+ep usr/bin/ping
cp /bin/true usr/bin/suid; chmod 4755 usr/bin/suid
cp /bin/true usr/bin/sgid; chmod 2711 usr/bin/sgid
mkdir shared; chmod 3777 shared
echo owned > owned; chown 1234:5678 owned
echo big > bigid; chown 3000000:3000001 bigid
echo data > acl-file; setfacl -m u:1234:rwx,g:55:r-x acl-file
mkdir acl-dir; setfacl -d -m u:1234:rwx,g:55:r-x acl-dir; setfacl -m u:99:r-x acl-dir
echo x > xattr-file; setfattr -n user.color -v blue xattr-file
setfattr -n trusted.secret -v 0x00ff10 xattr-file
ln -s etc/plain rel-link
ln -s /etc/passwd abs-link
ln -s does/not/exist dangling
echo linked > hl1; ln hl1 hl2; mkdir -p deep/er; ln hl1 deep/er/hl3
mknod chr c 1 3
mknod blk b 7 0
mkfifo fifo
truncate -s 64M sparse
printf middle | dd of=sparse bs=1 seek=20000000 conv=notrunc status=none
printf tail | dd of=sparse bs=1 seek=67108000 conv=notrunc status=none
truncate -s 1G all-hole
long=$(printf 'd%.0s' $(seq 1 60))
mkdir -p "$long/$long/$long"
echo long > "$long/$long/$long/$(printf 'f%.0s' $(seq 1 120))"
ln -s "$long/$long" "$(printf 'l%.0s' $(seq 1 110))"
touch -d '2001-02-03 04:05:06.123456789' etc/plain
touch -h -d '2002-02-03 04:05:06.5' rel-link
touch -d '1969-07-20 20:17:40.25' owned
touch -d '2003-01-01 00:00:00' empty/dir empty
"#
    ));
    std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap()
}

fn assert_same(a: &BTreeMap<PathBuf, EntryMeta>, b: &BTreeMap<PathBuf, EntryMeta>, what: &str) {
    let d = diff_maps(a, b);
    assert!(d.is_empty(), "{what}: trees differ: {d:#?}");
}

/// Two known libarchive 3.6 quirks, not ours (it does the same with GNU
/// tar's archives): bsdtar leaves the mtime of `.` alone, and reads and
/// writes a negative fractional pax time (-14182939.75) as -14182938.25.
fn quirks(m: &BTreeMap<PathBuf, EntryMeta>) -> BTreeMap<PathBuf, EntryMeta> {
    let mut m = m.clone();
    for (k, e) in m.iter_mut() {
        if k == Path::new(".") || (e.mtime < 0 && e.mtime_nsec != 0) {
            (e.mtime, e.mtime_nsec) = (0, 0);
        }
    }
    m
}

fn snap(l: &Layout, image: &str, format: Compression) -> snapshot::SnapshotResult {
    snapshot::run_snapshot(
        l,
        &SnapshotOpts {
            image: Some(image.into()),
            format,
            threads: Some(2),
            ..Default::default()
        },
    )
    .unwrap()
}

fn roundtrip(format: Compression) {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let src = base.join("img");
    let _sock = make_tree(&src);
    let before = scan_tree(&src).unwrap();
    // Everything the tree holds is there, mount point contents are not.
    for k in [
        "usr/bin/ping",
        "chr",
        "blk",
        "fifo",
        "sparse",
        "proc",
        "tmp",
    ] {
        assert!(before.contains_key(Path::new(k)), "{k}");
    }
    assert!(!before.contains_key(Path::new("proc/1")));
    assert!(!before.contains_key(Path::new("sock")));
    assert!(
        before[Path::new("usr/bin/ping")]
            .xattrs
            .contains_key("security.capability")
    );
    assert!(
        before[Path::new("acl-dir")]
            .xattrs
            .contains_key("system.posix_acl_default")
    );
    assert_eq!(
        before[Path::new("hl2")].link_group.as_deref(),
        Some("deep/er/hl3")
    );

    let r = snap(&l, "img", format);
    assert!(
        r.path.starts_with(l.snapshots_dir("img")),
        "{}",
        r.path.display()
    );
    let name = r.path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("img-") && name.contains("-6.1.0-10-amd64.tar."),
        "{name}"
    );
    assert!(
        r.notes.iter().any(|n| n.contains("socket /sock")),
        "{:?}",
        r.notes
    );
    assert_eq!(r.sparse_files, 2);
    // The tree was not touched by reading it.
    assert_same(&before, &scan_tree(&src).unwrap(), "source after snapshot");
    // sha256sum -c accepts the checksum file.
    sh(&format!(
        "cd {} && sha256sum -c --quiet {name}.sha256",
        q(r.path.parent().unwrap())
    ));
    let man = snapshot::read_manifest(&r.path).unwrap();
    assert_eq!(man.kernels, ["6.1.0-9-amd64", "6.1.0-10-amd64"]);
    assert_same(&before, &man.entries, "manifest");
    let v = snapshot::run_verify(&VerifyOpts {
        file: r.path.clone(),
    })
    .unwrap();
    assert!(v.manifest_checked);

    restore_checks(&l, &r.path, &src, &before);
    other_extractors_agree(d.path(), &r.path, &src, &before);

    // snapshot list sees it.
    let list = snapshot::run_list(
        &l,
        &snapshot::ListOpts {
            image: Some("img".into()),
        },
    )
    .unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].has_checksum && list[0].has_manifest);
}

/// Restore `archive` (a snapshot of `src`, scanned as `before`) into a new
/// image, then over it: devices outside /dev need the flag, setid files
/// are listed, and the tree matches by nfsroot's walker, the independent
/// oracle and GNU tar's compare, holes included.
fn restore_checks(l: &Layout, archive: &Path, src: &Path, before: &BTreeMap<PathBuf, EntryMeta>) {
    // Restore into a new image, then over it with --force.
    // The tree holds device nodes outside /dev (blk, chr): refused by
    // default, naming the first.
    let e = snapshot::run_restore(
        l,
        &RestoreOpts {
            file: archive.to_path_buf(),
            image: Some("copy".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("member blk") && msg.contains("--allow-devices"),
        "{msg}"
    );
    assert!(!l.base_dir.join("copy").exists() && !l.staging_dir("copy").exists());
    let opts = RestoreOpts {
        file: archive.to_path_buf(),
        image: Some("copy".into()),
        allow_devices: true,
        ..Default::default()
    };
    let rr = snapshot::run_restore(l, &opts).unwrap();
    assert!(!rr.replaced);
    // Setuid and setgid files are kept and listed.
    assert_eq!(rr.setid_files, ["/usr/bin/sgid", "/usr/bin/suid"]);
    assert!(
        rr.text()
            .contains("2 setuid/setgid files:\n  /usr/bin/sgid\n")
    );
    let json = serde_json::to_value(&rr).unwrap();
    assert_eq!(json["setid_files"][1], "/usr/bin/suid");
    let copy = l.base_dir.join("copy");
    assert_same(before, &scan_tree(&copy).unwrap(), "restored");
    // Second opinions that share nothing with nfsroot's walker.
    let oracle_opts = common::SNAPSHOT_ORACLE_OPTS;
    common::assert_oracle_same(src, &copy, oracle_opts, before.len(), "restored");
    let t = common::tar_compare(archive, src);
    assert!(t.is_empty(), "tar --compare of the snapshot:\n{t}");
    let e = snapshot::run_restore(l, &opts).unwrap_err();
    assert!(format!("{e:#}").contains("--force"), "{e:#}");
    let rr = snapshot::run_restore(
        l,
        &RestoreOpts {
            force: true,
            ..opts
        },
    )
    .unwrap();
    assert!(rr.replaced);
    assert_same(before, &scan_tree(&copy).unwrap(), "restored over");
    // Holes stay holes.
    let m = fs::metadata(copy.join("sparse")).unwrap();
    assert!(m.blocks() * 512 < 1 << 20, "sparse file lost its holes");
    assert!(fs::metadata(copy.join("all-hole")).unwrap().blocks() < 64);
    assert!(!l.staging_dir("copy").exists(), "staging left behind");
}

/// GNU tar and bsdtar extract `archive` (a snapshot of `src`, whose
/// nfsroot scan is `before`) into the same tree, by nfsroot's walker and
/// by the independent oracle.
fn other_extractors_agree(
    dir: &Path,
    archive: &Path,
    src: &Path,
    before: &BTreeMap<PathBuf, EntryMeta>,
) {
    // GNU tar extracts the same tree.
    let g = dir.join("gnu");
    fs::create_dir(&g).unwrap();
    sh(&format!(
        "tar --xattrs --xattrs-include='*' --acls -xpf {} -C {}",
        q(archive),
        q(&g)
    ));
    assert_same(before, &scan_tree(&g).unwrap(), "GNU tar extraction");
    common::assert_oracle_same(
        src,
        &g,
        common::SNAPSHOT_ORACLE_OPTS,
        before.len(),
        "GNU tar extraction",
    );
    let gm = fs::metadata(g.join("sparse")).unwrap();
    assert!(
        gm.blocks() * 512 < 1 << 20,
        "GNU tar did not see the sparse map"
    );

    // So does bsdtar (libarchive-tools; scripts/setup installs it).
    {
        assert!(
            nfsroot::exec::find_tool("bsdtar").is_some(),
            "no bsdtar: run scripts/setup (it installs libarchive-tools)"
        );
        let b = dir.join("bsd");
        fs::create_dir(&b).unwrap();
        sh(&format!(
            "bsdtar --xattrs --acls --numeric-owner -xpf {} -C {}",
            q(archive),
            q(&b)
        ));
        assert_same(
            &quirks(before),
            &quirks(&scan_tree(&b).unwrap()),
            "bsdtar extraction",
        );
    }
}

#[test]
fn roundtrip_every_kind_gz() {
    roundtrip(Compression::Gzip);
}

#[test]
fn roundtrip_every_kind_zst() {
    roundtrip(Compression::Zstd);
}

#[test]
fn bsdtar_archive_restores() {
    assert!(
        nfsroot::exec::find_tool("bsdtar").is_some(),
        "no bsdtar: run scripts/setup (it installs libarchive-tools)"
    );
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let src = d.path().join("src");
    let _sock = make_tree(&src);
    let before = scan_tree(&src).unwrap();
    let a = d.path().join("bsd.tar.zst");
    sh(&format!(
        "bsdtar --format=pax --xattrs --acls --numeric-owner --zstd -cf {} -C {} . 2>/dev/null \
         || [ $? = 1 ]; sha256sum {} > {}.sha256",
        q(&a),
        q(&src),
        q(&a),
        q(&a)
    ));
    let r = snapshot::run_restore(
        &l,
        &RestoreOpts {
            file: a,
            image: Some("frombsd".into()),
            allow_devices: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_same(
        &quirks(&before),
        &quirks(&scan_tree(&r.path).unwrap()),
        "bsdtar archive",
    );
}

#[test]
fn gnu_tar_archive_restores() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let src = d.path().join("src");
    let _sock = make_tree(&src);
    let before = scan_tree(&src).unwrap();
    for (flags, ext) in [
        ("--xattrs --acls -czpS", "tgz"),
        ("-cpS --format=gnu", "tar"),
        ("--xattrs --acls -cp", "tar"),
    ] {
        let a = d.path().join(format!("gnu{}.{ext}", flags.len()));
        sh(&format!(
            "tar --numeric-owner {flags} -f {} -C {} . 2>/dev/null || [ $? = 1 ]; \
             cd {} && sha256sum {} > {}.sha256",
            q(&a),
            q(&src),
            q(d.path()),
            a.file_name().unwrap().to_string_lossy(),
            a.file_name().unwrap().to_string_lossy(),
        ));
        let r = snapshot::run_restore(
            &l,
            &RestoreOpts {
                file: a.clone(),
                image: Some("fromgnu".into()),
                force: true,
                allow_devices: true,
                ..Default::default()
            },
        )
        .unwrap();
        let after = scan_tree(&r.path).unwrap();
        if flags.contains("gnu") {
            // The gnu format has no xattrs or ACLs and whole-second mtimes;
            // compare what it can carry.
            assert_eq!(after.len(), before.len(), "{flags}");
            for (k, m) in &before {
                let a = &after[k];
                assert_eq!(
                    (
                        m.kind, m.mode, m.uid, m.gid, m.size, &m.sha256, &m.target, m.rdev, m.mtime
                    ),
                    (
                        a.kind, a.mode, a.uid, a.gid, a.size, &a.sha256, &a.target, a.rdev, a.mtime
                    ),
                    "{flags} {}",
                    k.display()
                );
            }
        } else {
            assert_same(&before, &after, flags);
        }
    }
}

/// A raw ustar member, for archives our writer would never produce.
fn raw_member(out: &mut Vec<u8>, name: &str, flag: u8, size: u64, link: &str, data: &[u8]) {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = flag;
    b[157..157 + link.len()].copy_from_slice(link.as_bytes());
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&c| u32::from(c)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&b);
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

#[test]
fn hostile_archives_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let img = base.join("live");
    fs::create_dir_all(img.join("etc")).unwrap();
    fs::write(img.join("etc/keep"), "live").unwrap();
    let outside = d.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let live_before = scan_tree(&img).unwrap();
    let outside_s = outside.display().to_string();

    let end = vec![0u8; 1024];
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut a = Vec::new();
    raw_member(&mut a, "./", b'5', 0, "", &[]);
    raw_member(&mut a, &format!("{outside_s}/abs"), b'0', 3, "", b"abs");
    a.extend(&end);
    cases.push(("absolute", a, "absolute path"));
    let mut a = Vec::new();
    raw_member(&mut a, "a/../../dotdot", b'0', 3, "", b"bad");
    a.extend(&end);
    cases.push(("dotdot", a, "'..'"));
    let mut a = Vec::new();
    raw_member(&mut a, "lnk", b'2', 0, &outside_s, &[]);
    raw_member(&mut a, "lnk/pwned", b'0', 3, "", b"own");
    a.extend(&end);
    cases.push(("through-symlink", a, "lnk/pwned"));
    let mut a = Vec::new();
    raw_member(&mut a, "hl", b'1', 0, &format!("{outside_s}/x"), &[]);
    a.extend(&end);
    cases.push(("hardlink-absolute", a, "member hl"));
    let mut a = Vec::new();
    raw_member(&mut a, "lnk", b'2', 0, &outside_s, &[]);
    raw_member(&mut a, "hl", b'1', 0, "lnk/x", &[]);
    a.extend(&end);
    cases.push(("hardlink-through-symlink", a, "member hl"));
    let mut a = Vec::new();
    raw_member(&mut a, "liar", b'0', 10, "", &[b'x'; 1000]);
    raw_member(&mut a, "next", b'0', 1, "", b"n");
    a.extend(&end);
    cases.push(("size-too-small", a, "after liar"));
    let mut a = Vec::new();
    raw_member(&mut a, "liar", b'0', 100_000, "", b"short");
    a.extend(&end);
    cases.push(("size-too-big", a, "liar"));
    let mut a = Vec::new();
    raw_member(&mut a, "ok", b'0', 3, "", b"abc");
    raw_member(&mut a, "cut", b'0', 4000, "", &[b'y'; 4000]);
    a.truncate(a.len() - 2048);
    cases.push(("truncated", a, "cut"));

    for (label, bytes, want) in cases {
        let p = d.path().join(format!("{label}.tar"));
        fs::write(&p, &bytes).unwrap();
        sh(&format!(
            "cd {} && sha256sum {label}.tar > {label}.tar.sha256",
            q(d.path())
        ));
        let e = snapshot::run_restore(
            &l,
            &RestoreOpts {
                file: p.clone(),
                image: Some("live".into()),
                force: true,
                ..Default::default()
            },
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(want), "{label}: {msg}");
        assert!(msg.contains("untouched"), "{label}: {msg}");
        assert_same(&live_before, &scan_tree(&img).unwrap(), label);
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "{label} wrote outside"
        );
        assert!(
            !l.staging_dir("live").exists(),
            "{label}: staging left behind"
        );
    }

    // A damaged archive fails its checksum before anything is extracted.
    let good = d.path().join("size-too-big.tar");
    fs::write(&good, b"tampered").unwrap();
    let e = snapshot::run_restore(
        &l,
        &RestoreOpts {
            file: good,
            image: Some("live".into()),
            force: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("checksum mismatch"), "{e:#}");
    assert!(!l.staging_dir("live").exists());
}

#[test]
fn truncated_gzip_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let src = base.join("img");
    fs::create_dir_all(src.join("etc")).unwrap();
    sh(&format!(
        "head -c 3000000 /dev/urandom > {}/etc/noise",
        q(&src)
    ));
    let r = snap(&l, "img", Compression::Gzip);
    let cut = d.path().join("cut.tar.gz");
    let bytes = fs::read(&r.path).unwrap();
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = snapshot::run_restore(
        &l,
        &RestoreOpts {
            file: cut,
            image: Some("other".into()),
            no_checksum: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("etc/noise") || msg.contains("truncated"),
        "{msg}"
    );
    assert!(!base.join("other").exists());
}

#[test]
fn diff_reports_changes() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let src = base.join("img");
    fs::create_dir_all(src.join("etc")).unwrap();
    for f in ["a", "b", "c", "d"] {
        fs::write(src.join("etc").join(f), f).unwrap();
    }
    let r = snap(&l, "img", Compression::Zstd);
    let opts = DiffOpts {
        image: "img".into(),
        tree: None,
        file: r.path.clone(),
    };
    assert!(snapshot::run_diff(&l, &opts).unwrap().is_empty());
    fs::write(src.join("etc/new"), "n").unwrap();
    fs::remove_file(src.join("etc/b")).unwrap();
    fs::write(src.join("etc/c"), "changed").unwrap();
    sh(&format!(
        "chmod 600 {0}/etc/d && touch -r {0}/etc/a {0}/etc {0}/etc/d",
        q(&src)
    ));
    let diff = snapshot::run_diff(&l, &opts).unwrap();
    assert_eq!(diff.added, ["/etc/new"]);
    assert_eq!(diff.removed, ["/etc/b"]);
    assert_eq!(diff.modified.len(), 1);
    assert_eq!(diff.modified[0].path, "/etc/c");
    let meta: Vec<_> = diff.metadata.iter().map(|c| c.path.as_str()).collect();
    assert!(meta.contains(&"/etc/d"), "{diff:#?}");
    // Without the manifest the archive itself is the reference.
    fs::remove_file(snapshot::manifest_path(&r.path)).unwrap();
    assert_eq!(snapshot::run_diff(&l, &opts).unwrap(), diff);
}

#[test]
fn verify_catches_a_lying_manifest() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let src = base.join("img");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/f"), "f").unwrap();
    let r = snap(&l, "img", Compression::Gzip);
    let mp = snapshot::manifest_path(&r.path);
    let text = fs::read_to_string(&mp)
        .unwrap()
        .replace("\"mode\": 420", "\"mode\": 493");
    fs::write(&mp, text).unwrap();
    let e = snapshot::run_verify(&VerifyOpts {
        file: r.path.clone(),
    })
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("/etc/f: mode 0755 -> 0644"),
        "{e:#}"
    );
}

#[test]
fn snapshot_waits_for_no_torn_image() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    fs::create_dir_all(base.join("img/etc")).unwrap();
    let _held = l.lock("img", "build", false).unwrap();
    let e = snapshot::run_snapshot(
        &l,
        &SnapshotOpts {
            image: Some("img".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("locked"), "{e:#}");
    assert!(
        !l.snapshots_dir("img").exists()
            || fs::read_dir(l.snapshots_dir("img")).unwrap().count() == 0
    );
}

#[test]
fn keep_prunes_old_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    fs::create_dir_all(base.join("img/etc")).unwrap();
    let dir = l.snapshots_dir("img");
    fs::create_dir_all(&dir).unwrap();
    for old in [
        "img-20000101T000000Z-x.tar.gz",
        "img-20010101T000000Z-x.tar.gz",
    ] {
        fs::write(dir.join(old), "").unwrap();
        fs::write(dir.join(format!("{old}.sha256")), "").unwrap();
    }
    let r = snapshot::run_snapshot(
        &l,
        &SnapshotOpts {
            image: Some("img".into()),
            keep: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.pruned, [dir.join("img-20000101T000000Z-x.tar.gz")]);
    assert!(!dir.join("img-20000101T000000Z-x.tar.gz.sha256").exists());
    assert_eq!(
        snapshot::run_list(&l, &Default::default()).unwrap().len(),
        2
    );
}

/// A snapshot in a second that already has one gets the next name
/// (`<time>.2`), leaving the first alone. The clock cannot be set, so the
/// first snapshot of every second of the next two minutes is planted.
#[test]
fn same_second_snapshot_gets_its_own_name() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    fs::create_dir_all(base.join("img/etc")).unwrap();
    fs::write(base.join("img/etc/f"), "x\n").unwrap();
    let dir = l.snapshots_dir("img");
    fs::create_dir_all(&dir).unwrap();
    let now = nfsroot::clock::now_secs();
    let stamps: Vec<String> = (now - 1..now + 120).map(nfsroot::clock::compact).collect();
    for t in &stamps {
        fs::write(dir.join(format!("img-{t}-nokernel.tar.gz")), t).unwrap();
    }
    let r = snap(&l, "img", Compression::Gzip);
    let file = r.path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stamps
            .iter()
            .any(|t| file == format!("img-{t}.2-nokernel.tar.gz")),
        "{file}"
    );
    for t in &stamps {
        let planted = dir.join(format!("img-{t}-nokernel.tar.gz"));
        assert_eq!(fs::read_to_string(planted).unwrap(), *t, "replaced");
    }
    snapshot::run_verify(&VerifyOpts {
        file: r.path.clone(),
    })
    .unwrap();
    // The list shows it after the planted one of its second.
    let list = snapshot::run_list(&l, &Default::default()).unwrap();
    let i = list.iter().position(|s| s.path == r.path).unwrap();
    let first = list[i - 1].path.file_name().unwrap().to_string_lossy();
    assert_eq!(first.replace("-nokernel", ".2-nokernel"), file);
}

#[test]
fn full_disk_leaves_no_archive() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let src = base.join("img");
    fs::create_dir_all(src.join("etc")).unwrap();
    sh(&format!(
        "head -c 4000000 /dev/urandom > {}/etc/noise",
        q(&src)
    ));
    let small = d.path().join("small");
    fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "cannot mount a tmpfs: run the suite as root");
    let out = small.join("snap.tar.gz");
    let e = snapshot::run_snapshot(
        &l,
        &SnapshotOpts {
            image: Some("img".into()),
            output: Some(out.clone()),
            ..Default::default()
        },
    )
    .unwrap_err();
    let left: Vec<_> = fs::read_dir(&small)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let _ = Command::new("umount").arg(&small).status();
    assert!(format!("{e:#}").contains("No space left"), "{e:#}");
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The real image: snapshot, restore, GNU tar extraction, all compared.
#[test]
fn real_image_roundtrip() {
    // The shared fixture built by `nfsroot build` from profiles/minimal.toml
    // (or another image root named by NFSROOT_TEST_IMAGE).
    let src = std::env::var_os("NFSROOT_TEST_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::fixture().image("minimal"));
    assert!(
        src.join("etc/os-release").exists(),
        "no real image at {}",
        src.display()
    );
    let d = tempfile::tempdir_in(std::env::var_os("NFSROOT_TEST_TMP").unwrap_or("/var/tmp".into()))
        .unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    fs::create_dir_all(&base).unwrap();
    sh(&format!("cp -a {} {}", q(&src), q(&base.join("real"))));
    let before = scan_tree(&base.join("real")).unwrap();
    let r = snap(&l, "real", Compression::Gzip);
    let man = snapshot::read_manifest(&r.path).unwrap();
    assert!(!man.packages.is_empty() && !man.kernels.is_empty());
    let rr = snapshot::run_restore(
        &l,
        &RestoreOpts {
            file: r.path.clone(),
            image: Some("back".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_same(
        &before,
        &scan_tree(&rr.path).unwrap(),
        "real image restored",
    );
    let opts = common::SNAPSHOT_ORACLE_OPTS;
    let real = base.join("real");
    common::assert_oracle_same(&real, &rr.path, opts, before.len(), "real image restored");
    let t = common::tar_compare(&r.path, &real);
    assert!(
        t.is_empty(),
        "tar --compare of the real image's snapshot:\n{t}"
    );
    let g = base.join("gnu");
    fs::create_dir(&g).unwrap();
    sh(&format!(
        "tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf {} -C {}",
        q(&r.path),
        q(&g)
    ));
    assert_same(
        &before,
        &scan_tree(&g).unwrap(),
        "real image through GNU tar",
    );
    common::assert_oracle_same(&real, &g, opts, before.len(), "real image through GNU tar");
}

/// The changes `oracles_catch_a_changed_field` makes: (shell command in
/// the copy, path, the oracle's field, what `tar --compare` says or "").
const ORACLE_CASES: &[(&str, &str, &str, &str)] = &[
    ("chmod 600 etc/plain", "etc/plain", "mode", "Mode differs"),
    (
        "chmod 755 usr/bin/suid",
        "usr/bin/suid",
        "mode",
        "Mode differs",
    ),
    (
        "touch -d '2001-02-03 04:05:06.123456788' etc/plain",
        "etc/plain",
        "mtime",
        "Mod time differs",
    ),
    (
        "touch -h -d '2002-02-03 04:05:06.6' rel-link",
        "rel-link",
        "mtime",
        "",
    ),
    ("chown -h 1235 owned", "owned", "uid", "Uid differs"),
    ("chgrp 5679 owned", "owned", "gid", "Gid differs"),
    (
        "setfattr -n user.color -v red xattr-file",
        "xattr-file",
        "xattrs",
        "",
    ),
    (
        "setfattr -x trusted.secret xattr-file",
        "xattr-file",
        "xattrs",
        "",
    ),
    ("setfacl -m u:1234:r-- acl-file", "acl-file", "xattrs", ""),
    ("setcap -r usr/bin/ping", "usr/bin/ping", "xattrs", ""),
    ("cp -p hl2 x && mv x hl2", "hl2", "links", ""),
    (
        "printf 'hellO\\n' > etc/plain && touch -d '2001-02-03 04:05:06.123456789' etc/plain",
        "etc/plain",
        "sha256",
        "Contents differ",
    ),
    (
        "t=$(stat -c %y sparse) && printf x | dd of=sparse bs=1 seek=30000000 conv=notrunc status=none && touch -d \"$t\" sparse",
        "sparse",
        "sha256",
        "is not a hole",
    ),
    (
        "cp -p --sparse=never sparse x && mv x sparse",
        "sparse",
        "holes",
        "",
    ),
    (
        "ln -sfn etc/empty-file rel-link",
        "rel-link",
        "target",
        "Symlink differs",
    ),
    (
        "rm etc/empty-file",
        "etc/empty-file",
        "only in",
        "No such file",
    ),
    ("touch etc/new-file", "etc/new-file", "only in", ""),
    (
        "rm chr && mknod chr c 1 5",
        "chr",
        "rdev",
        "Device number differs",
    ),
];

/// The oracles can fail: on a copy of the corpus with one field changed,
/// the Python comparer names the path and the field, and GNU tar's
/// `--compare` of a snapshot of the original catches what it compares.
#[test]
fn oracles_catch_a_changed_field() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let src = base.join("img");
    let _sock = make_tree(&src);
    // 18 copies: leave out the 1 GiB hole (the 64 MiB sparse file stays).
    fs::remove_file(src.join("all-hole")).unwrap();
    let r = snap(&l, "img", Compression::Zstd);
    let opts = common::SNAPSHOT_ORACLE_OPTS;
    for (i, &(change, path, field, tar_says)) in ORACLE_CASES.iter().enumerate() {
        let copy = d.path().join(format!("copy{i}"));
        sh(&format!("cp -a {} {}", q(&src), q(&copy)));
        if i == 0 {
            common::assert_oracle_same(&src, &copy, opts, 40, "an unchanged copy");
            let t = common::tar_compare(&r.path, &copy);
            assert!(t.is_empty(), "tar --compare of an unchanged copy:\n{t}");
        }
        sh(&format!("cd {} && {change}", q(&copy)));
        let (same, text) = common::tree_oracle(&src, &copy, opts);
        assert!(!same, "{change}: the oracle saw no difference:\n{text}");
        let want = format!("{path}: {field}");
        assert!(
            text.lines().any(|l| l.starts_with(&want)),
            "{change}: no line starting {want:?} in:\n{text}"
        );
        if !tar_says.is_empty() {
            let t = common::tar_compare(&r.path, &copy);
            assert!(t.contains(tar_says), "{change}: tar --compare said:\n{t}");
        }
        fs::remove_dir_all(&copy).unwrap();
    }
}

/// Not a test: the process `interrupted_snapshot_leaves_nothing` starts
/// and interrupts (ignored, so a normal run neither runs nor counts it).
#[test]
#[ignore = "the child process of interrupted_snapshot_leaves_nothing"]
fn child_snapshot() {
    let base = std::env::var_os("NFSROOT_CHILD_BASE").expect("NFSROOT_CHILD_BASE is set");
    let l = layout(Path::new(&base));
    snapshot::run_snapshot(
        &l,
        &SnapshotOpts {
            image: Some("img".into()),
            threads: Some(1),
            format: Compression::Gzip,
            level: Some(9),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn interrupted_snapshot_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let src = base.join("img");
    fs::create_dir_all(src.join("etc")).unwrap();
    for i in 0..8 {
        sh(&format!(
            "head -c 16000000 /dev/urandom > {}/etc/noise{i}",
            q(&src)
        ));
    }
    let dir = l.snapshots_dir("img");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_snapshot", "--ignored", "--nocapture"])
        .env("NFSROOT_CHILD_BASE", &base)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the temp file to appear, then interrupt.
    let started = std::time::Instant::now();
    loop {
        let n = fs::read_dir(&dir).map(|r| r.count()).unwrap_or(0);
        if n > 0 || started.elapsed().as_secs() > 60 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .expect("interrupting the child snapshot");
    let st = child.wait().unwrap();
    assert!(!st.success(), "interrupted snapshot exited 0");
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with(".nfsroot-tmp-")),
        "a file under a final name: {names:?}"
    );
    // The next snapshot sweeps the leftover temp file.
    let r = snap(&l, "img", Compression::Zstd);
    let left: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains(&r.path));
}

#[test]
fn mounts_inside_the_image_are_not_descended() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let src = base.join("img");
    let inner = src.join("mnt/inner");
    fs::create_dir_all(&inner).unwrap();
    fs::create_dir_all(src.join("etc")).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&inner)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "cannot mount a tmpfs: run the suite as root");
    fs::write(inner.join("secret"), "not part of the image").unwrap();
    let r = snapshot::run_snapshot(
        &l,
        &SnapshotOpts {
            image: Some("img".into()),
            ..Default::default()
        },
    );
    let restore = r.as_ref().ok().map(|r| {
        snapshot::run_restore(
            &l,
            &RestoreOpts {
                file: r.path.clone(),
                image: Some("img".into()),
                force: true,
                ..Default::default()
            },
        )
    });
    let _ = Command::new("umount").arg(&inner).status();
    let r = r.unwrap();
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("/mnt/inner is a mount point")),
        "{:?}",
        r.notes
    );
    let entries = snapshot::archive_meta(&r.path).unwrap();
    assert!(entries.contains_key(Path::new("mnt/inner")));
    assert!(!entries.contains_key(Path::new("mnt/inner/secret")));
    // Restoring over an image with something mounted inside is refused.
    let e = restore.unwrap().unwrap_err();
    assert!(format!("{e:#}").contains("unmount it"), "{e:#}");
}

// ------------------------------------------------------------ tar reader
//
// Hostile archives built byte by byte: sizes and mutations. The reader
// must read big headers whole (once), refuse an oversized one naming it,
// and never panic or hang.

use nfsroot::snapshot::tar::TarReader;
use std::io::Read as _;
use std::time::{Duration, Instant};

/// Pax records with correct length prefixes.
fn pax_text(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let base = k.len() + v.len() + 3;
        let mut len = base + 1;
        while base + len.to_string().len() != len {
            len = base + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// Read every header and every data byte; the member count or the error.
/// The time taken is printed for the record, never asserted (a shared
/// machine's wall clock proves nothing; a quadratic reader shows as a test
/// that takes minutes).
fn read_all(label: &str, bytes: &[u8]) -> Result<usize, String> {
    let started = Instant::now();
    let mut r = TarReader::new(bytes);
    let mut n = 0;
    let res = loop {
        match r.next_header() {
            Ok(Some(_)) => {
                n += 1;
                if let Err(e) = std::io::copy(&mut r.data(), &mut std::io::sink()) {
                    break Err(e.to_string());
                }
            }
            Ok(None) => break Ok(n),
            Err(e) => break Err(format!("{e:#}")),
        }
    };
    let t = started.elapsed();
    if !label.is_empty() {
        eprintln!("{label}: {} bytes read in {t:?}", bytes.len());
    }
    res
}

/// A pax 1.0 sparse member whose map is `map` (padded to a block) followed
/// by `data`.
fn sparse_member(out: &mut Vec<u8>, map: &[u8], data: &[u8], realsize: u64) {
    let pax = pax_text(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"./sparse"),
        ("GNU.sparse.realsize", realsize.to_string().as_bytes()),
    ]);
    raw_member(out, "./PaxHeaders/sparse", b'x', pax.len() as u64, "", &pax);
    let mut body = map.to_vec();
    body.resize(map.len().div_ceil(512) * 512, 0);
    body.extend_from_slice(data);
    raw_member(
        out,
        "./GNUSparseFile.0/sparse",
        b'0',
        body.len() as u64,
        "",
        &body,
    );
}

#[test]
fn sparse_map_of_16_mb_reads_or_is_refused() {
    // One million one-byte segments, each number a zero-padded 7-digit
    // line: a 16 MB map.
    let segs = 1usize << 20;
    let mut map = format!("{segs:07}\n").into_bytes();
    for i in 0..segs {
        map.extend_from_slice(format!("{:07}\n0000001\n", 2 * i).as_bytes());
    }
    assert!(map.len() >= 16 << 20, "{}", map.len());
    let mut a = Vec::new();
    sparse_member(&mut a, &map, &vec![b'd'; segs], 2 * segs as u64);
    a.extend_from_slice(&[0u8; 1024]);
    let res = read_all("sparse map of 1M segments", &a);
    assert_eq!(res, Ok(1));

    // One 16 MB "number": refused at once, naming the member and offset.
    let mut map = b"1\n".to_vec();
    map.extend(std::iter::repeat_n(b'0', 16 << 20));
    map.extend_from_slice(b"1\n1\n");
    let mut a = Vec::new();
    sparse_member(&mut a, &map, b"x", 2);
    a.extend_from_slice(&[0u8; 1024]);
    let res = read_all("sparse map of one 16 MB number", &a);
    let e = res.unwrap_err();
    assert!(e.contains("sparse") && e.contains("byte"), "{e}");
}

/// A global pax header of about `bytes` bytes in records of 100 bytes,
/// then `members` small files.
fn big_global_archive(bytes: usize, members: usize) -> Vec<u8> {
    let val = [b'v'; 80];
    let keys: Vec<String> = (0..bytes / 100).map(|i| format!("k.{i:08}")).collect();
    let recs: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &val[..])).collect();
    let g = pax_text(&recs);
    let mut a = Vec::new();
    raw_member(&mut a, "./GlobalHead", b'g', g.len() as u64, "", &g);
    for i in 0..members {
        raw_member(&mut a, &format!("f{i}"), b'0', 1, "", b"x");
    }
    a.extend_from_slice(&[0u8; 1024]);
    a
}

#[test]
fn big_pax_headers_read_or_are_refused() {
    // Under the cap: read once, never copied per member.
    let a = big_global_archive(12 << 20, 200);
    let res = read_all("12 MB global header, 200 members", &a);
    assert_eq!(res, Ok(200));
    // 60 MB: over the cap, refused quickly with the header's offset.
    let a = big_global_archive(60 << 20, 200);
    let res = read_all("60 MB global header, 200 members", &a);
    let e = res.unwrap_err();
    assert!(e.contains("GlobalHead") && e.contains("byte 0"), "{e}");
    // The same as local headers, one per member.
    let val = [b'v'; 80];
    let keys: Vec<String> = (0..(60 << 20) / 100 / 200)
        .map(|i| format!("k.{i:08}"))
        .collect();
    let recs: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &val[..])).collect();
    let x = pax_text(&recs);
    let mut a = Vec::new();
    for i in 0..200 {
        raw_member(
            &mut a,
            &format!("./PaxHeaders/f{i}"),
            b'x',
            x.len() as u64,
            "",
            &x,
        );
        raw_member(&mut a, &format!("f{i}"), b'0', 1, "", b"x");
    }
    a.extend_from_slice(&[0u8; 1024]);
    let res = read_all("200 local headers of 300 KB", &a);
    assert_eq!(res, Ok(200));
}

#[test]
fn restored_root_is_root_0755_whatever_the_archive_says() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let mut a = Vec::new();
    raw_member(&mut a, "./", b'5', 0, "", &[]);
    // Mode 0777, owner 1234:1234 on the root member.
    a[100..108].copy_from_slice(b"0000777\0");
    a[108..116].copy_from_slice(b"0002322\0");
    a[116..124].copy_from_slice(b"0002322\0");
    a[148..156].fill(b' ');
    let sum: u32 = a[..512].iter().map(|&c| u32::from(c)).sum();
    a[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    raw_member(&mut a, "etc/", b'5', 0, "", &[]);
    raw_member(&mut a, "dev/null", b'3', 0, "", &[]);
    a.extend_from_slice(&[0u8; 1024]);
    let p = d.path().join("root.tar");
    fs::write(&p, &a).unwrap();
    let r = snapshot::run_restore(
        &l,
        &RestoreOpts {
            file: p,
            image: Some("img".into()),
            no_checksum: true,
            ..Default::default()
        },
    )
    .unwrap();
    let m = fs::metadata(&r.path).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 0, 0));
    // A device under /dev needs no flag.
    assert!(fs::symlink_metadata(r.path.join("dev/null")).is_ok());
}

#[test]
fn snapshots_are_private() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    fs::create_dir_all(base.join("img/etc")).unwrap();
    fs::write(base.join("img/etc/shadow"), "root:$6$secret:1::::::\n").unwrap();
    // A snapshots dir left 0755 by an older version is tightened.
    fs::create_dir_all(l.snapshots_dir("img")).unwrap();
    sh(&format!("chmod 755 {0} {0}/..", q(&l.snapshots_dir("img"))));
    let r = snap(&l, "img", Compression::Gzip);
    for f in [&r.path, &r.checksum_path, &r.manifest_path] {
        let mode = fs::metadata(f).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    for dir in [l.snapshots_dir("img"), l.state_dir().join("snapshots")] {
        let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    // -o into a new directory: created 0700 too.
    let out = d.path().join("new/dir/s.tar.zst");
    let r = snapshot::run_snapshot(
        &l,
        &SnapshotOpts {
            image: Some("img".into()),
            output: Some(out.clone()),
            format: Compression::Zstd,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fs::metadata(&r.path).unwrap().mode() & 0o777, 0o600);
    for dir in [d.path().join("new"), d.path().join("new/dir")] {
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }
}

/// A node swaps a directory of the image for a symlink to a host
/// directory, over and over, while snapshots and diffs read the image:
/// no byte or name from the host directory ever reaches an archive.
#[test]
fn walker_never_follows_a_swapped_directory() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base");
    let l = layout(&base);
    let img = base.join("img");
    fs::create_dir_all(img.join("etc")).unwrap();
    let outside = d.path().join("outside");
    fs::create_dir_all(outside.join("deeper")).unwrap();
    fs::write(outside.join("secret"), "HOST SECRET").unwrap();
    fs::write(outside.join("host-only"), "HOST SECRET").unwrap();
    fs::write(outside.join("deeper/more"), "HOST SECRET").unwrap();
    let swap = img.join("swap");
    fs::create_dir(&swap).unwrap();
    for i in 0..200 {
        fs::write(swap.join(format!("f{i:03}")), "inside").unwrap();
    }
    fs::write(swap.join("secret"), "inside").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, swap, outside) = (stop.clone(), swap.clone(), outside.clone());
        let parked = swap.with_extension("parked");
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                fs::rename(&swap, &parked).unwrap();
                std::os::unix::fs::symlink(&outside, &swap).unwrap();
                std::thread::yield_now();
                fs::remove_file(&swap).unwrap();
                fs::rename(&parked, &swap).unwrap();
                n += 1;
            }
            n
        })
    };
    let started = Instant::now();
    let mut runs = 0;
    let mut bad = Vec::new();
    let want = nfsroot::fsutil::sha256_bytes(b"inside");
    while started.elapsed() < Duration::from_secs(4) || runs < 3 {
        let r = snapshot::run_snapshot(
            &l,
            &SnapshotOpts {
                image: Some("img".into()),
                format: Compression::Zstd,
                ..Default::default()
            },
        )
        .unwrap();
        let meta = snapshot::archive_meta(&r.path).unwrap();
        for (p, m) in &meta {
            let in_swap = p.starts_with("swap") || p.starts_with("swap.parked");
            let host_name = p.ends_with("host-only") || p.ends_with("deeper");
            let host_bytes = m.sha256.as_ref().is_some_and(|h| *h != want) && in_swap;
            if host_name || host_bytes {
                bad.push(p.clone());
            }
        }
        if let Ok(scan) = scan_tree(&img) {
            bad.extend(scan.keys().filter(|p| p.ends_with("host-only")).cloned());
        }
        fs::remove_file(&r.path).unwrap();
        runs += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 10, "the swapper only ran {swaps} times");
    assert!(
        bad.is_empty(),
        "host entries archived: {bad:?} ({runs} runs)"
    );
}

/// splitmix64: a fixed seed gives the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fix_checksum(b: &mut [u8]) {
    b[148..156].fill(b' ');
    let sum: u32 = b[..512].iter().map(|&c| u32::from(c)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// One to three mutations of a real archive: flipped bytes, a rewritten
/// header field (checksum fixed most of the time, so the reader goes past
/// it), a number in the text blown up, a truncation, a spliced or
/// dropped run of blocks.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut a = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        let blocks = (a.len() / 512).max(1);
        match rng.below(6) {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(a.len());
                    if let Some(c) = a.get_mut(i) {
                        *c ^= 1 << rng.below(8);
                    }
                }
            }
            1 if a.len() >= 512 => {
                let at = rng.below(blocks) * 512;
                let fields = [
                    (0, 100),
                    (100, 8),
                    (124, 12),
                    (156, 1),
                    (157, 100),
                    (345, 155),
                ];
                let (f, len) = fields[rng.below(fields.len())];
                let digits = rng.below(2) == 0;
                for i in 0..len.min(1 + rng.below(len)) {
                    a[at + f + i] = if digits {
                        b"01234567"[rng.below(8)]
                    } else {
                        b"0157xgLKS/.\0\xff"[rng.below(13)]
                    };
                }
                if rng.below(5) != 0 {
                    fix_checksum(&mut a[at..at + 512]);
                }
            }
            2 => {
                let starts: Vec<usize> = (0..a.len()).filter(|&i| a[i].is_ascii_digit()).collect();
                if !starts.is_empty() {
                    let i = starts[rng.below(starts.len())];
                    let mut j = i;
                    while j < a.len() && a[j].is_ascii_digit() {
                        a[j] = b'9';
                        j += 1;
                    }
                }
            }
            3 => a.truncate(rng.below(a.len() + 1)),
            4 if a.len() >= 512 => {
                let from = rng.below(blocks) * 512;
                let n = (1 + rng.below(4)) * 512;
                let run: Vec<u8> = a[from..(from + n).min(a.len())].to_vec();
                let to = rng.below(blocks) * 512;
                a.splice(to..to, run);
            }
            _ if a.len() >= 512 => {
                let from = rng.below(blocks) * 512;
                let n = (1 + rng.below(3)) * 512;
                a.drain(from..(from + n).min(a.len()));
            }
            _ => {}
        }
    }
    a
}

/// Seeds: our own snapshot of a small tree of every kind, and GNU tar's
/// archives of it in the old gnu format (`S` sparse members, `L`/`K`
/// long names) and in pax with sparse 0.1 and 1.0.
fn fuzz_seeds(d: &Path) -> (Vec<Vec<u8>>, PathBuf) {
    let base = d.join("base");
    let l = layout(&base);
    let src = base.join("img");
    fs::create_dir_all(&src).unwrap();
    let long = "n".repeat(120);
    sh(&format!(
        r#"cd {}
mkdir -p etc usr/bin "d/{long}" dev
printf 'hello\n' > etc/plain
cp /bin/true usr/bin/suid; chmod 4755 usr/bin/suid
echo x > etc/attr; setfattr -n user.k -v v etc/attr; setfacl -m u:1234:rwx etc/attr
ln -s ../etc/plain usr/bin/rel; ln -s "d/{long}" "l{long}"
echo h > hl1; ln hl1 hl2; mkfifo fifo
truncate -s 300000 sparse; printf middle | dd of=sparse bs=1 seek=150000 conv=notrunc status=none
echo deep > "d/{long}/{long}"
"#,
        q(&src)
    ));
    let r = snap(&l, "img", Compression::Gzip);
    let mut ours = Vec::new();
    snapshot::compress::open_decompressed(&r.path, None)
        .unwrap()
        .read_to_end(&mut ours)
        .unwrap();
    let mut seeds = vec![ours];
    for flags in [
        "--format=gnu -S",
        "--format=posix --sparse-version=0.1 -S --xattrs --acls",
        "--format=posix --sparse-version=1.0 -S",
    ] {
        let a = d.join("seed.tar");
        sh(&format!(
            "tar --numeric-owner {flags} -cf {} -C {} .",
            q(&a),
            q(&src)
        ));
        seeds.push(fs::read(&a).unwrap());
    }
    (seeds, r.path)
}

/// CPU time this thread has used (reading, extracting and verifying run on
/// it).
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t`, which outlives
    // the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Random and mutated archives through the reader, the restore path
/// (extraction) and the verify path: no panic, no hang, and each input
/// read in CPU time bounded by its size. Deterministic seed; about 10 s.
#[test]
fn tar_reader_survives_mutated_archives() {
    let d = tempfile::tempdir().unwrap();
    let (seeds, snap_path) = fuzz_seeds(d.path());
    let manifest = fs::read(snapshot::manifest_path(&snap_path)).unwrap();
    let mut rng = Rng(0x6e66_7372_6f6f_7439);
    let started = Instant::now();
    let budget = Duration::from_secs(12);
    let mut n = 0usize;
    let mut refused = 0usize;
    while n < 3000 && started.elapsed() < budget {
        let seed = &seeds[rng.below(seeds.len())];
        let input = if rng.below(50) == 0 {
            (0..rng.below(4096)).map(|_| rng.next() as u8).collect()
        } else {
            mutate(&mut rng, seed)
        };
        let save = |why: &str| -> String {
            let p = common::work_dir().join(format!("tar-fuzz-{n}.tar"));
            fs::write(&p, &input).unwrap();
            format!("input {n} ({why}) saved as {}", p.display())
        };
        let t = thread_cpu();
        let read = std::panic::catch_unwind(|| read_all("", &input));
        let Ok(read) = read else {
            panic!("the reader panicked: {}", save("panic"));
        };
        refused += usize::from(read.is_err());
        // Restore: extract into a fresh directory.
        let out = d.path().join(format!("x{n}"));
        fs::create_dir(&out).unwrap();
        let opts = snapshot::extract::ExtractOpts {
            allow_devices: rng.below(2) == 0,
        };
        let x = std::panic::catch_unwind(|| snapshot::extract::extract(&input[..], &out, &opts));
        assert!(x.is_ok(), "extraction panicked: {}", save("panic"));
        fs::remove_dir_all(&out).unwrap();
        // Verify against the seed snapshot's manifest, every 4th input.
        if n % 4 == 0 {
            let a = d.path().join("v.tar");
            fs::write(&a, &input).unwrap();
            let sum = nfsroot::fsutil::sha256_bytes(&input);
            fs::write(snapshot::checksum_path(&a), format!("{sum}  v.tar\n")).unwrap();
            fs::write(snapshot::manifest_path(&a), &manifest).unwrap();
            let v = std::panic::catch_unwind(|| snapshot::run_verify(&VerifyOpts { file: a }));
            assert!(v.is_ok(), "verify panicked: {}", save("panic"));
        }
        // CPU time of this thread, not wall time: the other tests of the
        // binary share the two cores, and once starved this thread long
        // enough to fail a wall-clock limit on a 71 KB input.
        let took = thread_cpu() - t;
        let limit = Duration::from_secs(2) + Duration::from_millis(input.len() as u64 / 1000);
        assert!(took < limit, "took {took:?} of CPU: {}", save("slow"));
        n += 1;
    }
    eprintln!(
        "{n} mutated archives in {:?}, {refused} refused by the reader",
        started.elapsed()
    );
    assert!(n >= 200, "only {n} inputs in the time budget");
    assert!(refused > 0 && refused < n, "{refused} of {n} refused");
}
