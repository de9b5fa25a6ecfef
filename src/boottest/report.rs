//! The boot test's result: [`BootReport`] (written as JSON by the inner
//! half, completed by the outer one, printed by `nfsroot boot-test` or sent
//! as `--json`), the stage [`Timings`], and the checks of the node's line
//! against what the image should give ([`Expect`]). Printing lives here, on
//! the report, as `Display`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Stage times, seconds from QEMU's start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// The firmware's first console output.
    #[serde(default)]
    pub firmware: Option<f64>,
    /// The firmware started the network loader (PXELINUX, or shim then
    /// GRUB).
    #[serde(default)]
    pub loader: Option<f64>,
    pub kernel_start: Option<f64>,
    pub initramfs: Option<f64>,
    pub switch_root: Option<f64>,
    pub node_up: Option<f64>,
}

/// The verdict.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BootReport {
    pub passed: bool,
    /// The inventory host booted (`--host`, `--hosts`).
    #[serde(default)]
    pub host: Option<String>,
    pub image: String,
    pub mode: String,
    /// `bios`, `uefi` or `uefi, secure boot` (see `firmware.rs`).
    #[serde(default)]
    pub firmware: String,
    /// What the kernel said of Secure Boot (`secureboot: Secure boot
    /// enabled|disabled`); `None` when it said nothing (BIOS).
    #[serde(default)]
    pub secure_boot: Option<bool>,
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
    /// The node's `systemd-analyze` time, blame (top 10) and
    /// critical-chain, from the console after the node line (its per-host
    /// log directory keeps a copy, `boot-analyze`, but that may be an
    /// earlier boot's).
    #[serde(default)]
    pub analysis: Vec<String>,
    /// With `--until-poweroff`: the console lines after the node's report,
    /// up to its poweroff.
    #[serde(default)]
    pub after: Vec<String>,
}

/// What the node's line must say.
#[derive(Debug, Clone)]
pub struct Expect {
    pub hostname: String,
    pub root: String,
    pub tmpfs: Vec<String>,
    /// The profile's extra NFS mount points (`nfs=` on the node line).
    pub nfs: Vec<String>,
    /// The per-host log directory this boot must write: a tree the node
    /// writes (the log export, or the image) and the directory in it,
    /// read through a confined view.
    pub log_dir: Option<(PathBuf, String)>,
    /// The fingerprint of the host's ssh key kept on the master, when it
    /// has keys (an inventory host after sync).
    pub hostkey: Option<String>,
    /// Whether the kernel must report Secure Boot on (UEFI boots) or say
    /// nothing of it (`None`: BIOS).
    pub secure_boot: Option<bool>,
}

impl BootReport {
    /// Print the report for a person (`--json` prints the struct).
    pub fn print(&self) {
        print!("{self}");
    }

    /// Whether the kernel reported Secure Boot as `want`.
    fn secure_boot_check(&self, want: bool) -> (&'static str, bool, String) {
        let said = |b: Option<bool>| match b {
            Some(true) => "enabled",
            Some(false) => "disabled",
            None => "not reported",
        };
        (
            "secure boot",
            self.secure_boot == Some(want),
            format!(
                "{} by the kernel (expected {})",
                said(self.secure_boot),
                said(Some(want))
            ),
        )
    }

    /// Check the node line's fields against what the image should give.
    pub fn check_node(&mut self, e: &Expect, ip: Ipv4Addr) {
        let f = self.fields.clone();
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
            ("image", get("image") == self.image, get("image")),
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
        let nfs: Vec<&str> = f
            .get("nfs")
            .map(|t| t.split(',').collect())
            .unwrap_or_default();
        for t in &e.nfs {
            checks.push((
                "nfs mount",
                nfs.contains(&t.as_str()),
                format!("{t} mounted over NFS (nfs={})", get("nfs")),
            ));
        }
        // The ready hook's list of failed units and masked units that ran
        // (absent from images built before it reported them).
        if let Some(u) = f.get("units") {
            checks.push(("units", u == "none", unit_detail(u)));
        }
        if let Some(fp) = &e.hostkey {
            checks.push((
                "ssh host key",
                get("hostkey") == *fp,
                format!("{} (the master keeps {fp})", get("hostkey")),
            ));
        }
        if let Some((tree, dir)) = &e.log_dir {
            checks.push(log_check(tree, dir, &get("boot")));
        }
        if let Some(want) = e.secure_boot {
            checks.push(self.secure_boot_check(want));
        }
        self.push_checks(checks);
    }

