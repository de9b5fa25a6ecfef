//! `nfsroot boot-test`: prove an image boots by booting it.
//!
//! The command re-executes itself (`nfsroot boot-test-inner`) under
//! `unshare --net --mount --pid --fork --kill-child`, so everything it
//! starts lives in private namespaces: a private loopback that QEMU's
//! user-mode network reaches as 10.0.2.2, a private /run for rpcbind, and a
//! pid namespace whose init is the inner process, so nothing outlives the
//! command. Inside: rpcbind, nfs-ganesha exporting the image read-only (and
//! the per-host log export read-write), then QEMU booting either the
//! published kernel directly or through iPXE, pxelinux.0 and pxelinux.cfg
//! over QEMU's built-in TFTP. A watcher reads the serial console, times the
//! boot stages, and stops at the node's `nfsroot: <host> <ip> ...` line or
//! at a known failure. Every process is stopped by PID (TERM, then KILL
//! after a timeout) on every exit path, Ctrl-C included.
//!
//! The image is always exported read-only, so a test never changes it; a
//! profile with a read-write root is booted read-only and the report says so.

use crate::cli::{BootMode, BootTestArgs};
use crate::exec::{self, Tool};
use crate::fsutil;
use crate::image::Layout;
use crate::publish;
use crate::pxelinux;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const QEMU: Tool = Tool {
    name: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
pub const GANESHA: Tool = Tool {
    name: "ganesha.nfsd",
    package: "nfs-ganesha nfs-ganesha-vfs",
};
pub const RPCBIND: Tool = Tool {
    name: "rpcbind",
    package: "rpcbind",
};
pub const IP: Tool = Tool {
    name: "ip",
    package: "iproute2",
};
const VFS_FSAL: &str = "/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so";
const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";
const NFS_PORT: u16 = 2049;
const MNT_PORT: u16 = 20048;

/// What the inner process is told to do (written as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub image: String,
    pub image_dir: PathBuf,
    pub work: PathBuf,
    pub mode: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    /// (path, read-write) exports.
    pub exports: Vec<(PathBuf, bool)>,
    pub tftp: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub timeout: u64,
    pub accel: String,
    pub memory: u32,
    pub expect_no_boot: bool,
}

/// Stage times, seconds from QEMU's start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub kernel_start: Option<f64>,
    pub initramfs: Option<f64>,
    pub switch_root: Option<f64>,
    pub node_up: Option<f64>,
}

/// The verdict.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub passed: bool,
    pub image: String,
    pub mode: String,
    pub diagnosis: String,
    pub node_line: Option<String>,
    pub fields: BTreeMap<String, String>,
    pub checks: Vec<(String, bool, String)>,
    pub timings: Timings,
    pub root_note: String,
    pub logs_dir: Option<PathBuf>,
    pub console_tail: Vec<String>,
    /// Host PIDs of every process the test ran in its namespace.
    pub pids: Vec<u32>,
    /// Of those, still alive after the command (must be empty).
    pub leftover: Vec<u32>,
}

/// What the node's line must say.
#[derive(Debug, Clone)]
struct Expect {
    hostname: String,
    root: String,
    tmpfs: Vec<String>,
    log_file_dir: Option<PathBuf>,
    /// The fingerprint of the host's ssh key kept on the master, when it
    /// has keys (an inventory host after sync).
    hostkey: Option<String>,
}

/// The image's node.conf, for the verdict only (what the node will
/// report: names, tmpfs); nothing the host does is decided from it.
fn read_shell_kv(img: &crate::imagefs::ImageRoot) -> BTreeMap<String, String> {
    crate::facts::node_conf(img).unwrap_or_default()
}

