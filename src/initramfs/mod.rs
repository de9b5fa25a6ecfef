//! An NFS-root initramfs assembled on the host from the image's own files.
//!
//! [`build`] runs nothing inside the image, so it works for foreign-arch
//! images too: it takes the image's static `/bin/busybox`, the modules that
//! [`modules::ModuleDb::resolve`] picks from the image's `modules.dep`, our
//! `/init` (`init.sh`) and udhcpc event script, and writes them as one
//! deterministic cpio archive ([`cpio`]): same inputs, same bytes. At boot,
//! `/init` loads the NFS client and only the drivers of present PCI/virtio
//! devices (busybox `modprobe` resolves their modaliases through the trimmed
//! `modules.alias`), brings up one interface by DHCP or `ip=`, mounts the
//! root and switches to it, leaving the network facts in
//! `/run/nfsroot/net.env`.
//!
//! [`build_with_initramfs_tools`] is the other backend: the distribution's
//! `mkinitramfs` run inside the image with `BOOT=nfs`, for comparison and
//! for setups that need its hooks.

pub mod cpio;
pub mod modules;

use crate::exec::{self, Tool};
use crate::fsutil::{self, HashingWriter};
use crate::imagefs::ImageRoot;
use crate::kernel;
use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;

pub use modules::ModuleSpec;

/// The `/init` script; `@KVER@` is replaced by the kernel version.
pub const INIT_SH: &str = include_str!("init.sh");
/// The udhcpc event script, shipped as `/etc/udhcpc.script`.
pub const UDHCPC_SCRIPT: &str = include_str!("udhcpc.script");

/// Busybox applets that `/init` and the udhcpc script run (ash builtins
/// such as echo, printf, test are not listed). Each gets a symlink in /bin.
pub const APPLETS: &[&str] = &[
    "cat",
    "cttyhack",
    "cut",
    "ip",
    "mkdir",
    "modprobe",
    "mount",
    "setsid",
    "sh",
    "sha256sum",
    "sleep",
    "sort",
    "switch_root",
    "tr",
    "udhcpc",
    "wc",
];

/// The machine id `/init` gives a node whose boot NIC has `mac` (lower
/// case, colons, as in `/sys/class/net/*/address`): the first 32 hex
/// digits of sha256("nfsroot machine-id <mac>"). init.sh computes the same
/// (`node_machine_id`); this one predicts it for tests and admins.
pub fn machine_id(mac: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("nfsroot machine-id {mac}"));
    hex::encode(h)[..32].to_string()
}

pub use crate::compression::Compression;

pub use crate::profile::Backend;

/// What to put in the initramfs, and how to make it.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub modules: ModuleSpec,
    pub compression: Compression,
    pub backend: Backend,
}

impl Spec {
    /// The spec for extra module names and exclusions: extra names extend
    /// the default set (as a profile's `modules` do), never replace it.
    pub fn with_modules(extra: &[String], exclude: &[String]) -> Self {
        Self {
            modules: ModuleSpec {
                include: std::iter::once("default".to_string())
                    .chain(extra.iter().filter(|m| *m != "default").cloned())
                    .collect(),
                exclude: exclude.to_vec(),
                nfs_version: None,
                net_drivers: None,
            },
            ..Self::default()
        }
    }

    /// The spec a profile's `[initramfs]` table asks for.
    pub fn of_profile(p: &crate::profile::Profile) -> Result<Self> {
        let mut s = Self {
            compression: p.initramfs.compression,
            backend: p.initramfs.backend,
            ..Self::with_modules(&p.initramfs.modules, &p.initramfs.exclude_modules)
        };
        s.modules.nfs_version = p.nfs.version();
        s.modules.net_drivers = p.initramfs.net_drivers.clone();
        Ok(s)
    }
}

