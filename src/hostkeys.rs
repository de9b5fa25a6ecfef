//! Per-host ssh host keys, kept on the master and delivered to one host.
//!
//! Nodes share one root tree, so keys inside the image would be every
//! node's keys, and keys made at every boot change at every reboot (every
//! `ssh` after one warns of a changed key). So each inventory host gets its
//! own keys, made by `sync` with the host's `ssh-keygen` and kept outside
//! every image, root-only: `<base-dir>/.nfsroot/hostkeys/<host>/` (0700,
//! private keys 0600). `sync` exports that directory read-only to that
//! host's address alone; at boot `nfsroot-node` mounts
//! `<server>:<dir>/<its name>`, copies the keys under `/run/nfsroot/ssh`
//! (where sshd's `HostKey` lines point) and reports their [`fingerprint`]
//! on its console line (`hostkey=`). A host without keys (not in the
//! inventory) falls back to keys made at boot. `hosts remove` then `sync`
//! deletes a removed host's keys. Keys never go through TFTP.

use crate::exec::{self, Cmd, Tool};
use crate::fsutil;
use crate::image::Layout;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Key types made for every host. RSA is left out: it takes 20-100 times
/// as long to make (a first sync of 1,000 hosts would take minutes), and
/// every OpenSSH client since 6.5 prefers ed25519.
pub const TYPES: &[&str] = &["ed25519", "ecdsa"];

/// The host tool that makes keys.
pub const SSH_KEYGEN: Tool = Tool {
    name: "ssh-keygen",
    package: "openssh-client",
};

/// Where every host's keys live.
pub fn dir(layout: &Layout) -> PathBuf {
    layout.state_dir().join("hostkeys")
}

/// Where one host's keys live.
pub fn host_dir(layout: &Layout, host: &str) -> PathBuf {
    dir(layout).join(host)
}

/// The private key file of type `t` in a host's directory.
fn key_file(d: &Path, t: &str) -> PathBuf {
    d.join(format!("ssh_host_{t}_key"))
}

/// Whether a host has every key.
pub fn complete(layout: &Layout, host: &str) -> bool {
    let d = host_dir(layout, host);
    TYPES
        .iter()
        .all(|t| key_file(&d, t).is_file() && key_file(&d, t).with_extension("pub").is_file())
}

/// Make the host's keys unless it has them all. The set is made in a temp
/// directory and renamed into place, so a host never has half a set.
/// Returns whether it made keys.
pub fn ensure(layout: &Layout, host: &str) -> Result<bool> {
    if complete(layout, host) {
        return Ok(false);
    }
    let keygen = exec::require(SSH_KEYGEN)?;
    let top = dir(layout);
    fsutil::mkdir_p(&top)?;
    set_mode(&top, 0o700)?;
    let tmp = top.join(fsutil::temp_name(std::ffi::OsStr::new(host)));
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let res = (|| -> Result<()> {
        set_mode(&tmp, 0o700)?;
        for t in TYPES {
            Cmd::new(&keygen)
                .args(["-q", "-N", "", "-t", t, "-C"])
                .arg(format!("root@{host}"))
                .arg("-f")
                .arg(key_file(&tmp, t))
                .run()
                .with_context(|| format!("making the {t} host key of {host}"))?;
        }
        let dest = host_dir(layout, host);
        // A partial set left by hand is replaced whole.
        if dest.exists() {
            fsutil::remove_tree(&dest)?;
        }
        std::fs::rename(&tmp, &dest)
            .with_context(|| format!("renaming into place {}", dest.display()))?;
        fsutil::fsync_dir(&top)
    })();
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    res.map(|()| true)
}

/// [`ensure`] for many hosts, on every core (ssh-keygen is a process per
/// key). Returns how many hosts got keys.
pub fn ensure_many(layout: &Layout, hosts: &[String]) -> Result<usize> {
    let todo: Vec<&String> = hosts.iter().filter(|h| !complete(layout, h)).collect();
    if todo.is_empty() {
        return Ok(0);
    }
    exec::require(SSH_KEYGEN)?;
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(todo.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Result<usize> {
                    let mut made = 0;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(h) = todo.get(i) else {
                            return Ok(made);
                        };
                        made += usize::from(ensure(layout, h)?);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a key-making thread panicked"))
            })
            .sum()
    })
}

/// Delete a host's keys (when it leaves the inventory). Returns whether
/// there were any.
pub fn remove(layout: &Layout, host: &str) -> Result<bool> {
    let d = host_dir(layout, host);
    if std::fs::symlink_metadata(&d).is_err() {
        return Ok(false);
    }
    fsutil::remove_tree(&d)?;
    Ok(true)
}

/// Hosts that have a key directory.
pub fn hosts_with_keys(layout: &Layout) -> Result<Vec<String>> {
    let top = dir(layout);
    let rd = match std::fs::read_dir(&top) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", top.display())),
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(fsutil::TEMP_PREFIX))
        .collect();
    v.sort();
    Ok(v)
}

/// The fingerprint `nfsroot-node` prints for a public key line: the first
/// 16 hex digits of the sha256 of the key blob (what `ssh-keygen -l` shows
/// in base64), computable on a node with coreutils alone.
pub fn fingerprint(pub_line: &str) -> Result<String> {
    use base64::Engine;
    let Some(b64) = pub_line.split_whitespace().nth(1) else {
        bail!("not an ssh public key line: {pub_line:?}");
    };
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("decoding an ssh public key")?;
    Ok(hex::encode(Sha256::digest(blob))[..16].to_string())
}

/// The fingerprint of a host's ed25519 key, if it has one.
pub fn host_fingerprint(layout: &Layout, host: &str) -> Result<Option<String>> {
    let p = key_file(&host_dir(layout, host), "ed25519").with_extension("pub");
    match std::fs::read_to_string(&p) {
        Ok(t) => fingerprint(&t).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_private_stable_and_removable() {
        if exec::require(SSH_KEYGEN).is_err() {
            panic!("ssh-keygen missing: scripts/setup installs openssh-client");
        }
        let d = tempfile::tempdir().unwrap();
        let l = Layout::under(d.path());
        assert!(ensure(&l, "n001").unwrap());
        assert!(!ensure(&l, "n001").unwrap());
        assert!(ensure(&l, "n002").unwrap());
        let a = host_fingerprint(&l, "n001").unwrap().unwrap();
        let b = host_fingerprint(&l, "n002").unwrap().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir(&l)), 0o700);
        assert_eq!(mode(host_dir(&l, "n001")), 0o700);
        for t in TYPES {
            assert_eq!(mode(key_file(&host_dir(&l, "n001"), t)), 0o600, "{t}");
        }
        assert_eq!(hosts_with_keys(&l).unwrap(), ["n001", "n002"]);
        assert!(remove(&l, "n001").unwrap());
        assert_eq!(hosts_with_keys(&l).unwrap(), ["n002"]);
        assert_eq!(host_fingerprint(&l, "n002").unwrap().unwrap(), b);
    }

    #[test]
    fn fingerprint_matches_the_shell_recipe() {
        // `awk '{print $2}' k.pub | base64 -d | sha256sum | cut -c1-16`
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4G0c2sEzJ2Zb7Q8cVh9Z8X8D2Kj5W0s3uYb1H4m1Nq root@x";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("echo \"$1\" | awk '{print $2}' | base64 -d | sha256sum | cut -c1-16")
            .arg("sh")
            .arg(line)
            .output()
            .unwrap();
        assert_eq!(
            fingerprint(line).unwrap(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
}
