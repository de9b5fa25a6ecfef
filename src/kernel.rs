//! Finding the kernels installed in an image.
//!
//! A kernel is usable for netboot when both halves are present: the image
//! `<root>/boot/vmlinuz-<ver>` and its module tree `<root>/lib/modules/<ver>`
//! (or `usr/lib/modules/<ver>` on merged-/usr layouts). Versions are ordered
//! with Debian's own rules ([`dpkg_version_cmp`], a straight port of dpkg's
//! `verrevcmp`), never by string order, so `6.1.0-10` is newer than
//! `6.1.0-9`. Everything is read from the image tree given as `root`; nothing
//! runs inside it.

use anyhow::{Context, Result, bail};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// A kernel image and its modules, both inside an image root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The release string, as in `uname -r` (e.g. `6.1.0-50-amd64`).
    pub version: String,
    /// `<root>/boot/vmlinuz-<version>`.
    pub vmlinuz: PathBuf,
    /// `<root>/lib/modules/<version>` (or under usr/lib).
    pub modules_dir: PathBuf,
}

/// Compare two Debian version strings exactly as dpkg does:
/// `[epoch:]upstream[-revision]`, with `~` sorting before everything (even
/// the end of the string), letters before non-letters, and digit runs
/// compared numerically.
pub fn dpkg_version_cmp(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_version(a);
    let (eb, ub, rb) = split_version(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

/// Split into (epoch, upstream, revision). A missing or malformed epoch is 0;
/// the revision follows the last hyphen.
fn split_version(v: &str) -> (u64, &str, &str) {
    let v = v.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), r)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// dpkg's weight of one non-digit character.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit prefix, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let bc = order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        // Digit run, numerically (skip leading zeros, then longer wins,
        // then the first differing digit).
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let si = i;
        let sj = j;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        if da.len() != db.len() {
            return da.len().cmp(&db.len());
        }
        if da != db {
            return da.cmp(db);
        }
    }
    Ordering::Equal
}

/// The module tree of `version` inside `root`, if there is one.
fn modules_dir(root: &Path, version: &str) -> Option<PathBuf> {
    // Resolved inside the image: `lib` may be an absolute symlink.
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|d| crate::initramfs::path_in_root(root, &format!("{d}/{version}")).ok())
        .find(|p| p.is_dir())
}