    /// Record `checks`; the first failed one fails a passed report.
    pub fn push_checks(&mut self, checks: Vec<(&str, bool, String)>) {
        for (name, ok, detail) in checks {
            if !ok && self.passed {
                self.passed = false;
                let up = if self.node_line.is_some() {
                    "the node came up but "
                } else {
                    ""
                };
                self.diagnosis = format!("{up}{name} is wrong: {detail}");
            }
            self.checks.push((name.to_string(), ok, detail));
        }
    }
}

impl fmt::Display for BootReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self;
        let firmware = match r.firmware.as_str() {
            "" | "bios" => String::new(),
            fw => format!(", {fw}"),
        };
        writeln!(
            f,
            "boot-test {} ({} mode{firmware}): {}",
            r.image,
            r.mode,
            if r.passed { "PASS" } else { "FAIL" }
        )?;
        if !r.diagnosis.is_empty() {
            writeln!(f, "  {}", r.diagnosis)?;
        }
        if let Some(l) = &r.node_line {
            writeln!(f, "  node: {l}")?;
        }
        for (name, ok, detail) in &r.checks {
            writeln!(
                f,
                "  {} {name}: {detail}",
                if *ok { "ok  " } else { "FAIL" }
            )?;
        }
        let t = &r.timings;
        let s = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}s"));
        writeln!(
            f,
            "  timings: firmware {} loader {} kernel {} initramfs {} switch-root {} node-up {}",
            s(t.firmware),
            s(t.loader),
            s(t.kernel_start),
            s(t.initramfs),
            s(t.switch_root),
            s(t.node_up)
        )?;
        writeln!(f, "  {}", r.root_note)?;
        if !r.analysis.is_empty() {
            writeln!(f, "  boot analysis (systemd-analyze on the node):")?;
            for l in &r.analysis {
                writeln!(f, "    {l}")?;
            }
        }
        if !r.after.is_empty() {
            writeln!(f, "  after the node's report, until it powered off:")?;
            for l in &r.after {
                writeln!(f, "    {l}")?;
            }
        }
        if let Some(d) = &r.logs_dir {
            writeln!(
                f,
                "  logs: {} (console.log, ganesha.log, qemu.cmdline)",
                d.display()
            )?;
        }
        if !r.passed {
            writeln!(f, "  last console lines:")?;
            for l in &r.console_tail {
                writeln!(f, "    {l}")?;
            }
        }
        Ok(())
    }
}

/// Several inventory hosts booted at once (`--hosts`): each one's
/// report, and the server side's load during the storm.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormReport {
    /// Every host passed.
    pub passed: bool,
    pub hosts: Vec<BootReport>,
    /// Seconds from the first VM's start to the last verdict.
    pub wall_secs: f64,
    pub server: ServerLoad,
    /// The shared daemons' logs (kept when a host failed or asked).
    pub logs_dir: Option<PathBuf>,
}

/// The server's daemons (DHCP, TFTP, rpcbind, nfs-ganesha) during a
/// storm, from `/proc`: CPU time (utime+stime of each daemon and its
/// children) over the wall time, and the peak of their summed RSS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerLoad {
    pub daemons: Vec<String>,
    pub cpu_secs: f64,
    /// `cpu_secs` over the wall time, in percent of one core.
    pub cpu_percent: f64,
    pub peak_rss_kib: u64,
    /// How many times `/proc` was read.
    pub samples: u64,
}

impl StormReport {
    pub fn print(&self) {
        print!("{self}");
    }
}