/// The host name the image's rule gives an address (as the hook would,
/// for the sources that need no network: hosts, then pattern).
pub fn predict_hostname(root: &Path, ip: Ipv4Addr, mac: &str) -> Result<String> {
    let img = crate::imagefs::ImageRoot::open(root)?;
    let conf = read_shell_kv(&img);
    let sources = conf.get("HOSTNAME_SOURCES").cloned().unwrap_or_default();
    for s in sources.split_whitespace() {
        match s {
            "hosts" => {
                let hosts = img
                    .read_to_string_opt("etc/hosts")
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                for l in hosts.lines() {
                    let mut w = l.split_whitespace();
                    if w.next() == Some(&ip.to_string())
                        && let Some(n) = w.next()
                    {
                        return Ok(n.split('.').next().unwrap_or(n).to_string());
                    }
                }
            }
            "pattern" => {
                let pat = conf.get("HOSTNAME_PATTERN").cloned().unwrap_or_default();
                return crate::profile::render_pattern(&pat, ip, mac);
            }
            _ => {}
        }
    }
    bail!(
        "cannot predict the host name for {ip}: the image has no hosts entry or pattern; pass --expect-hostname"
    )
}

/// Outer entry point.
pub fn run(layout: &Layout, a: &BootTestArgs) -> Result<Report> {
    exec::require_root("nfsroot boot-test")?;
    for t in [QEMU, GANESHA, RPCBIND, IP, exec::UNSHARE] {
        exec::require(t)?;
    }
    if !Path::new(VFS_FSAL).exists() {
        bail!("{VFS_FSAL} not found; install it with: apt-get install nfs-ganesha-vfs");
    }
    if a.mode == BootMode::Pxe && !Path::new(IPXE_ROM).exists() {
        bail!("{IPXE_ROM} not found; install it with: apt-get install ipxe-qemu");
    }
    let mac = a.mac.to_ascii_lowercase();
    if !is_mac(&mac) {
        bail!(
            "--mac {:?}: expected six hex pairs like 52:54:00:12:34:56",
            a.mac
        );
    }
    if a.ip.octets()[..3] != [10, 0, 2] || a.ip.octets()[3] < 15 {
        bail!(
            "--ip {}: QEMU's user network hands out 10.0.2.15 to 10.0.2.254",
            a.ip
        );
    }
    let image = layout.resolve_image(a.image.as_deref())?;
    let image_dir = layout.existing_image(&image)?;
    let conf = read_shell_kv(&crate::imagefs::ImageRoot::open(&image_dir)?);
    // What the server exports comes from the saved profile, never the tree.
    let prof = crate::state::image_profile(layout, &image)?;
    let cfg_path = publish::cfg_dir(layout).join(publish::image_config_name(&image));
    let cfg_text = std::fs::read_to_string(&cfg_path).with_context(|| {
        format!(
            "reading {} (is the image published? run nfsroot publish {image})",
            cfg_path.display()
        )
    })?;
    let parsed =
        pxelinux::parse(&cfg_text).with_context(|| format!("parsing {}", cfg_path.display()))?;
    let entry = parsed
        .default_entry()
        .with_context(|| format!("{} has no default label", cfg_path.display()))?
        .clone();

    // Boot read-only whatever the profile says: the test must not write the
    // shared tree.
    let profile_rw = prof.nfs.root_mode == crate::profile::RootMode::Rw;
    let mut append = a.append.clone().unwrap_or_else(|| entry.append.clone());
    let root_note = if profile_rw {
        append = append
            .split_whitespace()
            .map(|w| if w == "rw" { "ro" } else { w })
            .collect::<Vec<_>>()
            .join(" ");
        "the profile's root is rw; booted read-only so the test never writes the image".to_string()
    } else {
        "booted read-only, as the profile says".to_string()
    };
    let log_path = match prof.logs_export(layout) {
        Some(e) => match e.split_once(':') {
            Some((_, p)) => Some(crate::inventory::sync::confined_export(
                layout,
                &image,
                Path::new(p),
            )?),
            None => None,
        },
        None => None,
    };
    let hostname = match &a.expect_hostname {
        Some(h) => h.clone(),
        None => predict_hostname(&image_dir, a.ip, &mac)?,
    };
    let expect = Expect {
        hostname: hostname.clone(),
        root: "ro".into(),
        tmpfs: conf
            .get("TMPFS")
            .map(|t| t.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        hostkey: crate::hostkeys::host_fingerprint(layout, &hostname)?,
        log_file_dir: if prof.logs.layout == crate::profile::LogLayout::PerHost {
            log_path.as_ref().map(|p| p.join(&hostname))
        } else {
            None
        },
    };

    let work = layout.state_dir().join("boot-tests").join(format!(
        "{image}-{}-{}",
        crate::clock::compact(crate::clock::now_secs()),
        std::process::id()
    ));
    fsutil::mkdir_p(&work)?;
    let mut exports = vec![(image_dir.clone(), false)];
    if let Some(p) = &log_path {
        fsutil::mkdir_p(p)?;
        exports.push((p.clone(), true));
    }
    // The host's own ssh keys, as sync exports them to its address alone.
    if expect.hostkey.is_some() {
        exports.push((crate::hostkeys::host_dir(layout, &hostname), false));
    }
    let tftp = if a.mode == BootMode::Pxe {
        tftp_view(layout, &work, &mac, a.per_host, profile_rw)?
    } else {
        layout.tftp_root.clone()
    };
    let (kernel, initrd) = match (&a.kernel, &a.initrd) {
        (Some(k), Some(i)) => (k.clone(), i.clone()),
        _ => (
            layout.tftp_root.join(&entry.kernel),
            layout.tftp_root.join(&entry.initrd),
        ),
    };
    let plan = Plan {
        image: image.clone(),
        image_dir,
        work: work.clone(),
        mode: if a.mode == BootMode::Pxe {
            "pxe"
        } else {
            "direct"
        }
        .into(),
        mac: mac.clone(),
        ip: a.ip,
        exports,
        tftp,
        kernel,
        initrd,
        append,
        timeout: a.timeout,
        accel: a.accel.clone(),
        memory: a.memory,
        expect_no_boot: a.expect_no_boot,
    };
    let plan_path = work.join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan)?)?;

    // Run the inner half in private namespaces and watch its processes.
    let me = std::env::current_exe().context("finding the nfsroot executable")?;
    let mut child = Command::new(exec::require(exec::UNSHARE)?)
        .args([
            "--net",
            "--mount",
            "--pid",
            "--fork",
            "--kill-child=SIGKILL",
            "--mount-proc",
            "--propagation",
            "private",
            "--",
        ])
        .arg(&me)
        .arg("boot-test-inner")
        .arg(&plan_path)
        .stdin(Stdio::null())
        .spawn()
        .context("starting the boot-test namespace (unshare)")?;
    let deadline = Instant::now() + Duration::from_secs(a.timeout + 90);
    let mut pids = std::collections::BTreeSet::new();
    let ns = loop {
        // The inner process is unshare's child; find its pid namespace.
        if let Some(ns) = child_pid_ns(child.id()) {
            break Some(ns);
        }
        if child.try_wait()?.is_some() || Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = loop {
        if let Some(ns) = ns {
            pids.extend(pids_in_ns(ns));
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let report_path = work.join("report.json");
    let mut report: Report = match std::fs::read(&report_path) {
        Ok(b) => serde_json::from_slice(&b).context("parsing the boot-test report")?,
        Err(_) => Report {
            image: image.clone(),
            mode: plan.mode.clone(),
            diagnosis: format!(
                "the boot-test namespace ended ({status}) without a report; see {}",
                work.display()
            ),
            ..Report::default()
        },
    };
    report.root_note = root_note;
    report.pids = pids.iter().copied().collect();
    // Give the kernel a moment to reap the namespace, then check by PID.
    let t0 = Instant::now();
    loop {
        report.leftover = report.pids.iter().copied().filter(|p| alive(*p)).collect();
        if report.leftover.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !report.leftover.is_empty() {
        report.passed = false;
        report
            .diagnosis
            .push_str(&format!("; processes left behind: {:?}", report.leftover));
    }
    if report.passed && !plan.expect_no_boot {
        check_node(&mut report, &expect, a.ip);
    }
    if report.passed && !a.keep_logs {
        fsutil::remove_tree(&work)?;
        report.logs_dir = None;
    } else {
        report.logs_dir = Some(work);
    }
    Ok(report)
}

fn is_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Check the node line's fields against what the image should give.
fn check_node(r: &mut Report, e: &Expect, ip: Ipv4Addr) {
    let f = r.fields.clone();
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let mut checks = vec![
        (
            "hostname",
            get("host") == e.hostname,
            format!("{} (expected {})", get("host"), e.hostname),
        ),
        (
            "address",
            get("ip") == ip.to_string(),
            format!("{} (expected {ip})", get("ip")),
        ),
        (
            "root",
            get("root") == e.root,
            format!("{} (expected {})", get("root"), e.root),
        ),
        ("image", get("image") == r.image, get("image")),
    ];
    let mounted: Vec<&str> = f
        .get("tmpfs")
        .map(|t| t.split(',').collect())
        .unwrap_or_default();
    for t in &e.tmpfs {
        checks.push((
            "tmpfs",
            mounted.contains(&t.as_str()),
            format!("{t} mounted"),
        ));
    }
    if let Some(fp) = &e.hostkey {
        checks.push((
            "ssh host key",
            get("hostkey") == *fp,
            format!("{} (the master keeps {fp})", get("hostkey")),
        ));
    }
    if let Some(dir) = &e.log_file_dir {
        let boot = get("boot");
        let file = dir.join("syslog");
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let ok = !boot.is_empty() && text.contains(&format!("boot={boot}"));
        checks.push((
            "per-host log",
            ok,
            format!("{} holds this boot's line (boot={boot})", file.display()),
        ));
    }
    for (name, ok, detail) in checks {
        if !ok && r.passed {
            r.passed = false;
            r.diagnosis = format!("the node came up but {name} is wrong: {detail}");
        }
        r.checks.push((name.to_string(), ok, detail));
    }
}

/// A TFTP tree for PXE mode: links to the published files, plus configs
/// (rewritten to boot read-only), and with `per_host` a `01-<mac>` file
/// while `default` boots nothing, so a boot proves the per-host lookup.
fn tftp_view(layout: &Layout, work: &Path, mac: &str, per_host: bool, rw: bool) -> Result<PathBuf> {
    let view = work.join("tftp");
    let cfg = view.join("pxelinux.cfg");
    fsutil::mkdir_p(&cfg)?;
    for e in std::fs::read_dir(&layout.tftp_root)
        .with_context(|| format!("reading {}", layout.tftp_root.display()))?
        .flatten()
    {
        if e.file_name() != "pxelinux.cfg" {
            std::os::unix::fs::symlink(e.path(), view.join(e.file_name()))?;
        }
    }
    let fix = |t: String| -> String {
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
    };
    let src = publish::cfg_dir(layout);
    for e in std::fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(fsutil::TEMP_PREFIX) {
            continue;
        }
        std::fs::write(cfg.join(&name), fix(std::fs::read_to_string(e.path())?))?;
    }
    if per_host {
        let mac_file = pxelinux::mac_file_name(mac);
        if !cfg.join(&mac_file).exists() {
            let d = std::fs::read_to_string(cfg.join("default"))
                .context("reading pxelinux.cfg/default")?;
            std::fs::write(cfg.join(&mac_file), d)?;
        }
        let off = pxelinux::render(&pxelinux::Config {
            header: "boot-test: default must not be used in a per-host test".into(),
            serial: Some((0, 115200)),
            timeout_s: 0,
            boot: pxelinux::Boot::Disabled(
                "boot-test: fell through to default; per-host lookup failed".into(),
            ),
        });
        std::fs::write(cfg.join("default"), off)?;
    }
    Ok(view)
}

/// The pid namespace inode of the child of `pid` (unshare's forked child).
fn child_pid_ns(pid: u32) -> Option<u64> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let c: u32 = children.split_whitespace().next()?.parse().ok()?;
    pid_ns(c)
}

fn pid_ns(pid: u32) -> Option<u64> {
    let l = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    let s = l.to_string_lossy();
    s.trim_start_matches("pid:[")
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn pids_in_ns(ns: u64) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| pid_ns(*p) == Some(ns))
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; it is not running.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

pub fn print_report(r: &Report) {
    println!(
        "boot-test {} ({} mode): {}",
        r.image,
        r.mode,
        if r.passed { "PASS" } else { "FAIL" }
    );
    if !r.diagnosis.is_empty() {
        println!("  {}", r.diagnosis);
    }
    if let Some(l) = &r.node_line {
        println!("  node: {l}");
    }
    for (name, ok, detail) in &r.checks {
        println!("  {} {name}: {detail}", if *ok { "ok  " } else { "FAIL" });
    }
    let t = &r.timings;
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}s"));
    println!(
        "  timings: kernel {} initramfs {} switch-root {} node-up {}",
        f(t.kernel_start),
        f(t.initramfs),
        f(t.switch_root),
        f(t.node_up)
    );
    println!("  {}", r.root_note);
    if let Some(d) = &r.logs_dir {
        println!(
            "  logs: {} (console.log, ganesha.log, qemu.cmdline)",
            d.display()
        );
    }
    if !r.passed {
        println!("  last console lines:");
        for l in &r.console_tail {
            println!("    {l}");
        }
    }
}

