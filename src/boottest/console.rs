//! The console watcher: a pure state machine fed the serial console's
//! bytes as they arrive, each batch with the seconds since QEMU started.
//! It cuts them into lines (a line counts once its newline arrived), cleans
//! each (carriage returns, escape sequences, backspaces), and says what it
//! saw as [`Event`]s: a boot stage's first sign, the node's
//! `nfsroot: <host> <ip> ... image=...` line, a known failure marker, and
//! the [`Verdict`]. No QEMU, clock or file inside: the runner reads the
//! console file and the clock and feeds both in; the tests feed recorded
//! consoles from `tests/corpus/consoles/`.
//!
//! A node line with `units=` (the ready hook of issue 16) does not end
//! the watch either: the node's boot analysis follows it, as
//! `nfsroot-analyze: ` lines up to `nfsroot-analyze: end`, read into
//! [`Event::Analysis`] for at most [`ANALYSIS_WAIT`] seconds; the verdict
//! and the node-up time are the node line's.
//!
//! UEFI boots add firmware markers: OVMF's `BdsDxe: failed to load` (the
//! boot file missing, or refused by Secure Boot: `Access Denied`), its
//! fall-through to PXE over IPv6, HTTP boot or the EFI shell, shim's and
//! GRUB's Secure Boot refusals, and GRUB's prompt when it found no config.
//! Some of those never end their line (shim's `Verification failed` box
//! waits for a key, GRUB's prompt for a command, the firmware's `>>Start
//! PXE over IPv6.` for an offer): the [`PROMPTS`] are also looked for in
//! the unfinished line, so such a boot fails in seconds, not at the
//! deadline. The kernel's `secureboot: Secure boot enabled|disabled` line
//! is reported as [`Event::SecureBoot`].
//!
//! A local boot (issue 13) is a diagnosis of its own: once the loader said
//! it boots the local disk (the line nfsroot's local configs print) or
//! PXELINUX ran, and before any kernel, the firmware's next words
//! ([`HANDED_BACK`]: iPXE's "No more network devices", SeaBIOS's disks,
//! OVMF's next boot option) mean the loader handed the node back, not that
//! the network boot failed.
//!
//! A failure marker does not end the watch at once: the verdict waits
//! [`FAILURE_GRACE`] seconds ([`Watcher::settle`]) for the lines that
//! explain it (systemd's `FAILED` units, up to five), and a node line in
//! that time still wins. QEMU exiting and the deadline are verdicts too,
//! worded here with the stage the console reached.

use super::report::{Timings, last_stage};
use crate::exec;
use std::collections::BTreeMap;

/// Seconds a failure marker waits for explaining lines before the verdict.
pub const FAILURE_GRACE: f64 = 2.0;
/// Seconds after the node line to wait for its `nfsroot-analyze: ` lines
/// (systemd-analyze on a loaded emulated node takes tens of seconds).
pub const ANALYSIS_WAIT: f64 = 90.0;
/// The prefix of the ready hook's analysis lines after the node line.
const ANALYSIS: &str = "nfsroot-analyze: ";
/// At most this many `FAILED` lines go into a failure's diagnosis.
const MAX_FAILED_UNITS: usize = 5;

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
         (are nfsroot.ipxe, pxelinux.0 and the kernel it names in the TFTP root? \
         run nfsroot publish)",
    ),
    (
        "Unable to locate configuration file",
        "PXELINUX found no config in pxelinux.cfg/",
    ),
    (
        "boot-test: fell through to default",
        "the loader (PXELINUX, GRUB or the iPXE script) did not find the per-host config",
    ),
    (
        "bad shim signature",
        "GRUB refused the kernel under Secure Boot (is it Debian's signed kernel?)",
    ),
    ("error: file `", "GRUB could not read a file over TFTP"),
    (
        "UEFI Interactive Shell",
        "the firmware fell through to the EFI shell",
    ),
    (
        "BdsDxe: No bootable option",
        "the firmware found nothing to boot",
    ),
    ("Access Denied", "Secure Boot refused a boot file"),
];

/// Failure markers that may sit on a line that never ends (a prompt, a
/// box waiting for a key, dots while the firmware waits): looked for in
/// the unfinished line too.
const PROMPTS: &[(&str, &str)] = &[
    (
        "Verification failed",
        "shim refused grubx64.efi: its Secure Boot check failed \
         (is it Debian's signed GRUB, grubnetx64.efi.signed?)",
    ),
    (
        ">>Start PXE over IPv6",
        "the firmware's PXE boot over IPv4 failed and it fell through to PXE over IPv6",
    ),
    (
        ">>Start HTTP Boot",
        "the firmware's PXE boot failed and it fell through to HTTP boot",
    ),
    ("Shell>", "the firmware fell through to the EFI shell"),
    (
        "grub>",
        "GRUB found no config and stopped at its prompt \
         (is grub/grub.cfg in the TFTP root?)",
    ),
];

/// OVMF's line when a boot option failed: `BdsDxe: failed to load Boot0001
/// "UEFI PXEv4 (MAC:...)" from ...: <status>`.
const BDS_FAILED: &str = "BdsDxe: failed to load ";