impl fmt::Display for StormReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.hosts.len();
        let ok = self.hosts.iter().filter(|r| r.passed).count();
        writeln!(
            f,
            "boot-test --hosts: {ok} of {n} hosts as expected in {:.1} s: {}",
            self.wall_secs,
            if self.passed { "PASS" } else { "FAIL" }
        )?;
        for r in &self.hosts {
            let up = r.timings.node_up.map_or("-".into(), |t| format!("{t:.1}s"));
            let verdict = if r.passed { "PASS" } else { "FAIL" };
            let what = r.node_line.as_deref().unwrap_or(&r.diagnosis);
            let host = r.host.as_deref().unwrap_or("?");
            writeln!(f, "  {host:<12} {verdict} up {up:>7}  {what}")?;
            if !r.passed && r.node_line.is_some() {
                writeln!(f, "  {:<12} {}", "", r.diagnosis)?;
            }
        }
        let s = &self.server;
        writeln!(
            f,
            "  server ({}): cpu {:.1} s ({:.0}% of a core), peak RSS {:.1} MiB",
            s.daemons.join(", "),
            s.cpu_secs,
            s.cpu_percent,
            s.peak_rss_kib as f64 / 1024.0
        )?;
        if let Some(d) = &self.logs_dir {
            writeln!(f, "  logs: {} (one directory per host)", d.display())?;
        }
        Ok(())
    }
}

/// The per-host log check: `<tree>/<dir>/syslog` holds this boot's line.
/// A missing or unreadable file (or a link leaving the tree the node
/// writes) is a failed check, named in it.
fn log_check(tree: &Path, dir: &str, boot: &str) -> (&'static str, bool, String) {
    let file = format!("{dir}/syslog");
    let text = crate::imagefs::ImageRoot::open(tree)
        .and_then(|r| r.read_to_string_opt(&file))
        .ok()
        .flatten()
        .unwrap_or_default();
    let ok = !boot.is_empty() && text.contains(&format!("boot={boot}"));
    (
        "per-host log",
        ok,
        format!(
            "{} holds this boot's line (boot={boot})",
            tree.join(&file).display()
        ),
    )
}

/// The `units=` field in words.
fn unit_detail(u: &str) -> String {
    if u == "none" {
        return "no failed unit, no masked unit ran".into();
    }
    const KINDS: &[(&str, &str)] = &[
        ("failed", "failed"),
        ("ran", "masked but ran"),
        ("unmasked", "not masked"),
        ("inactive", "enabled but not active"),
    ];
    let items: Vec<(&str, &str)> = u
        .split(',')
        .map(|i| i.split_once(':').unwrap_or(("failed", i)))
        .collect();
    let mut parts: Vec<String> = KINDS
        .iter()
        .filter_map(|(k, words)| {
            let names: Vec<&str> = items.iter().filter(|i| i.0 == *k).map(|i| i.1).collect();
            (!names.is_empty()).then(|| format!("{words}: {}", names.join(" ")))
        })
        .collect();
    let other: Vec<&str> = items
        .iter()
        .filter(|i| !KINDS.iter().any(|k| k.0 == i.0))
        .map(|i| i.1)
        .collect();
    if !other.is_empty() {
        parts.push(format!("other: {}", other.join(" ")));
    }
    parts.join("; ")
}