// ---------------------------------------------------------------------
// The inner half: runs as pid 1 of private namespaces.

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// A started process, stopped by PID on drop: TERM, then KILL after 5 s.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn start(name: &'static str, cmd: &mut Command) -> Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { name, child })
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.name;
        self.stop();
    }
}

/// Inner entry point: never returns an error without writing a report.
pub fn run_inner(plan_path: &Path) -> Result<()> {
    let plan: Plan = serde_json::from_slice(&std::fs::read(plan_path)?)?;
    // SAFETY: installing an async-signal-safe handler that only stores.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut report = Report {
        image: plan.image.clone(),
        mode: plan.mode.clone(),
        ..Report::default()
    };
    if let Err(e) = inner(&plan, &mut report) {
        report.passed = false;
        report.diagnosis = format!("{e:#}");
    }
    std::fs::write(
        plan.work.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(())
}

fn sh(cmd: &str) -> Result<()> {
    exec::Cmd::new("/bin/sh").arg("-c").arg(cmd).run()
}

fn wait_port(port: u16, secs: u64, proc_: &mut Proc, log: &Path) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], port).into(),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            return Ok(());
        }
        if let Some(st) = proc_.exited() {
            bail!(
                "{} exited ({st}) before listening on port {port}; its log {}:\n{}",
                proc_.name,
                log.display(),
                exec::tail(&std::fs::read_to_string(log).unwrap_or_default(), 15)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{} did not listen on port {port} within {secs} s; see {}",
        proc_.name,
        log.display()
    )
}

