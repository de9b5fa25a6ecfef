//! Validation of a parsed profile, one function per section. Every value
//! that reaches a generated file is checked for that file's syntax (fstab,
//! exports, shadow, authorized_keys, the kernel command line, PXELINUX),
//! and no key or value may hold a control character. A failure names the
//! key path; `load` turns it into file:line:column.

use super::pattern::render_pattern;
use super::{Bootstrapper, Loaded, Profile};
use std::net::Ipv4Addr;

/// A validation failure at a key path (shared with the inventory).
#[derive(Debug, Clone)]
pub(crate) struct Invalid {
    pub(crate) key: Vec<String>,
    pub(crate) msg: String,
}

pub(crate) fn invalid(key: &[&str], msg: impl Into<String>) -> Invalid {
    Invalid {
        key: key.iter().map(|s| s.to_string()).collect(),
        msg: msg.into(),
    }
}

pub const SUITES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "sid",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];
pub const ARCHES: &[&str] = &[
    "amd64", "arm64", "armel", "armhf", "i386", "mips64el", "ppc64el", "riscv64", "s390x",
];
pub const VARIANTS: &[&str] = &[
    "minbase",
    "essential",
    "apt",
    "required",
    "important",
    "standard",
    "buildd",
    "debootstrap",
];
const DEBOOTSTRAP_VARIANTS: &[&str] = &["minbase", "buildd", "debootstrap"];

fn one_of(key: &[&str], v: &str, allowed: &[&str]) -> Result<(), Invalid> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(invalid(key, not_allowed(v, allowed)))
    }
}

use crate::choice::not_allowed;

/// Check a parsed profile, one section at a time; the first failure wins.
/// (Control characters are checked before serde runs, in `load`.)
pub(super) fn validate(l: &Loaded) -> Result<(), Invalid> {
    type Check = fn(&Profile) -> Result<(), Invalid>;
    const CHECKS: &[Check] = &[
        check_name,
        check_release,
        check_sources,
        check_packages,
        check_timezone,
        check_identity,
        check_nfs,
        check_tmpfs,
        check_mounts,
        check_hostname,
        check_logs,
        check_boot,
        check_initramfs,
        check_units,
    ];
    for check in CHECKS {
        check(&l.profile)?;
    }
    check_hooks(l)
}

/// The image name (a directory and a TFTP subdirectory).
fn check_name(p: &Profile) -> Result<(), Invalid> {
    if crate::image::check_name(&p.name).is_err() {
        return Err(invalid(
            &["name"],
            format!(
                "{:?} is not a valid image name; use 1-64 characters a-z 0-9 . _ - \
                 starting with a letter or digit",
                p.name
            ),
        ));
    }
    Ok(())
}

/// What is bootstrapped: suite, architecture, variant (the variants the
/// bootstrapper knows).
fn check_release(p: &Profile) -> Result<(), Invalid> {
    one_of(&["suite"], &p.suite, SUITES)?;
    one_of(&["architecture"], &p.architecture, ARCHES)?;
    if p.bootstrapper == Bootstrapper::Debootstrap {
        one_of(&["variant"], &p.variant, DEBOOTSTRAP_VARIANTS)?;
    } else {
        one_of(&["variant"], &p.variant, VARIANTS)?;
    }
    Ok(())
}

/// Where packages come from: the mirror, components and extra apt lines.
fn check_sources(p: &Profile) -> Result<(), Invalid> {
    if !p.mirror.is_empty() && !is_url(&p.mirror) {
        return Err(invalid(
            &["mirror"],
            format!(
                "{:?} is not a URL; expected http://, https:// or file:// (or leave it out to use the host's mirror)",
                p.mirror
            ),
        ));
    }
    for (i, c) in p.components.iter().enumerate() {
        if c.is_empty() || !c.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
            return Err(invalid(
                &["components", &i.to_string()],
                format!("{c:?} is not a component name (e.g. main, contrib, non-free-firmware)"),
            ));
        }
    }
    for (i, s) in p.extra_sources.iter().enumerate() {
        let w: Vec<&str> = s.split_whitespace().collect();
        let ok =
            w.len() >= 3 && (w[0] == "deb" || w[0] == "deb-src") && w.iter().any(|x| is_url(x));
        if !ok {
            return Err(invalid(
                &["extra_sources", &i.to_string()],
                format!(
                    "{s:?} is not a one-line apt source; expected \"deb URL SUITE COMPONENT...\""
                ),
            ));
        }
    }
    Ok(())
}

