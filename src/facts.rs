//! Facts about an image, one owner for each: the release stamp
//! (`/etc/nfsroot-release`), the kernels in `/boot` in dpkg's order, the
//! installed packages (dpkg's status file) and the node settings
//! (`/etc/nfsroot/node.conf`). Every reader (status, snapshot manifests,
//! build's report, boot-test's expectations) takes them from here, read
//! through the image's confined view ([`ImageRoot`]): a link a node planted
//! resolves inside the image, and only regular files are read. These are
//! facts *about* the tree, for reports and checks; no server-side decision
//! is taken from them.

use crate::imagefs::ImageRoot;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A package from the image's dpkg status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// Release stamp, kernels and packages of an image tree.
#[derive(Debug, Clone)]
pub struct Facts {
    pub release: BTreeMap<String, String>,
    pub kernels: Vec<String>,
    pub packages: Vec<Package>,
}

/// Everything a snapshot manifest records.
pub fn image_facts(img: &ImageRoot) -> Result<Facts> {
    Ok(Facts {
        release: release(img)?,
        kernels: kernels(img)?,
        packages: packages(img)?,
    })
}

/// `KEY=value` lines of `/etc/nfsroot-release` (empty when missing).
pub fn release(img: &ImageRoot) -> Result<BTreeMap<String, String>> {
    Ok(img
        .read_to_string_opt("etc/nfsroot-release")?
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect())
}

/// The node settings build wrote (shell `KEY='value'` lines), parsed by
/// the one parser for them; empty when missing.
pub fn node_conf(img: &ImageRoot) -> Result<BTreeMap<String, String>> {
    Ok(parse_shell_conf(
        &img.read_to_string_opt("etc/nfsroot/node.conf")?
            .unwrap_or_default(),
    ))
}

/// Shell `KEY='value'` settings, as `/etc/nfsroot/node.conf` holds them
/// (single quotes with `'\''` escapes, double quotes, or bare words).
pub fn parse_shell_conf(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let mut out = String::new();
        let mut chars = v.chars().peekable();
        while let Some(ch) = chars.next() {
            match ch {
                '\'' => {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                        out.push(c);
                    }
                }
                '"' => {
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => {
                                if let Some(n) = chars.next() {
                                    out.push(n);
                                }
                            }
                            _ => out.push(c),
                        }
                    }
                }
                '\\' => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                c if c.is_whitespace() => break,
                c => out.push(c),
            }
        }
        m.insert(k.trim().to_string(), out);
    }
    m
}

/// Kernel versions of every `/boot/vmlinuz-*` (with a module tree or not),
/// oldest first in dpkg's order; names that could not reach a boot config
/// ([`crate::kernel::valid_version`]) are left out.
pub fn kernels(img: &ImageRoot) -> Result<Vec<String>> {
    let mut v: Vec<String> = img
        .read_dir("boot")?
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            e.name
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .filter(|v| crate::kernel::valid_version(v))
                .map(str::to_string)
        })
        .collect();
    v.sort_by(|a, b| crate::kernel::dpkg_version_cmp(a, b));
    Ok(v)
}

/// Installed packages (status `install ok installed`), by name.
pub fn packages(img: &ImageRoot) -> Result<Vec<Package>> {
    let text = img
        .read_to_string_opt("var/lib/dpkg/status")?
        .unwrap_or_default();
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
    fn shell_conf() {
        let m = parse_shell_conf(
            "# c\nROOT_MODE='rw'\nLOG_DIR='/var/log/it'\\''s'\nX=\"a b\"\nY=bare\n",
        );
        assert_eq!(m["ROOT_MODE"], "rw");
        assert_eq!(m["LOG_DIR"], "/var/log/it's");
        assert_eq!(m["X"], "a b");
        assert_eq!(m["Y"], "bare");
    }

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
            kernels(&ImageRoot::open(d.path()).unwrap()).unwrap(),
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
        let p = packages(&ImageRoot::open(d.path()).unwrap()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "a");
    }
}
