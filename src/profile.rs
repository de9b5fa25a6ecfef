//! Profiles: the TOML that describes an image.
//!
//! A profile is parsed with serde (`deny_unknown_fields` everywhere), then
//! validated as a whole. Both kinds of error carry the file, the line and
//! column, the key, and what is allowed: serde errors come with a byte span
//! from the toml parser; semantic errors find their key's span by walking a
//! `toml_edit` document of the same text. Every value that reaches a
//! generated file is checked for that file's syntax (fstab, exports, shadow,
//! authorized_keys, the kernel command line, PXELINUX), and no key or value
//! may hold a control character. Defaults are filled by serde, so
//! `profile show` prints exactly what a build will use.
//!
//! A profile argument with a `/` or ending in `.toml` is a file; a bare name
//! is a shipped profile, looked up in `<etc-dir>/nfsroot/profiles/` and then
//! among the profiles built into the binary, never in the current directory.

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Profiles shipped in the binary, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("minimal", include_str!("../profiles/minimal.toml")),
    ("cluster", include_str!("../profiles/cluster.toml")),
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Image name: the directory under the base dir and the TFTP subdir.
    pub name: String,
    /// Debian suite (codename or alias).
    #[serde(default = "d_suite")]
    pub suite: String,
    #[serde(default = "d_arch")]
    pub architecture: String,
    /// mmdebstrap/debootstrap variant.
    #[serde(default = "d_variant")]
    pub variant: String,
    /// `auto` (mmdebstrap if installed), `mmdebstrap` or `debootstrap`.
    #[serde(default)]
    pub bootstrapper: Bootstrapper,
    /// Mirror URL; empty means: detect from the host's apt sources.
    #[serde(default)]
    pub mirror: String,
    #[serde(default = "d_components")]
    pub components: Vec<String>,
    /// Extra apt source lines (one-line format).
    #[serde(default)]
    pub extra_sources: Vec<String>,
    /// Packages on top of the variant. nfsroot adds what diskless boot needs.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Timezone, e.g. `Europe/Lisbon`.
    #[serde(default = "d_timezone")]
    pub timezone: String,
    /// crypt(3) hash for root; empty keeps root locked.
    #[serde(default)]
    pub root_password_hash: String,
    /// Lines for /root/.ssh/authorized_keys.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(default)]
    pub nfs: Nfs,
    /// tmpfs mounts in the nodes' fstab.
    #[serde(default = "d_tmpfs")]
    pub tmpfs: Vec<Tmpfs>,
    /// Extra NFS mounts (e.g. /home from the master).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub hostname: Hostname,
    #[serde(default)]
    pub logs: Logs,
    #[serde(default)]
    pub boot: Boot,
    #[serde(default)]
    pub initramfs: Initramfs,
    #[serde(default)]
    pub hooks: Hooks,
}

