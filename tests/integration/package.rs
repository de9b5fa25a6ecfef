//! The Debian package (issue 15): `scripts/package` builds a .deb that
//! installs into a fresh bookworm chroot (mmdebstrap from the host's own
//! mirror, .debs from the fixture's cache), works there the way an admin
//! meets it (`--version`, a shipped profile, a man page, bash completion),
//! and purges without leaving anything outside /etc/nfsroot and
//! /var/lib/nfsroot; and two package builds give the same bytes (the
//! second reuses cargo's build of the binary, so it shows the packaging is
//! reproducible; the binary's own check is that it names no build path).

use crate::common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Build the package into `out` with scripts/package; returns the .deb.
/// The binary is built with the `package-test` profile (release without
/// optimisation or LTO): a cold release build takes 2 min 19 s on two idle
/// cores (3 min 50 s of CPU), and 5 to 6 minutes beside the suite's
/// boots; the package's contents and assembly do not depend on the
/// optimisation level.
fn build_package(out: &Path) -> PathBuf {
    let mut c = Command::new(repo().join("scripts/package"));
    c.arg(out).env("NFSROOT_PACKAGE_PROFILE", "package-test");
    let deb = PathBuf::from(String::from_utf8(run(c, true).stdout).unwrap().trim());
    assert!(deb.starts_with(out), "{}", deb.display());
    assert!(
        deb.to_string_lossy().ends_with("_amd64.deb"),
        "{}",
        deb.display()
    );
    deb
}

/// The first package build of this run, shared by both tests.
fn package() -> &'static PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| build_package(&work_dir().join("package-1")))
}

#[test]
fn package_builds_reproducibly() {
    let first = std::fs::read(package()).unwrap();
    let second = build_package(&work_dir().join("package-2"));
    assert!(
        first == std::fs::read(&second).unwrap(),
        "two builds differ"
    );
    // No build path in the binary (it would differ between checkouts).
    let x = tempfile::tempdir_in(work_dir()).unwrap();
    let mut c = Command::new("dpkg-deb");
    c.arg("-x").arg(&second).arg(x.path());
    run(c, true);
    let bin = std::fs::read(x.path().join("usr/bin/nfsroot")).unwrap();
    let checkout = repo().to_string_lossy().into_owned();
    assert!(
        !bin.windows(checkout.len())
            .any(|w| w == checkout.as_bytes()),
        "the binary names the checkout {checkout}"
    );
}

/// Run `sh -c script` in the chroot; returns stdout, panics on failure.
fn in_chroot(root: &Path, script: &str) -> String {
    let mut c = Command::new("chroot");
    c.arg(root)
        .args(["/bin/sh", "-c", script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("LC_ALL", "C.UTF-8")
        .current_dir("/");
    String::from_utf8(run(c, true).stdout).unwrap()
}

/// A bookworm chroot with what the package needs installed first (so
/// dpkg -i needs no network) plus man-db and bash-completion.
fn bootstrap_chroot(root: &Path) {
    let mirror = nfsroot::bootstrap::detect_mirror(Path::new("/etc/apt")).unwrap();
    let cache = deb_cache();
    std::fs::create_dir_all(&cache).unwrap();
    let c = cache.display();
    let mut m = Command::new("mmdebstrap");
    m.args([
        "--variant=apt",
        "--include=man-db,bash-completion,debootstrap,pxelinux,syslinux-common,busybox-static,\
         shim-signed,grub-efi-amd64-signed",
        // The fixture's .deb cache, in before download and back out after.
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives",
    ])
    .arg(format!(
        "--setup-hook=cp -al '{c}'/. \"$1\"/var/cache/apt/archives/ 2>/dev/null || \
         cp -a '{c}'/. \"$1\"/var/cache/apt/archives/"
    ))
    .arg(format!(
        "--customize-hook=for f in \"$1\"/var/cache/apt/archives/*.deb; do \
         [ -e '{c}'/\"${{f##*/}}\" ] || ln \"$f\" '{c}'/ 2>/dev/null || cp \"$f\" '{c}'/; done; \
         rm -f \"$1\"/var/cache/apt/archives/*.deb"
    ))
    .arg("bookworm")
    .arg(root)
    .arg(mirror);
    run(m, true);
}

/// Every path in the chroot but the API file systems and /tmp.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let skip = ["proc", "sys", "dev", "run", "tmp"].map(|d| root.join(d));
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| !skip.iter().any(|s| e.path() == s))
        .map(|e| e.unwrap().path().strip_prefix(root).unwrap().to_path_buf())
        .collect()
}

#[test]
fn package_installs_works_and_purges() {
    let deb = package();
    let tmp = tempfile::Builder::new()
        .prefix("nfsroot-package-")
        .tempdir_in(work_dir())
        .unwrap();
    let root = tmp.path().join("chroot");
    bootstrap_chroot(&root);
    std::fs::copy(deb, root.join("tmp/nfsroot.deb")).unwrap();
    let before = tree(&root);

    in_chroot(&root, "dpkg -i /tmp/nfsroot.deb");
    // Every loader publish copies comes from a package the .deb depends
    // on (publish refuses to run without them), and is there once it is
    // installed.
    let mut c = Command::new("dpkg-deb");
    c.args(["-f"]).arg(deb).arg("Depends");
    let depends = String::from_utf8(run(c, true).stdout).unwrap();
    let depends: Vec<&str> = depends.trim().split(", ").collect();
    for (src, _, pkg) in nfsroot::publish::BOOT_FILES {
        assert!(depends.contains(pkg), "{pkg} not in Depends: {depends:?}");
        let owner = in_chroot(&root, &format!("dpkg -S {src}"));
        assert_eq!(owner.split(':').next(), Some(*pkg), "{src}: {owner}");
    }
    let version = in_chroot(&root, "nfsroot --version");
    assert_eq!(version, format!("nfsroot {}\n", env!("CARGO_PKG_VERSION")));
    let show = in_chroot(&root, "cd /tmp && nfsroot profile show minimal");
    assert!(show.contains("name = \"minimal\""), "{show}");
    let check = in_chroot(&root, "nfsroot profile check minimal");
    assert!(
        check.starts_with("/usr/share/nfsroot/profiles/minimal.toml: ok"),
        "{check}"
    );
    let page = in_chroot(&root, "man -w nfsroot-build");
    assert_eq!(page, "/usr/share/man/man1/nfsroot-build.1.gz\n");
    let words = in_chroot(
        &root,
        r#"exec bash -c '
            . /usr/share/bash-completion/bash_completion
            _completion_loader nfsroot
            f=$(complete -p nfsroot | sed -n "s/.* -F \([^ ]*\) .*/\1/p")
            COMP_WORDS=(nfsroot upg); COMP_CWORD=1
            COMP_LINE="nfsroot upg"; COMP_POINT=${#COMP_LINE}
            "$f" nfsroot upg nfsroot
            printf "%s\n" "${COMPREPLY[@]}"'"#,
    );
    assert_eq!(words, "upgrade-kernel\n");

    in_chroot(&root, "dpkg --purge nfsroot");
    // dpkg's log and man-db's cache tags are theirs, not the package's.
    let bookkeeping = ["var/log", "var/cache/man"];
    let left: Vec<_> = tree(&root)
        .difference(&before)
        .filter(|p| !p.starts_with("etc/nfsroot") && !p.starts_with("var/lib/nfsroot"))
        .filter(|p| {
            p.to_string_lossy().contains("nfsroot") || !bookkeeping.iter().any(|b| p.starts_with(b))
        })
        .cloned()
        .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
}
