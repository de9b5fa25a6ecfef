//! Bootstrapping a root tree with mmdebstrap or debootstrap.
//!
//! The mirror comes from the profile, else from the host's own apt sources
//! (one-line `sources.list` files and deb822 `.sources` files), so no mirror
//! host name is ever written into this tool. Downloaded .debs are cached
//! outside the image: mmdebstrap gets hooks that hardlink the cache in
//! before download and back out after, debootstrap its `--cache-dir`.
//!
//! The bootstrapper runs in private mount and pid namespaces (see
//! [`crate::exec::in_private_namespaces`]): if nfsroot is killed, the whole
//! namespace dies with it and no /proc, /sys or /dev mount survives.

use crate::exec::{self, Cmd, Tool};
use crate::profile::{Bootstrapper, Profile};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub const MMDEBSTRAP: Tool = Tool {
    name: "mmdebstrap",
    package: "mmdebstrap",
};
pub const DEBOOTSTRAP: Tool = Tool {
    name: "debootstrap",
    package: "debootstrap",
};

/// Packages every diskless image needs, whatever the profile lists.
pub fn required_packages(p: &Profile) -> Vec<String> {
    // nfs-common: every node mounts its ssh keys from the master at boot,
    // and the log export and the profile's mounts when there are any.
    let mut v: Vec<String> = [
        "busybox-static",
        "ifupdown",
        "kmod",
        "tzdata",
        "netbase",
        "nfs-common",
    ]
    .map(String::from)
    .to_vec();
    if p.logs.layout == crate::profile::LogLayout::PerHost {
        v.push("rsyslog".into());
    }
    if p.initramfs.backend == crate::initramfs::Backend::InitramfsTools {
        v.push("initramfs-tools".into());
    }
    v
}

/// One apt source seen on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSource {
    pub uri: String,
    pub suites: Vec<String>,
    /// Where it was read, for messages.
    pub file: PathBuf,
}

/// Read the host's apt sources under `apt_dir` (normally /etc/apt).
pub fn host_sources(apt_dir: &Path) -> Result<Vec<HostSource>> {
    let mut files = vec![apt_dir.join("sources.list")];
    if let Ok(rd) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut out = Vec::new();
    for f in files {
        let name = f.to_string_lossy().to_string();
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        if name.ends_with(".list") {
            out.extend(parse_one_line(&text, &f));
        } else if name.ends_with(".sources") {
            out.extend(parse_deb822(&text, &f));
        }
    }
    Ok(out)
}

fn parse_one_line(text: &str, file: &Path) -> Vec<HostSource> {
    let mut v = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        // Skip an options block: [arch=amd64 signed-by=...]
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            v.push(HostSource {
                uri: uri.to_string(),
                suites: vec![suite.to_string()],
                file: file.to_path_buf(),
            });
        }
    }
    v
}

fn parse_deb822(text: &str, file: &Path) -> Vec<HostSource> {
    let mut v = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = String::new();
        let mut uris = String::new();
        let mut suites = String::new();
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, val)) = line.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "types" => types = val.trim().to_string(),
                    "uris" => uris = val.trim().to_string(),
                    "suites" => suites = val.trim().to_string(),
                    "enabled" => enabled = val.trim() != "no",
                    _ => {}
                }
            }
        }
        if !enabled || !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        for uri in uris.split_whitespace() {
            v.push(HostSource {
                uri: uri.to_string(),
                suites: suites.split_whitespace().map(String::from).collect(),
                file: file.to_path_buf(),
            });
        }
    }
    v
}

/// The mirror to bootstrap from: the profile's, else the first host source
/// that carries a main archive suite (not -security, -updates, -backports).
pub fn detect_mirror(apt_dir: &Path) -> Result<String> {
    let sources = host_sources(apt_dir)?;
    let is_main = |s: &str| !s.contains('-') && !s.contains('/');
    sources
        .iter()
        .find(|s| s.suites.iter().any(|x| is_main(x)) && s.uri.starts_with("http"))
        .or_else(|| sources.iter().find(|s| s.suites.iter().any(|x| is_main(x))))
        .map(|s| s.uri.trim_end_matches('/').to_string())
        .with_context(|| {
            format!(
                "no Debian mirror found in the host's apt sources ({0}/sources.list, \
                 {0}/sources.list.d/*.list, *.sources); set `mirror` in the profile \
                 or pass --mirror URL",
                apt_dir.display()
            )
        })
}

/// Which program to use, honouring the profile's choice.
pub fn choose(p: &Profile) -> Result<(Tool, PathBuf)> {
    match p.bootstrapper {
        Bootstrapper::Mmdebstrap => Ok((MMDEBSTRAP, exec::require(MMDEBSTRAP)?)),
        Bootstrapper::Debootstrap => Ok((DEBOOTSTRAP, exec::require(DEBOOTSTRAP)?)),
        Bootstrapper::Auto => {
            if let Some(path) = exec::find_tool(MMDEBSTRAP.name) {
                Ok((MMDEBSTRAP, path))
            } else if let Some(path) = exec::find_tool(DEBOOTSTRAP.name) {
                Ok((DEBOOTSTRAP, path))
            } else {
                bail!(
                    "neither mmdebstrap nor debootstrap is installed; install one with: \
                     apt-get install mmdebstrap"
                )
            }
        }
    }
}

