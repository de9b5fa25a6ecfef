//! Finding the kernels installed in an image.
//!
//! A kernel is usable for netboot when both halves are present: the image
//! `<root>/boot/vmlinuz-<ver>` and its module tree `<root>/lib/modules/<ver>`
//! (or `usr/lib/modules/<ver>` on merged-/usr layouts). Versions are ordered
//! with Debian's own rules ([`dpkg_version_cmp`], a straight port of dpkg's
//! `verrevcmp`), never by string order, so `6.1.0-10` is newer than
//! `6.1.0-9`. Everything is read through the image's confined view
//! ([`ImageRoot`]); nothing runs inside it. A file name whose version is not
//! [`valid_version`] (a newline or a space would reach boot configs) is
//! skipped with a warning naming the file.

use crate::imagefs::{ImageRoot, Kind};
use anyhow::{Context, Result, bail};
use std::cmp::Ordering;
use std::path::PathBuf;

/// A kernel image and its modules, both inside an image root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The release string, as in `uname -r` (e.g. `6.1.0-50-amd64`).
    pub version: String,
    /// `boot/vmlinuz-<version>`, inside the image.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>` (or `usr/lib/...`), inside the image.
    pub modules_dir: PathBuf,
}

/// Whether a kernel release string is safe to put in file names and boot
/// configs: `[A-Za-z0-9.+~_-]+`, as Debian's kernel packages use.
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~' | b'_' | b'-'))
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

/// The module tree of `version` inside the image, if there is one.
fn modules_dir(img: &ImageRoot, version: &str) -> Option<PathBuf> {
    // Resolved inside the image: `lib` may be an absolute symlink.
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| PathBuf::from(format!("{d}/{version}")))
        .find(|p| img.is_dir(p))
}

/// Every `vmlinuz-*` in the image's `/boot`, oldest first, with the module
/// tree of each (`None` when the image lacks it).
fn boot_kernels(img: &ImageRoot) -> Result<Vec<(String, PathBuf, Option<PathBuf>)>> {
    let Some(entries) = img.read_dir("boot")? else {
        return Ok(Vec::new());
    };
    let mut v = Vec::new();
    for e in entries {
        let name = e.name.to_string_lossy();
        let Some(ver) = name.strip_prefix("vmlinuz-") else {
            continue;
        };
        if !valid_version(ver) {
            eprintln!(
                "nfsroot: warning: skipping {:?}: a kernel version may hold only \
                 letters, digits and . + ~ _ -",
                img.show(format!("boot/{name}"))
            );
            continue;
        }
        let rel = PathBuf::from(format!("boot/{name}"));
        // A link (vmlinuz-X -> /boot/...) is fine if it ends at a regular
        // file inside the image.
        if !(e.kind == Kind::File || (e.kind == Kind::Symlink && img.is_file(&rel))) {
            continue;
        }
        let md = modules_dir(img, ver);
        v.push((ver.to_string(), rel, md));
    }
    v.sort_by(|a, b| dpkg_version_cmp(&a.0, &b.0));
    Ok(v)
}

