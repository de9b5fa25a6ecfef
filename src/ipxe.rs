//! The iPXE boot script: what DHCP hands BIOS clients whose firmware is
//! iPXE (QEMU's and KVM's NICs, iPXE-flashed cards, chainloaded
//! `undionly.kpxe`) instead of `pxelinux.0`. A pure rendering of the same
//! [`crate::bootcfg`] model as the PXELINUX and GRUB configs, and a parser
//! that reads back what it names (drift checks, retention).
//!
//! One file, [`TOP`] at the TFTP root, written with `pxelinux.cfg/default`
//! from the default image's record, so the two boot the same kernel. When
//! that image's profile sets `boot.ipxe`, iPXE fetches the kernel and the
//! initramfs itself: no PXELINUX, whose TFTP through iPXE's PXE API took
//! 1.9-2.6 s for Debian's 8 MB kernel under QEMU (the kernel's first line
//! came about 2 s sooner). Otherwise the script only chains `pxelinux.0`,
//! so the DHCP configs can always answer iPXE clients with it.
//!
//! Per-host configs stay PXELINUX's. `sync`'s DHCP configs give a host
//! with any PXELINUX name (`01-<mac>`, its hex IP or a prefix of it,
//! hand-made ones included) `pxelinux.0` whatever its firmware
//! ([`crate::inventory::render::IpxeRoute`]), and the script itself first
//! fetches `pxelinux.cfg/01-<mac>` (`${mac:hexhyp}`: lower case, dashes,
//! as PXELINUX and `sync` spell it) and, when that exists, hands the node
//! to `pxelinux.0`, which reads it. So a pinned kernel, an extra command
//! line, local boot or a disabled host mean what they meant. What the
//! script cannot look up itself: PXELINUX's hex-IP names (iPXE has no
//! upper-case hex) and its UUID names; a hex-IP or subnet file made by
//! hand after the last `sync` is read only by the hosts DHCP gives
//! `pxelinux.0`.
//!
//! Syntax. iPXE expands `${...}`, and treats `||`, `&&` and a leading `#`
//! or `:` specially; it has no quoting. [`check`] refuses a command line
//! holding `$`, `|`, `&` or `#`, on top of [`bootcfg::check`]'s rules; other
//! text (the header, messages) is written after `#` or `echo` with those
//! characters replaced. Paths are absolute (`/image/vmlinuz-..`), so they
//! resolve against the TFTP server whatever the script's own path.

use crate::bootcfg::{self, Boot, Config, Entry, Parsed};
use anyhow::{Result, bail};
use std::fmt::Write as _;

/// The script's name at the TFTP root, the boot file DHCP gives iPXE.
pub const TOP: &str = "nfsroot.ipxe";

/// The script's first console words: the boot test times the loader from
/// them, as from PXELINUX's banner.
pub const BANNER: &str = "nfsroot: iPXE script:";

/// The label of an entry's block: `boot-<label>` (labels are names, see
/// [`bootcfg::is_name`], so no block can be taken for the per-host one).
fn block(label: &str) -> String {
    format!("boot-{label}")
}

/// The per-host hand-over block.
const PER_HOST: &str = "nfsroot-per-host";
/// Where a host without a per-host config goes on.
const DEFAULT: &str = "nfsroot-default";

/// Render the script, or one that boots nothing and says why when the data
/// cannot be written safely (see [`try_render_top`]). Pure.
pub fn render_top(c: &Config, boot_here: bool) -> String {
    try_render_top(c, boot_here).unwrap_or_else(|_| render_unchecked(&bootcfg::refused(c), true))
}

/// Render the script after checking every value (see [`check`]): with
/// `boot_here` (the profile's `boot.ipxe`) it boots `c` itself after the
/// per-host lookup, else it hands every client to PXELINUX. Pure: the
/// same data gives the same bytes.
pub fn try_render_top(c: &Config, boot_here: bool) -> Result<String> {
    if boot_here {
        check(c)?;
    }
    Ok(render_unchecked(c, boot_here))
}

