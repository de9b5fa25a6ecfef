//! PXELINUX boot configs: a pure rendering from data to text, and a parser
//! that reads back what a config names (for drift checks and crash tests).
//!
//! File naming follows PXELINUX's own search order: `01-<mac>` (lower case,
//! dashes), then the client's IPv4 address in upper-case hex shortened one
//! digit at a time, then `default`.

use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// One bootable label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub label: String,
    /// Kernel path relative to the TFTP root.
    pub kernel: String,
    /// Initramfs path relative to the TFTP root.
    pub initrd: String,
    /// Kernel command line.
    pub append: String,
}

/// What a config boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Boot `entries[0]` by default; the rest are selectable fallbacks.
    Entries(Vec<Entry>),
    /// Boot from the local disk.
    Local,
    /// Boot nothing: print why and stop at the prompt.
    Disabled(String),
}

/// A whole config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A comment naming who generated it.
    pub header: String,
    /// `SERIAL <port> <baud>` when a serial console is configured.
    pub serial: Option<(u8, u32)>,
    /// Seconds the `boot:` prompt waits before booting the default.
    pub timeout_s: u32,
    pub boot: Boot,
}

/// Render a config. Pure: the same data gives the same bytes.
pub fn render(c: &Config) -> String {
    let mut s = String::new();
    for l in c.header.lines() {
        let _ = writeln!(s, "# {l}");
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
            let _ = writeln!(s, "PROMPT 1");
            let _ = writeln!(s, "TIMEOUT {}", c.timeout_s * 10);
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
            let _ = writeln!(s, "\nLABEL local\n  LOCALBOOT 0");
        }
        Boot::Disabled(why) => {
            let _ = writeln!(s, "DEFAULT disabled\nPROMPT 0\nTIMEOUT 0\nNOESCAPE 1");
            let _ = writeln!(s, "SAY nfsroot: {why}");
            // LOCALBOOT -1 makes PXELINUX give up and return to the BIOS.
            let _ = writeln!(s, "\nLABEL disabled\n  LOCALBOOT -1");
        }
    }
    s
}

/// What a parsed config names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub default: Option<String>,
    pub entries: Vec<Entry>,
}

impl Parsed {
    /// The entry `DEFAULT` names.
    pub fn default_entry(&self) -> Option<&Entry> {
        let d = self.default.as_deref()?;
        self.entries.iter().find(|e| e.label == d)
    }
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

/// PXELINUX's per-IP config name: the address in upper-case hex.
pub fn hex_ip(ip: Ipv4Addr) -> String {
    ip.octets().iter().map(|o| format!("{o:02X}")).collect()
}

/// Split `ttyS0,115200` into (port 0, baud 115200).
pub fn serial_of(console: &str) -> Option<(u8, u32)> {
    let rest = console.strip_prefix("ttyS")?;
    let (port, baud) = rest.split_once(',').unwrap_or((rest, "115200"));
    let baud: String = baud.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((port.parse().ok()?, baud.parse().ok()?))
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
        assert_eq!(serial_of("tty0"), None);
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