/// Kernels in the image's `/boot` that have their module tree, oldest first.
pub fn find_kernels(img: &ImageRoot) -> Result<Vec<Kernel>> {
    Ok(boot_kernels(img)?
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
pub fn newest(img: &ImageRoot) -> Result<Kernel> {
    let all = boot_kernels(img)?;
    let Some((version, vmlinuz, md)) = all.into_iter().next_back() else {
        bail!(
            "no kernel in {}; install one with: nfsroot exec IMAGE -- apt-get install linux-image-amd64",
            img.show("boot")
        );
    };
    let Some(modules_dir) = md else {
        bail!(
            "kernel {version} ({}) has no modules tree: neither {} nor {} exists; \
             reinstall its package (linux-image-{version})",
            img.show(&vmlinuz),
            img.show(format!("lib/modules/{version}")),
            img.show(format!("usr/lib/modules/{version}"))
        );
    };
    Ok(Kernel {
        version,
        vmlinuz,
        modules_dir,
    })
}

/// The kernel `version` of the image, or the newest when `None`.
pub fn select(img: &ImageRoot, version: Option<&str>) -> Result<Kernel> {
    let Some(want) = version else {
        return newest(img);
    };
    if !valid_version(want) {
        bail!(
            "{:?}: {want:?} is not a usable kernel version (only letters, digits \
             and . + ~ _ - may reach boot configs); rename or remove the file",
            img.show(format!("boot/vmlinuz-{want}"))
        );
    }
    let vmlinuz = PathBuf::from(format!("boot/vmlinuz-{want}"));
    if !img.is_file(&vmlinuz) {
        let have: Vec<String> = boot_kernels(img)?.into_iter().map(|k| k.0).collect();
        bail!(
            "no kernel {want} in {} (have: {})",
            img.show("boot"),
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        );
    }
    let modules_dir = modules_dir(img, want).with_context(|| {
        format!(
            "kernel {want} has no modules tree: {} does not exist",
            img.show(format!("lib/modules/{want}"))
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

    use std::path::Path;

    fn img(d: &tempfile::TempDir) -> ImageRoot {
        ImageRoot::open(d.path()).unwrap()
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
        let ks = find_kernels(&img(&d)).unwrap();
        let got: Vec<_> = ks.iter().map(|k| k.version.as_str()).collect();
        assert_eq!(got, vers);
        let n = newest(&img(&d)).unwrap();
        assert_eq!(n.version, "6.1.0-50-amd64");
        assert_eq!(n.vmlinuz, Path::new("boot/vmlinuz-6.1.0-50-amd64"));
        assert_eq!(n.modules_dir, Path::new("lib/modules/6.1.0-50-amd64"));
    }

    #[test]
    fn usr_lib_modules() {
        let d = tempfile::tempdir().unwrap();
        fake(d.path(), &["6.1.0-9-amd64"], &[]);
        std::fs::create_dir_all(d.path().join("usr/lib/modules/6.1.0-9-amd64")).unwrap();
        let k = newest(&img(&d)).unwrap();
        assert!(k.modules_dir.ends_with("usr/lib/modules/6.1.0-9-amd64"));
        // An absolute lib -> /usr/lib link resolves inside the image.
        std::os::unix::fs::symlink("/usr/lib", d.path().join("lib")).unwrap();
        let k = newest(&img(&d)).unwrap();
        assert!(img(&d).is_dir(&k.modules_dir));
    }

    #[test]
    fn hostile_names_and_links_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        fake(d.path(), &["6.1.0-9-amd64"], &["6.1.0-9-amd64"]);
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        for bad in ["6.1.0-99\nDEFAULT evil", "6 1"] {
            std::fs::write(d.path().join(format!("boot/vmlinuz-{bad}")), "k").unwrap();
            std::fs::create_dir_all(d.path().join(format!("lib/modules/{bad}"))).unwrap();
        }
        // A newer kernel name that links out of the image: it resolves
        // inside, where nothing is, so it is not a kernel.
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            d.path().join("boot/vmlinuz-6.1.0-99-amd64"),
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("lib/modules/6.1.0-99-amd64")).unwrap();
        let got: Vec<_> = find_kernels(&img(&d))
            .unwrap()
            .into_iter()
            .map(|k| k.version)
            .collect();
        assert_eq!(got, ["6.1.0-9-amd64"]);
        assert!(select(&img(&d), Some("6 1")).is_err());
    }

    #[test]
    fn no_kernel() {
        let d = tempfile::tempdir().unwrap();
        let e = format!("{:#}", newest(&img(&d)).unwrap_err());
        assert!(e.contains("no kernel in"), "{e}");
        assert!(
            e.contains("nfsroot exec IMAGE -- apt-get install linux-image-amd64"),
            "{e}"
        );
        assert!(find_kernels(&img(&d)).unwrap().is_empty());
    }

    #[test]
    fn kernel_without_modules() {
        let d = tempfile::tempdir().unwrap();
        fake(
            d.path(),
            &["6.1.0-9-amd64", "6.1.0-10-amd64"],
            &["6.1.0-9-amd64"],
        );
        let e = format!("{:#}", newest(&img(&d)).unwrap_err());
        assert!(e.contains("kernel 6.1.0-10-amd64"), "{e}");
        assert!(e.contains("has no modules tree"), "{e}");
        let ks = find_kernels(&img(&d)).unwrap();
        assert_eq!(ks.len(), 1);
        let e = format!(
            "{:#}",
            select(&img(&d), Some("6.1.0-10-amd64")).unwrap_err()
        );
        assert!(e.contains("no modules tree"), "{e}");
        let e = format!(
            "{:#}",
            select(&img(&d), Some("5.10.0-1-amd64")).unwrap_err()
        );
        assert!(e.contains("have: 6.1.0-9-amd64, 6.1.0-10-amd64"), "{e}");
    }
}
