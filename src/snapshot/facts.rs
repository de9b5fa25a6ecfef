//! Facts about an image that a snapshot's manifest records: the release
//! stamp, the kernels in `/boot` in dpkg's order, and the installed
//! packages. Each file is read inside the image without following a
//! symlink ([`super::at`]): a node could plant one pointing at a host file.

use super::Package;
use super::at;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Release stamp, kernels and packages of an image tree.
pub struct Facts {
    pub release: BTreeMap<String, String>,
    pub kernels: Vec<String>,
    pub packages: Vec<Package>,
}

pub fn image_facts(root: &Path) -> Result<Facts> {
    let release = String::from_utf8_lossy(&read_in_image(root, "etc/nfsroot-release")?)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect();
    Ok(Facts {
        release,
        kernels: kernels(root)?,
        packages: packages(root)?,
    })
}

/// A file inside the image, read without following a symlink (a node
/// could plant one to a host file); empty when missing or not a file.
fn read_in_image(root: &Path, rel: &str) -> Result<Vec<u8>> {
    at::read_beneath(root, Path::new(rel))
        .map(Option::unwrap_or_default)
        .with_context(|| format!("reading {}", root.join(rel).display()))
}

/// Kernel versions in `<root>/boot`, oldest first in dpkg's order.
pub fn kernels(root: &Path) -> Result<Vec<String>> {
    let boot = root.join("boot");
    let mut v: Vec<String> = at::list_beneath(root, Path::new("boot"))
        .with_context(|| format!("reading {}", boot.display()))?
        .into_iter()
        .filter_map(|n| {
            n.to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .collect();
    v.sort_by(|a, b| crate::kernel::dpkg_version_cmp(a, b));
    Ok(v)
}

fn packages(root: &Path) -> Result<Vec<Package>> {
    let text = read_in_image(root, "var/lib/dpkg/status")?;
    let text = String::from_utf8_lossy(&text);
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut f: HashMap<&str, &str> = HashMap::new();
        for line in stanza.lines() {
            if let Some((k, v)) = line.split_once(':')
                && !line.starts_with(' ')
            {
                f.insert(k, v.trim());
            }
        }
        let installed = f.get("Status").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(n)) = (installed, f.get("Package")) {
            out.push(Package {
                name: n.to_string(),
                version: f.get("Version").unwrap_or(&"").to_string(),
                arch: f.get("Architecture").unwrap_or(&"").to_string(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_sort_as_dpkg_does() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("boot")).unwrap();
        for k in [
            "6.1.0-10-amd64",
            "6.1.0-9",
            "5.10.0-1-amd64",
            "6.1.0-9~bpo12+1",
            "6.1.0-9-amd64",
        ] {
            std::fs::write(d.path().join(format!("boot/vmlinuz-{k}")), "k").unwrap();
        }
        // A backport (~bpo) sorts before its release, as dpkg has it.
        assert_eq!(
            kernels(d.path()).unwrap(),
            [
                "5.10.0-1-amd64",
                "6.1.0-9~bpo12+1",
                "6.1.0-9",
                "6.1.0-9-amd64",
                "6.1.0-10-amd64"
            ]
        );
    }

    #[test]
    fn dpkg_status_installed_only() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("var/lib/dpkg");
        std::fs::create_dir_all(&s).unwrap();
        std::fs::write(
            s.join("status"),
            "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n\
             Package: b\nStatus: deinstall ok config-files\nVersion: 2\n",
        )
        .unwrap();
        let p = packages(d.path()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "a");
    }
}
