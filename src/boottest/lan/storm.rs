//! Several inventory hosts at once (`boot-test --hosts a,b,... --dhcp
//! ...`): one set of daemons, one QEMU per host in parallel, one verdict
//! per host, and the server side's load during the storm. The outer half
//! ([`run_hosts`]) plans each host as a single `--host` boot would (its
//! own work directory under the storm's, its own tap device on the
//! bridge; a host the inventory does not boot from an image is expected
//! not to come up), writes a [`StormPlan`], runs it in the usual private
//! namespaces and judges each host's report as a single boot's, with the
//! shared daemons' logs for the TFTP checks. The inner half
//! ([`run_storm_inner`]) starts the LAN with every tap, rpcbind and one
//! nfs-ganesha exporting the union of the hosts' exports, then every
//! QEMU, and polls each console's watcher until every host has a verdict
//! (a host's QEMU is stopped at its verdict). Meanwhile it samples the
//! daemons (and their children, tftpd-hpa's per-request forks) in
//! `/proc`: CPU as utime+stime (with reaped children's) over the wall
//! time, memory as the peak of their summed RSS. Every process is a
//! `Proc`, stopped by PID on every exit path.

use super::super::console::{Verdict, Watcher, strip_ansi};
use super::super::report::{BootReport, ServerLoad, StormReport};
use super::super::runner::{self, Proc};
use super::super::{BootPlan, NfsExport, Options};
use super::{Lan, LanOptions, LanPlan, Target, tap_name};
use crate::exec;
use crate::fsutil;
use crate::image::Layout;
use crate::inventory::BootMode;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the storm's inner half is told to do (written as JSON; told
/// apart from a single boot's plan by its fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormPlan {
    /// The shared daemons' work directory (each host has its own below).
    pub work: PathBuf,
    pub lan: LanPlan,
    pub hosts: Vec<BootPlan>,
}

/// What the inner half measured, for the outer one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Measured {
    wall_secs: f64,
    server: ServerLoad,
}

const MEASURED: &str = "storm.json";