/// How far a boot got, from the stages the console showed.
pub fn last_stage(t: &Timings) -> &'static str {
    if t.switch_root.is_some() {
        "the real root started; the node never reported up (check systemd units and the logs export)"
    } else if t.initramfs.is_some() {
        "the initramfs ran but never switched to the real root"
    } else if t.kernel_start.is_some() {
        "the kernel started but the initramfs printed nothing"
    } else if t.loader.is_some() {
        "the network loader started but no kernel did"
    } else if t.firmware.is_some() {
        "the firmware ran but started no network loader"
    } else {
        "nothing on the console"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(line: &str) -> BootReport {
        BootReport {
            passed: true,
            image: "minimal".into(),
            mode: "direct".into(),
            node_line: Some(line.into()),
            fields: super::super::console::parse_node_line(line),
            ..BootReport::default()
        }
    }

    #[test]
    fn storm_prints_a_line_per_host_and_the_server_load() {
        let mut a = up("nfsroot: n1 10.0.2.41 image=minimal");
        a.host = Some("n1".into());
        a.timings.node_up = Some(61.25);
        let b = BootReport {
            host: Some("n5".into()),
            passed: false,
            diagnosis: "no node line within 600 s".into(),
            ..BootReport::default()
        };
        let r = StormReport {
            passed: false,
            hosts: vec![a, b],
            wall_secs: 70.0,
            server: ServerLoad {
                daemons: vec!["dnsmasq".into(), "ganesha.nfsd".into()],
                cpu_secs: 3.5,
                cpu_percent: 5.0,
                peak_rss_kib: 2048,
                samples: 700,
            },
            logs_dir: Some("/w".into()),
        };
        assert_eq!(
            r.to_string(),
            "boot-test --hosts: 1 of 2 hosts as expected in 70.0 s: FAIL\n  \
             n1           PASS up   61.2s  nfsroot: n1 10.0.2.41 image=minimal\n  \
             n5           FAIL up       -  no node line within 600 s\n  \
             server (dnsmasq, ganesha.nfsd): cpu 3.5 s (5% of a core), peak RSS 2.0 MiB\n  \
             logs: /w (one directory per host)\n"
        );
    }

    fn expect(log_tree: Option<PathBuf>) -> Expect {
        Expect {
            hostname: "node015".into(),
            root: "ro".into(),
            tmpfs: vec!["/tmp".into(), "/var/log".into()],
            nfs: vec![],
            log_dir: log_tree.map(|t| (t, "node015".into())),
            hostkey: None,
            secure_boot: None,
        }
    }

    const LINE: &str =
        "nfsroot: node015 10.0.2.15 image=minimal root=ro tmpfs=/tmp,/var/log boot=ab12";

    #[test]
    fn node_checks_pass_and_read_the_per_host_log() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("node015")).unwrap();
        std::fs::write(d.path().join("node015/syslog"), "x nfsroot: up boot=ab12\n").unwrap();
        let mut r = up(LINE);
        r.check_node(&expect(Some(d.path().into())), Ipv4Addr::new(10, 0, 2, 15));
        assert!(r.passed, "{}", r.diagnosis);
        let names: Vec<&str> = r.checks.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "hostname",
                "address",
                "root",
                "image",
                "tmpfs",
                "tmpfs",
                "per-host log"
            ]
        );
        assert!(r.checks.iter().all(|c| c.1));
    }

    #[test]
    fn units_field_fails_the_boot_and_analysis_is_printed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("node015")).unwrap();
        std::fs::write(d.path().join("node015/syslog"), "x boot=ab12\n").unwrap();
        let mut r = up(&format!("{LINE} units=none"));
        r.analysis = vec!["== blame (top 10)".into(), "3.2s a.service".into()];
        r.check_node(&expect(Some(d.path().into())), Ipv4Addr::new(10, 0, 2, 15));
        assert!(r.passed, "{}", r.diagnosis);
        assert!(r.checks.iter().any(|c| c.0 == "units" && c.1));
        assert!(r.to_string().contains("\n    3.2s a.service\n"));
        let mut r = up(&format!(
            "{LINE} units=failed:x.service,ran:apt-daily.timer,inactive:getty@tty1.service"
        ));
        r.check_node(&expect(Some(d.path().into())), Ipv4Addr::new(10, 0, 2, 15));
        assert!(!r.passed);
        assert_eq!(
            r.diagnosis,
            "the node came up but units is wrong: failed: x.service; masked but ran: apt-daily.timer; enabled but not active: getty@tty1.service"
        );
    }

    #[test]
    fn profile_nfs_mounts_are_checked() {
        let mut e = expect(None);
        e.nfs = vec!["/home".into(), "/cluster_bin".into()];
        let ip = Ipv4Addr::new(10, 0, 2, 15);
        let mut r = up(&format!("{LINE} nfs=/home,/cluster_bin"));
        r.check_node(&e, ip);
        assert!(r.passed, "{}", r.diagnosis);
        assert_eq!(r.checks.iter().filter(|c| c.0 == "nfs mount").count(), 2);
        let mut r = up(&format!("{LINE} nfs=/home"));
        r.check_node(&e, ip);
        assert_eq!(
            r.diagnosis,
            "the node came up but nfs mount is wrong: /cluster_bin mounted over NFS (nfs=/home)"
        );
    }

    #[test]
    fn secure_boot_is_checked_under_uefi() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("node015")).unwrap();
        std::fs::write(d.path().join("node015/syslog"), "boot=ab12\n").unwrap();
        let mut e = expect(Some(d.path().into()));
        e.secure_boot = Some(true);
        let ip = Ipv4Addr::new(10, 0, 2, 15);
        let mut r = up(LINE);
        r.secure_boot = Some(true);
        r.check_node(&e, ip);
        assert!(r.passed, "{}", r.diagnosis);
        let c = r.checks.iter().find(|c| c.0 == "secure boot").unwrap();
        assert_eq!(c.2, "enabled by the kernel (expected enabled)");
        // Not said at all (a kernel that never saw UEFI) fails.
        let mut r = up(LINE);
        r.check_node(&e, ip);
        assert!(!r.passed);
        assert_eq!(
            r.diagnosis,
            "the node came up but secure boot is wrong: not reported by the kernel (expected enabled)"
        );
        // BIOS boots expect nothing.
        let mut r = up(LINE);
        r.check_node(&expect(Some(d.path().into())), ip);
        assert!(r.checks.iter().all(|c| c.0 != "secure boot"));
        r.firmware = "uefi, secure boot".into();
        r.mode = "pxe".into();
        assert!(
            r.to_string()
                .starts_with("boot-test minimal (pxe mode, uefi, secure boot): PASS\n")
        );
    }

    #[test]
    fn first_wrong_field_is_the_diagnosis() {
        let d = tempfile::tempdir().unwrap();
        let mut r = up(&LINE.replace("root=ro", "root=rw"));
        r.check_node(&expect(Some(d.path().into())), Ipv4Addr::new(10, 0, 2, 16));
        assert!(!r.passed);
        assert_eq!(
            r.diagnosis,
            "the node came up but address is wrong: 10.0.2.15 (expected 10.0.2.16)"
        );
        let failed: Vec<&str> = r
            .checks
            .iter()
            .filter(|c| !c.1)
            .map(|c| c.0.as_str())
            .collect();
        // No syslog in the directory: the per-host log check fails too.
        assert_eq!(failed, ["address", "root", "per-host log"]);
    }

    #[test]
    fn printed_report() {
        let mut r = up(LINE);
        r.root_note = "booted read-only, as the profile says".into();
        r.timings.kernel_start = Some(1.34);
        r.console_tail = vec!["tail line".into()];
        let text = r.to_string();
        assert_eq!(
            text,
            format!(
                "boot-test minimal (direct mode): PASS\n  node: {LINE}\n  \
                 timings: firmware - loader - kernel 1.3s initramfs - switch-root - node-up -\n  \
                 booted read-only, as the profile says\n"
            )
        );
        r.passed = false;
        r.diagnosis = "the kernel panicked".into();
        r.logs_dir = Some("/w".into());
        let text = r.to_string();
        assert!(text.starts_with("boot-test minimal (direct mode): FAIL\n  the kernel panicked\n"));
        assert!(text.ends_with(
            "  logs: /w (console.log, ganesha.log, qemu.cmdline)\n  last console lines:\n    tail line\n"
        ));
    }

    #[test]
    fn last_stage_names_the_furthest() {
        let mut t = Timings::default();
        assert!(last_stage(&t).starts_with("nothing on the console"));
        t.firmware = Some(0.5);
        assert!(last_stage(&t).starts_with("the firmware ran"));
        t.loader = Some(0.7);
        assert!(last_stage(&t).starts_with("the network loader started"));
        t.kernel_start = Some(1.0);
        assert!(last_stage(&t).starts_with("the kernel started"));
        t.initramfs = Some(2.0);
        assert!(last_stage(&t).starts_with("the initramfs ran"));
        t.switch_root = Some(3.0);
        assert!(last_stage(&t).starts_with("the real root started"));
    }
}