fn ganesha_conf(plan: &Plan) -> String {
    let mut s = format!(
        "NFS_CORE_PARAM {{\n  Protocols = 3, 4;\n  NFS_Port = {NFS_PORT};\n  MNT_Port = {MNT_PORT};\n  \
         Enable_NLM = false;\n  Enable_RQUOTA = false;\n  Enable_UDP = false;\n}}\n\
         NFSV4 {{\n  Graceless = true;\n  RecoveryBackend = fs;\n  RecoveryRoot = {}/ganesha-recovery;\n}}\n\
         NFS_KRB5 {{\n  Active_krb5 = false;\n}}\n",
        plan.work.display()
    );
    for (i, (path, rw)) in plan.exports.iter().enumerate() {
        s.push_str(&format!(
            "EXPORT {{\n  Export_Id = {};\n  Path = \"{p}\";\n  Pseudo = \"{p}\";\n  Access_Type = {};\n  \
             Squash = No_Root_Squash;\n  SecType = sys;\n  Protocols = 3, 4;\n  Transports = TCP;\n  \
             FSAL {{\n    Name = VFS;\n  }}\n}}\n",
            i + 1,
            if *rw { "RW" } else { "RO" },
            p = path.display()
        ));
    }
    s
}

fn inner(plan: &Plan, report: &mut Report) -> Result<()> {
    let work = &plan.work;
    sh("ip link set lo up")?;
    // Private /run for rpcbind and ganesha; the host's stays untouched.
    sh("mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/rpcbind /run/ganesha")?;
    if Path::new("/var/lib/nfs").is_dir() {
        sh("mount -t tmpfs tmpfs /var/lib/nfs")?;
    }
    fsutil::mkdir_p(&work.join("ganesha-recovery"))?;
    let mut rpcbind = Proc::start(
        "rpcbind",
        Command::new(exec::require(RPCBIND)?)
            .arg("-f")
            .stdout(std::fs::File::create(work.join("rpcbind.log"))?)
            .stderr(std::fs::File::create(work.join("rpcbind.err"))?),
    )?;
    wait_port(111, 10, &mut rpcbind, &work.join("rpcbind.err"))?;
    let conf = work.join("ganesha.conf");
    std::fs::write(&conf, ganesha_conf(plan))?;
    let glog = work.join("ganesha.log");
    let mut ganesha = Proc::start(
        "ganesha.nfsd",
        Command::new(exec::require(GANESHA)?)
            .arg("-F")
            .arg("-f")
            .arg(&conf)
            .arg("-L")
            .arg(&glog)
            .arg("-p")
            .arg(work.join("ganesha.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("ganesha.err"))?),
    )?;
    wait_port(NFS_PORT, 30, &mut ganesha, &glog)?;

    let console = work.join("console.log");
    let mut q = Command::new(exec::require(QEMU)?);
    q.args([
        "-accel",
        &plan.accel,
        "-m",
        &plan.memory.to_string(),
        "-smp",
        "1",
    ])
    .args([
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
    ])
    .arg("-serial")
    .arg(format!("file:{}", console.display()));
    let mut netdev = format!("user,id=n0,net=10.0.2.0/24,dhcpstart={}", plan.ip);
    if plan.mode == "pxe" {
        netdev.push_str(&format!(
            ",tftp={},bootfile=pxelinux.0",
            plan.tftp.display()
        ));
    }
    q.arg("-netdev").arg(netdev);
    q.arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,mac={}", plan.mac));
    if plan.mode == "pxe" {
        q.args(["-boot", "n"]);
        // BIOS console redirection, as on real nodes: SeaBIOS mirrors
        // screen output to COM1 (I/O port 0x3f8, read as a little-endian
        // integer). Without it, iPXE's messages and PXELINUX's SAY lines
        // never reach the serial console: PXELINUX's modules snapshot the
        // serial port before the config's SERIAL line is read.
        let port = work.join("sercon-port");
        std::fs::write(&port, 0x3f8u16.to_le_bytes())?;
        q.arg("-fw_cfg")
            .arg(format!("name=etc/sercon-port,file={}", port.display()));
    } else {
        q.arg("-kernel")
            .arg(&plan.kernel)
            .arg("-initrd")
            .arg(&plan.initrd)
            .arg("-append")
            .arg(&plan.append);
    }
    let argv: Vec<String> = std::iter::once(q.get_program().to_string_lossy().to_string())
        .chain(
            q.get_args()
                .map(|a| exec::shell_quote(&a.to_string_lossy())),
        )
        .collect();
    std::fs::write(work.join("qemu.cmdline"), argv.join(" ") + "\n")?;
    q.stdout(std::fs::File::create(work.join("qemu.log"))?)
        .stderr(std::fs::File::create(work.join("qemu.err"))?);
    let start = Instant::now();
    let mut qemu = Proc::start("qemu", &mut q)?;
    let verdict = watch(plan, &console, start, &mut qemu, &mut ganesha, report);
    qemu.stop();
    ganesha.stop();
    rpcbind.stop();
    report.console_tail = exec::tail(
        &String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()),
        25,
    )
    .lines()
    .map(strip_ansi)
    .collect();
    verdict
}

/// Markers that end a boot early with a diagnosis.
const FAILURES: &[(&str, &str)] = &[
    ("nfsroot-init: FATAL", "the initramfs gave up"),
    ("Kernel panic", "the kernel panicked"),
    ("ALERT!", "initramfs-tools could not mount the root"),
    (
        "Gave up waiting",
        "initramfs-tools gave up waiting for the root",
    ),
    ("No working init found", "the root has no working init"),
    (
        "You are in emergency mode",
        "systemd entered emergency mode (a mount or unit failed)",
    ),
    (
        "is disabled by nfsroot",
        "PXELINUX refused to boot: the inventory disables this host",
    ),
    (
        "No more network devices",
        "the firmware could not load a boot file over TFTP \
         (is pxelinux.0 in the TFTP root?)",
    ),
    (
        "Unable to locate configuration file",
        "PXELINUX found no config in pxelinux.cfg/",
    ),
    (
        "boot-test: fell through to default",
        "PXELINUX did not find the per-host config",
    ),
];

fn watch(
    plan: &Plan,
    console: &Path,
    start: Instant,
    qemu: &mut Proc,
    ganesha: &mut Proc,
    r: &mut Report,
) -> Result<()> {
    let deadline = start + Duration::from_secs(plan.timeout);
    let mut pos = 0u64;
    let mut buf = String::new();
    let mut fail: Option<(String, Instant)> = None;
    let mut failed_units: Vec<String> = Vec::new();
    // The console again, each line stamped with seconds since QEMU started.
    let mut timed = std::fs::File::create(plan.work.join("console.timed.log"))?;
    loop {
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if let Ok(mut f) = std::fs::File::open(console) {
            f.seek(SeekFrom::Start(pos))?;
            let mut chunk = Vec::new();
            f.read_to_end(&mut chunk)?;
            pos += chunk.len() as u64;
            buf.push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
        }
        while let Some(i) = buf.find('\n') {
            let raw: String = buf.drain(..=i).collect();
            // Matched and reported without escape sequences: firmware
            // console redirection moves the cursor mid-line.
            let line = strip_ansi(&raw);
            let line = line.as_str();
            let t = Some(start.elapsed().as_secs_f64());
            {
                use std::io::Write as _;
                let _ = writeln!(timed, "{:7.2} {line}", start.elapsed().as_secs_f64());
            }
            let tm = &mut r.timings;
            if tm.kernel_start.is_none() && line.contains("Linux version") {
                tm.kernel_start = t;
            }
            if tm.initramfs.is_none()
                && (line.contains("nfsroot-init:")
                    || line.contains("Loading, please wait")
                    || line.contains("Begin: "))
            {
                tm.initramfs = t;
            }
            if tm.switch_root.is_none()
                && (line.contains("nfsroot-init: switching") || line.contains("Welcome to"))
            {
                tm.switch_root = t;
            }
            if let Some(rest) = line.find("nfsroot: ").map(|i| &line[i..])
                && rest.contains(" image=")
            {
                tm.node_up = t;
                r.node_line = Some(rest.to_string());
                r.fields = parse_node_line(rest);
                if plan.expect_no_boot {
                    r.passed = false;
                    r.diagnosis = "the node came up, but it was expected not to boot".into();
                } else {
                    r.passed = true;
                }
                return Ok(());
            }
            if line.contains("FAILED") && failed_units.len() < 5 {
                failed_units.push(line.to_string());
            }
            if fail.is_none() {
                for (marker, why) in FAILURES {
                    if line.contains(marker) {
                        fail = Some((format!("{why}: {line}"), Instant::now()));
                        break;
                    }
                }
            }
        }
        if let Some((why, at)) = &fail
            && at.elapsed() > Duration::from_secs(2)
        {
            if plan.expect_no_boot {
                r.passed = true;
                r.diagnosis = format!("did not boot, as expected ({why})");
                return Ok(());
            }
            if failed_units.is_empty() {
                bail!("{why}");
            }
            bail!("{why}; {}", failed_units.join("; "));
        }
        if let Some(st) = qemu.exited() {
            let err = std::fs::read_to_string(plan.work.join("qemu.err")).unwrap_or_default();
            if plan.expect_no_boot {
                r.passed = true;
                r.diagnosis = format!("the VM stopped without booting, as expected ({st})");
                return Ok(());
            }
            bail!(
                "QEMU exited ({st}) before the node came up: {}",
                exec::tail(&err, 5)
            );
        }
        if let Some(st) = ganesha.exited() {
            bail!(
                "the NFS server exited ({st}) during the boot; see {}",
                plan.work.join("ganesha.log").display()
            );
        }
        if Instant::now() > deadline {
            if plan.expect_no_boot {
                r.passed = true;
                r.diagnosis = format!("no node line within {} s, as expected", plan.timeout);
                return Ok(());
            }
            bail!(
                "no node line within {} s (last stage reached: {})",
                plan.timeout,
                last_stage(&r.timings)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Remove terminal colour sequences and backspaced characters from a
/// console line.
pub fn strip_ansi(s: &str) -> String {
    // Backspace moves left and the next character overwrites, as on a
    // terminal: iPXE erases its "Press Ctrl-B" prompt with `\b \b`.
    let mut out: Vec<char> = Vec::with_capacity(s.len());
    let mut at: usize = 0;
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, '\x08') => at = at.saturating_sub(1),
            (false, c) => {
                if at < out.len() {
                    out[at] = c;
                } else {
                    out.push(c);
                }
                at += 1;
            }
        }
    }
    out.into_iter().collect::<String>().trim_end().to_string()
}

fn last_stage(t: &Timings) -> &'static str {
    if t.switch_root.is_some() {
        "the real root started; the node never reported up (check systemd units and the logs export)"
    } else if t.initramfs.is_some() {
        "the initramfs ran but never switched to the real root"
    } else if t.kernel_start.is_some() {
        "the kernel started but the initramfs printed nothing"
    } else {
        "nothing on the console (firmware or PXE stage)"
    }
}

/// `nfsroot: host ip key=value ...` into fields.
pub fn parse_node_line(line: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut w = line.split_whitespace().skip(1);
    if let Some(h) = w.next() {
        m.insert("host".into(), h.into());
    }
    if let Some(ip) = w.next() {
        m.insert("ip".into(), ip.into());
    }
    for kv in w {
        if let Some((k, v)) = kv.split_once('=') {
            m.insert(k.into(), v.into());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_cleanup() {
        assert_eq!(
            strip_ansi("\x1b[0;1miPXE\x1b[0m ok...\x08 \x08\x08 \x08\x08 \x08net0"),
            "iPXE oknet0"
        );
        // SeaBIOS's console redirection positions the cursor mid-line.
        assert_eq!(
            strip_ansi("nfsroot: host \x1b[25;14H\x1b[25;15Halpha is disabled  \n"),
            "nfsroot: host alpha is disabled"
        );
    }

    #[test]
    fn node_line_fields() {
        let f = parse_node_line(
            "nfsroot: node015 10.0.2.15 image=minimal build=x kernel=6.1 root=ro tmpfs=/tmp,/var/tmp boot=ab logs=/v",
        );
        assert_eq!(f["host"], "node015");
        assert_eq!(f["ip"], "10.0.2.15");
        assert_eq!(f["root"], "ro");
        assert_eq!(f["tmpfs"], "/tmp,/var/tmp");
    }

    #[test]
    fn ganesha_config_exports() {
        let plan = Plan {
            image: "m".into(),
            image_dir: "/b/m".into(),
            work: "/w".into(),
            mode: "direct".into(),
            mac: "52:54:00:12:34:56".into(),
            ip: Ipv4Addr::new(10, 0, 2, 15),
            exports: vec![("/b/m".into(), false), ("/b/.logs/m".into(), true)],
            tftp: "/t".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            append: String::new(),
            timeout: 1,
            accel: "tcg".into(),
            memory: 256,
            expect_no_boot: false,
        };
        let c = ganesha_conf(&plan);
        assert!(c.contains("Path = \"/b/m\";\n  Pseudo = \"/b/m\";\n  Access_Type = RO;"));
        assert!(c.contains("Access_Type = RW;"));
        assert!(c.contains("Enable_NLM = false;"));
        assert!(c.contains("Graceless = true;"));
    }

    #[test]
    fn predicts_from_hosts_then_pattern() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/nfsroot")).unwrap();
        std::fs::write(
            d.path().join("etc/nfsroot/node.conf"),
            "HOSTNAME_SOURCES='hosts dhcp pattern'\nHOSTNAME_PATTERN='n{ip.3:03}'\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/hosts"),
            "127.0.0.1 localhost\n10.0.2.20 alpha.cl alpha\n",
        )
        .unwrap();
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(
            predict_hostname(d.path(), ip("10.0.2.20"), "").unwrap(),
            "alpha"
        );
        assert_eq!(
            predict_hostname(d.path(), ip("10.0.2.15"), "").unwrap(),
            "n015"
        );
    }
}