/// Everything a bootstrap run needs.
#[derive(Debug)]
pub struct Request<'a> {
    pub profile: &'a Profile,
    pub mirror: &'a str,
    pub packages: Vec<String>,
    pub target: &'a Path,
    pub cache_dir: &'a Path,
}

/// The bootstrap command (already wrapped in private namespaces).
pub fn command(req: &Request<'_>) -> Result<(Tool, Cmd)> {
    let (tool, path) = choose(req.profile)?;
    let p = req.profile;
    let include = req.packages.join(",");
    let components = p.components.join(",");
    let cache = req.cache_dir.display().to_string();
    let q = exec::shell_quote;
    let cmd = if tool.name == "mmdebstrap" {
        let mut c = Cmd::new(path)
            .arg(format!("--variant={}", p.variant))
            .arg(format!("--architectures={}", p.architecture))
            .arg(format!("--components={components}"))
            .arg(format!("--include={include}"))
            .arg("--aptopt=Acquire::Retries \"3\"")
            // Hardlink cached .debs in (copy across file systems), keep
            // what apt downloaded, and take new ones back out.
            .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives")
            .arg(format!(
                "--setup-hook=cp -al {c}/. \"$1\"/var/cache/apt/archives/ 2>/dev/null || cp -a {c}/. \"$1\"/var/cache/apt/archives/",
                c = q(&cache)
            ))
            .arg("--skip=download/empty")
            .arg("--skip=essential/unlink")
            .arg(format!(
                "--customize-hook=for f in \"$1\"/var/cache/apt/archives/*.deb; do [ -e {c}/\"${{f##*/}}\" ] || ln \"$f\" {c}/ 2>/dev/null || cp \"$f\" {c}/; done; rm -f \"$1\"/var/cache/apt/archives/*.deb",
                c = q(&cache)
            ))
            .arg(&p.suite)
            .arg(req.target)
            .arg(format!("deb {} {} {}", req.mirror, p.suite, p.components.join(" ")));
        for s in &p.extra_sources {
            c = c.arg(s);
        }
        c
    } else {
        Cmd::new(path)
            .arg(format!("--variant={}", p.variant))
            .arg(format!("--arch={}", p.architecture))
            .arg(format!("--components={components}"))
            .arg(format!("--include={include}"))
            .arg(format!("--cache-dir={cache}"))
            .arg(&p.suite)
            .arg(req.target)
            .arg(req.mirror)
    };
    Ok((tool, exec::in_private_namespaces(cmd)?))
}

/// Run the bootstrap, feeding output lines to `progress`.
pub fn run(req: &Request<'_>, progress: &mut dyn FnMut(&str)) -> Result<()> {
    crate::fsutil::mkdir_p(req.cache_dir)?;
    let (tool, cmd) = command(req)?;
    cmd.run_lines(progress).with_context(|| {
        format!(
            "bootstrapping {} from {} with {}",
            req.target.display(),
            req.mirror,
            tool.name
        )
    })?;
    if tool.name == "debootstrap" && !req.profile.extra_sources.is_empty() {
        let list = req.target.join("etc/apt/sources.list.d/nfsroot-extra.list");
        let mut text = String::from("# extra sources from the nfsroot profile\n");
        for s in &req.profile.extra_sources {
            text.push_str(s);
            text.push('\n');
        }
        crate::fsutil::atomic_write(&list, text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_deb822_and_one_line() {
        let d = tempfile::tempdir().unwrap();
        let apt = d.path();
        std::fs::create_dir(apt.join("sources.list.d")).unwrap();
        std::fs::write(
            apt.join("sources.list.d/debian.sources"),
            "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n",
        )
        .unwrap();
        assert_eq!(detect_mirror(apt).unwrap(), "http://mirror.example/debian");
        std::fs::write(
            apt.join("sources.list"),
            "# x\ndeb-src http://src.example/d bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://one.example/debian/ bookworm main\n",
        )
        .unwrap();
        // sources.list is read first.
        assert_eq!(detect_mirror(apt).unwrap(), "http://one.example/debian");
    }

    #[test]
    fn security_only_host_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("sources.list"),
            "deb http://security.example/debian-security bookworm-security main\n",
        )
        .unwrap();
        let e = detect_mirror(d.path()).unwrap_err().to_string();
        assert!(e.contains("--mirror"), "{e}");
    }

    #[test]
    fn deb822_disabled_and_deb_src_skipped() {
        let s = parse_deb822(
            "Types: deb-src\nURIs: http://a/\nSuites: x\n\nEnabled: no\nTypes: deb\nURIs: http://b/\nSuites: y\n",
            Path::new("f"),
        );
        assert!(s.is_empty());
    }
}