/// Extra packages: Debian package names.
fn check_packages(p: &Profile) -> Result<(), Invalid> {
    for (i, pkg) in p.packages.iter().enumerate() {
        let ok = !pkg.is_empty()
            && pkg.as_bytes()[0].is_ascii_alphanumeric()
            && pkg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.:=~".contains(&b));
        if !ok {
            return Err(invalid(
                &["packages", &i.to_string()],
                format!("{pkg:?} is not a Debian package name"),
            ));
        }
    }
    Ok(())
}

/// The timezone: a zoneinfo name.
fn check_timezone(p: &Profile) -> Result<(), Invalid> {
    if !p.timezone.is_empty()
        && !p.timezone.split('/').all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-+".contains(&b))
        })
    {
        return Err(invalid(
            &["timezone"],
            format!(
                "{:?} is not a timezone name; expected e.g. Etc/UTC or Europe/Lisbon",
                p.timezone
            ),
        ));
    }
    Ok(())
}

/// The NFS root: the server the nodes mount and the mount options.
fn check_nfs(p: &Profile) -> Result<(), Invalid> {
    if !is_host(&p.nfs.server) {
        return Err(invalid(
            &["nfs", "server"],
            format!("{:?} is not an IPv4 address or host name", p.nfs.server),
        ));
    }
    check_options(&["nfs", "options"], &p.nfs.options)
}

/// tmpfs lines for the nodes' fstab: path, size and octal mode.
fn check_tmpfs(p: &Profile) -> Result<(), Invalid> {
    for (i, t) in p.tmpfs.iter().enumerate() {
        let idx = i.to_string();
        check_abs(&["tmpfs", &idx, "path"], &t.path)?;
        let s = t.size.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G', '%']);
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                &["tmpfs", &idx, "size"],
                format!(
                    "{:?} is not a tmpfs size; expected e.g. 256m, 1g or 10%",
                    t.size
                ),
            ));
        }
        if t.mode.len() < 3
            || t.mode.len() > 4
            || !t.mode.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return Err(invalid(
                &["tmpfs", &idx, "mode"],
                format!(
                    "{:?} is not an octal mode; expected e.g. 1777 or 755",
                    t.mode
                ),
            ));
        }
    }
    Ok(())
}

/// Extra NFS mounts for the nodes' fstab.
fn check_mounts(p: &Profile) -> Result<(), Invalid> {
    for (i, m) in p.mounts.iter().enumerate() {
        let idx = i.to_string();
        if !is_nfs_source(&m.source) {
            return Err(invalid(
                &["mounts", &idx, "source"],
                format!(
                    "{:?} is not an NFS source; expected server:/path, e.g. master:/home \
                     (path of letters, digits and / . _ - + @ ~ only)",
                    m.source
                ),
            ));
        }
        check_abs(&["mounts", &idx, "target"], &m.target)?;
        check_options(&["mounts", &idx, "options"], &m.options)?;
    }
    Ok(())
}

/// The hostname pattern, rendered once for a sample address.
fn check_hostname(p: &Profile) -> Result<(), Invalid> {
    if let Err(e) = render_pattern(
        &p.hostname.pattern,
        Ipv4Addr::new(10, 0, 2, 15),
        "52:54:00:12:34:56",
    ) {
        return Err(invalid(&["hostname", "pattern"], e.to_string()));
    }
    Ok(())
}

/// The log directory on the nodes and its NFS export.
fn check_logs(p: &Profile) -> Result<(), Invalid> {
    check_abs(&["logs", "dir"], &p.logs.dir)?;
    if !p.logs.export.is_empty() && !is_nfs_source(&p.logs.export) {
        return Err(invalid(
            &["logs", "export"],
            format!(
                "{:?} is not an NFS export; expected server:/absolute/path with a path of \
                 letters, digits and / . _ - + @ ~ only (no spaces, quotes or commas)",
                p.logs.export
            ),
        ));
    }
    Ok(())
}

/// PXELINUX settings: the serial console, kernels kept, prompt time.
fn check_boot(p: &Profile) -> Result<(), Invalid> {
    if !p.boot.serial.is_empty() && crate::pxelinux::serial_of(&p.boot.serial).is_none() {
        return Err(invalid(
            &["boot", "serial"],
            format!(
                "{:?} is not a serial console; expected ttyS<N>[,<baud>[parity][bits]], \
                 e.g. ttyS0,115200 or ttyS1,9600n8, or \"\" for none",
                p.boot.serial
            ),
        ));
    }
    if p.boot.keep_kernels == 0 {
        return Err(invalid(&["boot", "keep_kernels"], "must be at least 1"));
    }
    if p.boot.keep_trees == 0 {
        return Err(invalid(&["boot", "keep_trees"], "must be at least 1"));
    }
    if p.boot.prompt_timeout > 600 {
        return Err(invalid(
            &["boot", "prompt_timeout"],
            "expected 0 to 600 seconds",
        ));
    }
    Ok(())
}

