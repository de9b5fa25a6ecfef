//! PXELINUX boot configs: a pure rendering from data to text, and a parser
//! that reads back what a config names (for drift checks and crash tests).
//!
//! File naming follows PXELINUX's own search order: `01-<mac>` (lower case,
//! dashes), then the client's IPv4 address in upper-case hex shortened one
//! digit at a time, then `default`.
//!
//! The renderer is its own last guard against injected directives: every
//! label and every kernel or initramfs file name it writes must be made of
//! `[A-Za-z0-9.+~_-]` (paths: such components joined by `/`), a command line
//! must be one line, and comment or message text has its control characters
//! replaced, so no value can start a line of its own. [`try_render`] refuses
//! a config that breaks this; [`render`] turns the refusal into a config that
//! boots nothing and says why (never echoing the bad value), so a caller that
//! has not checked its data still cannot write an injected line.

pub use crate::bootcfg::check;
pub use crate::bootcfg::{Boot, Config, Entry, LOCAL_BOOT_SAY, Parsed, is_name, one_line};
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Render a config, or a config that boots nothing and says why when the
/// data cannot be written safely (see [`try_render`]). Pure.
pub fn render(c: &Config) -> String {
    try_render(c).unwrap_or_else(|_| render_unchecked(&crate::bootcfg::refused(c)))
}

/// Render a config after checking every label, file name and command line
/// (see [`check`]). Pure: the same data gives the same bytes.
pub fn try_render(c: &Config) -> Result<String> {
    check(c)?;
    Ok(render_unchecked(c))
}

fn render_unchecked(c: &Config) -> String {
    let mut s = String::new();
    for l in c.header.lines() {
        let _ = writeln!(s, "# {}", one_line(l));
    }
    if let Some((port, baud)) = c.serial {
        let _ = writeln!(s, "SERIAL {port} {baud}");
    }
    match &c.boot {
        Boot::Entries(entries) => {
            let Some(first) = entries.first() else {
                return s;
            };
            let _ = writeln!(s, "DEFAULT {}", first.label);
            if c.timeout_s == 0 {
                // `TIMEOUT 0` is no timeout: a prompt would wait for ever.
                // No prompt (a held Shift or Alt still shows one), the
                // default boots at once, as GRUB's `set timeout=0` does.
                let _ = writeln!(s, "PROMPT 0\nTIMEOUT 0");
            } else {
                let _ = writeln!(s, "PROMPT 1");
                let _ = writeln!(s, "TIMEOUT {}", c.timeout_s.saturating_mul(10));
            }
            let labels: Vec<&str> = entries.iter().map(|e| e.label.as_str()).collect();
            let _ = writeln!(
                s,
                "SAY nfsroot: booting {} (labels: {})",
                first.label,
                labels.join(" ")
            );
            for e in entries {
                let _ = writeln!(s, "\nLABEL {}", e.label);
                let _ = writeln!(s, "  KERNEL {}", e.kernel);
                let _ = writeln!(s, "  INITRD {}", e.initrd);
                let _ = writeln!(s, "  APPEND {}", e.append);
            }
        }
        Boot::Local => {
            let _ = writeln!(s, "DEFAULT local\nPROMPT 0\nTIMEOUT 0");
            let _ = writeln!(s, "SAY nfsroot: {LOCAL_BOOT_SAY}");
            let _ = writeln!(s, "\nLABEL local\n  LOCALBOOT 0");
        }
        Boot::Disabled(why) => {
            let _ = writeln!(s, "DEFAULT disabled\nPROMPT 0\nTIMEOUT 0\nNOESCAPE 1");
            let _ = writeln!(s, "SAY nfsroot: {}", one_line(why));
            // LOCALBOOT -1 makes PXELINUX give up and return to the BIOS.
            let _ = writeln!(s, "\nLABEL disabled\n  LOCALBOOT -1");
        }
    }
    s
}

