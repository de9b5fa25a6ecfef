//! Running host tools, and commands inside an image.
//!
//! Every external program goes through [`Cmd`], which logs the argv at `-v`
//! and, on failure, reports the argv, the exit status and the tail of
//! stderr. Children get `PR_SET_PDEATHSIG(SIGKILL)`, so a killed nfsroot
//! takes its helpers with it.
//!
//! Work that mounts things (the bootstrapper, `nfsroot exec`) runs inside
//! private mount and pid namespaces (`unshare -m -p -f --kill-child`): the
//! mounts live only as long as the namespace, so no exit path — an error,
//! Ctrl-C or SIGKILL — can leave /proc, /sys or /dev mounted in a tree.

use crate::imagefs::ImageRoot;
use anyhow::{Context, Result, bail};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

static VERBOSITY: AtomicU8 = AtomicU8::new(1);

/// 0 = quiet, 1 = normal, 2+ = verbose (show argv of every command).
pub fn set_verbosity(v: u8) {
    VERBOSITY.store(v, Ordering::Relaxed);
}

/// Current verbosity level.
pub fn verbosity() -> u8 {
    VERBOSITY.load(Ordering::Relaxed)
}

/// A host tool and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

/// Find `tool` on PATH (and the sbin directories, which root may lack).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `c`, once spawned, gets SIGKILL when this process dies
/// (`PR_SET_PDEATHSIG`): a killed nfsroot leaves no child behind.
pub fn dies_with_parent(c: &mut Command) {
    // SAFETY: pre_exec runs between fork and exec; the closure only
    // makes one prctl(2) call, which is async-signal-safe and does not
    // allocate.
    unsafe {
        c.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
}

/// Resolve a required tool or fail naming the package to install.
pub fn require(tool: Tool) -> Result<PathBuf> {
    find_tool(tool.name).with_context(|| {
        format!(
            "{} not found on this host; install it with: apt-get install {}",
            tool.name, tool.package
        )
    })
}

/// Pass `input` through a host program (`prog args...`) and return its
/// output: for decompressing bytes read from an image without handing the
/// host tool a path inside it.
pub fn pipe_through(prog: &Path, args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    Cmd::new(prog).args(args).filter(input)
}

/// Fail unless running as root, saying why root is needed.
pub fn require_root(why: &str) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("{why} needs root (it creates device nodes, mounts and chroots); run it as root");
    }
    Ok(())
}

/// A command to run, with error reporting that shows what was run.
#[derive(Debug)]
pub struct Cmd {
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            argv: vec![program.as_ref().to_owned()],
            env: Vec::new(),
            dir: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.argv.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.argv
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    pub fn current_dir(mut self, d: impl AsRef<Path>) -> Self {
        self.dir = Some(d.as_ref().to_owned());
        self
    }