/// What the firmware prints once a network loader handed the node back to
/// it (PXELINUX's LOCALBOOT, GRUB's `exit`): iPXE giving up on the network,
/// SeaBIOS trying its local devices, OVMF going on to its next boot option.
/// After the loader's local-boot line (or PXELINUX's banner), the first of
/// these is diagnosed as a local boot, not as a network failure.
const HANDED_BACK: &[&str] = &[
    "No more network devices",
    "Booting from Hard Disk",
    "No bootable device",
    "BdsDxe: No bootable option",
    "BdsDxe: starting",
    ">>Start PXE over IPv6",
    ">>Start HTTP Boot",
    "UEFI Interactive Shell",
];

/// The boot stages timed from the console, in boot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The firmware's first console output.
    Firmware,
    /// The firmware started the network loader: PXELINUX's banner, the
    /// iPXE script's first line, or OVMF starting shim (`BdsDxe: starting`).
    Loader,
    /// The kernel's `Linux version` banner.
    Kernel,
    /// The first line of either initramfs backend.
    Initramfs,
    /// The switch to the real root (nfsroot-init's or systemd's greeting).
    SwitchRoot,
}

/// What one line of the console showed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A complete console line, cleaned, at `t` seconds.
    Line(f64, String),
    /// A stage's first sign, at `t` seconds.
    Stage(Stage, f64),
    /// The node reported itself up: its line (from `nfsroot: `) and fields.
    Node {
        line: String,
        fields: BTreeMap<String, String>,
        t: f64,
    },
    /// The first known failure marker: the diagnosis, before its grace.
    Failure(String),
    /// The kernel said whether Secure Boot is on.
    SecureBoot(bool),
    /// One line of the node's boot analysis (after the node line).
    Analysis(String),
    /// The watch is over.
    Finished(Verdict),
}

/// How the boot ended, as the report states it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub passed: bool,
    pub diagnosis: String,
}

impl Verdict {
    fn pass(diagnosis: impl Into<String>) -> Verdict {
        Verdict {
            passed: true,
            diagnosis: diagnosis.into(),
        }
    }

    fn fail(diagnosis: impl Into<String>) -> Verdict {
        Verdict {
            passed: false,
            diagnosis: diagnosis.into(),
        }
    }
}

/// The watcher's state between batches of console bytes.
#[derive(Debug, Default)]
pub struct Watcher {
    /// The test expects the node not to come up (a disabled host, ...).
    expect_no_boot: bool,
    /// The verdict comes at the node line, without its boot analysis.
    no_analysis: bool,
    /// Bytes after the last newline, waiting for the rest of their line.
    pending: Vec<u8>,
    timings: Timings,
    /// The first failure's diagnosis and when it was seen.
    failure: Option<(String, f64)>,
    failed_units: Vec<String>,
    /// The loader ran and may hand the node back to the firmware: what
    /// said so (its local-boot line, or PXELINUX's banner).
    loader_ran: Option<&'static str>,
    /// The node is up and reports its boot analysis: the verdict to give
    /// at its end (or [`ANALYSIS_WAIT`] after the node line).
    analysing: Option<(Verdict, f64)>,
    finished: bool,
}

impl Watcher {
    pub fn new(expect_no_boot: bool) -> Watcher {
        Watcher {
            expect_no_boot,
            ..Watcher::default()
        }
    }

    /// The watcher for a boot plan: what it expects, and whether it waits
    /// for the boot analysis.
    pub fn for_plan(plan: &super::BootPlan) -> Watcher {
        Watcher {
            no_analysis: plan.no_analysis,
            ..Watcher::new(plan.expect_no_boot)
        }
    }