/// Which program bootstraps the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bootstrapper {
    /// mmdebstrap if installed, else debootstrap.
    #[default]
    Auto,
    Mmdebstrap,
    Debootstrap,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Nfs {
    /// The NFS server's address as the nodes see it.
    #[serde(default = "d_server")]
    pub server: String,
    /// `ro` or `rw`.
    #[serde(default = "d_root_mode")]
    pub root_mode: String,
    /// Mount options for the root, after the server path in `nfsroot=`.
    #[serde(default = "d_nfs_options")]
    pub options: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tmpfs {
    pub path: String,
    #[serde(default = "d_tmpfs_size")]
    pub size: String,
    #[serde(default = "d_tmpfs_mode")]
    pub mode: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// `server:/path`.
    pub source: String,
    /// Absolute mount point in the image.
    pub target: String,
    #[serde(default = "d_mount_options")]
    pub options: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hostname {
    /// Sources tried in order: hosts, dhcp, dns, pattern.
    #[serde(default = "d_hostname_sources")]
    pub sources: Vec<String>,
    /// Fallback pattern, e.g. `node{ip.3:03}`.
    #[serde(default = "d_hostname_pattern")]
    pub pattern: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    /// `per-host` (rsyslog writes <dir>/<hostname>/) or `local`.
    #[serde(default = "d_logs_layout")]
    pub layout: String,
    /// Directory on the node holding the per-host directories.
    #[serde(default = "d_logs_dir")]
    pub dir: String,
    /// NFS export mounted on `dir` (`server:/path`). Empty: the server's
    /// `<base-dir>/.logs/<image>` when the root is read-only; none for rw.
    #[serde(default)]
    pub export: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// Serial console, e.g. `ttyS0,115200`; empty for none.
    #[serde(default = "d_serial")]
    pub serial: String,
    /// Extra kernel command line.
    #[serde(default)]
    pub cmdline: String,
    /// Published kernels to keep.
    #[serde(default = "d_keep")]
    pub keep_kernels: u32,
    /// Seconds the PXELINUX prompt waits.
    #[serde(default = "d_prompt")]
    pub prompt_timeout: u32,
    /// Make this image PXELINUX's `default` when publishing.
    #[serde(default = "d_true")]
    pub default: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Initramfs {
    /// `nfsroot` (built by this tool) or `initramfs-tools`.
    #[serde(default = "d_backend")]
    pub backend: String,
    /// `gzip` or `zstd`.
    #[serde(default = "d_compression")]
    pub compression: String,
    /// Module names added to the default set (or `default` alone).
    #[serde(default)]
    pub modules: Vec<String>,
    /// Module names removed from the set.
    #[serde(default)]
    pub exclude_modules: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default, rename = "post-bootstrap")]
    pub post_bootstrap: Vec<String>,
    #[serde(default, rename = "post-fixups")]
    pub post_fixups: Vec<String>,
    #[serde(default, rename = "post-build")]
    pub post_build: Vec<String>,
}

fn d_suite() -> String {
    "bookworm".into()
}
fn d_arch() -> String {
    "amd64".into()
}
fn d_variant() -> String {
    "minbase".into()
}
fn d_components() -> Vec<String> {
    vec!["main".into()]
}
fn d_timezone() -> String {
    "Etc/UTC".into()
}
fn d_server() -> String {
    "10.0.2.2".into()
}
fn d_root_mode() -> String {
    "ro".into()
}
fn d_nfs_options() -> String {
    "vers=3,tcp".into()
}
fn d_tmpfs() -> Vec<Tmpfs> {
    vec![
        Tmpfs {
            path: "/tmp".into(),
            size: "256m".into(),
            mode: "1777".into(),
        },
        Tmpfs {
            path: "/var/tmp".into(),
            size: "128m".into(),
            mode: "1777".into(),
        },
    ]
}
fn d_tmpfs_size() -> String {
    "128m".into()
}
fn d_tmpfs_mode() -> String {
    "755".into()
}
fn d_mount_options() -> String {
    "rw,vers=3,tcp,nolock,_netdev".into()
}
fn d_hostname_sources() -> Vec<String> {
    ["hosts", "dhcp", "dns", "pattern"]
        .map(String::from)
        .to_vec()
}
fn d_hostname_pattern() -> String {
    "node{ip.3:03}".into()
}
fn d_logs_layout() -> String {
    "per-host".into()
}
fn d_logs_dir() -> String {
    "/var/log/hosts".into()
}
fn d_serial() -> String {
    "ttyS0,115200".into()
}
fn d_keep() -> u32 {
    3
}
fn d_prompt() -> u32 {
    3
}
fn d_true() -> bool {
    true
}
fn d_backend() -> String {
    "nfsroot".into()
}
fn d_compression() -> String {
    "gzip".into()
}

macro_rules! default_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                toml::from_str("").expect("defaults deserialize")
            }
        }
    )*};
}
default_from_serde!(Nfs, Hostname, Logs, Boot, Initramfs);

/// A profile together with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub profile: Profile,
    /// The file (or `<builtin>/NAME.toml`).
    pub origin: PathBuf,
    /// The directory relative hook paths are resolved against.
    pub dir: PathBuf,
    /// The source text (its sha256 is the profile digest).
    pub text: String,
}

impl Loaded {
    /// sha256 of the profile text, recorded in the release stamp.
    pub fn digest(&self) -> String {
        crate::fsutil::sha256_bytes(self.text.as_bytes())
    }