    /// The argv as one shell-readable line, for messages.
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..]);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        dies_with_parent(&mut c);
        c
    }

    /// Run to completion; return stdout. Fails with argv and stderr tail.
    pub fn output(&self) -> Result<String> {
        let out = self.capture(None)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Run with `input` on stdin; return stdout as bytes. Fails with argv
    /// and stderr tail.
    pub fn filter(&self, input: &[u8]) -> Result<Vec<u8>> {
        self.capture(Some(input))
    }

    /// Run with `input` (or nothing) on stdin and stdout captured; a
    /// failure shows the argv and the tail of stderr.
    fn capture(&self, input: Option<&[u8]>) -> Result<Vec<u8>> {
        use std::io::Write;
        if verbosity() >= 2 {
            eprintln!("+ {}", self.display());
        }
        let mut child = self
            .command()
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.display()))?;
        let stdin = child.stdin.take();
        let out = std::thread::scope(|s| {
            if let (Some(mut w), Some(data)) = (stdin, input) {
                s.spawn(move || {
                    // A tool that exits early closes its stdin: not our error.
                    let _ = w.write_all(data);
                });
            }
            child.wait_with_output()
        })
        .with_context(|| format!("running {}", self.display()))?;
        if !out.status.success() {
            bail!(
                "command failed ({}): {}\n{}",
                out.status,
                self.display(),
                tail(&String::from_utf8_lossy(&out.stderr), 20)
            );
        }
        Ok(out.stdout)
    }

    /// Run to completion, discarding stdout.
    pub fn run(&self) -> Result<()> {
        self.output().map(|_| ())
    }

    /// Run with stdio inherited (interactive use); fail on non-zero exit.
    pub fn run_inherit(&self) -> Result<i32> {
        if verbosity() >= 2 {
            eprintln!("+ {}", self.display());
        }
        let st = self
            .command()
            .status()
            .with_context(|| format!("starting {}", self.display()))?;
        Ok(st.code().unwrap_or(128 + 9))
    }

    /// Run, handing each line of stdout and stderr to `on_line` as it
    /// comes; on failure the error carries the last lines seen.
    pub fn run_lines(&self, mut on_line: impl FnMut(&str)) -> Result<()> {
        if verbosity() >= 2 {
            eprintln!("+ {}", self.display());
        }
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.display()))?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let pump = |r: Box<dyn Read + Send>, tx: std::sync::mpsc::Sender<String>| {
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    match line {
                        Ok(l) => {
                            if tx.send(l).is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        let t1 = pump(Box::new(child.stdout.take().expect("piped")), tx.clone());
        let t2 = pump(Box::new(child.stderr.take().expect("piped")), tx);
        let mut last: VecDeque<String> = VecDeque::new();
        for line in rx {
            on_line(&line);
            if last.len() == 20 {
                last.pop_front();
            }
            last.push_back(line);
        }
        let _ = t1.join();
        let _ = t2.join();
        let st = child.wait()?;
        if !st.success() {
            bail!(
                "command failed ({st}): {}\n{}",
                self.display(),
                last.into_iter().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Quote a word for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub const UNSHARE: Tool = Tool {
    name: "unshare",
    package: "util-linux",
};

/// Wrap a command so it runs in private mount and pid namespaces that die
/// with it (and with us).
pub fn in_private_namespaces(inner: Cmd) -> Result<Cmd> {
    let unshare = require(UNSHARE)?;
    Ok(Cmd {
        argv: [
            unshare.into_os_string(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "--pid".into(),
            "--fork".into(),
            "--kill-child=SIGKILL".into(),
            "--".into(),
        ]
        .into_iter()
        .chain(inner.argv)
        .collect(),
        env: inner.env,
        dir: inner.dir,
    })
}

/// The policy-rc.d that keeps daemons from starting in a chroot.
pub const POLICY_RC_D: &str =
    "#!/bin/sh\n# installed by nfsroot while it works in this image\nexit 101\n";

/// Where the image's policy-rc.d lives.
const POLICY_RC_D_PATH: &str = "usr/sbin/policy-rc.d";

/// The mount points [`chroot_cmd`] mounts on: each must be a real directory
/// of the image, never a symlink (the host's mount would follow it).
const MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "run", "tmp"];

/// A command prepared to run in an image's chroot; see [`chroot_cmd`].
/// Dropping it removes the policy-rc.d it put in place.
#[derive(Debug)]
pub struct Chroot {
    cmd: Cmd,
    img: ImageRoot,
    own_policy: bool,
}

impl Chroot {
    /// Run to completion, discarding stdout (see [`Cmd::run`]).
    pub fn run(&self) -> Result<()> {
        self.cmd.run()
    }

    /// Run with stdio inherited; return the exit code.
    pub fn run_inherit(&self) -> Result<i32> {
        self.cmd.run_inherit()
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        if self.own_policy {
            let _ = self.img.remove_file(POLICY_RC_D_PATH);
        }
    }
}

/// Put nfsroot's policy-rc.d in place unless the image has its own regular
/// file there; returns whether it is ours. A symlink (dangling or not) or
/// any other inode at that name is replaced, never written through.
fn install_policy(img: &ImageRoot) -> Result<bool> {
    match img.symlink_metadata(POLICY_RC_D_PATH)? {
        Some(m) if m.is_file() => Ok(false),
        other => {
            if let Some(m) = other {
                eprintln!(
                    "nfsroot: warning: {} is a {}, not a file; replacing it with nfsroot's \
                     own while the command runs",
                    img.show(POLICY_RC_D_PATH),
                    crate::imagefs::kind_word(&m)
                );
            }
            img.write(POLICY_RC_D_PATH, POLICY_RC_D.as_bytes(), 0o755)?;
            Ok(true)
        }
    }
}

/// Check (and create when missing) the directories mounts go on.
fn check_mount_points(img: &ImageRoot) -> Result<()> {
    for d in MOUNT_POINTS {
        match img.symlink_metadata(d)? {
            Some(m) if m.is_dir() => {}
            Some(m) => bail!(
                "{} is a {}, not a directory; the host would mount through it. \
                 Make it a plain directory (rm it, mkdir it) and run again",
                img.show(d),
                crate::imagefs::kind_word(&m)
            ),
            None => {
                img.create_dir_all(d, if *d == "tmp" { 0o1777 } else { 0o755 })?;
            }
        }
    }
    Ok(())
}

/// What `exec` on a published image says first: the change is live.
pub fn live_tree_warning(image: &str) -> String {
    format!(
        "warning: image {image} is published; running nodes see this change as it \
         happens (use nfsroot update {image} -- CMD for a new tree version they \
         switch to at their next boot)"
    )
}

/// A command run inside `root` with /proc, /sys, /dev, /dev/pts and a
/// private /run mounted, and policy-rc.d in place; all in private
/// namespaces so every mount vanishes when the command ends, however it
/// ends. The image is prepared through its confined view first: the mount
/// points must be real directories, and policy-rc.d is written by rename
/// (removed again when the returned [`Chroot`] drops, unless the image
/// already had its own).
pub fn chroot_cmd(root: &Path, argv: &[OsString]) -> Result<Chroot> {
    let img = ImageRoot::open(root)?;
    check_mount_points(&img)?;
    let own_policy = install_policy(&img)?;
    let script = r#"set -e
r="$1"; shift
mount -t proc proc "$r/proc"
mount --rbind /sys "$r/sys"; mount --make-rslave "$r/sys"
mount --rbind /dev "$r/dev"; mount --make-rslave "$r/dev"
mount -t tmpfs -o mode=755 tmpfs "$r/run"
exec chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root TERM="${TERM:-dumb}" DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
"#;
    let c = Cmd::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("nfsroot-chroot")
        .arg(root)
        .args(argv);
    Ok(Chroot {
        cmd: in_private_namespaces(c)?,
        img,
        own_policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_shows_argv_and_stderr() {
        let err = Cmd::new("sh")
            .arg("-c")
            .arg("echo boom >&2; exit 3")
            .run()
            .unwrap_err();
        let m = format!("{err:#}");
        assert!(m.contains("sh -c 'echo boom >&2; exit 3'"), "{m}");
        assert!(m.contains("boom"), "{m}");
        assert!(m.contains("exit status: 3"), "{m}");
    }

    #[test]
    fn missing_tool_names_package() {
        let e = require(Tool {
            name: "no-such-tool-nfsroot",
            package: "nfsroot-pkg",
        })
        .unwrap_err();
        assert!(format!("{e}").contains("apt-get install nfsroot-pkg"));
    }

    #[test]
    fn policy_rc_d_replaces_links_and_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("img");
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        let outside = d.path().join("outside-policy");
        std::os::unix::fs::symlink(&outside, root.join(POLICY_RC_D_PATH)).unwrap();
        let img = ImageRoot::open(&root).unwrap();
        assert!(install_policy(&img).unwrap());
        assert!(!outside.exists());
        assert_eq!(img.read(POLICY_RC_D_PATH).unwrap(), POLICY_RC_D.as_bytes());
        // The image's own regular file is kept.
        std::fs::write(root.join(POLICY_RC_D_PATH), "#!/bin/sh\nexit 0\n").unwrap();
        assert!(!install_policy(&img).unwrap());
        // Mount points that are links are refused by name.
        std::os::unix::fs::symlink("/etc", root.join("proc")).unwrap();
        let e = check_mount_points(&img).unwrap_err();
        assert!(format!("{e:#}").contains("img/proc is a symlink"), "{e:#}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("/x/y"), "/x/y");
    }

    #[test]
    fn run_lines_collects() {
        let mut seen = vec![];
        Cmd::new("sh")
            .arg("-c")
            .arg("echo a; echo b >&2")
            .run_lines(|l| seen.push(l.to_string()))
            .unwrap();
        seen.sort();
        assert_eq!(seen, ["a", "b"]);
    }
}
