//! The TFTP view a PXE boot test serves: a directory under the test's work
//! directory with symlinks to everything published in the TFTP root, and a
//! private copy of `pxelinux.cfg/` whose APPEND lines are rewritten to boot
//! read-only when the profile's root is read-write. The published tree is
//! never changed. With `per_host`, the view gets a `01-<mac>` file and a
//! `default` that boots nothing, so a passing boot proves the per-host
//! lookup.

use crate::fsutil;
use crate::image::Layout;
use crate::publish;
use crate::pxelinux;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Build the view under `work`; its path.
pub fn tftp_view(
    layout: &Layout,
    work: &Path,
    mac: &str,
    per_host: bool,
    rw: bool,
) -> Result<PathBuf> {
    let view = work.join("tftp");
    let cfg = view.join("pxelinux.cfg");
    fsutil::mkdir_p(&cfg)?;
    for e in std::fs::read_dir(&layout.tftp_root)
        .with_context(|| format!("reading {}", layout.tftp_root.display()))?
        .flatten()
    {
        if e.file_name() != "pxelinux.cfg" {
            let link = view.join(e.file_name());
            std::os::unix::fs::symlink(e.path(), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    let src = publish::cfg_dir(layout);
    for e in std::fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(fsutil::TEMP_PREFIX) {
            continue;
        }
        let text = std::fs::read_to_string(e.path())
            .with_context(|| format!("reading {}", e.path().display()))?;
        write(&cfg.join(&name), &boot_read_only(text, rw))?;
    }
    if per_host {
        per_host_only(&cfg, mac)?;
    }
    Ok(view)
}

/// With `rw`, every APPEND line's `rw` word becomes `ro`.
fn boot_read_only(t: String, rw: bool) -> String {
    if !rw {
        return t;
    }
    t.lines()
        .map(|l| {
            if l.trim_start().starts_with("APPEND") {
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

/// Give `mac` its own config (a copy of `default` unless published) and
/// make `default` refuse to boot.
fn per_host_only(cfg: &Path, mac: &str) -> Result<()> {
    let mac_file = cfg.join(pxelinux::mac_file_name(mac));
    let default = cfg.join("default");
    if !mac_file.exists() {
        let d = std::fs::read_to_string(&default)
            .with_context(|| format!("reading {}", default.display()))?;
        write(&mac_file, &d)?;
    }
    let off = pxelinux::render(&pxelinux::Config {
        header: "boot-test: default must not be used in a per-host test".into(),
        serial: Some((0, 115200)),
        timeout_s: 0,
        boot: pxelinux::Boot::Disabled(
            "boot-test: fell through to default; per-host lookup failed".into(),
        ),
    });
    write(&default, &off)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "DEFAULT m\nLABEL m\n  KERNEL m/vmlinuz\n  APPEND root=/dev/nfs rw quiet\n";

    fn layout(d: &Path) -> Layout {
        let l = Layout {
            base_dir: d.join("base"),
            tftp_root: d.join("tftp"),
            cache_dir: d.join("cache"),
        };
        std::fs::create_dir_all(l.tftp_root.join("pxelinux.cfg")).unwrap();
        std::fs::create_dir_all(l.tftp_root.join("m")).unwrap();
        std::fs::write(l.tftp_root.join("pxelinux.0"), "pxe").unwrap();
        std::fs::write(l.tftp_root.join("pxelinux.cfg/default"), CFG).unwrap();
        l
    }

    #[test]
    fn view_links_files_and_boots_read_only() {
        let d = tempfile::tempdir().unwrap();
        let l = layout(d.path());
        let work = d.path().join("work");
        let v = tftp_view(&l, &work, "52:54:00:12:34:56", false, true).unwrap();
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
    }

    #[test]
    fn per_host_view_disables_default() {
        let d = tempfile::tempdir().unwrap();
        let l = layout(d.path());
        let v = tftp_view(&l, &d.path().join("w"), "52:54:00:12:34:56", true, false).unwrap();
        let host = std::fs::read_to_string(v.join("pxelinux.cfg/01-52-54-00-12-34-56")).unwrap();
        assert_eq!(host, CFG, "kept as published when the root is ro");
        let default = std::fs::read_to_string(v.join("pxelinux.cfg/default")).unwrap();
        assert!(
            default.contains("boot-test: fell through to default"),
            "{default}"
        );
        assert!(!default.contains("KERNEL"), "{default}");
    }

    #[test]
    fn view_error_names_the_tftp_root() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout {
            base_dir: d.path().join("base"),
            tftp_root: d.path().join("no-tftp"),
            cache_dir: d.path().join("cache"),
        };
        let e = tftp_view(&l, d.path(), "52:54:00:12:34:56", false, false).unwrap_err();
        assert_eq!(format!("{e}"), format!("reading {}", l.tftp_root.display()));
    }
}