    /// A hook path as given in the profile, resolved.
    pub fn hook_path(&self, h: &str) -> PathBuf {
        let p = Path::new(h);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// Where shipped profiles live below the etc dir (`/etc` unless
/// `--etc-dir` / `NFSROOT_ETC_DIR`).
pub const ETC_PROFILES: &str = "nfsroot/profiles";

/// Load a profile. An argument with a `/` or ending in `.toml` is a file;
/// a bare name is a shipped profile: `<etc_dir>/nfsroot/profiles/NAME.toml`,
/// then the ones built into the binary. The current directory is never
/// searched: a `profiles/NAME.toml` wherever the admin stands (with hooks
/// that run as root) must not shadow the shipped one.
pub fn load(name_or_path: &str, etc_dir: &Path) -> Result<Loaded> {
    if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
        return load_file(Path::new(name_or_path));
    }
    if !is_profile_name(name_or_path) {
        bail!(
            "{name_or_path:?} is not a profile name (letters, digits, . _ -);              to read a file, give a path with a / or ending in .toml"
        );
    }
    let dir = etc_dir.join(ETC_PROFILES);
    let f = dir.join(format!("{name_or_path}.toml"));
    if f.exists() {
        return load_file(&f);
    }
    if let Some((n, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
        let origin = PathBuf::from(format!("<builtin>/{n}.toml"));
        // Built-in profiles name no hooks (a test checks); should one ever
        // do, it resolves next to the shipped profiles, never in the cwd.
        return parse(text, &origin, &dir);
    }
    let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
    bail!(
        "no profile named {name_or_path:?}: not in {} and not built in (built-in: {}); \
         to read a file, give a path with a / or ending in .toml, e.g. ./{name_or_path}.toml",
        dir.display(),
        names.join(", ")
    )
}

/// A bare profile name: what may follow `<etc>/nfsroot/profiles/`.
fn is_profile_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Read and parse one profile file; relative hooks resolve next to it.
fn load_file(p: &Path) -> Result<Loaded> {
    let text =
        std::fs::read_to_string(p).map_err(|e| anyhow!("reading profile {}: {e}", p.display()))?;
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, p, &dir)
}

/// Parse and validate profile text; `origin` names it in errors.
pub fn parse(text: &str, origin: &Path, dir: &Path) -> Result<Loaded> {
    let profile: Profile = match toml::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            let start = e.span().map_or(0, |s| s.start);
            let (line, col) = line_col(text, start);
            // Name the key, as validation errors do (serde gives a span).
            let msg = e.message().trim_end();
            let key = key_at(text, start)
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            bail!("{}:{line}:{col}: {key}{msg}", origin.display());
        }
    };
    let loaded = Loaded {
        profile,
        origin: origin.to_path_buf(),
        dir: dir.to_path_buf(),
        text: text.to_string(),
    };
    if let Err(e) = validate(&loaded) {
        let (line, col) = locate(text, &e.key).unwrap_or((1, 1));
        bail!(
            "{}:{line}:{col}: {}: {}",
            origin.display(),
            e.key.join("."),
            e.msg
        );
    }
    Ok(loaded)
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, off: usize) -> (usize, usize) {
    let before = &text[..off.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// The dotted key path of the deepest key or value at byte `off`, so a
/// serde error (which has only a span) can name its field.
pub(crate) fn key_at(text: &str, off: usize) -> Option<String> {
    use toml_edit::{Item, Value};
    fn within(span: Option<std::ops::Range<usize>>, off: usize) -> bool {
        span.is_some_and(|s| s.start <= off && off < s.end.max(s.start + 1))
    }
    fn value(v: &Value, off: usize, path: &mut Vec<String>) {
        match v {
            Value::InlineTable(t) => {
                for (k, v) in t.iter() {
                    let kspan = t.key(k).and_then(|kk| kk.span());
                    if within(kspan, off) || within(v.span(), off) {
                        path.push(k.to_string());
                        value(v, off, path);
                        return;
                    }
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    if within(v.span(), off) {
                        path.push(i.to_string());
                        value(v, off, path);
                        return;
                    }
                }
            }
            _ => {}
        }
    }
    fn table(t: &toml_edit::Table, off: usize, path: &mut Vec<String>) -> bool {
        for (k, it) in t.iter() {
            let kspan = t.key(k).and_then(|kk| kk.span());
            match it {
                Item::Value(v) if within(kspan, off) || within(v.span(), off) => {
                    path.push(k.to_string());
                    value(v, off, path);
                    return true;
                }
                Item::Table(sub) => {
                    path.push(k.to_string());
                    if table(sub, off, path) || within(sub.span(), off) {
                        return true;
                    }
                    path.pop();
                }
                _ => {}
            }
        }
        false
    }
    let doc = toml_edit::ImDocument::parse(text.to_string()).ok()?;
    let mut path = Vec::new();
    table(doc.as_table(), off, &mut path);
    (!path.is_empty()).then(|| path.join("."))
}

/// Find the span of a key path (`["mounts","1","target"]`) in the text:
/// the deepest key that exists, so a missing key points at its table.
pub(crate) fn locate(text: &str, key: &[String]) -> Option<(usize, usize)> {
    let doc = toml_edit::ImDocument::parse(text.to_string()).ok()?;
    locate_in(&doc, text, key)
}

/// [`locate`] in an already parsed document (for callers locating many
/// keys: one parse, not one per key).
pub(crate) fn locate_in(
    doc: &toml_edit::ImDocument<String>,
    text: &str,
    key: &[String],
) -> Option<(usize, usize)> {
    use toml_edit::{Item, Value};
    enum Node<'a> {
        Item(&'a Item),
        Table(&'a dyn toml_edit::TableLike),
        Value(&'a Value),
    }
    let mut best: Option<usize> = None;
    let mut cur = Node::Item(doc.as_item());
    for k in key {
        let idx = k.parse::<usize>().ok();
        cur = match (cur, idx) {
            (Node::Item(Item::ArrayOfTables(a)), Some(i)) => {
                let t = a.get(i)?;
                if let Some(s) = t.span() {
                    best = Some(s.start);
                }
                Node::Table(t)
            }
            (Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)), Some(i)) => {
                let v = a.get(i)?;
                if let Some(s) = v.span() {
                    best = Some(s.start);
                }
                Node::Value(v)
            }
            (Node::Item(it), None) => {
                let (kk, v) = it.as_table_like()?.get_key_value(k)?;
                if let Some(s) = kk.span() {
                    best = Some(s.start);
                }
                Node::Item(v)
            }
            (Node::Table(t), None) => {
                let (kk, v) = t.get_key_value(k)?;
                if let Some(s) = kk.span() {
                    best = Some(s.start);
                }
                Node::Item(v)
            }
            (Node::Value(Value::InlineTable(t)), None) => {
                let (kk, v) = t.get_key_value(k)?;
                if let Some(s) = kk.span() {
                    best = Some(s.start);
                }
                Node::Item(v)
            }
            _ => break,
        };
    }
    best.map(|b| line_col(text, b))
}

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
        Err(invalid(
            key,
            format!(
                "{v:?} is not allowed; expected one of: {}",
                allowed.join(", ")
            ),
        ))
    }
}