/// Kernel module names added to or removed from the initramfs, and the
/// nodes' network drivers: well formed here; whether the image's kernel
/// has them is checked at build (`initramfs::modules`). They shape
/// nfsroot's own initramfs: initramfs-tools' `MODULES=netboot` takes
/// every network driver, so with that backend they are errors, not
/// silently ignored.
fn check_initramfs(p: &Profile) -> Result<(), Invalid> {
    let net = p.initramfs.net_drivers.as_deref();
    if p.initramfs.backend == crate::profile::Backend::InitramfsTools {
        for (field, set) in [
            ("modules", !p.initramfs.modules.is_empty()),
            ("exclude_modules", !p.initramfs.exclude_modules.is_empty()),
            ("net_drivers", net.is_some()),
        ] {
            if set {
                return Err(invalid(
                    &["initramfs", field],
                    "applies to backend = \"nfsroot\" only: initramfs-tools \
                     (MODULES=netboot) picks its own modules; remove the key \
                     or use the nfsroot backend",
                ));
            }
        }
    }
    if net.is_some_and(|n| n.is_empty()) {
        return Err(invalid(
            &["initramfs", "net_drivers"],
            "an empty list ships no network driver: name the nodes' drivers \
             (e.g. [\"igb\"]), or remove the key for every Ethernet driver",
        ));
    }
    for (field, list) in [
        ("modules", &p.initramfs.modules),
        ("exclude_modules", &p.initramfs.exclude_modules),
        ("net_drivers", &net.unwrap_or_default().to_vec()),
    ] {
        for (i, m) in list.iter().enumerate() {
            if m.is_empty()
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    &["initramfs", field, &i.to_string()],
                    format!("{m:?} is not a kernel module name (e.g. virtio_net, e1000)"),
                ));
            }
        }
    }
    Ok(())
}

/// Unit names: well formed, and no unit both enabled or unmasked and
/// masked. Whether the image has them is checked at build, against the
/// image's units (`fixups::units`).
fn check_units(p: &Profile) -> Result<(), Invalid> {
    let u = &p.units;
    for (field, list) in [
        ("enable", &u.enable),
        ("mask", &u.mask),
        ("unmask", &u.unmask),
    ] {
        for (i, name) in list.iter().enumerate() {
            let key = ["units", field, &i.to_string()];
            if !is_unit_name(name) {
                return Err(invalid(
                    &key,
                    format!(
                        "{name:?} is not a systemd unit name (e.g. man-db.timer, getty@tty1.service)"
                    ),
                ));
            }
            if field != "mask" && u.mask.contains(name) {
                return Err(invalid(
                    &key,
                    format!("{name} is also in units.mask; a unit is either masked or not"),
                ));
            }
        }
    }
    Ok(())
}

/// A unit name as systemd spells it: `name[@instance].type`, no path.
pub fn is_unit_name(s: &str) -> bool {
    const TYPES: &[&str] = &[
        "service",
        "socket",
        "target",
        "timer",
        "path",
        "mount",
        "automount",
        "swap",
        "slice",
    ];
    let Some((stem, ty)) = s.rsplit_once('.') else {
        return false;
    };
    !stem.is_empty()
        && !stem.starts_with('@')
        && s.len() <= 255
        && TYPES.contains(&ty)
        && stem.matches('@').count() <= 1
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@\\".contains(&b))
}