/// [`bootcfg::check`], and no iPXE operator or expansion in a command line.
pub fn check(c: &Config) -> Result<()> {
    bootcfg::check(c)?;
    if let Boot::Entries(entries) = &c.boot {
        for e in entries {
            if let Some(ch) = e.append.chars().find(|ch| "$|&#".contains(*ch)) {
                bail!(
                    "refusing to render the command line of label {} for iPXE: it holds \
                     {ch:?}, which iPXE's script would expand or take as an operator; remove \
                     it from the profile's boot.cmdline, or set boot.ipxe = false",
                    e.label
                );
            }
        }
    }
    Ok(())
}

/// Text iPXE prints or skips as it is: no control character, no `$`
/// expansion, no operator.
fn plain(s: &str) -> String {
    bootcfg::one_line(s)
        .chars()
        .map(|c| if "$|&".contains(c) { '?' } else { c })
        .collect()
}

fn render_unchecked(c: &Config, boot_here: bool) -> String {
    let mut s = String::from("#!ipxe\n");
    for l in c.header.lines() {
        let _ = writeln!(s, "# {}", plain(l));
    }
    if !boot_here {
        s.push_str(
            "# iPXE clients read this instead of pxelinux.0. The default image's\n\
             # profile leaves boot.ipxe off: PXELINUX boots every host, as for\n\
             # other BIOS clients.\n",
        );
        let _ = writeln!(
            s,
            "echo {BANNER} PXELINUX boots this host (boot.ipxe is off)"
        );
        s.push_str("chain /pxelinux.0\n");
        return s;
    }
    s.push_str(
        "# iPXE clients read this instead of pxelinux.0. A host with its own\n\
         # PXELINUX config (pxelinux.cfg/01-<mac>) boots through PXELINUX, which\n\
         # reads it; every other host boots pxelinux.cfg/default's labels, below.\n",
    );
    let _ = writeln!(
        s,
        "echo {BANNER} per-host config pxelinux.cfg/01-${{mac:hexhyp}}? (not found: the default)"
    );
    let _ = writeln!(
        s,
        "imgfetch --name {PER_HOST} pxelinux.cfg/01-${{mac:hexhyp}} && goto {PER_HOST} || goto {DEFAULT}"
    );
    let _ = writeln!(s, ":{DEFAULT}");
    match &c.boot {
        Boot::Entries(entries) => entries_part(&mut s, c.timeout_s, entries),
        Boot::Local => {
            let _ = writeln!(s, "echo nfsroot: {}", bootcfg::LOCAL_BOOT_SAY);
            // Back to the firmware, which boots its next device.
            s.push_str("exit 0\n");
        }
        Boot::Disabled(why) => {
            let _ = writeln!(s, "echo nfsroot: {}", plain(why));
            // As PXELINUX's LOCALBOOT -1: give up, back to the firmware.
            s.push_str("exit 1\n");
        }
    }
    let _ = writeln!(s, "\n:{PER_HOST}\nimgfree {PER_HOST}\nchain /pxelinux.0");
    s
}

/// The default's boot (a menu when the timeout is not 0), then one block
/// per entry.
fn entries_part(s: &mut String, timeout_s: u32, entries: &[Entry]) {
    let Some(first) = entries.first() else {
        s.push_str("echo nfsroot: no kernel is published\nexit 1\n");
        return;
    };
    let labels: Vec<&str> = entries.iter().map(|e| e.label.as_str()).collect();
    let _ = writeln!(
        s,
        "echo nfsroot: booting {} (labels: {})",
        first.label,
        labels.join(" ")
    );
    if timeout_s == 0 {
        let _ = writeln!(s, "goto {}", block(&first.label));
    } else {
        let _ = writeln!(s, "menu nfsroot");
        for e in entries {
            let _ = writeln!(s, "item {} {}", block(&e.label), e.label);
        }
        let _ = writeln!(
            s,
            "choose --default {0} --timeout {1} target && goto ${{target}} || goto {0}",
            block(&first.label),
            u64::from(timeout_s) * 1000
        );
    }
    for e in entries {
        let initrd_name = e.initrd.rsplit('/').next().unwrap_or(&e.initrd);
        let _ = writeln!(s, "\n:{}", block(&e.label));
        let _ = writeln!(s, "kernel /{} initrd={initrd_name} {}", e.kernel, e.append);
        let _ = writeln!(s, "initrd /{}", e.initrd);
        s.push_str("boot\n");
    }
}

