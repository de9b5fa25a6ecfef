//! The initramfs built from a real image: read back and checked entry by
//! entry, built twice for reproducibility, its `/init` syntax-checked and
//! and its module aliases resolved by the image's own busybox `modprobe`.
//! Booting it is the boot tests' part (`boot.rs`: QEMU up to the node
//! line; `wrong_export_fails_fast` and
//! `initramfs_without_nic_driver_fails_fast` for the failure paths).
//!
//! The image is the shared fixture; `NFSROOT_TEST_IMAGE_ROOT` points the
//! tests at another image root instead (any tree with a kernel, its
//! modules and busybox-static).

use crate::common;
use nfsroot::imagefs::ImageRoot;
use nfsroot::initramfs::{self, Compression, ModuleSpec, Spec};
use nfsroot::kernel;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image root the tests read (never change it).
fn image_root() -> PathBuf {
    if let Some(p) = std::env::var_os("NFSROOT_TEST_IMAGE_ROOT") {
        return PathBuf::from(p);
    }
    common::fixture().image("minimal")
}

fn build_bytes(root: &Path, spec: &Spec) -> (Vec<u8>, initramfs::Stats) {
    let k = kernel::newest(&ImageRoot::open(root).unwrap()).unwrap();
    let mut out = Vec::new();
    let r = initramfs::build(&ImageRoot::open(root).unwrap(), &k.version, spec, &mut out).unwrap();
    (out, r)
}

type Entries = BTreeMap<String, (u32, Vec<u8>)>;

fn entries(data: &[u8]) -> Entries {
    initramfs::read_entries_bytes(data)
        .unwrap()
        .into_iter()
        .map(|(p, m, d)| (p, (m, d)))
        .collect()
}

/// Module names in an archive's modules.dep, with their dependency paths.
fn archive_deps(e: &Entries, kver: &str) -> Vec<(String, Vec<String>)> {
    let dep = &e[&format!("lib/modules/{kver}/modules.dep")].1;
    String::from_utf8_lossy(dep)
        .lines()
        .map(|l| {
            let (m, d) = l.split_once(':').unwrap();
            (
                m.to_string(),
                d.split_whitespace().map(String::from).collect(),
            )
        })
        .collect()
}

fn module_names(e: &Entries) -> BTreeSet<String> {
    e.keys()
        .filter(|p| p.ends_with(".ko"))
        .map(|p| {
            p.rsplit('/')
                .next()
                .unwrap()
                .trim_end_matches(".ko")
                .replace('-', "_")
        })
        .collect()
}

#[test]
fn initramfs_has_modules_with_deps_init_and_applets() {
    let root = image_root();
    let k = kernel::newest(&ImageRoot::open(&root).unwrap()).unwrap();
    let (data, r) = build_bytes(&root, &Spec::default());
    let e = entries(&data);
    assert_eq!(e.len(), r.files);
    assert_eq!(r.compressed as usize, data.len());

    // /init: a regular executable file.
    let (mode, init) = &e["init"];
    assert_eq!(mode & 0o170000, 0o100000, "init is not a regular file");
    assert_eq!(mode & 0o111, 0o111, "init is not executable");
    assert!(init.starts_with(b"#!/bin/sh\n"));

    // Every module, and every dependency of each, is in the archive.
    let deps = archive_deps(&e, &k.version);
    assert_eq!(deps.len(), r.modules);
    let mdir = format!("lib/modules/{}", k.version);
    for (m, ds) in &deps {
        assert!(e.contains_key(&format!("{mdir}/{m}")), "{m} missing");
        for d in ds {
            assert!(
                e.contains_key(&format!("{mdir}/{d}")),
                "{d} (needed by {m}) missing"
            );
        }
    }
    let names = module_names(&e);
    for want in [
        "nfs",
        "nfsv3",
        "nfsv4",
        "sunrpc",
        "virtio_net",
        "virtio_pci",
        "e1000",
        "e1000e",
    ] {
        assert!(names.contains(want), "module {want} missing");
    }
    // Modules are ELF objects (compressed ones were unpacked).
    let (_, nfs) = e
        .iter()
        .find(|(p, _)| p.ends_with("/nfs.ko"))
        .expect("nfs.ko");
    assert!(nfs.1.starts_with(b"\x7fELF"));

    // busybox and one link per applet /init uses.
    let (bmode, bb) = &e["bin/busybox"];
    assert_eq!(bmode & 0o111, 0o111);
    assert!(bb.starts_with(b"\x7fELF"));
    for a in initramfs::APPLETS {
        let (m, target) = e
            .get(&format!("bin/{a}"))
            .unwrap_or_else(|| panic!("applet {a}"));
        assert_eq!(m & 0o170000, 0o120000, "bin/{a} is not a symlink");
        assert_eq!(target, b"busybox");
    }
    assert_eq!(e["sbin/modprobe"].1, b"../bin/busybox");
    assert_eq!(e["dev/console"].0, 0o020600);
    let load = String::from_utf8_lossy(&e["etc/nfsroot/modules.load"].1).into_owned();
    assert_eq!(load, "nfs\nnfsv3\nnfsv4\n");
    let alias = String::from_utf8_lossy(&e[&format!("{mdir}/modules.alias")].1).into_owned();
    assert!(
        alias.contains("alias virtio:d00000001v* virtio_net\n"),
        "virtio_net alias"
    );
}