/// Build the initramfs for kernel `kver` with the spec's backend; returns
/// the archive. The one entry point for publish and the CLI.
pub fn build_bytes(img: &ImageRoot, kver: &str, spec: &Spec) -> Result<Vec<u8>> {
    match spec.backend {
        Backend::Nfsroot => {
            let mut out = Vec::new();
            build(img, kver, spec, &mut out)
                .with_context(|| format!("building the initramfs for {kver}"))?;
            Ok(out)
        }
        Backend::InitramfsTools => {
            let tmp = std::env::temp_dir().join(format!(
                "nfsroot-initrd-{}-{}",
                std::process::id(),
                fsutil::random_hex()
            ));
            build_with_initramfs_tools(img.path(), kver, &tmp)?;
            let b = std::fs::read(&tmp).with_context(|| format!("reading {}", tmp.display()));
            let _ = std::fs::remove_file(&tmp);
            b
        }
    }
}

/// What `nfsroot initramfs build` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub kernel: String,
    pub bytes: u64,
    pub sha256: String,
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Kernel modules shipped.
    pub modules: usize,
    /// Archive entries (files, directories, links, device nodes).
    pub files: usize,
    /// Size of the cpio archive before compression.
    pub uncompressed: u64,
    /// Bytes written to `out`.
    pub compressed: u64,
    /// sha256 of the bytes written.
    pub sha256: String,
}

/// ELF facts about a binary: its `e_machine`, and whether it asks for a
/// dynamic loader (has PT_INTERP).
fn elf_info(data: &[u8]) -> Option<(u16, bool)> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return None;
    }
    let is64 = data[4] == 2;
    let le = data[5] == 1;
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = data.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = data.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let machine = u16_at(18)?;
    let (phoff, phentsize, phnum) = if is64 {
        (
            u64_at(0x20)? as usize,
            u16_at(0x36)? as usize,
            u16_at(0x38)? as usize,
        )
    } else {
        (
            u32_at(0x1c)? as usize,
            u16_at(0x2a)? as usize,
            u16_at(0x2c)? as usize,
        )
    };
    let mut interp = false;
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize)? == 3 {
            interp = true;
        }
    }
    Some((machine, interp))
}

/// Whether the busybox binary provides `applet`: busybox keeps its applet
/// names as one NUL-separated string table, so each name appears as
/// `\0name\0`. The binary is scanned, never run: it comes from the image,
/// and the host must not execute anything a node could have replaced.
fn has_applet(data: &[u8], applet: &str) -> bool {
    let mut pat = Vec::with_capacity(applet.len() + 2);
    pat.push(0);
    pat.extend_from_slice(applet.as_bytes());
    pat.push(0);
    data.windows(pat.len()).any(|w| w == pat.as_slice())
}

/// The image's busybox, checked: present, a static ELF, and naming every
/// applet `/init` uses in its applet table.
fn image_busybox(img: &ImageRoot) -> Result<Vec<u8>> {
    let rel = "bin/busybox";
    let Some(data) = img.read_opt(rel)? else {
        bail!("the image has no /bin/busybox; add busybox-static to the profile's packages")
    };
    let Some((_machine, dynamic)) = elf_info(&data) else {
        bail!("{} is not an ELF binary", img.show(rel));
    };
    if dynamic {
        bail!(
            "the image's /bin/busybox is dynamically linked (package busybox); \
             add busybox-static to the profile's packages"
        );
    }
    let missing: Vec<&str> = APPLETS
        .iter()
        .copied()
        .filter(|a| !has_applet(&data, a))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} lacks applets the initramfs needs: {}",
            img.show(rel),
            missing.join(" ")
        );
    }
    Ok(data)
}

/// Decompress one module file (.xz/.zst/.gz; busybox insmod loads plain
/// ELF only for certain). `name` is for messages and the suffix.
fn decompress_module(name: &str, raw: Vec<u8>) -> Result<Vec<u8>> {
    let out = if name.ends_with(".ko.zst") {
        zstd::stream::decode_all(&raw[..]).with_context(|| format!("decompressing {name}"))?
    } else if name.ends_with(".ko.gz") {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut v)
            .with_context(|| format!("decompressing {name}"))?;
        v
    } else if name.ends_with(".ko.xz") {
        // The host's xz reads the bytes on stdin: it never opens a path
        // inside the image.
        let xz = exec::require(Tool {
            name: "xz",
            package: "xz-utils",
        })?;
        exec::pipe_through(&xz, &["-dc"], &raw).with_context(|| format!("decompressing {name}"))?
    } else {
        raw
    };
    Ok(out)
}