    /// Feed console bytes that arrived by `now` (seconds since QEMU
    /// started); the events of every line they complete, in order. After
    /// a [`Event::Finished`], nothing more is read.
    pub fn feed(&mut self, bytes: &[u8], now: f64) -> Vec<Event> {
        let mut events = Vec::new();
        if self.finished {
            return events;
        }
        if !bytes.is_empty() && self.timings.firmware.is_none() {
            self.timings.firmware = Some(now);
            events.push(Event::Stage(Stage::Firmware, now));
        }
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(n) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.pending[start..start + n]
                .iter()
                .copied()
                .filter(|&b| b != b'\r')
                .collect();
            start += n + 1;
            // Matched and reported without escape sequences: firmware
            // console redirection moves the cursor mid-line.
            let line = strip_ansi(&String::from_utf8_lossy(&raw));
            self.line(line, now, &mut events);
            if self.finished {
                break;
            }
        }
        self.pending.drain(..start);
        if !self.finished {
            self.prompt(now, &mut events);
        }
        events
    }

    /// Look for a [`PROMPTS`] marker in the unfinished line.
    fn prompt(&mut self, now: f64, events: &mut Vec<Event>) {
        if self.failure.is_some() || self.pending.is_empty() {
            return;
        }
        let line = strip_ansi(&String::from_utf8_lossy(&self.pending));
        let why = self.local_boot(&line).or_else(|| {
            let (m, why) = PROMPTS.iter().find(|(m, _)| line.contains(m))?;
            Some(format!("{why}: {}", snippet(&line, m)))
        });
        if let Some(why) = why {
            events.push(Event::Failure(why.clone()));
            self.failure = Some((why, now));
        }
    }

    fn line(&mut self, line: String, t: f64, events: &mut Vec<Event>) {
        events.push(Event::Line(t, line.clone()));
        if self.analysing.is_some() {
            if let Some(rest) = line.find(ANALYSIS).map(|i| &line[i + ANALYSIS.len()..]) {
                if rest == "end" {
                    let (v, _) = self.analysing.take().unwrap_or_default();
                    events.push(Event::Finished(v));
                    self.finished = true;
                } else {
                    events.push(Event::Analysis(rest.to_string()));
                }
            }
            return;
        }
        self.stages(&line, t, events);
        if let Some(rest) = line.find("nfsroot: ").map(|i| &line[i..])
            && rest.contains(" image=")
        {
            self.node(rest, t, events);
            return;
        }
        if line.contains("FAILED") && self.failed_units.len() < MAX_FAILED_UNITS {
            self.failed_units.push(line.clone());
        }
        if let Some(on) = secure_boot(&line) {
            events.push(Event::SecureBoot(on));
        }
        self.loader_line(&line);
        if self.failure.is_none()
            && let Some(why) = self.local_boot(&line).or_else(|| failure(&line))
        {
            events.push(Event::Failure(why.clone()));
            self.failure = Some((why, t));
        }
    }

    /// The node line: the verdict now, or after the boot analysis that a
    /// node reporting `units=` prints next (unless the plan says not to
    /// wait for it).
    fn node(&mut self, rest: &str, t: f64, events: &mut Vec<Event>) {
        self.timings.node_up = Some(t);
        let fields = parse_node_line(rest);
        let analyses = fields.contains_key("units") && !self.no_analysis;
        events.push(Event::Node {
            line: rest.to_string(),
            fields,
            t,
        });
        let v = if self.expect_no_boot {
            Verdict::fail("the node came up, but it was expected not to boot")
        } else {
            Verdict::pass("")
        };
        if analyses && v.passed {
            self.analysing = Some((v, t));
        } else {
            events.push(Event::Finished(v));
            self.finished = true;
        }
    }

    /// Time the stages this line is the first sign of.
    fn stages(&mut self, line: &str, t: f64, events: &mut Vec<Event>) {
        let tm = &mut self.timings;
        let seen = [
            (
                Stage::Loader,
                &mut tm.loader,
                line.starts_with("PXELINUX ")
                    || line.starts_with(crate::ipxe::BANNER)
                    || (line.starts_with("BdsDxe: starting ")
                        && (line.contains("PXEv") || line.contains("HTTPv"))),
            ),
            (
                Stage::Kernel,
                &mut tm.kernel_start,
                line.contains("Linux version"),
            ),
            (
                Stage::Initramfs,
                &mut tm.initramfs,
                line.contains("nfsroot-init:")
                    || line.contains("Loading, please wait")
                    || line.contains("Begin: "),
            ),
            (
                Stage::SwitchRoot,
                &mut tm.switch_root,
                line.contains("nfsroot-init: switching")
                    || (line.contains("Welcome to") && !line.contains("Welcome to GRUB")),
            ),
        ];
        for (stage, at, hit) in seen {
            if hit && at.is_none() {
                *at = Some(t);
                events.push(Event::Stage(stage, t));
            }
        }
    }

    /// The verdict once a failure marker's grace period has passed by
    /// `now`; `None` while there is none or it is still running.
    pub fn settle(&mut self, now: f64) -> Option<Verdict> {
        if let Some((_, at)) = &self.analysing {
            if now - at <= ANALYSIS_WAIT {
                return None;
            }
            self.finished = true;
            return self.analysing.take().map(|(v, _)| v);
        }
        let (why, at) = self.failure.as_ref()?;
        if self.finished || now - at <= FAILURE_GRACE {
            return None;
        }
        self.finished = true;
        Some(if self.expect_no_boot {
            Verdict::pass(format!("did not boot, as expected ({why})"))
        } else if self.failed_units.is_empty() {
            Verdict::fail(why.clone())
        } else {
            Verdict::fail(format!("{why}; {}", self.failed_units.join("; ")))
        })
    }

    /// The verdict when QEMU exited (`status`) before the node came up;
    /// `stderr` is what QEMU printed.
    pub fn qemu_exited(&mut self, status: &str, stderr: &str) -> Verdict {
        self.finished = true;
        if let Some((v, _)) = self.analysing.take() {
            return v;
        }
        if self.expect_no_boot {
            return Verdict::pass(format!(
                "the VM stopped without booting, as expected ({status})"
            ));
        }
        Verdict::fail(format!(
            "QEMU exited ({status}) before the node came up: {}",
            exec::tail(stderr, 5)
        ))
    }

    /// The verdict when `secs` seconds passed without a node line.
    pub fn timed_out(&mut self, secs: u64) -> Verdict {
        self.finished = true;
        if let Some((v, _)) = self.analysing.take() {
            return v;
        }
        if self.expect_no_boot {
            return Verdict::pass(format!("no node line within {secs} s, as expected"));
        }
        Verdict::fail(format!(
            "no node line within {secs} s (last stage reached: {})",
            last_stage(&self.timings)
        ))
    }

    /// The stage times seen so far.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }
}