/// Parse the subset of PXELINUX syntax that [`render`] writes (and that
/// hand-written configs commonly use). Fails on a config whose DEFAULT names
/// no label, or a label without a kernel.
pub fn parse(text: &str) -> Result<Parsed> {
    let mut p = Parsed::default();
    let mut cur: Option<Entry> = None;
    let mut local = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (kw, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim().to_string();
        match kw.to_ascii_uppercase().as_str() {
            "DEFAULT" => p.default = Some(rest),
            "LABEL" => {
                if let Some(e) = cur.take() {
                    p.entries.push(e);
                }
                cur = Some(Entry {
                    label: rest,
                    kernel: String::new(),
                    initrd: String::new(),
                    append: String::new(),
                });
            }
            "KERNEL" | "LINUX" => match cur.as_mut() {
                Some(e) => e.kernel = rest,
                None => bail!("line {}: KERNEL outside a LABEL", n + 1),
            },
            "INITRD" => match cur.as_mut() {
                Some(e) => e.initrd = rest,
                None => bail!("line {}: INITRD outside a LABEL", n + 1),
            },
            "APPEND" => match cur.as_mut() {
                Some(e) => e.append = rest,
                None => bail!("line {}: APPEND outside a LABEL", n + 1),
            },
            "LOCALBOOT" => {
                local = true;
                if let Some(e) = cur.take() {
                    let _ = e; // a local label names no files
                }
            }
            _ => {}
        }
    }
    if let Some(e) = cur.take() {
        p.entries.push(e);
    }
    if let Some(d) = &p.default
        && !local
        && p.default_entry().is_none()
    {
        bail!("DEFAULT names label {d:?}, which the config does not define");
    }
    for e in &p.entries {
        if e.kernel.is_empty() {
            bail!("label {} has no KERNEL", e.label);
        }
    }
    Ok(p)
}

/// PXELINUX's per-MAC config name: `01-aa-bb-cc-dd-ee-ff`.
pub fn mac_file_name(mac: &str) -> String {
    format!("01-{}", mac.to_ascii_lowercase().replace(':', "-"))
}

/// Every name PXELINUX looks up under pxelinux.cfg/ before `default`, for
/// a client with one of `macs` at `ip`: `01-<mac>`, then the hex IP
/// shortened one digit at a time (its UUID name aside).
pub fn lookup_names<'a>(macs: impl IntoIterator<Item = &'a str>, ip: Ipv4Addr) -> Vec<String> {
    let hex = hex_ip(ip);
    macs.into_iter()
        .map(mac_file_name)
        .chain((1..=hex.len()).rev().map(|n| hex[..n].to_string()))
        .collect()
}

/// PXELINUX's per-IP config name: the address in upper-case hex.
pub fn hex_ip(ip: Ipv4Addr) -> String {
    ip.octets().iter().map(|o| format!("{o:02X}")).collect()
}