/// Hook scripts: each must exist (relative to the profile's directory).
fn check_hooks(l: &Loaded) -> Result<(), Invalid> {
    let p = &l.profile;
    for (stage, list) in [
        ("post-bootstrap", &p.hooks.post_bootstrap),
        ("post-fixups", &p.hooks.post_fixups),
        ("post-build", &p.hooks.post_build),
    ] {
        for (i, h) in list.iter().enumerate() {
            let path = l.hook_path(h);
            if !path.is_file() {
                return Err(invalid(
                    &["hooks", stage, &i.to_string()],
                    format!(
                        "hook script {} does not exist (relative paths are relative to the profile's directory)",
                        path.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Every string and key of a TOML text with a newline or another control
/// character: such a value would start a line of its own in the file it is
/// written to (fstab, node.conf, a PXELINUX config, dhcpd.conf, ...).
pub(crate) fn control_chars(text: &str) -> Vec<Invalid> {
    use toml_edit::{Item, Value};
    fn bad(s: &str) -> Option<char> {
        s.chars().find(|c| c.is_control())
    }
    fn msg(c: char, what: &str) -> String {
        format!(
            "{what} holds the control character U+{:04X}; every value must be one line of \
             printable text (no newline, tab or other control character)",
            c as u32
        )
    }
    fn value(v: &Value, path: &mut Vec<String>, out: &mut Vec<Invalid>) {
        match v {
            Value::String(s) => {
                if let Some(c) = bad(s.value()) {
                    out.push(Invalid {
                        key: path.clone(),
                        msg: msg(c, "the value"),
                    });
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    path.push(i.to_string());
                    value(v, path, out);
                    path.pop();
                }
            }
            Value::InlineTable(t) => {
                for (k, v) in t.iter() {
                    path.push(k.to_string());
                    key(k, path, out);
                    value(v, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    fn key(k: &str, path: &[String], out: &mut Vec<Invalid>) {
        if let Some(c) = bad(k) {
            out.push(Invalid {
                key: path.to_vec(),
                msg: msg(c, "the key"),
            });
        }
    }
    fn item(it: &Item, path: &mut Vec<String>, out: &mut Vec<Invalid>) {
        match it {
            Item::Value(v) => value(v, path, out),
            Item::Table(t) => {
                for (k, v) in t.iter() {
                    path.push(k.to_string());
                    key(k, path, out);
                    item(v, path, out);
                    path.pop();
                }
            }
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    path.push(i.to_string());
                    for (k, v) in t.iter() {
                        path.push(k.to_string());
                        key(k, path, out);
                        item(v, path, out);
                        path.pop();
                    }
                    path.pop();
                }
            }
            Item::None => {}
        }
    }
    let Ok(doc) = toml_edit::ImDocument::parse(text.to_string()) else {
        return vec![];
    };
    let mut out = Vec::new();
    item(doc.as_item(), &mut Vec::new(), &mut out);
    out
}

/// The root hash (a field of /etc/shadow) and the authorized keys (lines of
/// /root/.ssh/authorized_keys).
fn check_identity(p: &Profile) -> Result<(), Invalid> {
    let h = &p.root_password_hash;
    let crypt_like = h.starts_with('$')
        && h.matches('$').count() >= 3
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./$=".contains(&b));
    if !h.is_empty() && !crypt_like {
        let why = if h.contains(':') {
            "a ':' would end the field in /etc/shadow; "
        } else if h.contains(char::is_whitespace) {
            "it holds whitespace; "
        } else {
            ""
        };
        return Err(invalid(
            &["root_password_hash"],
            format!(
                "{why}expected a crypt(3) hash such as $y$... or $6$... of A-Z a-z 0-9 . / $ = \
                 only (make one with: mkpasswd -m yescrypt); a plain password is never accepted"
            ),
        ));
    }
    for (i, k) in p.ssh_authorized_keys.iter().enumerate() {
        let mut w = k.split_whitespace();
        let t = w.next().unwrap_or("");
        let typed = t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-");
        let blob = w.next().is_some_and(|b| {
            b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
        });
        if !typed || !blob || k.matches(t).count() > 1 {
            return Err(invalid(
                &["ssh_authorized_keys", &i.to_string()],
                "expected one public key per entry, \"TYPE BASE64 [COMMENT]\", with TYPE \
                 ssh-ed25519, ssh-rsa, ecdsa-... or sk-... (put each key in its own string)",
            ));
        }
    }
    Ok(())
}

/// A path nodes or the server mount: absolute, of letters, digits and
/// `/ . _ - + @ ~` (nothing that needs quoting in fstab, exports(5) or the
/// kernel command line), no `..` component.
pub fn is_plain_abs_path(p: &str) -> bool {
    p.starts_with('/')
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@~".contains(&b))
        && !p.split('/').any(|c| c == "..")
}

/// `server:/path` with a host name or address and a plain path.
fn is_nfs_source(s: &str) -> bool {
    s.split_once(':')
        .is_some_and(|(h, path)| is_host(h) && is_plain_abs_path(path))
}

fn is_url(s: &str) -> bool {
    ["http://", "https://", "file://"]
        .iter()
        .any(|p| s.starts_with(p) && s.len() > p.len() && !s.contains(char::is_whitespace))
}

/// An IPv4 address or an RFC 1123 host name.
pub fn is_host(s: &str) -> bool {
    if s.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return false; // looks like a broken address
    }
    is_hostname(s)
}

/// An RFC 1123 host name (labels of a-z0-9-, not starting/ending with -).
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn check_abs(key: &[&str], p: &str) -> Result<(), Invalid> {
    if !is_plain_abs_path(p) || p == "/" {
        return Err(invalid(
            key,
            format!(
                "{p:?} is not an absolute path below / of letters, digits and / . _ - + @ ~ \
                 (no spaces, quotes, backslashes or ..)"
            ),
        ));
    }
    Ok(())
}

fn check_options(key: &[&str], o: &str) -> Result<(), Invalid> {
    let plain = o
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"=,._-:/+@".contains(&b));
    if !plain || o.starts_with(',') || o.ends_with(',') || o.contains(",,") {
        return Err(invalid(
            key,
            format!(
                "{o:?} is not a mount option list; expected comma-separated options of letters, digits and = . _ - : / + @ (no spaces or quotes), e.g. vers=3,tcp"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::parse;
    use anyhow::Result;
    use std::path::Path;

    fn p(text: &str) -> Result<Loaded> {
        parse(text, Path::new("t.toml"), Path::new("."))
    }

    #[test]
    fn unit_names() {
        for ok in [
            "man-db.timer",
            "getty@tty1.service",
            "getty@.service",
            "a\\x2d.mount",
        ] {
            assert!(is_unit_name(ok), "{ok}");
        }
        for bad in [
            "",
            "man-db",
            "x.exe",
            "a/b.service",
            "@x.service",
            ".service",
            "a@b@c.service",
            "a b.timer",
        ] {
            assert!(!is_unit_name(bad), "{bad}");
        }
    }

    #[test]
    fn semantic_error_points_at_key() {
        let e = p("name = \"x\"\n\n[hostname]\npattern = \"n{ip.7}\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:4:1: hostname.pattern:"), "{e}");
        let e = p("name = \"x\"\nsuite = \"bookwurm\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:2:1: suite:"), "{e}");
        assert!(e.contains("bookworm"), "{e}");
        let e = p("name = \"x\"\n[[mounts]]\nsource = \"m:/h\"\ntarget = \"/h\"\n[[mounts]]\nsource = \"nocolon\"\ntarget = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:6:1: mounts.1.source:"), "{e}");
    }

    /// Every section's check is wired in: a bad value in each is refused,
    /// named by its key.
    #[test]
    fn every_section_is_checked() {
        for (toml, key) in [
            ("name = \"-x\"\n", "name"),
            (
                "name = \"x\"\nvariant = \"apt\"\nbootstrapper = \"debootstrap\"\n",
                "variant",
            ),
            ("name = \"x\"\ncomponents = [\"Main\"]\n", "components.0"),
            ("name = \"x\"\npackages = [\"-x\"]\n", "packages.0"),
            ("name = \"x\"\ntimezone = \"a//b\"\n", "timezone"),
            (
                "name = \"x\"\nroot_password_hash = \"secret\"\n",
                "root_password_hash",
            ),
            ("name = \"x\"\n[nfs]\noptions = \"a,,b\"\n", "nfs.options"),
            (
                "name = \"x\"\n[[tmpfs]]\npath = \"/t\"\nmode = \"999\"\n",
                "tmpfs.0.mode",
            ),
            (
                "name = \"x\"\n[[mounts]]\nsource = \"m:/h\"\ntarget = \"/\"\n",
                "mounts.0.target",
            ),
            (
                "name = \"x\"\n[hostname]\npattern = \"{mac\"\n",
                "hostname.pattern",
            ),
            ("name = \"x\"\n[logs]\ndir = \"rel\"\n", "logs.dir"),
            (
                "name = \"x\"\n[boot]\nprompt_timeout = 601\n",
                "boot.prompt_timeout",
            ),
            (
                "name = \"x\"\n[initramfs]\nexclude_modules = [\"a b\"]\n",
                "initramfs.exclude_modules.0",
            ),
            (
                "name = \"x\"\n[hooks]\npost-build = [\"no/such\"]\n",
                "hooks.post-build.0",
            ),
            (
                "name = \"x\"\n[units]\nenable = [\"../etc/passwd\"]\n",
                "units.enable.0",
            ),
            (
                "name = \"x\"\n[units]\nmask = [\"a.timer\"]\nunmask = [\"a.timer\"]\n",
                "units.unmask.0",
            ),
        ] {
            let e = p(toml).unwrap_err().to_string();
            assert!(e.contains(&format!(": {key}: ")), "{toml:?}: {e}");
        }
    }
}