#[test]
fn initramfs_builds_are_byte_identical() {
    let root = image_root();
    for compression in [Compression::Zstd, Compression::Gzip] {
        let spec = Spec {
            compression,
            ..Spec::default()
        };
        let (a, ra) = build_bytes(&root, &spec);
        let (b, rb) = build_bytes(&root, &spec);
        assert!(a == b, "{compression:?} builds differ");
        assert_eq!(ra, rb);
    }
}

#[test]
fn initramfs_without_nics_for_negative_boot_tests() {
    let root = image_root();
    let k = kernel::newest(&ImageRoot::open(&root).unwrap()).unwrap();
    let mut out = Vec::new();
    let spec = Spec {
        modules: ModuleSpec::parse("nfs,nfsv3,nfsv4,-virtio_net,-e1000").unwrap(),
        compression: Compression::Gzip,
        ..Spec::default()
    };
    initramfs::build(
        &ImageRoot::open(&root).unwrap(),
        &k.version,
        &spec,
        &mut out,
    )
    .unwrap();
    let names = module_names(&entries(&out));
    assert!(names.contains("nfsv4"));
    for nic in ["virtio_net", "e1000", "e1000e", "virtio_pci"] {
        assert!(!names.contains(nic), "{nic} shipped");
    }
}

#[test]
fn initramfs_unknown_module_is_named() {
    let root = image_root();
    let k = kernel::newest(&ImageRoot::open(&root).unwrap()).unwrap();
    let spec = Spec {
        modules: ModuleSpec::parse("default,e1001").unwrap(),
        ..Spec::default()
    };
    let err = initramfs::build(
        &ImageRoot::open(&root).unwrap(),
        &k.version,
        &spec,
        &mut Vec::new(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("unknown module e1001"), "{msg}");
    assert!(msg.contains(&k.version), "{msg}");
}

#[test]
fn initramfs_missing_kernel_or_modules_tree() {
    let t = tempfile::tempdir().unwrap();
    let fake = t.path();
    std::fs::create_dir_all(fake.join("boot")).unwrap();
    let out = t.path().join("initrd");
    let l = common::TestLayout::temp();
    let cli = || {
        let mut c = common::nfsroot(&l);
        c.args(["initramfs", "build"])
            .arg(fake)
            .arg("-o")
            .arg(&out)
            .args(["--compression", "zstd"]);
        String::from_utf8_lossy(&common::run(c, false).stderr).into_owned()
    };
    let msg = cli();
    assert!(msg.contains("no kernel in"), "{msg}");
    assert!(msg.contains("apt-get install linux-image-amd64"), "{msg}");

    std::fs::write(fake.join("boot/vmlinuz-6.1.0-99-amd64"), "k").unwrap();
    let msg = cli();
    assert!(msg.contains("kernel 6.1.0-99-amd64"), "{msg}");
    assert!(msg.contains("no modules tree"), "{msg}");
    assert!(!out.exists());
}

/// `initramfs build --module X` adds X to the default set, as a profile's
/// `modules` does (it used to replace the set, leaving out every NIC).
#[test]
fn cli_module_extends_the_default_set() {
    let root = image_root();
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("initrd");
    let l = common::TestLayout::temp();
    let mut c = common::nfsroot(&l);
    c.args(["initramfs", "build"])
        .arg(&root)
        .arg("-o")
        .arg(&out)
        .args(["--module", "dummy"]);
    common::run(c, true);
    let names = module_names(&entries(&std::fs::read(&out).unwrap()));
    assert!(names.contains("dummy"), "{names:?}");
    assert!(
        names.contains("virtio_net"),
        "the default set stays: {names:?}"
    );
    // gzip by default, as the profile's default says.
    assert!(std::fs::read(&out).unwrap().starts_with(&[0x1f, 0x8b]));
}

/// Unpack an archive into `dir` (symlinks and files; device nodes skipped).
fn unpack(data: &[u8], dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for (p, (mode, d)) in entries(data) {
        let dest = dir.join(&p);
        match mode & 0o170000 {
            0o040000 => std::fs::create_dir_all(&dest).unwrap(),
            0o120000 => std::os::unix::fs::symlink(String::from_utf8(d).unwrap(), &dest).unwrap(),
            0o100000 => {
                std::fs::write(&dest, d).unwrap();
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode & 0o7777))
                    .unwrap();
            }
            _ => {}
        }
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// In the unpacked initramfs, the image's busybox parses /init and
/// resolves device modaliases to drivers (plus dependencies) through the
/// trimmed modules.alias, as /init relies on.
#[test]
fn initramfs_busybox_parses_init_and_resolves_modaliases() {
    assert!(is_root(), "this test chroots: run the suite as root");
    let root = image_root();
    let k = kernel::newest(&ImageRoot::open(&root).unwrap()).unwrap();
    let (data, _) = build_bytes(&root, &Spec::default());
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    unpack(&data, dir);
    let chroot = |args: &[&str]| {
        let out = Command::new("chroot").arg(dir).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = chroot(&["/bin/sh", "-n", "/init"]);
    assert!(ok, "sh -n /init: {text}");
    let (ok, text) = chroot(&["/bin/sh", "-n", "/etc/udhcpc.script"]);
    assert!(ok, "sh -n udhcpc.script: {text}");

    // busybox modprobe looks in /lib/modules/$(uname -r): point the host's
    // release at the image kernel's tree.
    let host = String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let host = host.trim();
    if host != k.version {
        std::os::unix::fs::symlink(&k.version, dir.join("lib/modules").join(host)).unwrap();
    }
    let virtio_net = "virtio:d00000001v00001AF4";
    let virtio_pci = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00";
    let e1000 = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00";
    let vga = "pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00";
    let (_, text) = chroot(&[
        "/bin/modprobe",
        "-D",
        "-a",
        virtio_net,
        virtio_pci,
        e1000,
        vga,
    ]);
    for want in [
        "/virtio_net.ko",
        "/net_failover.ko",
        "/virtio_pci.ko",
        "/virtio_ring.ko",
        "/e1000.ko",
    ] {
        assert!(
            text.contains(want),
            "modprobe -D did not resolve {want}:\n{text}"
        );
    }
    assert!(!text.contains("e1000e.ko"), "{text}");
    let (ok, text) = chroot(&["/bin/modprobe", "-D", "nfsv4"]);
    assert!(
        ok && text.contains("/sunrpc.ko") && text.contains("/nfsv4.ko"),
        "{text}"
    );
}

/// The initramfs-tools backend on a copy of the image: mkinitramfs runs
/// inside it, the result is a real initramfs with the NFS boot script, and
/// the only lasting change to the image is the conf.d file.
#[test]
fn initramfs_tools_backend_on_a_copy() {
    assert!(
        is_root(),
        "mkinitramfs runs in a chroot: run the suite as root"
    );
    let src = image_root();
    assert!(
        src.join("usr/sbin/mkinitramfs").exists(),
        "the minimal image lost initramfs-tools (linux-image-amd64 pulls it in)"
    );
    let layout = common::TestLayout::temp();
    let copy = layout.image("copy");
    common::copy_image(&src, &copy);
    let k = kernel::newest(&ImageRoot::open(&copy).unwrap()).unwrap();
    let out = layout.tftp.join("initrd.img");
    initramfs::build_with_initramfs_tools(&copy, &k.version, &out).unwrap();
    let e = initramfs::read_entries(&out).unwrap();
    let names: BTreeSet<&str> = e.iter().map(|x| x.0.as_str()).collect();
    assert!(names.contains("init"), "no /init in mkinitramfs output");
    assert!(
        names.contains("scripts/nfs"),
        "no NFS boot script in mkinitramfs output"
    );
    let conf = std::fs::read_to_string(copy.join(initramfs::INITRAMFS_TOOLS_CONF)).unwrap();
    assert!(conf.contains("BOOT=nfs") && conf.contains("MODULES=netboot"));
    let leftovers: Vec<_> = std::fs::read_dir(copy.join("tmp"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("nfsroot-initrd")
        })
        .collect();
    assert!(leftovers.is_empty(), "temp output left in the image");
    assert!(
        common::mounts_under(&copy).is_empty(),
        "mounts left in the image"
    );
}

/// `--net-driver` (a profile's `initramfs.net_drivers`) through the real
/// binary on the real image: the named cards' drivers and what they need,
/// virtio_net for QEMU, the NFS client, and no other Ethernet driver: a
/// fraction of the size. A name this kernel lacks, or a module that is
/// no device driver, is an error naming the field, and writes nothing.
#[test]
fn net_drivers_ship_only_the_nodes_cards() {
    let root = image_root();
    let l = common::TestLayout::temp();
    let build = |name: &str, drivers: &[&str]| {
        let out = l.base.join(name);
        let mut c = common::nfsroot(&l);
        c.args(["initramfs", "build", "--compression", "zstd", "-o"])
            .arg(&out)
            .arg(&root);
        for n in drivers {
            c.args(["--net-driver", n]);
        }
        (c.output().unwrap(), out)
    };
    let (o, all) = build("all.img", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (o, few) = build("few.img", &["e1000e", "igb"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names = module_names(&entries(&std::fs::read(&few).unwrap()));
    for want in ["e1000e", "igb", "virtio_net", "virtio_pci", "nfs", "nfsv3"] {
        assert!(names.contains(want), "{want} missing: {names:?}");
    }
    for not in ["e1000", "ixgbe", "mlx4_en", "bnx2", "r8169", "tg3"] {
        assert!(!names.contains(not), "{not} shipped: {names:?}");
    }
    let (all_len, few_len) = (
        std::fs::metadata(&all).unwrap().len(),
        std::fs::metadata(&few).unwrap().len(),
    );
    assert!(few_len * 3 < all_len, "{few_len} bytes against {all_len}");
    for (bad, want) in [
        ("e1001", "initramfs.net_drivers: unknown module e1001"),
        (
            "overlay",
            "initramfs.net_drivers: overlay is not a device driver",
        ),
    ] {
        let (o, out) = build("bad.img", &[bad]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(!out.exists(), "{bad}: wrote {}", out.display());
    }
    // mkinitramfs picks its own modules: a driver list with it is refused.
    let out = l.base.join("tools.img");
    let mut c = common::nfsroot(&l);
    c.args(["initramfs", "build", "--backend", "initramfs-tools"])
        .args(["--net-driver", "igb", "-o"])
        .arg(&out)
        .arg(&root);
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("apply to --backend nfsroot only"), "{err}");
    assert!(!out.exists());
}