/// Fixed mtime for every entry: SOURCE_DATE_EPOCH when set, else 0.
fn archive_mtime() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0)
}

/// Assemble the archive (uncompressed) for kernel `kver` of `root`.
/// Returns it with the number of modules shipped.
pub fn assemble(
    img: &ImageRoot,
    kver: &str,
    modules: &ModuleSpec,
) -> Result<(cpio::Archive, usize)> {
    let k = kernel::select(img, Some(kver))?;
    let busybox = image_busybox(img)?;
    let db = modules::ModuleDb::load(img, &k.modules_dir, kver)?;
    let sel = db.resolve(modules)?;

    let mut a = cpio::Archive::new();
    for d in ["dev", "etc", "proc", "root", "run", "sys", "tmp", "sbin"] {
        a.dir(d)?;
    }
    a.add(
        "dev/console",
        cpio::Entry::CharDev {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    )?;
    a.add(
        "dev/null",
        cpio::Entry::CharDev {
            mode: 0o666,
            major: 1,
            minor: 3,
        },
    )?;
    a.file("bin/busybox", 0o755, busybox)?;
    for ap in APPLETS {
        a.symlink(&format!("bin/{ap}"), "busybox")?;
    }
    // The kernel's request_module() runs /sbin/modprobe.
    a.symlink("sbin/modprobe", "../bin/busybox")?;
    a.file("init", 0o755, INIT_SH.replace("@KVER@", kver).into_bytes())?;
    a.file(
        "etc/udhcpc.script",
        0o755,
        UDHCPC_SCRIPT.as_bytes().to_vec(),
    )?;
    let mut load = sel.always_load.join("\n");
    load.push('\n');
    a.file("etc/nfsroot/modules.load", 0o644, load.into_bytes())?;

    let mdir = format!("lib/modules/{kver}");
    a.file(
        &format!("{mdir}/modules.dep"),
        0o644,
        db.trimmed_dep(&sel).into_bytes(),
    )?;
    a.file(
        &format!("{mdir}/modules.alias"),
        0o644,
        db.trimmed_alias(&sel).into_bytes(),
    )?;
    if let Some(b) = img.read_opt(k.modules_dir.join("modules.builtin"))? {
        a.file(&format!("{mdir}/modules.builtin"), 0o644, b)?;
    }
    for name in &sel.modules {
        let rel = &db.modules[name].rel;
        let path = k.modules_dir.join(rel);
        let data = decompress_module(&img.show(&path), img.read(&path)?)?;
        a.file(
            &format!("{mdir}/{}", modules::shipped_rel(rel)),
            0o644,
            data,
        )?;
    }
    Ok((a, sel.modules.len()))
}

/// Build the initramfs for kernel `kver` of the image at `root` into `out`.
pub fn build(img: &ImageRoot, kver: &str, spec: &Spec, out: &mut dyn Write) -> Result<Stats> {
    let (archive, nmods) = assemble(img, kver, &spec.modules)?;
    let mut raw = Vec::new();
    let uncompressed = archive.write(&mut raw, archive_mtime())?;
    let mut hw = HashingWriter::new(out);
    match spec.compression {
        Compression::Gzip => {
            // No mtime, no file name in the header: reproducible.
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(3)
                .write(&mut hw, flate2::Compression::new(6));
            enc.write_all(&raw).context("compressing initramfs")?;
            enc.finish().context("compressing initramfs")?;
        }
        Compression::Zstd => {
            // Level 9 is the knee on a default (all-Ethernet) set: 10 MB in
            // ~1 s, where 19 saves another 10% for 20x the time. Two
            // workers: zstd's output is the same for any worker count >= 1,
            // so this stays reproducible on any machine.
            let mut enc = zstd::stream::Encoder::new(&mut hw, 9).context("starting zstd")?;
            enc.include_checksum(true)?;
            enc.multithread(2).context("starting zstd workers")?;
            enc.write_all(&raw).context("compressing initramfs")?;
            enc.finish().context("compressing initramfs")?;
        }
    }
    hw.flush().context("writing initramfs")?;
    let compressed = hw.count();
    Ok(Stats {
        modules: nmods,
        files: archive.len(),
        uncompressed,
        compressed,
        sha256: hw.finish_hex(),
    })
}

/// Decompress (gzip, zstd or none, by magic) and parse an initramfs.
pub fn read_entries_bytes(data: &[u8]) -> Result<Vec<cpio::ReadEntry>> {
    let raw: Vec<u8> = if data.starts_with(&[0x1f, 0x8b]) {
        let mut v = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut v)
            .context("decompressing gzip initramfs")?;
        v
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::decode_all(data).context("decompressing zstd initramfs")?
    } else {
        data.to_vec()
    };
    cpio::parse(&raw)
}