/// Parse what [`render_top`] writes: the entries (`:boot-<label>` blocks
/// with their `kernel` and `initrd`) and the default (the first `goto
/// boot-..` or `choose --default boot-..`). Fails on a block without a
/// kernel, or a default that names no block.
pub fn parse(text: &str) -> Result<Parsed> {
    let mut p = Parsed::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [l] if l.starts_with(":boot-") => p.entries.push(Entry {
                label: l[":boot-".len()..].to_string(),
                kernel: String::new(),
                initrd: String::new(),
                append: String::new(),
            }),
            ["kernel", path, rest @ ..] => {
                let Some(e) = p.entries.last_mut() else {
                    bail!("line {}: kernel outside a :boot- block", n + 1);
                };
                e.kernel = path.trim_start_matches('/').to_string();
                let args: Vec<&str> = rest
                    .iter()
                    .copied()
                    .filter(|w| !w.starts_with("initrd="))
                    .collect();
                e.append = args.join(" ");
            }
            ["initrd", path, ..] => {
                let Some(e) = p.entries.last_mut() else {
                    bail!("line {}: initrd outside a :boot- block", n + 1);
                };
                e.initrd = path.trim_start_matches('/').to_string();
            }
            ["goto", target] | ["choose", "--default", target, ..] if p.default.is_none() => {
                if let Some(l) = target.strip_prefix("boot-") {
                    p.default = Some(l.to_string());
                }
            }
            _ => {}
        }
    }
    if let Some(d) = &p.default
        && p.default_entry().is_none()
    {
        bail!("the script boots label {d:?}, which it does not define");
    }
    for e in &p.entries {
        if e.kernel.is_empty() {
            bail!("label {} has no kernel", e.label);
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(label: &str, ver: &str) -> Entry {
        Entry {
            label: label.into(),
            kernel: format!("m/vmlinuz-{ver}"),
            initrd: format!("m/initrd.img-{ver}-0a1b2c3d"),
            append: "root=/dev/nfs nfsroot=10.0.2.2:/srv/m,vers=3 ip=dhcp ro".into(),
        }
    }

    fn config(timeout_s: u32, boot: Boot) -> Config {
        Config {
            header: "generated by nfsroot for image m; do not edit".into(),
            serial: Some((0, 115200)),
            timeout_s,
            boot,
        }
    }

    #[test]
    fn renders_the_default_first_and_parses_back() {
        let entries = vec![
            entry("m-6.1.0-50-amd64", "6.1.0-50-amd64"),
            entry("m-6.1.0-9-amd64", "6.1.0-9-amd64"),
        ];
        let text = try_render_top(&config(0, Boot::Entries(entries.clone())), true).unwrap();
        assert!(
            text.starts_with("#!ipxe\n# generated by nfsroot for image m"),
            "{text}"
        );
        assert!(text.contains(
            "imgfetch --name nfsroot-per-host pxelinux.cfg/01-${mac:hexhyp} && goto nfsroot-per-host \
             || goto nfsroot-default\n:nfsroot-default\n"
        ));
        assert!(text.contains("goto boot-m-6.1.0-50-amd64\n"), "{text}");
        assert!(text.contains(
            "kernel /m/vmlinuz-6.1.0-50-amd64 initrd=initrd.img-6.1.0-50-amd64-0a1b2c3d root=/dev/nfs"
        ));
        assert!(text.contains("initrd /m/initrd.img-6.1.0-50-amd64-0a1b2c3d\nboot\n"));
        assert!(text.ends_with(":nfsroot-per-host\nimgfree nfsroot-per-host\nchain /pxelinux.0\n"));
        assert!(!text.contains("menu"), "timeout 0 boots at once: {text}");
        let p = parse(&text).unwrap();
        assert_eq!(p.entries, entries);
        assert_eq!(p.default_entry(), Some(&entries[0]));
    }

    #[test]
    fn a_timeout_makes_a_menu_with_the_same_default() {
        let entries = vec![entry("m-2", "2"), entry("m-1", "1")];
        let text = render_top(&config(5, Boot::Entries(entries.clone())), true);
        assert!(
            text.contains("menu nfsroot\nitem boot-m-2 m-2\nitem boot-m-1 m-1\n"),
            "{text}"
        );
        assert!(text.contains(
            "choose --default boot-m-2 --timeout 5000 target && goto ${target} || goto boot-m-2\n"
        ));
        let p = parse(&text).unwrap();
        assert_eq!(p.default.as_deref(), Some("m-2"));
        assert_eq!(p.entries, entries);
    }

    #[test]
    fn local_and_disabled_return_to_the_firmware() {
        let local = render_top(&config(0, Boot::Local), true);
        assert!(
            local.contains("echo nfsroot: booting from the local disk\nexit 0\n"),
            "{local}"
        );
        let off = render_top(
            &config(0, Boot::Disabled("host off: ${evil} | x".into())),
            true,
        );
        assert!(
            off.contains("echo nfsroot: host off: ?{evil} ? x\nexit 1\n"),
            "{off}"
        );
        for t in [local, off] {
            assert!(
                t.contains("chain /pxelinux.0"),
                "per-host configs still win: {t}"
            );
            assert!(parse(&t).unwrap().entries.is_empty());
        }
    }

    #[test]
    fn refuses_what_ipxe_would_expand_or_split() {
        for bad in ["root=/dev/nfs ${x}", "a || b", "a && b", "quiet # c"] {
            let mut e = entry("m-1", "1");
            e.append = bad.into();
            let c = config(0, Boot::Entries(vec![e]));
            assert!(try_render_top(&c, true).is_err(), "{bad}");
            let text = render_top(&c, true);
            assert!(!text.contains(bad), "{text}");
            assert!(
                text.contains("echo nfsroot: refused to write this config"),
                "{text}"
            );
        }
        let mut e = entry("m-1", "1");
        e.kernel = "../etc/shadow".into();
        assert!(try_render_top(&config(0, Boot::Entries(vec![e])), true).is_err());
    }

    #[test]
    fn without_boot_ipxe_it_hands_every_client_to_pxelinux() {
        let c = config(0, Boot::Entries(vec![entry("m-1", "1")]));
        let text = try_render_top(&c, false).unwrap();
        // Its command line is PXELINUX's business: iPXE's rules do not apply.
        let mut e = entry("m-1", "1");
        e.append = "root=/dev/nfs quiet # c".into();
        assert!(try_render_top(&config(0, Boot::Entries(vec![e])), false).is_ok());
        assert!(
            text.starts_with("#!ipxe\n# generated by nfsroot for image m"),
            "{text}"
        );
        assert!(
            text.ends_with("(boot.ipxe is off)\nchain /pxelinux.0\n"),
            "{text}"
        );
        assert!(!text.contains("kernel "), "{text}");
        let p = parse(&text).unwrap();
        assert!(p.entries.is_empty() && p.default.is_none());
    }

    #[test]
    fn parse_rejects_a_default_without_a_block_and_a_block_without_a_kernel() {
        assert!(parse("#!ipxe\ngoto boot-x\n").is_err());
        assert!(parse("#!ipxe\n:boot-x\ninitrd /x/i\nboot\n").is_err());
        assert!(parse("#!ipxe\nkernel /x/k\n").is_err());
    }
}