/// Outer entry point: plan every host, run them at once, judge each.
pub fn run_hosts(layout: &Layout, a: &Options, hosts: &[String]) -> Result<StormReport> {
    let Some(lan) = &a.lan else {
        bail!("--hosts needs --dhcp dnsmasq|dhcpd");
    };
    if a.until_poweroff || a.expect_hostname.is_some() || a.expect_no_boot {
        bail!(
            "--hosts takes each host's expectations from the inventory: drop --until-poweroff, \
             --expect-hostname and --expect-no-boot"
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(h) = hosts.iter().find(|h| !seen.insert(h.as_str())) {
        bail!("--hosts names {h} twice");
    }
    let work = layout.state_dir().join("boot-tests").join(format!(
        "hosts-{}-{}",
        crate::clock::compact(crate::clock::now_secs()),
        std::process::id()
    ));
    fsutil::mkdir_p(&work)?;
    let prepared = match plan_hosts(layout, a, lan, &work, hosts) {
        Ok(p) => p,
        Err(e) => {
            fsutil::remove_tree(&work)?;
            return Err(e);
        }
    };
    let Some(lan) = prepared.first().and_then(|p| p.plan.lan.clone()) else {
        bail!("--hosts: no host named");
    };
    let storm = StormPlan {
        work: work.clone(),
        lan,
        hosts: prepared.iter().map(|p| p.plan.clone()).collect(),
    };
    let path = work.join("plan.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&storm)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let (status, pids) = runner::run_namespace(&path, a.timeout)?;
    let measured: Measured = std::fs::read(work.join(MEASURED))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut reports = Vec::new();
    for p in &prepared {
        let mut r = super::super::conclude(p, status, pids.clone(), &work)?;
        r.logs_dir = Some(p.plan.work.clone());
        reports.push(r);
    }
    let passed = reports.iter().all(|r| r.passed);
    let logs_dir = if passed && !a.keep_logs {
        fsutil::remove_tree(&work)?;
        reports.iter_mut().for_each(|r| r.logs_dir = None);
        None
    } else {
        Some(work)
    };
    Ok(StormReport {
        passed,
        hosts: reports,
        wall_secs: measured.wall_secs,
        server: measured.server,
        logs_dir,
    })
}

/// Plan each host as `--host` would, in `work/<host>`, on its own tap;
/// a host the inventory does not boot from an image must not come up.
fn plan_hosts(
    layout: &Layout,
    a: &Options,
    lan: &LanOptions,
    work: &std::path::Path,
    hosts: &[String],
) -> Result<Vec<super::super::Prepared>> {
    let pxe = a.method == super::super::BootMethod::Pxe;
    let mut targets = Vec::new();
    for h in hosts {
        let lo = LanOptions {
            host: h.clone(),
            ..lan.clone()
        };
        targets.push((Target::load(&lo, &layout.tftp_root, pxe)?, lo));
    }
    // A host that boots no image is served another host's (it must not
    // come up, so which does not matter).
    let some_image = targets.iter().find_map(|t| t.0.image.clone());
    let mut prepared = Vec::new();
    for (i, (t, lo)) in targets.into_iter().enumerate() {
        let h = &lo.host.clone();
        let o = Options {
            lan: Some(lo),
            expect_no_boot: t.boot != BootMode::Image,
            image: a.image.clone().or(t.image.clone()).or(some_image.clone()),
            ..a.clone()
        };
        let mut p = super::super::prepare(layout, &o, Some(work.join(h)))?;
        if let Some(l) = &mut p.plan.lan {
            l.tap = tap_name(i);
        }
        prepared.push(p);
    }
    Ok(prepared)
}

/// Inner entry point (pid 1 of the private namespaces): every host's
/// `report.json` and the storm's measurements are written whatever
/// happens; a host without a verdict when an error stops the storm
/// fails with that error.
pub fn run_storm_inner(s: &StormPlan) -> Result<()> {
    let mut reports: Vec<BootReport> = s
        .hosts
        .iter()
        .map(|p| BootReport {
            image: p.image.clone(),
            mode: p.mode.clone(),
            firmware: p.machine.describe().into(),
            ..BootReport::default()
        })
        .collect();
    let mut decided = vec![false; reports.len()];
    let mut measured = Measured::default();
    if let Err(e) = storm(s, &mut reports, &mut decided, &mut measured) {
        for (r, _) in reports.iter_mut().zip(&decided).filter(|(_, d)| !**d) {
            r.passed = false;
            r.diagnosis = format!("{e:#}");
        }
    }
    for (p, r) in s.hosts.iter().zip(&reports) {
        let path = p.work.join("report.json");
        std::fs::write(&path, serde_json::to_vec_pretty(r)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let path = s.work.join(MEASURED);
    std::fs::write(&path, serde_json::to_vec_pretty(&measured)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn storm(
    s: &StormPlan,
    reports: &mut [BootReport],
    decided: &mut [bool],
    measured: &mut Measured,
) -> Result<()> {
    runner::private_run()?;
    let taps: Vec<String> = (s.hosts.iter())
        .map(|p| p.lan.as_ref().map(|l| l.tap.clone()))
        .collect::<Option<_>>()
        .context("a host of the storm has no LAN plan")?;
    // Stopped last (dropped after the NFS server and the VMs).
    let lan = Lan::start(&s.work, &s.lan, &taps)?;
    let (mut rpcbind, mut ganesha) = runner::start_nfs(&nfs_plan(s)?)?;
    let mut daemons = lan.pids();
    daemons.extend([("rpcbind", rpcbind.pid()), (ganesha.name, ganesha.pid())]);
    let mut meter = Meter::new(daemons);
    meter.sample();
    let start = Instant::now();
    let mut nodes = (s.hosts.iter())
        .map(Node::start)
        .collect::<Result<Vec<_>>>()?;
    while decided.iter().any(|d| !d) {
        if runner::stopped() {
            bail!("interrupted");
        }
        if let Some(st) = ganesha.exited() {
            bail!(
                "the NFS server exited ({st}) during the boots; see {}",
                s.work.join("ganesha.log").display()
            );
        }
        for ((n, r), d) in nodes
            .iter_mut()
            .zip(reports.iter_mut())
            .zip(decided.iter_mut())
        {
            if !*d && let Some(v) = n.poll(r)? {
                n.finish(r, v);
                *d = true;
            }
        }
        meter.sample();
        std::thread::sleep(Duration::from_millis(100));
    }
    measured.wall_secs = start.elapsed().as_secs_f64();
    measured.server = meter.load(measured.wall_secs);
    drop(nodes);
    ganesha.stop();
    rpcbind.stop();
    drop(lan);
    Ok(())
}

/// The NFS server's plan: the first host's, in the storm's work
/// directory, exporting every host's exports once.
fn nfs_plan(s: &StormPlan) -> Result<BootPlan> {
    let mut plan = s.hosts.first().context("a storm of no hosts")?.clone();
    plan.work = s.work.clone();
    plan.exports = merged_exports(s.hosts.iter().flat_map(|p| &p.exports))?;
    Ok(plan)
}

/// Each export once, by the path nodes mount: hosts of one image share
/// its root and log exports; a profile's `[[mounts]]` (one directory per
/// host, the same marker) is served from the first host's directory. The
/// same path with other options is an error.
fn merged_exports<'a>(all: impl Iterator<Item = &'a NfsExport>) -> Result<Vec<NfsExport>> {
    let key = |e: &NfsExport| e.pseudo.clone().unwrap_or_else(|| e.path.clone());
    let mut out: Vec<NfsExport> = Vec::new();
    for e in all {
        match out.iter().find(|o| key(o) == key(e)) {
            None => out.push(e.clone()),
            Some(o)
                if o.rw == e.rw
                    && o.root_squash == e.root_squash
                    && (o.path == e.path || o.pseudo.is_some()) => {}
            Some(o) => bail!(
                "two hosts need {} exported differently ({} and {})",
                key(e).display(),
                o.path.display(),
                e.path.display()
            ),
        }
    }
    Ok(out)
}

/// One host's VM and its console's watcher.
struct Node<'a> {
    plan: &'a BootPlan,
    qemu: Proc,
    watcher: Watcher,
    console: PathBuf,
    pos: u64,
    timed: File,
    start: Instant,
}

impl<'a> Node<'a> {
    fn start(plan: &'a BootPlan) -> Result<Node<'a>> {
        let console = plan.work.join("console.log");
        let mut q = runner::qemu_command(plan, &console)?;
        let timed = runner::create(&plan.work.join("console.timed.log"))?;
        Ok(Node {
            plan,
            start: Instant::now(),
            qemu: Proc::start("qemu", &mut q)?,
            watcher: Watcher::for_plan(plan),
            console,
            pos: 0,
            timed,
        })
    }

    /// Feed the watcher what the console gained; the verdict once there
    /// is one (QEMU's exit and this host's deadline are verdicts too).
    fn poll(&mut self, r: &mut BootReport) -> Result<Option<Verdict>> {
        let chunk = runner::read_new(&self.console, &mut self.pos)?;
        let now = self.start.elapsed().as_secs_f64();
        let mut done = None;
        for ev in self.watcher.feed(&chunk, now) {
            done = done.or(runner::record(r, ev, &mut self.timed));
        }
        if let Some(v) = done.or_else(|| self.watcher.settle(now)) {
            return Ok(Some(v));
        }
        if let Some(st) = self.qemu.exited() {
            let err = std::fs::read_to_string(self.plan.work.join("qemu.err")).unwrap_or_default();
            return Ok(Some(self.watcher.qemu_exited(&st.to_string(), &err)));
        }
        if self.start.elapsed() > Duration::from_secs(self.plan.timeout) {
            return Ok(Some(self.watcher.timed_out(self.plan.timeout)));
        }
        Ok(None)
    }

    /// Stop the VM (freeing its CPU for the others) and record the verdict.
    fn finish(&mut self, r: &mut BootReport, v: Verdict) {
        self.qemu.stop();
        let text =
            String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned();
        r.console_tail = exec::tail(&text, 25).lines().map(strip_ansi).collect();
        r.passed = v.passed;
        r.diagnosis = v.diagnosis;
    }
}

/// The kernel's clock ticks in `/proc/<pid>/stat` (USER_HZ, 100 on Linux
/// whatever the kernel's HZ).
const USER_HZ: f64 = 100.0;

/// Samples of the daemons' CPU time and memory.
struct Meter {
    daemons: Vec<(&'static str, u32)>,
    first: Option<u64>,
    ticks: u64,
    peak_rss_kib: u64,
    samples: u64,
}

impl Meter {
    fn new(daemons: Vec<(&'static str, u32)>) -> Meter {
        Meter {
            daemons,
            first: None,
            ticks: 0,
            peak_rss_kib: 0,
            samples: 0,
        }
    }

    /// Read every daemon's process tree once.
    fn sample(&mut self) {
        let pids: Vec<u32> = self.daemons.iter().flat_map(|d| tree(d.1)).collect();
        let read = |p: u32, f: &str| std::fs::read_to_string(format!("/proc/{p}/{f}")).ok();
        let ticks: u64 = (pids.iter())
            .filter_map(|p| stat_ticks(&read(*p, "stat")?))
            .sum();
        let rss: u64 = (pids.iter())
            .filter_map(|p| status_rss_kib(&read(*p, "status")?))
            .sum();
        self.first.get_or_insert(ticks);
        self.ticks = self.ticks.max(ticks);
        self.peak_rss_kib = self.peak_rss_kib.max(rss);
        self.samples += 1;
    }

    fn load(&self, wall_secs: f64) -> ServerLoad {
        let cpu_secs = self.ticks.saturating_sub(self.first.unwrap_or(0)) as f64 / USER_HZ;
        ServerLoad {
            daemons: self.daemons.iter().map(|d| d.0.to_string()).collect(),
            cpu_secs,
            cpu_percent: if wall_secs > 0.0 {
                100.0 * cpu_secs / wall_secs
            } else {
                0.0
            },
            peak_rss_kib: self.peak_rss_kib,
            samples: self.samples,
        }
    }
}

/// `pid` and its descendants (children of any of their threads).
fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// utime+stime+cutime+cstime from a `/proc/<pid>/stat` line (fields 14
/// to 17; the command name, field 2, may hold spaces and parentheses).
fn stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state).
    (11..15).map(|i| f.get(i)?.parse::<u64>().ok()).sum()
}

/// VmRSS (KiB) from `/proc/<pid>/status`.
fn status_rss_kib(status: &str) -> Option<u64> {
    let l = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn proc_fields() {
        let stat = "42 (in.tftpd (x)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 5 1 20 0 1 0 99 1000 50";
        assert_eq!(stat_ticks(stat), Some(16));
        assert_eq!(stat_ticks("42 (short) S 1"), None);
        let status = "Name:\tganesha.nfsd\nVmPeak:\t 9000 kB\nVmRSS:\t   51234 kB\n";
        assert_eq!(status_rss_kib(status), Some(51234));
        assert_eq!(status_rss_kib("Name:\tx\n"), None);
        let me = std::process::id();
        assert!(tree(me).starts_with(&[me]));
        let mut m = Meter::new(vec![("self", me)]);
        m.sample();
        m.sample();
        let l = m.load(2.0);
        assert!(l.peak_rss_kib > 0 && l.samples == 2, "{l:?}");
        assert_eq!(l.daemons, ["self"]);
    }

    #[test]
    fn exports_are_merged_by_the_path_nodes_mount() {
        let e = |path: &str, pseudo: Option<&str>, rw| NfsExport {
            path: path.into(),
            pseudo: pseudo.map(PathBuf::from),
            rw,
            root_squash: rw,
        };
        let a = [
            e("/b/one", None, false),
            e("/b/.logs/one", None, true),
            e("/w/alpha/mounts/0", Some("/home"), true),
        ];
        let b = [
            e("/b/one", None, false),
            e("/b/.logs/one", None, true),
            e("/w/beta/mounts/0", Some("/home"), true),
            e("/b/two", None, false),
        ];
        let m = merged_exports(a.iter().chain(&b)).unwrap();
        let paths: Vec<&Path> = m.iter().map(|x| x.path.as_path()).collect();
        assert_eq!(
            paths,
            [
                Path::new("/b/one"),
                Path::new("/b/.logs/one"),
                Path::new("/w/alpha/mounts/0"),
                Path::new("/b/two")
            ]
        );
        let c = [e("/b/one", None, true)];
        let err = merged_exports(a.iter().chain(&c)).unwrap_err().to_string();
        assert_eq!(
            err,
            "two hosts need /b/one exported differently (/b/one and /b/one)"
        );
    }
}