/// Read an initramfs file back: `(path, st_mode, data)` for every entry.
pub fn read_entries(path: &Path) -> Result<Vec<cpio::ReadEntry>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    read_entries_bytes(&data).with_context(|| format!("reading {}", path.display()))
}

/// The conf.d file that makes the image's initramfs-tools build NFS-root
/// images; it stays in the image so its own update-initramfs agrees.
pub const INITRAMFS_TOOLS_CONF: &str = "etc/initramfs-tools/conf.d/nfsroot";

/// initramfs-tools' hook and nfs-bottom script that give a node its own
/// machine id, as our `/init` does (see [`machine_id`]).
pub const INITRAMFS_TOOLS_HOOK: &str = "etc/initramfs-tools/hooks/nfsroot-machine-id";
pub const INITRAMFS_TOOLS_SCRIPT: &str =
    "etc/initramfs-tools/scripts/nfs-bottom/nfsroot-machine-id";

/// The hook: the tools `node_machine_id` runs, from the image, under a
/// directory of their own (initramfs-tools' busybox or klibc may lack them
/// or their bind and remount options).
const MACHINE_ID_HOOK: &str = "#!/bin/sh
# written by nfsroot: the tools nfs-bottom/nfsroot-machine-id runs
case \"$1\" in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for t in mount sha256sum cut tr cat; do
    copy_exec \"$(command -v \"$t\")\" \"/usr/lib/nfsroot/bin/$t\"
done
";

/// init.sh's `node_machine_id` function: the one derivation both backends
/// run.
fn machine_id_function() -> String {
    INIT_SH
        .lines()
        .skip_while(|l| !l.starts_with("node_machine_id() {"))
        .take_while(|l| *l != "}")
        .chain(["}"])
        .collect::<Vec<_>>()
        .join("\n")
}

/// The nfs-bottom script (run once the NFS root is on `$rootmnt`, before
/// the switch): init.sh's own `node_machine_id`, so both backends derive
/// the same id from the boot NIC's MAC. A failure panics: systemd would
/// otherwise write a new id into a read-write root's shared file.
pub fn initramfs_tools_machine_id_script() -> String {
    let func = machine_id_function();
    format!(
        "#!/bin/sh\n# written by nfsroot: this node's own /etc/machine-id, as nfsroot's /init binds it\n\
         case \"$1\" in prereqs) exit 0 ;; esac\n\
         . /scripts/functions\n\
         PATH=/usr/lib/nfsroot/bin:$PATH\n\
         log() {{ echo \"nfsroot-machine-id: $*\"; }}\n\
         rescue() {{ panic \"nfsroot-machine-id: $*\"; }}\n\
         IF=\n\
         for f in /run/net-*.conf; do [ -r \"$f\" ] && IF=$(. \"$f\" && echo \"$DEVICE\") && break; done\n\
         {func}\n\
         mkdir -p /run/nfsroot\n\
         node_machine_id \"${{rootmnt:-/root}}\" \"$(cat \"/sys/class/net/$IF/address\" 2>/dev/null)\" /run/nfsroot/machine-id\n"
    )
}