/// The diagnosis for a console line with a failure marker.
fn failure(line: &str) -> Option<String> {
    if let Some(i) = line.find(BDS_FAILED) {
        let status = line.rsplit(": ").next().unwrap_or_default();
        let why = match status {
            "Access Denied" => {
                "Secure Boot refused the boot file (shimx64.efi): the firmware \
                 does not trust its signature"
            }
            "Not Found" => {
                "the firmware found no boot file over TFTP (is shimx64.efi in the TFTP root?)"
            }
            _ => "the firmware could not load its boot file",
        };
        // The boot option's name and the status, without its device path.
        let option = line[i..].split(" from ").next().unwrap_or_default();
        return Some(format!("{why}: {option}: {status}"));
    }
    if let Some((_, why)) = FAILURES.iter().find(|(m, _)| line.contains(m)) {
        return Some(format!("{why}: {line}"));
    }
    let (m, why) = PROMPTS.iter().find(|(m, _)| line.contains(m))?;
    Some(format!("{why}: {}", snippet(line, m)))
}

impl Watcher {
    /// Note a loader that may hand the node back: nfsroot's local-boot
    /// line (PXELINUX and GRUB), or PXELINUX's banner (a LOCALBOOT config
    /// written by hand says nothing).
    fn loader_line(&mut self, line: &str) {
        if line.contains("nfsroot: ") && line.contains(crate::bootcfg::LOCAL_BOOT_SAY) {
            self.loader_ran = Some("its boot config says local boot");
        } else if line.starts_with("PXELINUX ") && self.loader_ran.is_none() {
            self.loader_ran = Some("PXELINUX returned to it (LOCALBOOT)");
        }
    }

    /// A local boot: the loader ran, no kernel started, and the firmware
    /// went on to its next boot device (a node without a disk stops there).
    fn local_boot(&self, line: &str) -> Option<String> {
        let how = self.loader_ran?;
        if self.timings.kernel_start.is_some() {
            return None;
        }
        let m = HANDED_BACK.iter().find(|m| line.contains(*m))?;
        Some(format!(
            "local boot: the loader handed the node back to the firmware ({how}), \
             which went on to its next boot device: {}",
            snippet(line, m)
        ))
    }
}

/// What the kernel's `secureboot:` line says, if this is it.
fn secure_boot(line: &str) -> Option<bool> {
    let rest = &line[line.find("secureboot: Secure boot ")? + 24..];
    match rest {
        "enabled" => Some(true),
        "disabled" => Some(false),
        _ => None,
    }
}

