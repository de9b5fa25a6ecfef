//! The boot config model both loaders are rendered from: what a node boots
//! (published kernels as labels, local disk, or nothing), the timeout and
//! the serial console. [`crate::pxelinux`] (BIOS) and [`crate::grub`]
//! (UEFI) each turn one [`Config`] into their own syntax and parse their
//! own syntax back into a [`Parsed`], so the two configs of a host cannot
//! be built from different data, and drift and crash checks compare them
//! by the same fields.
//!
//! The injection guard on the data lives here too ([`check`]): labels and
//! file names are `[A-Za-z0-9.+~_-]` (paths: such names joined by `/`), a
//! command line is one line. Each renderer adds the rules of its own syntax
//! on top (GRUB's quoting, see [`crate::grub`]).

use anyhow::{Result, bail};

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

/// What a local-boot host's loader prints before it hands the node back
/// to the firmware (PXELINUX's SAY, GRUB's echo, after `nfsroot: `); the
/// boot test's console watcher diagnoses a local boot from it.
pub const LOCAL_BOOT_SAY: &str = "booting from the local disk";

/// What a config boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Boot `entries[0]` by default; the rest are selectable fallbacks.
    Entries(Vec<Entry>),
    /// Boot from the local disk.
    Local,
    /// Boot nothing: print why and stop.
    Disabled(String),
}

/// A whole config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A comment naming who generated it.
    pub header: String,
    /// Serial console `(port, baud)` when one is configured.
    pub serial: Option<(u8, u32)>,
    /// Seconds the menu waits before booting the default.
    pub timeout_s: u32,
    pub boot: Boot,
}

/// What a parsed config names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub default: Option<String>,
    pub entries: Vec<Entry>,
}

impl Parsed {
    /// The entry the default names.
    pub fn default_entry(&self) -> Option<&Entry> {
        let d = self.default.as_deref()?;
        self.entries.iter().find(|e| e.label == d)
    }
}

/// The config a renderer writes instead of one whose data it refused: it
/// boots nothing and says why, never echoing the bad value.
pub fn refused(c: &Config) -> Config {
    Config {
        header: c.header.clone(),
        serial: c.serial,
        timeout_s: 0,
        boot: Boot::Disabled(
            "refused to write this config: a label, kernel or initrd name \
             outside [A-Za-z0-9.+~_-] or a multi-line command line (see nfsroot publish/sync)"
                .into(),
        ),
    }
}

/// Whether every value of `c` can be written without starting a line or
/// directive of its own.
pub fn check(c: &Config) -> Result<()> {
    let Boot::Entries(entries) = &c.boot else {
        return Ok(());
    };
    for e in entries {
        if !is_name(&e.label) {
            bail!(
                "refusing to render boot label {:?}: expected [A-Za-z0-9.+~_-]+ \
                 (image name and kernel version)",
                e.label
            );
        }
        for (what, p) in [("kernel", &e.kernel), ("initrd", &e.initrd)] {
            if !p.split('/').all(|c| is_name(c) && c != "." && c != "..") {
                bail!(
                    "refusing to render {what} path {p:?} of label {}: expected names of \
                     [A-Za-z0-9.+~_-] joined by /, relative to the TFTP root",
                    e.label
                );
            }
        }
        if e.append.chars().any(char::is_control) {
            bail!(
                "refusing to render the command line of label {}: it holds a newline or \
                 another control character",
                e.label
            );
        }
    }
    Ok(())
}

/// A kernel version, label or file name a boot config may be given:
/// `[A-Za-z0-9.+~_-]+`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~_-".contains(&b))
}

/// Text with every control character replaced by `?`: safe after `# ` or
/// a message directive without starting a new line.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