/// Build with the image's own `mkinitramfs` (BOOT=nfs, MODULES=netboot),
/// run inside the image. Needs root. The lasting changes to the image are
/// [`INITRAMFS_TOOLS_CONF`] and the machine-id hook and script (they stay
/// so the image's own update-initramfs agrees).
pub fn build_with_initramfs_tools(root: &Path, kver: &str, out: &Path) -> Result<()> {
    exec::require_root("building an initramfs with mkinitramfs")?;
    let img = ImageRoot::open(root)?;
    kernel::select(&img, Some(kver))?;
    if !img.is_file("usr/sbin/mkinitramfs") {
        bail!(
            "the image has no /usr/sbin/mkinitramfs; add initramfs-tools to the profile's packages"
        );
    }
    img.write(
        INITRAMFS_TOOLS_CONF,
        b"# written by nfsroot: boot from an NFS root, with network drivers only\nBOOT=nfs\nMODULES=netboot\n",
        0o644,
    )?;
    for dir in [
        "etc/initramfs-tools/hooks",
        "etc/initramfs-tools/scripts/nfs-bottom",
    ] {
        img.create_dir_all(dir, 0o755)?;
    }
    img.write(INITRAMFS_TOOLS_HOOK, MACHINE_ID_HOOK.as_bytes(), 0o755)?;
    img.write(
        INITRAMFS_TOOLS_SCRIPT,
        initramfs_tools_machine_id_script().as_bytes(),
        0o755,
    )?;
    let tmp_rel = format!("tmp/nfsroot-initrd-{}", fsutil::random_hex());
    let argv: Vec<OsString> = vec![
        "mkinitramfs".into(),
        "-o".into(),
        format!("/{tmp_rel}").into(),
        kver.into(),
    ];
    let res = exec::chroot_cmd(root, &argv)?
        .run()
        .with_context(|| {
            format!(
                "running mkinitramfs for kernel {kver} in {}",
                root.display()
            )
        })
        .and_then(|_| {
            let f = img.open_file(&tmp_rel)?;
            fsutil::atomic_copy_from(f, out, 0o644).map(|_| ())
        });
    let _ = img.remove_file(&tmp_rel);
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A fake image root: kernel, fake module tree, and optionally a
    /// foreign-arch static "busybox" (so the applet check is skipped).
    fn fake_root(dir: &Path, busybox: bool) {
        let kver = "6.1.0-9-amd64";
        std::fs::create_dir_all(dir.join("boot")).unwrap();
        std::fs::write(dir.join(format!("boot/vmlinuz-{kver}")), "k").unwrap();
        modules::tests::fake_tree(&dir.join(format!("lib/modules/{kver}")));
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
        if busybox {
            std::fs::write(dir.join("usr/bin/busybox"), fake_static_elf()).unwrap();
        }
    }

    /// A static ELF header followed by busybox's applet name table.
    fn fake_static_elf() -> Vec<u8> {
        let mut v = vec![0u8; 64];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v[5] = 1;
        v[18..20].copy_from_slice(&0x9999u16.to_le_bytes());
        v.extend_from_slice(b"[\0[[\0");
        for a in APPLETS {
            v.extend_from_slice(a.as_bytes());
            v.push(0);
        }
        v
    }

    fn img(d: &tempfile::TempDir) -> ImageRoot {
        ImageRoot::open(d.path()).unwrap()
    }

    #[test]
    fn builds_from_fake_root_and_is_reproducible() {
        let d = tempfile::tempdir().unwrap();
        fake_root(d.path(), true);
        let spec = Spec::default();
        let mut a = Vec::new();
        let r = build(&img(&d), "6.1.0-9-amd64", &spec, &mut a).unwrap();
        let mut b = Vec::new();
        build(&img(&d), "6.1.0-9-amd64", &spec, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(r.compressed as usize, a.len());
        assert_eq!(r.modules, 13);
        let e = read_entries_bytes(&a).unwrap();
        assert_eq!(e.len(), r.files);
        let get = |p: &str| e.iter().find(|x| x.0 == p).unwrap_or_else(|| panic!("{p}"));
        assert_eq!(get("init").1, 0o100755);
        assert_eq!(get("bin/sh").2, b"busybox");
        let dep =
            String::from_utf8(get("lib/modules/6.1.0-9-amd64/modules.dep").2.clone()).unwrap();
        assert!(dep.contains("kernel/fs/nfs/nfsv4.ko:"));
        // The .ko.zst module is shipped decompressed under a .ko name.
        assert_eq!(
            get("lib/modules/6.1.0-9-amd64/kernel/fs/nfs/nfsv4.ko").2,
            b"module kernel/fs/nfs/nfsv4.ko.zst"
        );
        let load = get("etc/nfsroot/modules.load");
        assert_eq!(load.2, b"nfs\nnfsv3\nnfsv4\n");
        // Gzip is reproducible too.
        let gz = Spec {
            compression: Compression::Gzip,
            ..Spec::default()
        };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        build(&img(&d), "6.1.0-9-amd64", &gz, &mut x).unwrap();
        build(&img(&d), "6.1.0-9-amd64", &gz, &mut y).unwrap();
        assert_eq!(x, y);
        assert_eq!(read_entries_bytes(&x).unwrap(), e);
    }

    #[test]
    fn missing_busybox_is_named() {
        let d = tempfile::tempdir().unwrap();
        fake_root(d.path(), false);
        let e = build(&img(&d), "6.1.0-9-amd64", &Spec::default(), &mut Vec::new()).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains(
                "the image has no /bin/busybox; add busybox-static to the profile's packages"
            ),
            "{e}"
        );
    }

    #[test]
    fn extra_modules_extend_the_default_set() {
        let s = Spec::with_modules(&["e1000".into()], &["virtio_net".into()]);
        assert_eq!(s.modules.include, ["default", "e1000"]);
        assert_eq!(s.modules.exclude, ["virtio_net"]);
        assert_eq!(s.compression, Compression::Gzip);
        let p = crate::fixups::testutil::profile("");
        let s = Spec::of_profile(&p).unwrap();
        assert_eq!(s.compression, Compression::Gzip);
        assert_eq!(s.backend, Backend::Nfsroot);
        assert_eq!(s.modules.include, ["default"]);
    }

    #[test]
    fn busybox_is_scanned_never_run() {
        let d = tempfile::tempdir().unwrap();
        fake_root(d.path(), false);
        let marker = d.path().join("MARKER");
        // A host-runnable static "busybox" that would leave a marker and
        // list every applet if anything ran it.
        let script = format!("#!/bin/sh\ntouch {}\n", marker.display());
        let mut elf = fake_static_elf();
        elf.extend_from_slice(script.as_bytes());
        std::fs::write(d.path().join("usr/bin/busybox"), &elf).unwrap();
        build(&img(&d), "6.1.0-9-amd64", &Spec::default(), &mut Vec::new()).unwrap();
        assert!(!marker.exists());
        // Without an applet the initramfs needs, it is refused by name.
        let short: Vec<u8> = elf
            .windows(b"\0switch_root\0".len())
            .position(|w| w == b"\0switch_root\0")
            .map(|i| [&elf[..i + 1], &elf[i + 12..]].concat())
            .unwrap();
        std::fs::write(d.path().join("usr/bin/busybox"), &short).unwrap();
        let e = build(&img(&d), "6.1.0-9-amd64", &Spec::default(), &mut Vec::new()).unwrap_err();
        assert!(
            format!("{e:#}").contains("lacks applets the initramfs needs: switch_root"),
            "{e:#}"
        );
    }

    #[test]
    fn module_links_out_of_the_image_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        fake_root(d.path(), true);
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "TOP-SECRET-BYTES").unwrap();
        let mdir = d.path().join("lib/modules/6.1.0-9-amd64");
        std::fs::remove_file(mdir.join("kernel/fs/nfs/nfs.ko")).unwrap();
        std::os::unix::fs::symlink(&secret, mdir.join("kernel/fs/nfs/nfs.ko")).unwrap();
        let e = build(&img(&d), "6.1.0-9-amd64", &Spec::default(), &mut Vec::new()).unwrap_err();
        assert!(
            format!("{e:#}").contains("kernel/fs/nfs/nfs.ko does not exist"),
            "{e:#}"
        );
        std::fs::remove_file(mdir.join("kernel/fs/nfs/nfs.ko")).unwrap();
        std::fs::write(mdir.join("kernel/fs/nfs/nfs.ko"), "module").unwrap();
        let _ = std::fs::remove_file(mdir.join("modules.builtin"));
        std::os::unix::fs::symlink(&secret, mdir.join("modules.builtin")).unwrap();
        let mut out = Vec::new();
        build(&img(&d), "6.1.0-9-amd64", &Spec::default(), &mut out).unwrap();
        for e in read_entries_bytes(&out).unwrap() {
            assert!(
                !e.2.windows(16).any(|w| w == b"TOP-SECRET-BYTES"),
                "{}",
                e.0
            );
        }
    }

    /// The command words of a shell script: the first word of every simple
    /// command, including those inside `$( )`; quoted text, arithmetic and
    /// case patterns are skipped. Enough for our own two scripts.
    fn command_words(script: &str) -> BTreeSet<String> {
        #[derive(PartialEq)]
        enum F {
            Cmd(u32),
            Dq,
        }
        let mut out = String::new();
        let mut stack = vec![F::Cmd(0)];
        let c: Vec<char> = script.chars().collect();
        let mut i = 0;
        while i < c.len() {
            let ch = c[i];
            let top = stack.last_mut().unwrap();
            match top {
                F::Dq => {
                    if ch == '\\' {
                        i += 1;
                    } else if ch == '"' {
                        stack.pop();
                    } else if ch == '$' && c.get(i + 1) == Some(&'(') && c.get(i + 2) != Some(&'(')
                    {
                        stack.push(F::Cmd(0));
                        out.push('\n');
                        i += 1;
                    }
                }
                F::Cmd(depth) => match ch {
                    '#' if i == 0 || c[i - 1].is_whitespace() => {
                        while i < c.len() && c[i] != '\n' {
                            i += 1;
                        }
                        out.push('\n');
                    }
                    '\'' => {
                        i += 1;
                        while i < c.len() && c[i] != '\'' {
                            i += 1;
                        }
                        out.push('@');
                    }
                    '"' => {
                        stack.push(F::Dq);
                        out.push('@');
                    }
                    '$' if c.get(i + 1) == Some(&'(') && c.get(i + 2) == Some(&'(') => {
                        // Arithmetic: skip to the closing "))".
                        while i + 1 < c.len() && !(c[i] == ')' && c[i + 1] == ')') {
                            i += 1;
                        }
                        i += 1;
                        out.push('@');
                    }
                    '$' if c.get(i + 1) == Some(&'(') => {
                        stack.push(F::Cmd(0));
                        out.push('\n');
                        i += 1;
                    }
                    '$' if c.get(i + 1) == Some(&'{') => {
                        while i < c.len() && c[i] != '}' {
                            i += 1;
                        }
                        out.push('@');
                    }
                    '(' => {
                        *depth += 1;
                        out.push('\n');
                    }
                    ')' if *depth > 0 => {
                        *depth -= 1;
                        out.push('\n');
                    }
                    ')' if stack.len() > 1 => {
                        // Back in the enclosing word: not a command start.
                        stack.pop();
                        out.push_str("\n@");
                    }
                    ')' => {
                        // A case pattern ends here: drop it.
                        while !out.is_empty() && !out.ends_with('\n') {
                            out.pop();
                        }
                        out.push('\n');
                    }
                    '&' if i > 0 && (c[i - 1] == '>' || c[i - 1] == '<') => out.push(ch),
                    // Alternatives of a case pattern must stay on one line
                    // so the pattern can be dropped whole at its ')'.
                    '|' => out.push('\u{1}'),
                    ';' | '&' | '{' | '}' | '\n' => out.push('\n'),
                    _ => out.push(ch),
                },
            }
            i += 1;
        }
        let keywords = [
            "if", "then", "else", "elif", "fi", "for", "do", "done", "while", "until", "case",
            "esac", "in", "!", "exec",
        ];
        let mut words = BTreeSet::new();
        for seg in out.split(['\n', '\u{1}']) {
            for w in seg.split_whitespace() {
                if w == "for" {
                    break; // for NAME in WORDS
                }
                if keywords.contains(&w) {
                    continue;
                }
                if w.contains('=') {
                    continue; // an assignment before the command
                }
                if w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '[')
                {
                    words.insert(w.to_string());
                }
                break;
            }
        }
        words
    }

    /// init.sh's `node_machine_id`, run by busybox in a mount namespace on a
    /// fake new root: the node reads the MAC-derived id (the one
    /// [`machine_id`] predicts), cannot write it, and the shared file under
    /// the bind stays empty; without a MAC, a random id per boot.
    #[test]
    fn init_binds_a_per_node_machine_id_read_only() {
        let func: String = machine_id_function();
        assert!(func.len() > 100, "{func}");
        let run = |mac: &str| {
            let d = tempfile::tempdir().unwrap();
            let root = d.path();
            std::fs::create_dir_all(root.join("etc")).unwrap();
            std::fs::create_dir_all(root.join("run/nfsroot")).unwrap();
            std::fs::write(root.join("etc/machine-id"), "").unwrap();
            let script = format!(
                "log() {{ echo \"$*\" >&2; }}; rescue() {{ echo \"FATAL $*\"; exit 1; }}; IF=eth0\n{func}\n\
                 node_machine_id \"$1\" \"$2\" \"$1/run/nfsroot/machine-id\"\ncat \"$1/etc/machine-id\"\n\
                 echo 0123456789abcdef0123456789abcdef 2>/dev/null >\"$1/etc/machine-id\" || echo REFUSED\n"
            );
            let out = std::process::Command::new("unshare")
                .args(["-m", "busybox", "sh", "-c", &script, "sh"])
                .arg(root)
                .arg(mac)
                .output()
                .expect("unshare (util-linux) and busybox (busybox-static) on PATH");
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(out.status.success(), "{text}\n{err}");
            // Outside the namespace (as the server's file): still empty.
            assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
            let (text, refused) = text.rsplit_once('\n').unwrap_or((&text, ""));
            assert_eq!(refused, "REFUSED", "the node could write its machine id");
            (text.to_string(), err)
        };
        let mac = "52:54:00:aa:bb:cc";
        let (id, log) = run(mac);
        assert_eq!(id, machine_id(mac), "{log}");
        assert!(log.contains("from the MAC of eth0"), "{log}");
        assert_ne!(machine_id(mac), machine_id("52:54:00:12:34:56"));
        let (a, log) = run("");
        let (b, _) = run("");
        assert!(log.contains("random, for this boot"), "{log}");
        for r in [&a, &b] {
            assert!(
                r.len() == 32 && r.chars().all(|c| c.is_ascii_hexdigit()),
                "{r}"
            );
        }
        assert_ne!(a, b);
    }

    /// initramfs-tools' nfs-bottom script runs init.sh's function on the
    /// mounted root, with the MAC of the device ipconfig configured, and
    /// both scripts are valid sh (the hook prints no prerequisites).
    #[test]
    fn initramfs_tools_script_runs_the_same_derivation() {
        let s = initramfs_tools_machine_id_script();
        assert!(s.contains(&machine_id_function()), "{s}");
        assert!(s.contains(
            "node_machine_id \"${rootmnt:-/root}\" \"$(cat \"/sys/class/net/$IF/address\""
        ));
        for text in [s.as_str(), MACHINE_ID_HOOK] {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("{text}\nexit 7"), "sh", "prereqs"])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{text}");
            assert!(out.stdout.is_empty());
            let n = std::process::Command::new("sh")
                .args(["-n", "-c", text])
                .status()
                .unwrap();
            assert!(n.success(), "{text}");
        }
    }

    #[test]
    fn init_script_uses_only_listed_applets() {
        let builtins = [
            "echo", "printf", "export", "set", "exit", "return", "continue", "break", "local", ".",
            "[", "test", "true", "false", "shift", "read", "wait",
        ];
        for (name, text) in [("init.sh", INIT_SH), ("udhcpc.script", UDHCPC_SCRIPT)] {
            let words = command_words(text);
            let funcs: BTreeSet<String> = text
                .lines()
                .filter_map(|l| l.split_once("() {").map(|(f, _)| f.trim().to_string()))
                .collect();
            for w in &words {
                if builtins.contains(&w.as_str()) || funcs.contains(w) {
                    continue;
                }
                assert!(
                    APPLETS.contains(&w.as_str()),
                    "{name}: {w:?} is not in APPLETS"
                );
            }
            if name == "init.sh" {
                // And APPLETS lists nothing the scripts do not mention
                // (`setsid cttyhack sh` runs cttyhack as an argument).
                let all: BTreeSet<&str> = [INIT_SH, UDHCPC_SCRIPT]
                    .iter()
                    .flat_map(|t| t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
                    .collect();
                for a in APPLETS {
                    assert!(all.contains(a), "APPLETS lists {a}, which no script runs");
                }
            }
        }
    }
}
