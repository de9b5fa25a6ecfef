//! The namespace runner: everything that starts, watches and stops
//! processes for a boot test. The outer half ([`run_namespace`]) starts
//! `nfsroot boot-test-inner <plan.json>` under `unshare` and records the
//! host PID of every process in the new pid namespace; [`leftover`] checks
//! them by PID afterwards. The inner half ([`run_inner`]) is pid 1 there:
//! it brings up loopback and a private /run, starts rpcbind and nfs-ganesha
//! (each a [`Proc`], stopped by PID on drop), starts QEMU with its serial
//! console in a file, and feeds that file and the clock to the pure
//! [`Watcher`] until it gives a verdict, QEMU or the NFS server exits, or
//! time runs out. It always writes `report.json` for the outer half.

use super::console::{Event, Verdict, Watcher, strip_ansi};
use super::report::BootReport;
use super::{BootPlan, GANESHA, QEMU, RPCBIND};
use crate::exec;
use crate::fsutil;
use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

const NFS_PORT: u16 = 2049;
const MNT_PORT: u16 = 20048;

// ---------------------------------------------------------------------
// The outer half: starts the namespace and keeps track of its processes.

/// Run the inner half for `plan_path` in private namespaces, for at most
/// `timeout` seconds plus 90 for setup; its exit status and the host PIDs
/// of every process seen in its pid namespace.
pub fn run_namespace(plan_path: &Path, timeout: u64) -> Result<(ExitStatus, Vec<u32>)> {
    let me = std::env::current_exe().context("finding the nfsroot executable")?;
    let mut unshare = Command::new(exec::require(exec::UNSHARE)?);
    // A killed boot-test takes unshare with it, and unshare's
    // --kill-child the whole namespace (daemons and QEMU).
    exec::dies_with_parent(&mut unshare);
    let mut child = unshare
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
        .arg(plan_path)
        .stdin(Stdio::null())
        .spawn()
        .context("starting the boot-test namespace (unshare)")?;
    let deadline = Instant::now() + Duration::from_secs(timeout + 90);
    let waiting = "waiting for the boot-test namespace (unshare)";
    let mut pids = BTreeSet::new();
    let ns = loop {
        // The inner process is unshare's child; find its pid namespace.
        if let Some(ns) = child_pid_ns(child.id()) {
            break Some(ns);
        }
        if child.try_wait().context(waiting)?.is_some() || Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = loop {
        if let Some(ns) = ns {
            pids.extend(pids_in_ns(ns));
        }
        if let Some(st) = child.try_wait().context(waiting)? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().context(waiting)?;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    Ok((status, pids.into_iter().collect()))
}

/// Of `pids`, those still running once the kernel had up to 10 s to reap
/// the namespace.
pub fn leftover(pids: &[u32]) -> Vec<u32> {
    let t0 = Instant::now();
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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

// ---------------------------------------------------------------------
// The inner half: runs as pid 1 of private namespaces.

/// Raised by SIGINT or SIGTERM.
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// A started process, stopped by PID on drop: TERM, then KILL after 5 s.
pub(super) struct Proc {
    pub(super) name: &'static str,
    child: Child,
}

impl Proc {
    pub(super) fn start(name: &'static str, cmd: &mut Command) -> Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { name, child })
    }

    pub(super) fn stop(&mut self) {
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

    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
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
    let bytes =
        std::fs::read(plan_path).with_context(|| format!("reading {}", plan_path.display()))?;
    // SIGINT and SIGTERM only raise the flag the watch loop checks, so
    // every process started is still stopped and the report written.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&STOP))
            .context("installing a signal handler")?;
    }
    // Several hosts at once (`--hosts`): the storm's own inner half.
    if let Ok(storm) = serde_json::from_slice::<super::lan::StormPlan>(&bytes) {
        return super::lan::run_storm_inner(&storm);
    }
    let plan: BootPlan = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing {}", plan_path.display()))?;
    let mut report = BootReport {
        image: plan.image.clone(),
        mode: plan.mode.clone(),
        firmware: plan.machine.describe().into(),
        ..BootReport::default()
    };
    if let Err(e) = inner(&plan, &mut report) {
        report.passed = false;
        report.diagnosis = format!("{e:#}");
    }
    let path = plan.work.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Loopback up, and a private /run (and /var/lib/nfs) for rpcbind and
/// ganesha; the host's stay untouched.
pub(super) fn private_run() -> Result<()> {
    sh("ip link set lo up")?;
    sh("mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/rpcbind /run/ganesha")?;
    if Path::new("/var/lib/nfs").is_dir() {
        sh("mount -t tmpfs tmpfs /var/lib/nfs")?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM asked the inner half to stop.
pub(super) fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

fn inner(plan: &BootPlan, report: &mut BootReport) -> Result<()> {
    private_run()?;
    // The LAN's daemons (with --host) stop last, after QEMU.
    let _lan = match &plan.lan {
        Some(l) => Some(super::lan::Lan::start(
            &plan.work,
            l,
            std::slice::from_ref(&l.tap),
        )?),
        None => None,
    };
    let (mut rpcbind, mut ganesha) = start_nfs(plan)?;
    let console = plan.work.join("console.log");
    let mut q = qemu_command(plan, &console)?;
    let start = Instant::now();
    let mut qemu = Proc::start("qemu", &mut q)?;
    let mut watched = watch(plan, &console, start, &mut qemu, &mut ganesha, report);
    if plan.until_poweroff
        && let Ok(v) = &watched
        && v.passed
    {
        watched = until_poweroff(plan, &console, start, &mut qemu, report);
    }
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
    let verdict = watched?;
    report.passed = verdict.passed;
    report.diagnosis = verdict.diagnosis;
    Ok(())
}

pub(super) fn sh(cmd: &str) -> Result<()> {
    exec::Cmd::new("/bin/sh").arg("-c").arg(cmd).run()
}

/// Create (truncate) a log file for a process's output.
pub(super) fn create(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("creating {}", path.display()))
}

/// rpcbind, then nfs-ganesha exporting the plan's paths, each listening.
pub(super) fn start_nfs(plan: &BootPlan) -> Result<(Proc, Proc)> {
    let work = &plan.work;
    fsutil::mkdir_p(&work.join("ganesha-recovery"))?;
    let mut rpcbind = Proc::start(
        "rpcbind",
        Command::new(exec::require(RPCBIND)?)
            .arg("-f")
            .stdout(create(&work.join("rpcbind.log"))?)
            .stderr(create(&work.join("rpcbind.err"))?),
    )?;
    wait_port(111, 10, &mut rpcbind, &work.join("rpcbind.err"))?;
    let conf = work.join("ganesha.conf");
    std::fs::write(&conf, ganesha_conf(plan))
        .with_context(|| format!("writing {}", conf.display()))?;
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
            .stderr(create(&work.join("ganesha.err"))?),
    )?;
    wait_port(NFS_PORT, 30, &mut ganesha, &glog)?;
    Ok((rpcbind, ganesha))
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

/// nfs-ganesha's config for the plan's exports. NFSv4 owners go out as
/// numbers, as the kernel's nfsd sends them to AUTH_SYS clients: a node
/// runs no idmapper, so `root@domain` would read as nobody on an NFSv4
/// root, and setuid-root binaries (mount) would run as nobody.
fn ganesha_conf(plan: &BootPlan) -> String {
    let mut s = format!(
        "NFS_CORE_PARAM {{\n  Protocols = 3, 4;\n  NFS_Port = {NFS_PORT};\n  MNT_Port = {MNT_PORT};\n  \
         Enable_NLM = false;\n  Enable_RQUOTA = false;\n  Enable_UDP = false;\n  \
         Mount_Path_Pseudo = true;\n}}\n\
         NFSV4 {{\n  Graceless = true;\n  Only_Numeric_Owners = true;\n  RecoveryBackend = fs;\n  \
         RecoveryRoot = {}/ganesha-recovery;\n}}\n\
         NFS_KRB5 {{\n  Active_krb5 = false;\n}}\n",
        plan.work.display()
    );
    for (i, e) in plan.exports.iter().enumerate() {
        s.push_str(&format!(
            "EXPORT {{\n  Export_Id = {};\n  Path = \"{}\";\n  Pseudo = \"{}\";\n  Access_Type = {};\n  \
             Squash = {};\n  Anonymous_Uid = {anon};\n  Anonymous_Gid = {anon};\n  \
             SecType = sys;\n  Protocols = 3, 4;\n  Transports = TCP;\n  \
             FSAL {{\n    Name = VFS;\n  }}\n}}\n",
            i + 1,
            e.path.display(),
            e.pseudo.as_ref().unwrap_or(&e.path).display(),
            if e.rw { "RW" } else { "RO" },
            if e.root_squash { "Root_Squash" } else { "No_Root_Squash" },
            anon = crate::inventory::sync::ANON_ID,
        ));
    }
    s
}

/// The QEMU command for the plan, its serial console written to `console`
/// (and its command line to `qemu.cmdline`, for the logs).
pub(super) fn qemu_command(plan: &BootPlan, console: &Path) -> Result<Command> {
    let work = &plan.work;
    let mut q = Command::new(exec::require(QEMU)?);
    q.args([
        "-accel",
        &plan.accel,
        "-m",
        &plan.memory.to_string(),
        "-smp",
        &plan.cpus.to_string(),
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
    q.args(plan.machine.machine_args(work)?);
    q.arg("-netdev").arg(netdev(plan));
    q.arg("-device").arg(plan.machine.nic(&plan.mac));
    if plan.mode == "pxe" {
        q.args(plan.machine.pxe_args(work)?);
    } else {
        q.arg("-kernel")
            .arg(&plan.kernel)
            .arg("-initrd")
            .arg(&plan.initrd)
            .arg("-append")
            .arg(&plan.append);
    }
    write_cmdline(&q, &work.join("qemu.cmdline"))?;
    q.stdout(create(&work.join("qemu.log"))?)
        .stderr(create(&work.join("qemu.err"))?);
    Ok(q)
}

/// QEMU's user network for the plan: the profile server's /24 with the
/// host (the namespace's loopback: NFS, TFTP) at the server's address, and
/// the node's address first in the DHCP range; with `--host`, the LAN's
/// tap device instead.
fn netdev(plan: &BootPlan) -> String {
    if let Some(l) = &plan.lan {
        return super::lan::netdev(&l.tap);
    }
    let mut netdev = format!(
        "user,id=n0,net={}/24,host={},dhcpstart={}",
        plan.net, plan.host, plan.ip
    );
    if plan.mode == "pxe" {
        netdev.push_str(&format!(
            ",tftp={},bootfile={}",
            plan.tftp.display(),
            plan.machine.bootfile()
        ));
    }
    netdev
}

/// Save a command line as a shell could run it, for the logs.
fn write_cmdline(q: &Command, path: &Path) -> Result<()> {
    let argv: Vec<String> = std::iter::once(q.get_program().to_string_lossy().to_string())
        .chain(
            q.get_args()
                .map(|a| exec::shell_quote(&a.to_string_lossy())),
        )
        .collect();
    std::fs::write(path, argv.join(" ") + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Feed the console and the clock to the watcher until it gives a
/// verdict; QEMU's exit and the deadline are verdicts too, the NFS
/// server's exit and Ctrl-C are errors.
fn watch(
    plan: &BootPlan,
    console: &Path,
    start: Instant,
    qemu: &mut Proc,
    ganesha: &mut Proc,
    r: &mut BootReport,
) -> Result<Verdict> {
    let deadline = start + Duration::from_secs(plan.timeout);
    let mut w = Watcher::for_plan(plan);
    let mut pos = 0u64;
    // The console again, each line stamped with seconds since QEMU started.
    let timed_path = plan.work.join("console.timed.log");
    let mut timed = create(&timed_path)?;
    loop {
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        let chunk = read_new(console, &mut pos)?;
        let now = start.elapsed().as_secs_f64();
        let mut done = None;
        for ev in w.feed(&chunk, now) {
            done = done.or(record(r, ev, &mut timed));
        }
        if let Some(v) = done.or_else(|| w.settle(start.elapsed().as_secs_f64())) {
            return Ok(v);
        }
        if let Some(st) = qemu.exited() {
            let err = std::fs::read_to_string(plan.work.join("qemu.err")).unwrap_or_default();
            return Ok(w.qemu_exited(&st.to_string(), &err));
        }
        if let Some(st) = ganesha.exited() {
            bail!(
                "the NFS server exited ({st}) during the boot; see {}",
                plan.work.join("ganesha.log").display()
            );
        }
        if Instant::now() > deadline {
            return Ok(w.timed_out(plan.timeout));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After a passed watch (`--until-poweroff`): let the node run until
/// the VM powers off, then keep the console lines after the node's
/// report in [`BootReport::after`]. Not powering off by the deadline
/// fails the boot.
fn until_poweroff(
    plan: &BootPlan,
    console: &Path,
    start: Instant,
    qemu: &mut Proc,
    r: &mut BootReport,
) -> Result<Verdict> {
    let deadline = start + Duration::from_secs(plan.timeout);
    let off = loop {
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if qemu.exited().is_some() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = String::from_utf8_lossy(&std::fs::read(console).unwrap_or_default()).into_owned();
    r.after = lines_after_report(&text);
    Ok(Verdict {
        passed: off,
        diagnosis: if off {
            String::new()
        } else {
            format!(
                "the node came up but did not power off within {} s",
                plan.timeout
            )
        },
    })
}

/// The console's lines after the node's report: after its analysis's end
/// marker, else after its node line.
fn lines_after_report(console: &str) -> Vec<String> {
    let lines: Vec<String> = console
        .lines()
        .map(|l| strip_ansi(&l.replace('\r', "")))
        .collect();
    let end = lines
        .iter()
        .rposition(|l| l.contains("nfsroot-analyze: end"))
        .or_else(|| {
            lines
                .iter()
                .rposition(|l| l.contains("nfsroot: ") && l.contains(" image="))
        });
    end.map_or_else(Vec::new, |i| lines[i + 1..].to_vec())
}

/// What the console file gained since `pos` (nothing while QEMU has not
/// created it yet).
pub(super) fn read_new(console: &Path, pos: &mut u64) -> Result<Vec<u8>> {
    let mut chunk = Vec::new();
    if let Ok(mut f) = File::open(console) {
        f.seek(SeekFrom::Start(*pos))
            .and_then(|_| f.read_to_end(&mut chunk))
            .with_context(|| format!("reading {}", console.display()))?;
        *pos += chunk.len() as u64;
    }
    Ok(chunk)
}

/// Put one watcher event into the report (and the timed console); the
/// verdict when it is one.
pub(super) fn record(r: &mut BootReport, ev: Event, timed: &mut File) -> Option<Verdict> {
    use super::console::Stage;
    match ev {
        Event::Line(t, line) => {
            let _ = writeln!(timed, "{t:7.2} {line}");
        }
        Event::Stage(Stage::Firmware, t) => r.timings.firmware = Some(t),
        Event::Stage(Stage::Loader, t) => r.timings.loader = Some(t),
        Event::Stage(Stage::Kernel, t) => r.timings.kernel_start = Some(t),
        Event::Stage(Stage::Initramfs, t) => r.timings.initramfs = Some(t),
        Event::Stage(Stage::SwitchRoot, t) => r.timings.switch_root = Some(t),
        Event::Node { line, fields, t } => {
            r.timings.node_up = Some(t);
            r.node_line = Some(line);
            r.fields = fields;
        }
        Event::Analysis(l) => r.analysis.push(l),
        Event::SecureBoot(on) => r.secure_boot = Some(on),
        Event::Failure(_) => {}
        Event::Finished(v) => return Some(v),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boottest::NfsExport;
    use std::net::Ipv4Addr;

    fn test_plan() -> BootPlan {
        BootPlan {
            image: "m".into(),
            image_dir: "/b/m".into(),
            work: "/w".into(),
            mode: "direct".into(),
            machine: Default::default(),
            mac: "52:54:00:12:34:56".into(),
            ip: Ipv4Addr::new(192, 168, 0, 15),
            net: Ipv4Addr::new(192, 168, 0, 0),
            host: Ipv4Addr::new(192, 168, 0, 1),
            exports: vec![
                NfsExport {
                    path: "/b/m".into(),
                    pseudo: None,
                    rw: false,
                    root_squash: false,
                },
                NfsExport {
                    path: "/b/.logs/m".into(),
                    pseudo: None,
                    rw: true,
                    root_squash: true,
                },
                NfsExport {
                    path: "/w/mounts/0".into(),
                    pseudo: Some("/home".into()),
                    rw: false,
                    root_squash: true,
                },
            ],
            tftp: "/t".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            append: String::new(),
            timeout: 1,
            accel: "tcg".into(),
            memory: 256,
            cpus: 2,
            expect_no_boot: false,
            until_poweroff: false,
            no_analysis: false,
            lan: None,
        }
    }

    #[test]
    fn ganesha_config_exports() {
        let plan = test_plan();
        let c = ganesha_conf(&plan);
        // NFSv3 mounts name the pseudo path: a profile's `host:/home`.
        assert!(c.contains("Mount_Path_Pseudo = true;"));
        assert!(
            c.contains("Only_Numeric_Owners = true;"),
            "NFSv4 roots: {c}"
        );
        assert!(c.contains("Path = \"/w/mounts/0\";\n  Pseudo = \"/home\";\n  Access_Type = RO;"));
        assert_eq!(
            netdev(&plan),
            "user,id=n0,net=192.168.0.0/24,host=192.168.0.1,dhcpstart=192.168.0.15"
        );
        assert!(c.contains("Path = \"/b/m\";\n  Pseudo = \"/b/m\";\n  Access_Type = RO;"));
        assert!(c.contains("Access_Type = RO;\n  Squash = No_Root_Squash;"));
        assert!(c.contains("Access_Type = RW;\n  Squash = Root_Squash;\n  Anonymous_Uid = 65534;"));
        assert!(c.contains("Enable_NLM = false;"));
        assert!(c.contains("Graceless = true;"));
    }

    #[test]
    fn lines_after_the_report() {
        let c = "x\r\nnfsroot: n 1.2.3.4 image=c units=none\nnfsroot-analyze: a\n\
                 nfsroot-analyze: end\nhour: done\r\n\x1b[0mreboot: Power down\n";
        assert_eq!(lines_after_report(c), ["hour: done", "reboot: Power down"]);
        let c = "nfsroot: n 1.2.3.4 image=c\nafter\n";
        assert_eq!(lines_after_report(c), ["after"]);
        assert!(lines_after_report("no report\n").is_empty());
    }

    #[test]
    fn qemu_boots_pxe_through_the_firmware() {
        let d = tempfile::tempdir().unwrap();
        let mut plan = test_plan();
        plan.work = d.path().into();
        plan.mode = "pxe".into();
        let args = |plan: &BootPlan| -> String {
            let q = qemu_command(plan, &d.path().join("console.log")).unwrap();
            q.get_args()
                .map(|a| a.to_string_lossy().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let bios = args(&plan);
        assert!(
            bios.contains(" -boot n -fw_cfg name=etc/sercon-port"),
            "{bios}"
        );
        assert!(bios.contains(",tftp=/t,bootfile=nfsroot.ipxe "), "{bios}");
        assert!(!bios.contains("-kernel"), "{bios}");
        plan.machine.pxelinux = true;
        let pxelinux = args(&plan);
        assert!(
            pxelinux.contains(",tftp=/t,bootfile=pxelinux.0 "),
            "{pxelinux}"
        );
        plan.machine = crate::boottest::Machine {
            firmware: crate::boottest::Firmware::Uefi,
            secure_boot: true,
            pxelinux: false,
        };
        let uefi = args(&plan);
        assert!(uefi.contains(",tftp=/t,bootfile=shimx64.efi "), "{uefi}");
        assert!(uefi.contains("-machine q35,smm=on "), "{uefi}");
        assert!(uefi.contains(",romfile=,bootindex=1"), "{uefi}");
        assert!(
            !uefi.contains("-kernel") && !uefi.contains("-boot"),
            "{uefi}"
        );
        assert!(d.path().join("ovmf-vars.fd").is_file());
        plan.mode = "direct".into();
        plan.machine = Default::default();
        let direct = args(&plan);
        assert!(
            direct.ends_with("-kernel /k -initrd /i -append "),
            "{direct}"
        );
    }

    #[test]
    fn console_reads_continue_where_they_stopped() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("console.log");
        let mut pos = 0;
        assert!(
            read_new(&c, &mut pos).unwrap().is_empty(),
            "not created yet"
        );
        std::fs::write(&c, "ab").unwrap();
        assert_eq!(read_new(&c, &mut pos).unwrap(), b"ab");
        std::fs::write(&c, "abcd").unwrap();
        assert_eq!(read_new(&c, &mut pos).unwrap(), b"cd");
        assert_eq!(pos, 4);
    }

    #[test]
    fn events_fill_the_report() {
        let d = tempfile::tempdir().unwrap();
        let mut timed = File::create(d.path().join("t")).unwrap();
        let mut r = BootReport::default();
        let mut w = Watcher::new(false);
        let mut done = None;
        let console = b"Linux version 6\nnfsroot-init: switching\nnfsroot: n1 10.0.2.15 image=m\n";
        for ev in w.feed(console, 1.5) {
            done = done.or(record(&mut r, ev, &mut timed));
        }
        assert_eq!(done.map(|v| v.passed), Some(true));
        assert_eq!(&r.timings, w.timings());
        assert_eq!(r.fields["host"], "n1");
        assert_eq!(
            r.node_line.as_deref(),
            Some("nfsroot: n1 10.0.2.15 image=m")
        );
        let text = std::fs::read_to_string(d.path().join("t")).unwrap();
        assert_eq!(text.lines().next(), Some("   1.50 Linux version 6"));
        assert_eq!(text.lines().count(), 3);
        // A node that reports units= sends its boot analysis next.
        let mut r = BootReport::default();
        let mut w = Watcher::new(false);
        let console = b"nfsroot: n1 10.0.2.15 image=m units=none\nnfsroot-analyze: 3.1s a.service\nnfsroot-analyze: end\n";
        let done = w
            .feed(console, 9.0)
            .into_iter()
            .fold(None, |d, ev| d.or(record(&mut r, ev, &mut timed)));
        assert_eq!(done.map(|v| v.passed), Some(true));
        assert_eq!(r.analysis, ["3.1s a.service"]);
    }
}