/// Every `vmlinuz-*` in `<root>/boot`, oldest first, with the module tree
/// of each (`None` when the image lacks it).
fn boot_kernels(root: &Path) -> Result<Vec<(String, PathBuf, Option<PathBuf>)>> {
    let boot = root.join("boot");
    let rd = match std::fs::read_dir(&boot) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", boot.display())),
    };
    let mut v = Vec::new();
    for entry in rd {
        let entry = entry.with_context(|| format!("reading {}", boot.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(ver) = name.strip_prefix("vmlinuz-") else {
            continue;
        };
        if ver.is_empty() || !entry.path().is_file() {
            continue;
        }
        let md = modules_dir(root, ver);
        v.push((ver.to_string(), entry.path(), md));
    }
    v.sort_by(|a, b| dpkg_version_cmp(&a.0, &b.0));
    Ok(v)
}

/// Kernels in `<root>/boot` that have their module tree, oldest first.
pub fn find_kernels(root: &Path) -> Result<Vec<Kernel>> {
    Ok(boot_kernels(root)?
        .into_iter()
        .filter_map(|(version, vmlinuz, md)| {
            md.map(|modules_dir| Kernel {
                version,
                vmlinuz,
                modules_dir,
            })
        })
        .collect())
}

/// The newest kernel of the image. Fails naming what is missing: no kernel
/// at all, or a kernel whose module tree is absent.
pub fn newest(root: &Path) -> Result<Kernel> {
    let all = boot_kernels(root)?;
    let Some((version, vmlinuz, md)) = all.into_iter().next_back() else {
        bail!(
            "no kernel in {}; install one with: nfsroot exec IMAGE -- apt-get install linux-image-amd64",
            root.join("boot").display()
        );
    };
    let Some(modules_dir) = md else {
        bail!(
            "kernel {version} ({}) has no modules tree: neither {} nor {} exists; \
             reinstall its package (linux-image-{version})",
            vmlinuz.display(),
            root.join("lib/modules").join(&version).display(),
            root.join("usr/lib/modules").join(&version).display()
        );
    };
    Ok(Kernel {
        version,
        vmlinuz,
        modules_dir,
    })
}

/// The kernel `version` of the image, or the newest when `None`.
pub fn select(root: &Path, version: Option<&str>) -> Result<Kernel> {
    let Some(want) = version else {
        return newest(root);
    };
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{want}"));
    if !vmlinuz.is_file() {
        let have: Vec<String> = boot_kernels(root)?.into_iter().map(|k| k.0).collect();
        bail!(
            "no kernel {want} in {} (have: {})",
            root.join("boot").display(),
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        );
    }
    let modules_dir = modules_dir(root, want).with_context(|| {
        format!(
            "kernel {want} has no modules tree: {} does not exist",
            root.join("lib/modules").join(want).display()
        )
    })?;
    Ok(Kernel {
        version: want.to_string(),
        vmlinuz,
        modules_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    fn cmp(a: &str, b: &str) -> Ordering {
        let r = dpkg_version_cmp(a, b);
        assert_eq!(dpkg_version_cmp(b, a), r.reverse(), "antisymmetry {a} {b}");
        r
    }

    #[test]
    fn numeric_runs() {
        assert_eq!(cmp("6.1.0-10", "6.1.0-9"), Greater);
        assert_eq!(cmp("6.1.0-10-amd64", "6.1.0-9-amd64"), Greater);
        assert_eq!(cmp("1.010", "1.10"), Equal);
        assert_eq!(cmp("1.2", "1.2"), Equal);
        assert_eq!(cmp("1.2.1", "1.2"), Greater);
    }

    #[test]
    fn tilde_sorts_first() {
        assert_eq!(cmp("1.0~rc1", "1.0"), Less);
        assert_eq!(cmp("1.0~rc1", "1.0~rc2"), Less);
        assert_eq!(cmp("1.0~~", "1.0~"), Less);
        assert_eq!(cmp("1.0~", "1.0"), Less);
    }

    #[test]
    fn letters_before_non_letters() {
        assert_eq!(cmp("1.0a", "1.0+"), Less);
        assert_eq!(cmp("1.0a", "1.0"), Greater);
        assert_eq!(cmp("1.0+deb12u1", "1.0"), Greater);
        assert_eq!(cmp("6.1.0-18+bpo", "6.1.0-18"), Greater);
        assert_eq!(cmp("6.10.6-1~bpo12+1", "6.10.6-1"), Less);
        assert_eq!(cmp("6.10.6-1~bpo12+1", "6.1.0-50"), Greater);
    }

    #[test]
    fn flavours() {
        assert_eq!(cmp("6.1.0-50-rt-amd64", "6.1.0-9-rt-amd64"), Greater);
        assert_eq!(cmp("6.1.0-50-cloud-amd64", "6.1.0-49-cloud-amd64"), Greater);
        assert_eq!(cmp("6.1.0-50-amd64", "6.1.0-50-amd64"), Equal);
        assert_eq!(cmp("6.1.0-50-rt-amd64", "6.1.0-50-amd64"), Greater);
    }

    #[test]
    fn epochs() {
        assert_eq!(cmp("1:1.0", "2.0"), Greater);
        assert_eq!(cmp("1:1.0", "2:0.1"), Less);
        assert_eq!(cmp("0:1.0", "1.0"), Equal);
        assert_eq!(cmp("1:1.35.0-4+deb12u1", "1:1.35.0-4"), Greater);
    }

    fn fake(root: &Path, vers: &[&str], with_modules: &[&str]) {
        std::fs::create_dir_all(root.join("boot")).unwrap();
        for v in vers {
            std::fs::write(root.join(format!("boot/vmlinuz-{v}")), "k").unwrap();
        }
        for v in with_modules {
            std::fs::create_dir_all(root.join(format!("lib/modules/{v}"))).unwrap();
        }
        std::fs::write(root.join("boot/config-6.1.0-9-amd64"), "").unwrap();
    }

    #[test]
    fn finds_and_orders() {
        let d = tempfile::tempdir().unwrap();
        let vers = ["6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-50-amd64"];
        fake(d.path(), &vers, &vers);
        let ks = find_kernels(d.path()).unwrap();
        let got: Vec<_> = ks.iter().map(|k| k.version.as_str()).collect();
        assert_eq!(got, vers);
        let n = newest(d.path()).unwrap();
        assert_eq!(n.version, "6.1.0-50-amd64");
        assert_eq!(n.vmlinuz, d.path().join("boot/vmlinuz-6.1.0-50-amd64"));
        assert_eq!(n.modules_dir, d.path().join("lib/modules/6.1.0-50-amd64"));
    }

    #[test]
    fn usr_lib_modules() {
        let d = tempfile::tempdir().unwrap();
        fake(d.path(), &["6.1.0-9-amd64"], &[]);
        std::fs::create_dir_all(d.path().join("usr/lib/modules/6.1.0-9-amd64")).unwrap();
        let k = newest(d.path()).unwrap();
        assert!(k.modules_dir.ends_with("usr/lib/modules/6.1.0-9-amd64"));
        // An absolute lib -> /usr/lib link resolves inside the image.
        std::os::unix::fs::symlink("/usr/lib", d.path().join("lib")).unwrap();
        let k = newest(d.path()).unwrap();
        assert_eq!(
            k.modules_dir,
            d.path().join("usr/lib/modules/6.1.0-9-amd64")
        );
    }

    #[test]
    fn no_kernel() {
        let d = tempfile::tempdir().unwrap();
        let e = format!("{:#}", newest(d.path()).unwrap_err());
        assert!(e.contains("no kernel in"), "{e}");
        assert!(
            e.contains("nfsroot exec IMAGE -- apt-get install linux-image-amd64"),
            "{e}"
        );
        assert!(find_kernels(d.path()).unwrap().is_empty());
    }

    #[test]
    fn kernel_without_modules() {
        let d = tempfile::tempdir().unwrap();
        fake(
            d.path(),
            &["6.1.0-9-amd64", "6.1.0-10-amd64"],
            &["6.1.0-9-amd64"],
        );
        let e = format!("{:#}", newest(d.path()).unwrap_err());
        assert!(e.contains("kernel 6.1.0-10-amd64"), "{e}");
        assert!(e.contains("has no modules tree"), "{e}");
        let ks = find_kernels(d.path()).unwrap();
        assert_eq!(ks.len(), 1);
        let e = format!(
            "{:#}",
            select(d.path(), Some("6.1.0-10-amd64")).unwrap_err()
        );
        assert!(e.contains("no modules tree"), "{e}");
        let e = format!(
            "{:#}",
            select(d.path(), Some("5.10.0-1-amd64")).unwrap_err()
        );
        assert!(e.contains("have: 6.1.0-9-amd64, 6.1.0-10-amd64"), "{e}");
    }
}