fn validate(l: &Loaded) -> Result<(), Invalid> {
    let p = &l.profile;
    if let Some(e) = control_chars(&l.text).into_iter().next() {
        return Err(e);
    }
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
    one_of(&["suite"], &p.suite, SUITES)?;
    one_of(&["architecture"], &p.architecture, ARCHES)?;
    if p.bootstrapper == Bootstrapper::Debootstrap {
        one_of(&["variant"], &p.variant, DEBOOTSTRAP_VARIANTS)?;
    } else {
        one_of(&["variant"], &p.variant, VARIANTS)?;
    }
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
    check_identity(p)?;
    if !is_host(&p.nfs.server) {
        return Err(invalid(
            &["nfs", "server"],
            format!("{:?} is not an IPv4 address or host name", p.nfs.server),
        ));
    }
    one_of(&["nfs", "root_mode"], &p.nfs.root_mode, &["ro", "rw"])?;
    check_options(&["nfs", "options"], &p.nfs.options)?;
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
    for (i, s) in p.hostname.sources.iter().enumerate() {
        one_of(
            &["hostname", "sources", &i.to_string()],
            s,
            &["hosts", "dhcp", "dns", "pattern"],
        )?;
    }
    if let Err(e) = render_pattern(
        &p.hostname.pattern,
        Ipv4Addr::new(10, 0, 2, 15),
        "52:54:00:12:34:56",
    ) {
        return Err(invalid(&["hostname", "pattern"], e.to_string()));
    }
    one_of(&["logs", "layout"], &p.logs.layout, &["per-host", "local"])?;
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
    if p.boot.prompt_timeout > 600 {
        return Err(invalid(
            &["boot", "prompt_timeout"],
            "expected 0 to 600 seconds",
        ));
    }
    one_of(
        &["initramfs", "backend"],
        &p.initramfs.backend,
        &["nfsroot", "initramfs-tools"],
    )?;
    one_of(
        &["initramfs", "compression"],
        &p.initramfs.compression,
        &["gzip", "zstd"],
    )?;
    for (field, list) in [
        ("modules", &p.initramfs.modules),
        ("exclude_modules", &p.initramfs.exclude_modules),
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

/// Render a hostname pattern for an address and MAC.
///
/// Placeholders: `{ip.N}` (octet N, 0-3), `{ip.N:0W}` (zero-padded to W),
/// `{ip.hex}` (PXELINUX hex name, lower case), `{mac}` (hex digits only).
pub fn render_pattern(pattern: &str, ip: Ipv4Addr, mac: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find('}')
            .ok_or_else(|| anyhow!("unclosed '{{' in {pattern:?}"))?
            + i;
        let ph = &rest[i + 1..end];
        let (name, fmt) = ph.split_once(':').unwrap_or((ph, ""));
        let val = match name {
            "ip.0" | "ip.1" | "ip.2" | "ip.3" => {
                let o = ip.octets()[(name.as_bytes()[3] - b'0') as usize];
                match fmt {
                    "" => o.to_string(),
                    f if f.len() == 2 && f.starts_with('0') && f.as_bytes()[1].is_ascii_digit() => {
                        format!("{o:0w$}", w = (f.as_bytes()[1] - b'0') as usize)
                    }
                    f => bail!(
                        "placeholder {{{ph}}}: unknown format {f:?}; expected :0W, e.g. {{ip.3:03}}"
                    ),
                }
            }
            "ip.hex" => crate::pxelinux::hex_ip(ip).to_ascii_lowercase(),
            "mac" => mac.replace([':', '-'], "").to_ascii_lowercase(),
            _ => bail!(
                "unknown placeholder {{{ph}}} in {pattern:?}; allowed: {{ip.0}}..{{ip.3}}, {{ip.N:0W}}, {{ip.hex}}, {{mac}}"
            ),
        };
        out.push_str(&val);
        rest = &rest[end + 1..];
    }
    if rest.contains('}') {
        bail!("unmatched '}}' in {pattern:?}");
    }
    out.push_str(rest);
    if !is_hostname(&out) || out.contains('.') {
        bail!(
            "{pattern:?} gives {out:?}, which is not a valid host name (letters, digits and -, \
             not starting or ending with -)"
        );
    }
    Ok(out)
}

impl Profile {
    /// The logs export as nodes mount it, if any (`server:/path`).
    pub fn logs_export(&self, layout: &crate::image::Layout) -> Option<String> {
        if self.logs.layout != "per-host" {
            return None;
        }
        if !self.logs.export.is_empty() {
            return Some(self.logs.export.clone());
        }
        if self.nfs.root_mode == "ro" {
            return Some(format!(
                "{}:{}",
                self.nfs.server,
                layout.logs_dir(&self.name).display()
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Loaded> {
        parse(text, Path::new("t.toml"), Path::new("."))
    }

    #[test]
    fn builtins_parse() {
        let etc = tempfile::tempdir().unwrap();
        for (n, _) in BUILTIN {
            let l = load(n, etc.path()).unwrap();
            assert_eq!(l.origin, PathBuf::from(format!("<builtin>/{n}.toml")));
            // No hooks: a built-in profile has no directory of its own.
            assert_eq!(l.profile.hooks, Hooks::default(), "{n}");
        }
    }

    #[test]
    fn etc_profiles_come_before_builtins() {
        let etc = tempfile::tempdir().unwrap();
        let dir = etc.path().join(ETC_PROFILES);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("minimal.toml"), "name = \"site\"\n").unwrap();
        let l = load("minimal", etc.path()).unwrap();
        assert_eq!(l.profile.name, "site");
        assert_eq!(l.origin, dir.join("minimal.toml"));
        let e = load("nosuch", etc.path()).unwrap_err().to_string();
        assert!(e.contains("./nosuch.toml"), "{e}");
        assert!(load("../x", etc.path()).is_err());
    }

    #[test]
    fn defaults_fill_in() {
        let l = p("name = \"x\"\n").unwrap();
        assert_eq!(l.profile.suite, "bookworm");
        assert_eq!(l.profile.nfs.root_mode, "ro");
        assert_eq!(l.profile.tmpfs.len(), 2);
        assert_eq!(l.profile.boot.keep_kernels, 3);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = p("name = \"x\"\n[nfs]\nservr = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:3:1:"), "{e}");
        assert!(e.contains("servr"), "{e}");
        assert!(e.contains("expected one of"), "{e}");
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

    #[test]
    fn syntax_error_has_position() {
        let e = p("name = \"x\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:1:"), "{e}");
    }

    #[test]
    fn patterns() {
        let ip = Ipv4Addr::new(10, 0, 2, 15);
        assert_eq!(render_pattern("node{ip.3:03}", ip, "").unwrap(), "node015");
        assert_eq!(render_pattern("n{ip.2}-{ip.3}", ip, "").unwrap(), "n2-15");
        assert_eq!(render_pattern("h{ip.hex}", ip, "").unwrap(), "h0a00020f");
        assert_eq!(
            render_pattern("m{mac}", ip, "52:54:00:AA:bb:01").unwrap(),
            "m525400aabb01"
        );
        assert!(render_pattern("n{ip.4}", ip, "").is_err());
        assert!(render_pattern("n{ip.3", ip, "").is_err());
        assert!(render_pattern("bad_{ip.3}", ip, "").is_err());
    }
}