/// Split a serial console spec, `ttyS<port>[,<baud>[<parity>[<bits>[r]]]]`
/// (the kernel's `console=` syntax, e.g. `ttyS0,115200n8`), into (port,
/// baud) for PXELINUX's `SERIAL`; the baud defaults to 115200. Anything
/// else, trailing text included, is `None`.
pub fn serial_of(console: &str) -> Option<(u8, u32)> {
    let rest = console.strip_prefix("ttyS")?;
    let (port, opts) = rest.split_once(',').unwrap_or((rest, ""));
    if port.is_empty() || port.len() > 3 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u8 = port.parse().ok()?;
    if opts.is_empty() && console.ends_with(',') {
        return None;
    }
    let digits = opts.bytes().take_while(u8::is_ascii_digit).count();
    let (baud, mut tail) = opts.split_at(digits);
    let baud: u32 = if baud.is_empty() {
        if !opts.is_empty() {
            return None;
        }
        115200
    } else {
        baud.parse().ok().filter(|b| (50..=4_000_000).contains(b))?
    };
    for allowed in ["noe", "5678", "r"] {
        if let Some(c) = tail.chars().next()
            && allowed.contains(c)
        {
            tail = &tail[1..];
        }
    }
    tail.is_empty().then_some((port, baud))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: &str) -> Entry {
        Entry {
            label: format!("img-{v}"),
            kernel: format!("img/vmlinuz-{v}"),
            initrd: format!("img/initrd.img-{v}"),
            append: "root=/dev/nfs ro".into(),
        }
    }

    #[test]
    fn render_then_parse() {
        let c = Config {
            header: "generated".into(),
            serial: Some((0, 115200)),
            timeout_s: 3,
            boot: Boot::Entries(vec![entry("6.1.0-10"), entry("6.1.0-9")]),
        };
        let text = render(&c);
        assert!(text.starts_with("# generated\nSERIAL 0 115200\nDEFAULT img-6.1.0-10\n"));
        assert!(text.contains("TIMEOUT 30\n"));
        let p = parse(&text).unwrap();
        assert_eq!(p.default_entry().unwrap(), &entry("6.1.0-10"));
        assert_eq!(p.entries.len(), 2);
    }

    /// A kernel version with a newline would add directives of its own;
    /// the renderer refuses it, and `render` writes a config that boots
    /// nothing and does not echo the value.
    #[test]
    fn injected_names_are_refused() {
        let evil = "6.1.0\nDEFAULT evil\nLABEL evil";
        let mut bad = entry(evil);
        bad.label = "img-6.1.0".into();
        let cases = [
            entry(evil),
            bad.clone(),
            Entry {
                kernel: "../etc/shadow".into(),
                ..entry("6.1.0")
            },
            Entry {
                initrd: "img/initrd img".into(),
                ..entry("6.1.0")
            },
            Entry {
                append: "ro\nLABEL x".into(),
                ..entry("6.1.0")
            },
        ];
        for e in cases {
            let c = Config {
                header: "h".into(),
                serial: None,
                timeout_s: 3,
                boot: Boot::Entries(vec![entry("6.1.0-9"), e.clone()]),
            };
            let err = try_render(&c).unwrap_err().to_string();
            assert!(err.starts_with("refusing to render"), "{err}");
            let text = render(&c);
            assert!(
                !text.contains("evil") && !text.contains("LABEL x"),
                "{text}"
            );
            assert!(!text.contains("shadow"), "{text}");
            let p = parse(&text).unwrap();
            assert!(p.entries.is_empty(), "{text}");
            assert!(text.contains("LOCALBOOT -1"), "{text}");
        }
        // Comments and messages stay on their line.
        let c = Config {
            header: "a\rb\nc".into(),
            serial: None,
            timeout_s: u32::MAX,
            boot: Boot::Disabled("x\ny\x0bz".into()),
        };
        let t = try_render(&c).unwrap();
        assert!(t.starts_with("# a?b\n# c\n"), "{t:?}");
        assert!(t.contains("SAY nfsroot: x?y?z\n"), "{t:?}");
    }

    /// A zero timeout boots the default at once: `PROMPT 1` with
    /// `TIMEOUT 0` would stop every node at `boot:` for ever.
    #[test]
    fn zero_timeout_means_no_prompt() {
        let mut c = Config {
            header: "h".into(),
            serial: None,
            timeout_s: 0,
            boot: Boot::Entries(vec![entry("6.1.0-10")]),
        };
        let t = render(&c);
        assert!(t.contains("PROMPT 0\nTIMEOUT 0\n"), "{t}");
        assert!(!t.contains("PROMPT 1"), "{t}");
        c.timeout_s = 1;
        let t = render(&c);
        assert!(t.contains("PROMPT 1\nTIMEOUT 10\n"), "{t}");
        assert_eq!(
            parse(&t).unwrap().default_entry().unwrap(),
            &entry("6.1.0-10")
        );
    }

    #[test]
    fn dangling_default_is_an_error() {
        assert!(parse("DEFAULT x\nLABEL y\n KERNEL k\n").is_err());
        assert!(parse("LABEL y\n").is_err());
    }

    #[test]
    fn names() {
        // The issue text says 10.18.1.2 -> 0A120112; 0x12 is 18, so that name
        // belongs to 10.18.1.18. PXELINUX computes it octet by octet:
        assert_eq!(hex_ip("10.18.1.2".parse().unwrap()), "0A120102");
        assert_eq!(hex_ip("10.18.1.18".parse().unwrap()), "0A120112");
        assert_eq!(hex_ip("172.16.1.10".parse().unwrap()), "AC10010A");
        assert_eq!(mac_file_name("52:54:00:AB:cd:01"), "01-52-54-00-ab-cd-01");
        assert_eq!(serial_of("ttyS1,9600n8"), Some((1, 9600)));
        assert_eq!(serial_of("ttyS0"), Some((0, 115200)));
        assert_eq!(serial_of("ttyS0,115200n8r"), Some((0, 115200)));
        assert_eq!(serial_of("tty0"), None);
        for bad in [
            "ttyS0,115200\nDEFAULT evil",
            "ttyS0,115200 quiet",
            "ttyS0,",
            "ttyS,9600",
            "ttyS0,0",
            "ttyS0,n8",
            "ttyS0,9600x",
            "ttyS+1",
        ] {
            assert_eq!(serial_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn local_and_disabled_render() {
        let mut c = Config {
            header: "h".into(),
            serial: None,
            timeout_s: 0,
            boot: Boot::Local,
        };
        assert!(render(&c).contains("LOCALBOOT 0"));
        c.boot = Boot::Disabled("host n1 is disabled".into());
        let t = render(&c);
        assert!(t.contains("SAY nfsroot: host n1 is disabled"));
        assert!(parse(&t).is_ok());
    }
}
