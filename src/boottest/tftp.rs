//! The TFTP view a PXE boot test serves: a directory under the test's work
//! directory with symlinks to everything published in the TFTP root
//! (kernels, initramfs images, pxelinux.0, shimx64.efi, grubx64.efi, ...),
//! and private copies of the boot configs, `nfsroot.ipxe` and
//! `pxelinux.cfg/` for BIOS nodes and `grub/` for UEFI ones, whose kernel
//! command lines (`kernel`, `APPEND`, `linux`) are rewritten to boot
//! read-only when the profile's root is read-write. The published tree is
//! never changed. With `per_host`, each loader's per-host config for the
//! MAC exists (`01-<mac>` and `grub.cfg-01-<mac>`: as published, else a
//! copy of what the loader would boot by default: PXELINUX's `default`,
//! the image's own GRUB config) and each default boots nothing
//! (`pxelinux.cfg/default`, and `grub/grub.cfg` and `nfsroot.ipxe` after
//! their per-host search), so a passing boot proves the per-host lookup.

use crate::fsutil;
use crate::grub;
use crate::image::Layout;
use crate::ipxe;
use crate::publish;
use crate::pxelinux::{self, Boot, Config};
use anyhow::{Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// What a default config says when a per-host test falls through to it.
pub const FELL_THROUGH: &str = "boot-test: fell through to default; per-host lookup failed";

/// Build the view of `image`'s boot under `work`; its path.
pub fn tftp_view(
    layout: &Layout,
    work: &Path,
    image: &str,
    mac: &str,
    per_host: bool,
    rw: bool,
) -> Result<PathBuf> {
    let view = work.join("tftp");
    fsutil::mkdir_p(&view)?;
    for e in std::fs::read_dir(&layout.tftp_root)
        .with_context(|| format!("reading {}", layout.tftp_root.display()))?
        .flatten()
    {
        if ![
            OsStr::new("pxelinux.cfg"),
            OsStr::new(grub::DIR),
            OsStr::new(ipxe::TOP),
        ]
        .contains(&e.file_name().as_os_str())
        {
            let link = view.join(e.file_name());
            std::os::unix::fs::symlink(e.path(), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    let cfg = view.join("pxelinux.cfg");
    copy_configs(&publish::cfg_dir(layout), &cfg, &["APPEND"], rw)?;
    let top = publish::ipxe_path(layout);
    if top.is_file() {
        let text =
            std::fs::read_to_string(&top).with_context(|| format!("reading {}", top.display()))?;
        write(
            &view.join(ipxe::TOP),
            &boot_read_only(text, &["kernel"], rw),
        )?;
    }
    let grub_src = publish::grub_dir(layout);
    let grub_view = view.join(grub::DIR);
    let has_grub = grub_src.is_dir();
    if has_grub {
        copy_configs(&grub_src, &grub_view, &["linux", "linuxefi"], rw)?;
    }
    if per_host {
        per_host_only(&cfg, mac)?;
        write(
            &view.join(ipxe::TOP),
            &ipxe::render_top(&fell_through(), true),
        )?;
        if has_grub {
            grub_per_host_only(&grub_view, image, mac)?;
        }
    }
    Ok(view)
}

/// Copy every config file of `src` into `dst` (following the per-host
/// links), with `rw` booted read-only on lines starting with a word of
/// `kernel_lines`.
fn copy_configs(src: &Path, dst: &Path, kernel_lines: &[&str], rw: bool) -> Result<()> {
    fsutil::mkdir_p(dst)?;
    for e in std::fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(fsutil::TEMP_PREFIX) || !e.path().is_file() {
            continue;
        }
        let text = std::fs::read_to_string(e.path())
            .with_context(|| format!("reading {}", e.path().display()))?;
        write(&dst.join(&name), &boot_read_only(text, kernel_lines, rw))?;
    }
    Ok(())
}

/// With `rw`, the `rw` word of every line that starts with one of
/// `kernel_lines` becomes `ro`.
fn boot_read_only(t: String, kernel_lines: &[&str], rw: bool) -> String {
    if !rw {
        return t;
    }
    t.lines()
        .map(|l| {
            let first = l.split_whitespace().next().unwrap_or_default();
            if kernel_lines.contains(&first) {
                l.split(' ')
                    .map(|w| if w == "rw" { "ro" } else { w })
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A config that boots nothing and says the per-host lookup failed.
fn fell_through() -> Config {
    Config {
        header: "boot-test: default must not be used in a per-host test".into(),
        serial: Some((0, 115200)),
        timeout_s: 0,
        boot: Boot::Disabled(FELL_THROUGH.into()),
    }
}

/// Give `mac` its own PXELINUX config (a copy of `default` unless
/// published) and make `default` refuse to boot.
fn per_host_only(cfg: &Path, mac: &str) -> Result<()> {
    let mac_file = cfg.join(pxelinux::mac_file_name(mac));
    let default = cfg.join("default");
    if !mac_file.exists() {
        let d = std::fs::read_to_string(&default)
            .with_context(|| format!("reading {}", default.display()))?;
        write(&mac_file, &d)?;
    }
    write(&default, &pxelinux::render(&fell_through()))
}

/// Give `mac` its own GRUB config (a copy of the image's unless published;
/// not of the top config, whose search would find it again) and make the
/// top config boot nothing after its per-host search.
fn grub_per_host_only(dir: &Path, image: &str, mac: &str) -> Result<()> {
    let mac_file = dir.join(grub::mac_file_name(mac));
    if !mac_file.exists() {
        let own = dir.join(grub::image_config_name(image));
        let text =
            std::fs::read_to_string(&own).with_context(|| format!("reading {}", own.display()))?;
        write(&mac_file, &text)?;
    }
    write(
        &dir.join(grub::TOP),
        &grub::try_render_top(&fell_through())?,
    )
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "DEFAULT m\nLABEL m\n  KERNEL m/vmlinuz\n  APPEND root=/dev/nfs rw quiet\n";
    const GRUB: &str = "set default=m\nmenuentry m {\n  linux /m/vmlinuz root=/dev/nfs rw quiet\n  initrd /m/initrd\n}\n";
    const IPXE: &str = "#!ipxe\ngoto boot-m\n:boot-m\nkernel /m/vmlinuz initrd=initrd root=/dev/nfs rw quiet\ninitrd /m/initrd\nboot\n";

    fn tftp_fixture(d: &Path) -> Layout {
        let l = Layout::under(d);
        std::fs::create_dir_all(l.tftp_root.join("pxelinux.cfg")).unwrap();
        std::fs::create_dir_all(l.tftp_root.join("m")).unwrap();
        std::fs::write(l.tftp_root.join("pxelinux.0"), "pxe").unwrap();
        std::fs::write(l.tftp_root.join("pxelinux.cfg/default"), CFG).unwrap();
        std::fs::write(l.tftp_root.join("nfsroot.ipxe"), IPXE).unwrap();
        let grub = l.tftp_root.join("grub");
        std::fs::create_dir_all(&grub).unwrap();
        std::fs::write(l.tftp_root.join("shimx64.efi"), "shim").unwrap();
        std::fs::write(grub.join("nfsroot-m.cfg"), GRUB).unwrap();
        std::fs::write(grub.join("grub.cfg"), format!("# top\n{GRUB}")).unwrap();
        l
    }

    #[test]
    fn view_links_files_and_boots_read_only() {
        let d = tempfile::tempdir().unwrap();
        let l = tftp_fixture(d.path());
        let work = d.path().join("work");
        let v = tftp_view(&l, &work, "m", "52:54:00:12:34:56", false, true).unwrap();
        assert_eq!(v, work.join("tftp"));
        assert_eq!(
            std::fs::read_link(v.join("pxelinux.0")).unwrap(),
            l.tftp_root.join("pxelinux.0")
        );
        assert!(v.join("m").is_dir());
        let cfg = std::fs::read_to_string(v.join("pxelinux.cfg/default")).unwrap();
        assert_eq!(cfg, CFG.replace(" rw ", " ro "));
        // The published config is untouched.
        let published = std::fs::read_to_string(l.tftp_root.join("pxelinux.cfg/default"));
        assert_eq!(published.unwrap(), CFG);
        assert!(!v.join("pxelinux.cfg/01-52-54-00-12-34-56").exists());
        // The iPXE script: a private copy, booting read-only too.
        assert!(!v.join("nfsroot.ipxe").is_symlink());
        let ipxe = std::fs::read_to_string(v.join("nfsroot.ipxe")).unwrap();
        assert_eq!(ipxe, IPXE.replace(" rw ", " ro "));
        // GRUB's configs the same way, its loaders linked.
        assert_eq!(
            std::fs::read_link(v.join("shimx64.efi")).unwrap(),
            l.tftp_root.join("shimx64.efi")
        );
        assert!(!v.join("grub").is_symlink(), "a private copy");
        let own = std::fs::read_to_string(v.join("grub/nfsroot-m.cfg")).unwrap();
        assert_eq!(own, GRUB.replace(" rw ", " ro "));
        let top = std::fs::read_to_string(v.join("grub/grub.cfg")).unwrap();
        assert_eq!(top, format!("# top\n{}", GRUB.replace(" rw ", " ro ")));
        assert!(!v.join("grub/grub.cfg-01-52-54-00-12-34-56").exists());
    }

    #[test]
    fn per_host_view_disables_default() {
        let d = tempfile::tempdir().unwrap();
        let l = tftp_fixture(d.path());
        let v = tftp_view(
            &l,
            &d.path().join("w"),
            "m",
            "52:54:00:12:34:56",
            true,
            false,
        )
        .unwrap();
        let host = std::fs::read_to_string(v.join("pxelinux.cfg/01-52-54-00-12-34-56")).unwrap();
        assert_eq!(host, CFG, "kept as published when the root is ro");
        let default = std::fs::read_to_string(v.join("pxelinux.cfg/default")).unwrap();
        assert!(
            default.contains("boot-test: fell through to default"),
            "{default}"
        );
        assert!(!default.contains("KERNEL"), "{default}");
        // iPXE: the per-host lookup hands over to PXELINUX, the default
        // boots nothing.
        let ipxe = std::fs::read_to_string(v.join("nfsroot.ipxe")).unwrap();
        assert!(ipxe.contains("imgfetch --name nfsroot-per-host pxelinux.cfg/01-${mac:hexhyp}"));
        assert!(ipxe.contains(FELL_THROUGH), "{ipxe}");
        assert!(!ipxe.contains("kernel "), "{ipxe}");
        // GRUB: the host's file is the image's own config (not the top
        // one, which would search again), the top boots nothing.
        let host = std::fs::read_to_string(v.join("grub/grub.cfg-01-52-54-00-12-34-56")).unwrap();
        assert_eq!(host, GRUB);
        let top = std::fs::read_to_string(v.join("grub/grub.cfg")).unwrap();
        assert!(top.contains("configfile \"$prefix/grub.cfg-01-"), "{top}");
        assert!(top.contains(FELL_THROUGH), "{top}");
        assert!(!top.contains("linux "), "{top}");
    }

    #[test]
    fn view_error_names_the_tftp_root() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout {
            base_dir: d.path().join("base"),
            tftp_root: d.path().join("no-tftp"),
            cache_dir: d.path().join("cache"),
        };
        let e = tftp_view(&l, d.path(), "m", "52:54:00:12:34:56", false, false).unwrap_err();
        assert_eq!(format!("{e}"), format!("reading {}", l.tftp_root.display()));
    }
}