/// The words of a screen-drawn line around `marker`: whitespace runs
/// collapsed, box drawing (anything not ASCII) dropped, at most
/// 160 characters from the marker on.
fn snippet(line: &str, marker: &str) -> String {
    let from = line.find(marker).unwrap_or(0);
    let words: Vec<&str> = line[from..]
        .split(|c: char| c.is_whitespace() || !c.is_ascii())
        .filter(|w| !w.is_empty())
        .collect();
    words.join(" ").chars().take(160).collect()
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
    use std::path::Path;

    /// A recorded serial console (see tests/corpus/consoles/README.md).
    fn corpus(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/consoles")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }

    /// Feed a whole console at `t` seconds.
    /// Every stage of a boot through a network loader, in order.
    const NETWORK_BOOT: [Stage; 5] = [
        Stage::Firmware,
        Stage::Loader,
        Stage::Kernel,
        Stage::Initramfs,
        Stage::SwitchRoot,
    ];

    fn watch(name: &str, expect_no_boot: bool, t: f64) -> (Watcher, Vec<Event>) {
        let mut w = Watcher::new(expect_no_boot);
        let ev = w.feed(&corpus(name), t);
        (w, ev)
    }

    fn finished(ev: &[Event]) -> Option<&Verdict> {
        ev.iter().find_map(|e| match e {
            Event::Finished(v) => Some(v),
            _ => None,
        })
    }

    fn failures(ev: &[Event]) -> Vec<&str> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Failure(why) => Some(why.as_str()),
                _ => None,
            })
            .collect()
    }

    fn stages(ev: &[Event]) -> Vec<Stage> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Stage(s, _) => Some(*s),
                _ => None,
            })
            .collect()
    }

    fn lines(ev: &[Event]) -> Vec<&str> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Line(_, l) => Some(l.as_str()),
                _ => None,
            })
            .collect()
    }

    /// A failed boot: one failure marker, no verdict within the grace
    /// period, then the verdict.
    fn failed_verdict(name: &str) -> (Watcher, String) {
        let (mut w, ev) = watch(name, false, 3.0);
        assert_eq!(failures(&ev).len(), 1, "{name}: {:?}", failures(&ev));
        assert_eq!(finished(&ev), None, "{name}");
        assert_eq!(w.settle(3.0 + FAILURE_GRACE), None, "{name}: grace");
        let v = w.settle(5.1).expect("a verdict after the grace period");
        assert!(!v.passed, "{name}");
        assert_eq!(w.settle(9.0), None, "{name}: one verdict only");
        (w, v.diagnosis)
    }

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
            "nfsroot: node015 10.0.2.15 image=minimal build=x kernel=6.1 root=ro tmpfs=/tmp,/var/tmp boot=ab units=failed:a.service,ran:fstrim.timer logs=/v",
        );
        assert_eq!(f["units"], "failed:a.service,ran:fstrim.timer");
        assert_eq!(f["host"], "node015");
        assert_eq!(f["ip"], "10.0.2.15");
        assert_eq!(f["root"], "ro");
        assert_eq!(f["tmpfs"], "/tmp,/var/tmp");
    }

    #[test]
    fn without_analysis_the_node_line_is_the_verdict() {
        let mut w = Watcher {
            no_analysis: true,
            ..Watcher::new(false)
        };
        let ev = w.feed(b"nfsroot: n1 10.0.2.15 image=m root=ro units=none\n", 20.0);
        assert_eq!(ev.last(), Some(&Event::Finished(Verdict::pass(""))));
        assert!(
            w.feed(b"nfsroot-analyze: 3.1s a.service\n", 21.0)
                .is_empty()
        );
    }

    #[test]
    fn boot_analysis_follows_the_node_line() {
        let mut w = Watcher::new(false);
        let ev = w.feed(b"nfsroot: n1 10.0.2.15 image=m root=ro units=none\nnfsroot-analyze: == blame (top 10)\n", 20.0);
        assert!(
            !ev.iter().any(|e| matches!(e, Event::Finished(_))),
            "{ev:?}"
        );
        assert!(ev.contains(&Event::Analysis("== blame (top 10)".into())));
        assert_eq!(w.timings().node_up, Some(20.0));
        assert_eq!(w.settle(20.0 + ANALYSIS_WAIT - 1.0), None);
        let ev = w.feed(
            b"[  OK  ] x\n\rnfsroot-analyze: 3.1s a.service\nnfsroot-analyze: end\n",
            40.0,
        );
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::Analysis(_)))
                .count(),
            1
        );
        assert_eq!(ev.last(), Some(&Event::Finished(Verdict::pass(""))));
        assert_eq!(w.timings().node_up, Some(20.0));
        // No end line: the node-line verdict after the wait.
        let mut w = Watcher::new(false);
        w.feed(
            b"nfsroot: n1 10.0.2.15 image=m root=ro units=failed:x.service\n",
            20.0,
        );
        assert_eq!(
            w.settle(20.0 + ANALYSIS_WAIT + 1.0),
            Some(Verdict::pass(""))
        );
    }

    #[test]
    fn good_direct_boot_passes_at_the_node_line() {
        let (w, ev) = watch("good-direct.log", false, 7.0);
        assert_eq!(
            stages(&ev),
            [
                Stage::Firmware,
                Stage::Kernel,
                Stage::Initramfs,
                Stage::SwitchRoot
            ]
        );
        assert!(failures(&ev).is_empty(), "{:?}", failures(&ev));
        let Some(Event::Node { line, fields, t }) =
            ev.iter().find(|e| matches!(e, Event::Node { .. }))
        else {
            panic!("no node line");
        };
        assert!(line.starts_with("nfsroot: node015 10.0.2.15 image=minimal "));
        assert_eq!(fields["host"], "node015");
        assert_eq!(fields["root"], "ro");
        assert_eq!(fields["kernel"], "6.1.0-50-amd64");
        assert_eq!(*t, 7.0);
        assert_eq!(w.timings().node_up, Some(7.0));
        assert_eq!(finished(&ev), Some(&Verdict::pass("")));
        // The verdict is the last event, and the watch is over.
        assert!(matches!(ev.last(), Some(Event::Finished(_))));
    }

    #[test]
    fn good_boot_fails_when_no_boot_was_expected() {
        let (_, ev) = watch("good-direct.log", true, 1.0);
        assert_eq!(
            finished(&ev),
            Some(&Verdict::fail(
                "the node came up, but it was expected not to boot"
            ))
        );
    }

    #[test]
    fn good_pxe_boot_through_firmware_escapes() {
        let (_, ev) = watch("good-pxe.log", false, 1.0);
        // PXELINUX's SAY line also starts `nfsroot: ` but is not the node's.
        assert!(
            lines(&ev)
                .iter()
                .any(|l| l.starts_with("nfsroot: booting minimal-6.1.0-50-amd64 (labels"))
        );
        assert_eq!(stages(&ev), NETWORK_BOOT);
        assert!(lines(&ev).iter().all(|l| !l.contains('\x1b')));
        assert_eq!(finished(&ev), Some(&Verdict::pass("")));
    }

    /// QEMU's iPXE running `nfsroot.ipxe`: the script's first line times
    /// the loader, its per-host lookup's "No such file" is no failure.
    #[test]
    fn good_pxe_boot_through_the_ipxe_script() {
        let (_, ev) = watch("good-pxe-ipxe.log", false, 1.0);
        assert!(
            lines(&ev)
                .iter()
                .any(|l| l.starts_with("pxelinux.cfg/01-52-54-00-12-34-56... No such file"))
        );
        assert!(!lines(&ev).iter().any(|l| l.starts_with("PXELINUX ")));
        assert_eq!(stages(&ev), NETWORK_BOOT);
        assert!(failures(&ev).is_empty(), "{:?}", failures(&ev));
        assert_eq!(finished(&ev), Some(&Verdict::pass("")));
    }

    #[test]
    fn chunking_does_not_change_lines() {
        let bytes = corpus("good-pxe.log");
        let mut whole = Watcher::new(false);
        let want: Vec<String> = lines(&whole.feed(&bytes, 0.0))
            .into_iter()
            .map(String::from)
            .collect();
        for size in [1, 2, 997, 4096] {
            let mut w = Watcher::new(false);
            let mut ev = Vec::new();
            for c in bytes.chunks(size) {
                ev.extend(w.feed(c, 0.0));
            }
            assert_eq!(lines(&ev), want, "chunks of {size}");
            assert_eq!(finished(&ev), Some(&Verdict::pass("")), "chunks of {size}");
        }
    }

    #[test]
    fn stage_times_come_from_the_batch_that_completes_the_line() {
        let bytes = corpus("good-direct.log");
        let at = |s: &[u8]| bytes.windows(s.len()).position(|w| w == s).unwrap();
        let initramfs = at(b"nfsroot-init: starting");
        let welcome = at(b"Welcome to");
        let mut w = Watcher::new(false);
        w.feed(&bytes[..initramfs + 5], 1.0);
        w.feed(&bytes[initramfs + 5..welcome], 2.0);
        w.feed(&bytes[welcome..], 3.0);
        let t = w.timings();
        assert_eq!(
            (t.kernel_start, t.initramfs, t.switch_root, t.node_up),
            (Some(1.0), Some(2.0), Some(2.0), Some(3.0)),
            "nfsroot-init: switching precedes Welcome to"
        );
    }

    #[test]
    fn initramfs_without_network_fails() {
        let (w, d) = failed_verdict("fatal-no-nic.log");
        assert!(
            d.starts_with("the initramfs gave up: nfsroot-init: FATAL: no network interface (is the NIC driver in the initramfs?"),
            "{d}"
        );
        assert_eq!(w.timings().switch_root, None);
        assert!(w.timings().initramfs.is_some());
    }

    #[test]
    fn nfs_mount_failure_fails() {
        let (_, d) = failed_verdict("nfs-mount-failed.log");
        assert_eq!(
            d,
            "the initramfs gave up: nfsroot-init: FATAL: cannot mount 10.0.2.2:/no/such/export: \
             mount: mounting 10.0.2.2:/no/such/export on /root failed: Permission denied"
        );
    }

    #[test]
    fn kernel_panic_fails() {
        let (w, d) = failed_verdict("kernel-panic.log");
        assert_eq!(
            d,
            "the kernel panicked: [    2.428114] Kernel panic - not syncing: \
             VFS: Unable to mount root fs on unknown-block(0,0)"
        );
        assert!(w.timings().kernel_start.is_some());
        assert_eq!(w.timings().initramfs, None);
    }

    #[test]
    fn emergency_mode_names_the_failed_unit() {
        let (_, d) = failed_verdict("emergency-mode.log");
        assert_eq!(
            d,
            "systemd entered emergency mode (a mount or unit failed): You are in emergency mode. \
             After logging in, type \"journalctl -xb\" to view; \
             [FAILED] Failed to mount var-log-hosts.mount - /var/log/hosts."
        );
    }

    #[test]
    fn failure_is_expected_when_no_boot_was_expected() {
        let (mut w, _) = watch("nfs-mount-failed.log", true, 0.0);
        let v = w.settle(2.5).unwrap();
        assert!(v.passed);
        assert!(
            v.diagnosis
                .starts_with("did not boot, as expected (the initramfs gave up: nfsroot-init: FATAL: cannot mount"),
            "{}",
            v.diagnosis
        );
    }

    /// Issue 13: a local-boot host's PXELINUX config says so and hands the
    /// node back (LOCALBOOT 0); iPXE then says "No more network devices"
    /// and SeaBIOS tries its disks. That is a local boot, not a TFTP
    /// failure, and needs no timeout: a verdict after the grace.
    #[test]
    fn local_boot_is_diagnosed_from_the_console() {
        let (mut w, ev) = watch("local-boot-pxe.log", true, 4.0);
        let want = "local boot: the loader handed the node back to the firmware \
                    (its boot config says local boot), which went on to its next \
                    boot device: No more network devices";
        assert_eq!(failures(&ev), [want]);
        assert_eq!(stages(&ev), [Stage::Firmware, Stage::Loader]);
        let v = w.settle(4.0 + FAILURE_GRACE + 0.1).expect("a verdict");
        assert_eq!(
            v,
            Verdict::pass(format!("did not boot, as expected ({want})"))
        );
        // Not expected: a failed boot with the same diagnosis.
        let (mut w, _) = watch("local-boot-pxe.log", false, 4.0);
        assert_eq!(w.settle(9.0), Some(Verdict::fail(want)));

        // A LOCALBOOT config written by hand says nothing: PXELINUX's
        // banner is enough. Without PXELINUX, the same iPXE line is the
        // TFTP failure it always was.
        let text = String::from_utf8(corpus("local-boot-pxe.log")).unwrap();
        let quiet = text.replace("nfsroot: booting from the local disk", "");
        let ev = Watcher::new(true).feed(quiet.as_bytes(), 4.0);
        assert!(
            failures(&ev)[0].contains("(PXELINUX returned to it (LOCALBOOT))"),
            "{:?}",
            failures(&ev)
        );
        let cut = &text[text.find("No more network devices").unwrap()..];
        let ev = Watcher::new(true).feed(cut.as_bytes(), 4.0);
        assert!(
            failures(&ev)[0].starts_with("the firmware could not load a boot file over TFTP"),
            "{:?}",
            failures(&ev)
        );

        // UEFI: GRUB's echo, `exit`, and OVMF's next option (an unfinished
        // prompt line) is a local boot too.
        let mut w = Watcher::new(true);
        let ev = w.feed(
            b"nfsroot: booting from the local disk\r\n\x1b[0m>>Start PXE over IPv6.",
            3.0,
        );
        assert!(
            failures(&ev)[0].ends_with("(its boot config says local boot), which went on to its next boot device: >>Start PXE over IPv6."),
            "{:?}",
            failures(&ev)
        );
        // After the kernel started, firmware words are not a local boot.
        let (_, ev) = watch("good-pxe.log", false, 60.0);
        assert!(failures(&ev).is_empty(), "{:?}", failures(&ev));
    }

    #[test]
    fn node_line_within_the_grace_period_wins() {
        let mut w = Watcher::new(false);
        let ev = w.feed(b"Gave up waiting for root device\r\n", 10.0);
        assert_eq!(
            failures(&ev),
            ["initramfs-tools gave up waiting for the root: Gave up waiting for root device"]
        );
        assert_eq!(w.settle(11.0), None);
        let ev = w.feed(b"nfsroot: n1 10.0.2.15 image=m root=ro\n", 11.5);
        assert_eq!(finished(&ev), Some(&Verdict::pass("")));
        assert_eq!(w.settle(20.0), None, "already finished");
        assert!(w.feed(b"Kernel panic\n", 21.0).is_empty());
    }

    #[test]
    fn no_node_line_times_out_after_the_real_root_started() {
        let (mut w, ev) = watch("no-node-line.log", false, 30.0);
        assert_eq!(finished(&ev), None);
        assert!(failures(&ev).is_empty());
        assert_eq!(w.settle(99.0), None, "no failure seen");
        assert_eq!(
            w.timed_out(180),
            Verdict::fail(
                "no node line within 180 s (last stage reached: the real root started; \
                 the node never reported up (check systemd units and the logs export))"
            )
        );
        let (mut w, _) = watch("no-node-line.log", true, 30.0);
        assert_eq!(
            w.timed_out(5),
            Verdict::pass("no node line within 5 s, as expected")
        );
    }

    #[test]
    fn truncated_console_reads_complete_lines_only() {
        let (mut w, ev) = watch("truncated.log", false, 4.0);
        let ls = lines(&ev);
        assert!(
            ls.last()
                .unwrap()
                .starts_with("nfsroot-init: loaded 18 modules")
        );
        assert!(!ls.iter().any(|l| l.contains("nfsroot-init: eth0")));
        assert_eq!(
            stages(&ev),
            [Stage::Firmware, Stage::Kernel, Stage::Initramfs]
        );
        assert_eq!(
            w.timed_out(60).diagnosis,
            "no node line within 60 s (last stage reached: \
             the initramfs ran but never switched to the real root)"
        );
        // The rest of the cut line completes it.
        let (mut w, _) = watch("truncated.log", false, 4.0);
        let ev = w.feed(b".15/24 gw 10.0.2.2 via dhcp\r\n", 5.0);
        assert_eq!(
            lines(&ev),
            ["nfsroot-init: eth0 10.0.2.15/24 gw 10.0.2.2 via dhcp"]
        );
    }

    #[test]
    fn qemu_exit_before_the_node_came_up() {
        let (mut w, _) = watch("truncated.log", false, 4.0);
        let v = w.qemu_exited(
            "exit status: 1",
            "a\nb\nc\nd\ne\nqemu: could not load kernel\n",
        );
        assert!(!v.passed);
        assert!(
            v.diagnosis
                .starts_with("QEMU exited (exit status: 1) before the node came up: "),
            "{}",
            v.diagnosis
        );
        assert!(v.diagnosis.contains("could not load kernel"));
        assert!(!v.diagnosis.contains(": a\n"), "only the last five lines");
        let mut w = Watcher::new(true);
        assert_eq!(
            w.qemu_exited("exit status: 0", ""),
            Verdict::pass("the VM stopped without booting, as expected (exit status: 0)")
        );
    }

    /// A UEFI console that stops at a failure marker: the diagnosis once
    /// the grace period passed, and the stages it reached.
    fn uefi_failure(name: &str) -> (String, Vec<Stage>) {
        let (mut w, ev) = watch(name, false, 9.0);
        assert_eq!(failures(&ev).len(), 1, "{name}: {:?}", failures(&ev));
        let v = w.settle(9.0 + FAILURE_GRACE + 0.1).expect("a verdict");
        assert!(!v.passed, "{name}");
        assert_eq!(w.timings().kernel_start, None, "{name}");
        (v.diagnosis, stages(&ev))
    }

    #[test]
    fn good_uefi_secure_boot() {
        // OVMF, shim, GRUB's menu (drawn with cursor moves, its echo of
        // `nfsroot: booting ...`, "Welcome to GRUB!" which is not the real
        // root's "Welcome to"), then the kernel with Secure Boot on.
        let (mut w, ev) = watch("good-uefi-sb.log", false, 60.0);
        assert_eq!(stages(&ev), NETWORK_BOOT);
        assert!(ev.contains(&Event::SecureBoot(true)), "no secure boot fact");
        assert!(failures(&ev).is_empty(), "{:?}", failures(&ev));
        let Some(Event::Node { fields, .. }) = ev.iter().find(|e| matches!(e, Event::Node { .. }))
        else {
            panic!("no node line");
        };
        assert_eq!(fields["host"], "node015");
        assert_eq!(fields["units"], "none");
        assert_eq!(
            finished(&ev),
            Some(&Verdict::pass("")),
            "after the analysis"
        );
        assert_eq!(w.settle(200.0), None);
        // Byte by byte, the same: no prompt marker in GRUB's unfinished
        // menu lines.
        let mut w = Watcher::new(false);
        let bytes = corpus("good-uefi-sb.log");
        let mut ev = Vec::new();
        for c in bytes.chunks(1) {
            ev.extend(w.feed(c, 1.0));
        }
        assert!(failures(&ev).is_empty(), "{:?}", failures(&ev));
        assert_eq!(finished(&ev), Some(&Verdict::pass("")));
    }

    #[test]
    fn uefi_shim_refused_by_the_firmware() {
        // An unsigned shimx64.efi under Secure Boot: OVMF refuses to load
        // it, then tries PXE over IPv6 (the line that never ends).
        let (d, st) = uefi_failure("uefi-shim-unsigned.log");
        assert_eq!(
            d,
            "Secure Boot refused the boot file (shimx64.efi): the firmware does not trust its \
             signature: BdsDxe: failed to load Boot0001 \"UEFI PXEv4 (MAC:525400123456)\": Access Denied"
        );
        assert_eq!(st, [Stage::Firmware], "shim never started");
    }

    #[test]
    fn uefi_grub_refused_by_shim_on_an_unfinished_line() {
        // An unsigned grubx64.efi: shim draws a box with no newline and
        // waits for a key; the watcher reads the unfinished line.
        let bytes = corpus("uefi-grub-unsigned.log");
        assert!(!bytes.ends_with(b"\n"));
        let (d, st) = uefi_failure("uefi-grub-unsigned.log");
        assert_eq!(
            d,
            "shim refused grubx64.efi: its Secure Boot check failed (is it Debian's signed GRUB, \
             grubnetx64.efi.signed?): Verification failed: (0x1A) Security Violation OK"
        );
        assert_eq!(st, [Stage::Firmware, Stage::Loader]);
    }

    #[test]
    fn uefi_grub_without_config_stops_at_its_prompt() {
        let (d, st) = uefi_failure("uefi-grub-no-config.log");
        assert!(
            d.starts_with("GRUB found no config and stopped at its prompt"),
            "{d}"
        );
        assert_eq!(st, [Stage::Firmware, Stage::Loader]);
    }

    #[test]
    fn uefi_without_a_boot_file_falls_through() {
        // No shimx64.efi over TFTP: the firmware tries IPv6, HTTP boot and
        // its shell; the first failure is the diagnosis, and the shell's
        // `BdsDxe: starting` is not a network loader.
        let (d, st) = uefi_failure("uefi-no-boot-file.log");
        assert_eq!(
            d,
            "the firmware found no boot file over TFTP (is shimx64.efi in the TFTP root?): \
             BdsDxe: failed to load Boot0001 \"UEFI PXEv4 (MAC:525400123456)\": Not Found"
        );
        assert_eq!(st, [Stage::Firmware]);
        // Cut before that line, the fall-through to IPv6 is still seen.
        let bytes = corpus("uefi-no-boot-file.log");
        let at = bytes.windows(7).position(|w| w == b"BdsDxe:").unwrap();
        let six = bytes
            .windows(20)
            .position(|w| w == b">>Start PXE over IPv")
            .unwrap();
        let mut w = Watcher::new(false);
        let mut cut = bytes[..at].to_vec();
        cut.extend_from_slice(
            &bytes[bytes[six + 4..].iter().position(|&b| b == b'>').unwrap() + six + 4..],
        );
        let ev = w.feed(&cut, 1.0);
        assert!(
            failures(&ev)[0].starts_with(
                "the firmware's PXE boot over IPv4 failed and it fell through to PXE over IPv6"
            ),
            "{:?}",
            failures(&ev)
        );
    }

    #[test]
    fn prompts_are_seen_once_complete_across_batches() {
        let mut w = Watcher::new(false);
        assert!(failures(&w.feed(b"\r\x1b[0mgru", 1.0)).is_empty());
        let ev = w.feed(b"b> ", 2.0);
        assert_eq!(failures(&ev).len(), 1);
        assert!(failures(&w.feed(b"\n", 2.5)).is_empty(), "reported once");
        assert!(
            w.settle(4.1)
                .unwrap()
                .diagnosis
                .ends_with("prompt (is grub/grub.cfg in the TFTP root?): grub>")
        );
        // A node line's partial text is no failure.
        let mut w = Watcher::new(false);
        assert!(failures(&w.feed(b"nfsroot-init: FAT", 1.0)).is_empty());
    }

    #[test]
    fn secure_boot_fact() {
        let mut w = Watcher::new(false);
        let ev = w.feed(
            b"[    0.000000] secureboot: Secure boot enabled\r\n[    0.1] secureboot: Secure boot disabled\n",
            1.0,
        );
        let sb: Vec<bool> = ev
            .iter()
            .filter_map(|e| match e {
                Event::SecureBoot(b) => Some(*b),
                _ => None,
            })
            .collect();
        assert_eq!(sb, [true, false]);
        assert_eq!(
            secure_boot("secureboot: Secure boot could not be determined"),
            None
        );
    }
}
