//! The cluster inventory: one TOML table of hosts from which every per-host
//! file is generated, so adding a node is one line and one command.
//!
//! The file has a `[cluster]` section (subnet, gateway, DNS, domain, NFS and
//! TFTP server, default image), optional `[groups.NAME]` defaults, and a
//! `[hosts]` table with one inline table per host, keyed by name, so TOML
//! itself rejects a duplicate name. It is parsed like a profile: serde with
//! `deny_unknown_fields` gives shape errors with a span, then `resolve`
//! checks the whole (MAC syntax, duplicate MACs and addresses, addresses
//! outside the subnet, unknown groups, hosts without an image, kernel
//! versions and boot file in the syntax PXELINUX, dhcpd and dnsmasq need,
//! and no control character in any key or value of the text) and every
//! error names `file:line:col` and the key. Values are resolved once, host
//! over group over cluster, into [`Inventory`]; everything downstream reads
//! only that. Edits ([`edit`]) go through `toml_edit`, so comments and
//! layout of a hand-kept file survive, and the edited text is re-validated
//! before it is written atomically. [`render`] turns an inventory into text
//! (pure functions); [`sync`] compares that text with the disk and writes
//! what differs.
//!
//! MACs are stored in one canonical form, lower-case with colons; input may
//! also use dashes, upper case, or Cisco's `aabb.ccdd.eeff`.

pub mod edit;
pub mod render;
pub mod sync;

pub use edit::{HostsCmd, HostsOutcome, run_hosts};
pub use sync::{
    SyncOptions, SyncReport, host_boot_config, image_hosts_into, run_sync, run_sync_with,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where the inventory lives unless `--inventory` / `NFSROOT_INVENTORY`.
pub const DEFAULT_PATH: &str = "/etc/nfsroot/inventory.toml";

/// A minimal inventory, shown when the file does not exist yet.
pub const EXAMPLE: &str = "\
[cluster]
subnet = \"10.18.1.0/24\"
gateway = \"10.18.1.1\"
dns = [\"10.18.1.1\"]
domain = \"cluster.example\"
nfs_server = \"10.18.1.1\"
image = \"minimal\"

[hosts]
n001 = { mac = \"52:54:00:00:01:01\", ip = \"10.18.1.2\" }
";

// ---------------------------------------------------------------- file shape

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    cluster: ClusterSpec,
    #[serde(default)]
    groups: BTreeMap<String, GroupSpec>,
    #[serde(default)]
    hosts: BTreeMap<String, HostSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSpec {
    subnet: String,
    #[serde(default)]
    gateway: Option<Ipv4Addr>,
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
    #[serde(default)]
    domain: String,
    nfs_server: Ipv4Addr,
    #[serde(default)]
    tftp_server: Option<Ipv4Addr>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default = "d_boot_file")]
    boot_file: String,
    #[serde(default = "d_true")]
    dnsmasq_tftp: bool,
    #[serde(default)]
    host_files: HostFiles,
}

fn d_boot_file() -> String {
    "pxelinux.0".into()
}
fn d_true() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    kernel: Option<String>,
    #[serde(default)]
    cmdline: Option<String>,
    #[serde(default)]
    boot: Option<BootMode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Macs {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSpec {
    mac: Macs,
    ip: Ipv4Addr,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    kernel: Option<String>,
    #[serde(default)]
    cmdline: Option<String>,
    #[serde(default)]
    boot: Option<BootMode>,
}

// ------------------------------------------------------------ resolved model

/// What a host boots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// Its image over NFS.
    #[default]
    Image,
    /// The local disk.
    Localboot,
    /// Nothing: PXELINUX says why and returns to the firmware.
    Disabled,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Image => "image",
            BootMode::Localboot => "localboot",
            BootMode::Disabled => "disabled",
        }
    }
}

/// Which hosts get per-host PXELINUX files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostFiles {
    /// Only hosts whose config differs from `pxelinux.cfg/default`.
    #[default]
    Differing,
    /// Every host (its boot does not depend on which image owns default).
    All,
}

/// An IPv4 subnet, `network/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Parse `10.18.1.0/24`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| {
            format!("{s:?} is not a subnet; expected ADDRESS/PREFIX like 10.18.1.0/24")
        })?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{p:?} is not a prefix length (0-32)"))?;
        let net = Subnet {
            network: addr,
            prefix,
        };
        let masked = Ipv4Addr::from(u32::from(addr) & net.mask_bits());
        if masked != addr {
            return Err(format!(
                "{s} has host bits set; did you mean {masked}/{prefix}?"
            ));
        }
        Ok(net)
    }

    fn mask_bits(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask_bits())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask_bits())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask_bits() == u32::from(self.network)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Cluster-wide settings.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub subnet: Subnet,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// DNS domain of the nodes; empty for none.
    pub domain: String,
    pub nfs_server: Ipv4Addr,
    /// Defaults to the NFS server.
    pub tftp_server: Ipv4Addr,
    /// Image of hosts that name none (and whose group names none).
    pub image: Option<String>,
    /// The DHCP boot file, relative to the TFTP root.
    pub boot_file: String,
    /// Whether the dnsmasq config also enables its TFTP server.
    pub dnsmasq_tftp: bool,
    pub host_files: HostFiles,
}

/// A group's defaults, as written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Group {
    pub image: Option<String>,
    pub kernel: Option<String>,
    pub cmdline: Option<String>,
    pub boot: Option<BootMode>,
}

/// One host with host, group and cluster values resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub name: String,
    /// Canonical (lower case, colons); the first is the primary NIC.
    pub macs: Vec<String>,
    pub ip: Ipv4Addr,
    pub group: Option<String>,
    /// Effective image (`None` only for hosts that do not boot one).
    pub image: Option<String>,
    /// Pinned kernel version, if any.
    pub kernel: Option<String>,
    /// Extra kernel command line: the group's, then the host's.
    pub cmdline: String,
    pub boot: BootMode,
    /// Line of the host's key in the inventory file.
    pub line: usize,
}

impl Host {
    /// `name.domain` when the cluster has a domain, else the name.
    pub fn fqdn(&self, c: &Cluster) -> String {
        if c.domain.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.name, c.domain)
        }
    }
}

/// A parsed, validated inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// Where it was read from (for messages and generated headers).
    pub path: PathBuf,
    pub cluster: Cluster,
    pub groups: BTreeMap<String, Group>,
    /// In file order.
    pub hosts: Vec<Host>,
}

impl Inventory {
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The host that has `mac` (canonical), if any.
    pub fn host_by_mac(&self, mac: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.macs.iter().any(|m| m == mac))
    }
}

// ------------------------------------------------------------------ loading

/// Read and validate the inventory at `path`.
pub fn load(path: &Path) -> Result<Inventory> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no inventory at {}; create it (or pass --inventory FILE), e.g.:\n{EXAMPLE}",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse(&text, path)
}

/// Parse and validate inventory text; `origin` names it in errors and in
/// the comments of generated files, so it must be one line.
pub fn parse(text: &str, origin: &Path) -> Result<Inventory> {
    if origin.to_string_lossy().contains(char::is_control) {
        bail!(
            "inventory path {:?} holds a newline or another control character; \
             rename the file (its path is quoted in generated files)",
            origin
        );
    }
    let spec: FileSpec = match toml::from_str(text) {
        Ok(s) => s,
        Err(e) => {
            let start = e.span().map_or(0, |s| s.start);
            let (line, col) = crate::profile::line_col(text, start);
            let key = crate::profile::key_at(text, start)
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            let mut msg = e.message().trim_end().to_string();
            if msg.contains("untagged enum Macs") {
                msg = "expected a MAC address string or a list of them".into();
            }
            bail!("{}:{line}:{col}: {key}{msg}", origin.display());
        }
    };
    let order = host_order(text);
    // Control characters are checked on the text, where every key and
    // value (including ones the model drops) can be named.
    let mut errs = crate::profile::control_chars(text);
    match resolve(spec, &order, origin) {
        Ok(inv) if errs.is_empty() => Ok(inv),
        Ok(_) => Err(located(text, origin, errs)),
        Err(e) => {
            errs.extend(e);
            Err(located(text, origin, errs))
        }
    }
}

/// Validation failures as `file:line:col: key: message` lines, in file
/// order, at most 20.
fn located(text: &str, origin: &Path, errs: Vec<Invalid>) -> anyhow::Error {
    // Locating an error re-reads the document: only the first ones (they
    // come in file order) are located, so a file with thousands of bad
    // hosts is refused in time linear in its size.
    let total = errs.len();
    let doc = toml_edit::ImDocument::parse(text.to_string()).ok();
    let mut located: Vec<(usize, usize, String)> = errs
        .into_iter()
        .take(40)
        .map(|e| {
            let (l, c) = doc
                .as_ref()
                .and_then(|d| crate::profile::locate_in(d, text, &e.key))
                .unwrap_or((1, 1));
            (
                l,
                c,
                format!(
                    "{}:{l}:{c}: {}: {}",
                    origin.display(),
                    e.key.join("."),
                    e.msg
                ),
            )
        })
        .collect();
    located.sort();
    located.dedup();
    let n = located.len() + (total - total.min(40));
    let mut msg: Vec<String> = located.into_iter().take(20).map(|e| e.2).collect();
    if n > 20 {
        msg.push(format!("... and {} more errors", n - 20));
    }
    anyhow::anyhow!("{}", msg.join("\n"))
}

/// Host names in file order with the line of their key.
fn host_order(text: &str) -> Vec<(String, usize)> {
    let Ok(doc) = toml_edit::ImDocument::parse(text.to_string()) else {
        return vec![];
    };
    let Some(hosts) = doc.get("hosts").and_then(|h| h.as_table_like()) else {
        return vec![];
    };
    // Line starts once, then a binary search per host: a line count from
    // the top for each of 20,000 hosts would be quadratic.
    let starts: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
    let line_of = |off: usize| starts.partition_point(|&i| i < off) + 1;
    hosts
        .iter()
        .map(|(k, _)| {
            let line = hosts
                .get_key_value(k)
                .and_then(|(kk, _)| kk.span())
                .map(|s| line_of(s.start))
                .unwrap_or(0);
            (k.to_string(), line)
        })
        .collect()
}

use crate::profile::{Invalid, invalid};

fn resolve(
    spec: FileSpec,
    order: &[(String, usize)],
    origin: &Path,
) -> Result<Inventory, Vec<Invalid>> {
    let mut errs = Vec::new();
    let c = &spec.cluster;
    let subnet = match Subnet::parse(&c.subnet) {
        Ok(s) => Some(s),
        Err(m) => {
            errs.push(invalid(&["cluster", "subnet"], m));
            None
        }
    };
    if let (Some(net), Some(gw)) = (subnet, c.gateway)
        && !net.contains(gw)
    {
        errs.push(invalid(
            &["cluster", "gateway"],
            format!("{gw} is outside the cluster subnet {net}"),
        ));
    }
    if !c.domain.is_empty()
        && let Err(m) = check_domain(&c.domain)
    {
        errs.push(invalid(&["cluster", "domain"], m));
    }
    if let Some(img) = &c.image
        && let Err(e) = crate::image::check_name(img)
    {
        errs.push(invalid(&["cluster", "image"], format!("{e:#}")));
    }
    if !c
        .boot_file
        .split('/')
        .all(|p| crate::pxelinux::is_name(p) && p != "." && p != "..")
    {
        errs.push(invalid(
            &["cluster", "boot_file"],
            format!(
                "{:?} is not a plain path relative to the TFTP root; expected names of \
                 A-Z a-z 0-9 . + ~ _ - joined by /, e.g. pxelinux.0 or bios/lpxelinux.0 \
                 (no quotes, backslashes, commas or spaces)",
                c.boot_file
            ),
        ));
    }
    for (gname, g) in &spec.groups {
        if let Err(m) = check_host_name(gname) {
            errs.push(invalid(&["groups", gname], format!("group name: {m}")));
        }
        check_common(
            &mut errs,
            &["groups", gname],
            g.image.as_deref(),
            g.kernel.as_deref(),
        );
    }

    let mut hosts = Vec::new();
    let mut by_mac: HashMap<String, String> = HashMap::new();
    let mut by_ip: HashMap<Ipv4Addr, String> = HashMap::new();
    let mut names: Vec<(String, usize)> = order.to_vec();
    // Anything serde saw that the ordered walk missed (should not happen).
    // A set, not a scan per host: 20,000 hosts must not take minutes.
    let seen: std::collections::HashSet<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    for k in spec.hosts.keys() {
        if !seen.contains(k.as_str()) {
            names.push((k.clone(), 0));
        }
    }
    for (name, line) in names {
        let Some(h) = spec.hosts.get(&name) else {
            continue;
        };
        let key = |f: &str| vec!["hosts".to_string(), name.clone(), f.to_string()];
        let push = |errs: &mut Vec<Invalid>, k: Vec<String>, m: String| {
            errs.push(Invalid { key: k, msg: m })
        };
        if let Err(m) = check_host_name(&name) {
            push(
                &mut errs,
                vec!["hosts".into(), name.clone()],
                format!("host name: {m}"),
            );
        }
        // MACs.
        let raw: Vec<String> = match &h.mac {
            Macs::One(m) => vec![m.clone()],
            Macs::Many(v) => v.clone(),
        };
        if raw.is_empty() {
            push(
                &mut errs,
                key("mac"),
                "at least one MAC address is needed".into(),
            );
        }
        let mut macs = Vec::new();
        for (i, m) in raw.iter().enumerate() {
            let mut k = key("mac");
            if matches!(h.mac, Macs::Many(_)) {
                k.push(i.to_string());
            }
            match canonical_mac(m) {
                Ok(cm) => {
                    if let Some(other) = by_mac.get(&cm) {
                        let what = if *other == name {
                            "is listed twice for this host".to_string()
                        } else {
                            format!("is also the MAC of host {other}")
                        };
                        push(&mut errs, k, format!("{cm} {what}"));
                    } else {
                        by_mac.insert(cm.clone(), name.clone());
                        macs.push(cm);
                    }
                }
                Err(e) => push(&mut errs, k, e),
            }
        }
        // Address.
        if let Some(net) = subnet {
            let servers = [
                ("gateway", c.gateway),
                ("NFS server", Some(c.nfs_server)),
                ("TFTP server", c.tftp_server),
            ];
            if let Err(m) = check_ip_with(h.ip, &net, servers) {
                push(&mut errs, key("ip"), m);
            }
        }
        if let Some(other) = by_ip.get(&h.ip) {
            push(
                &mut errs,
                key("ip"),
                format!("{} is also the address of host {other}", h.ip),
            );
        } else {
            by_ip.insert(h.ip, name.clone());
        }
        // Group and resolved values.
        let group = match &h.group {
            Some(g) => match spec.groups.get(g) {
                Some(gs) => Some(gs.clone()),
                None => {
                    let known: Vec<&str> = spec.groups.keys().map(String::as_str).collect();
                    push(
                        &mut errs,
                        key("group"),
                        format!(
                            "no group {g:?} in [groups]{}",
                            if known.is_empty() {
                                String::new()
                            } else {
                                format!(" (groups: {})", known.join(", "))
                            }
                        ),
                    );
                    None
                }
            },
            None => None,
        };
        let g = group.unwrap_or_default();
        let hk = ["hosts", name.as_str()];
        check_common(&mut errs, &hk, h.image.as_deref(), h.kernel.as_deref());
        let image = h.image.clone().or(g.image.clone()).or(c.image.clone());
        let boot = h.boot.or(g.boot).unwrap_or_default();
        if boot == BootMode::Image && image.is_none() {
            push(
                &mut errs,
                vec!["hosts".into(), name.clone()],
                "no image: set image on the host, its group, or [cluster]".into(),
            );
        }
        let kernel = h
            .kernel
            .clone()
            .or(g.kernel.clone())
            .filter(|k| !k.is_empty());
        let cmdline = [g.cmdline.as_deref(), h.cmdline.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        hosts.push(Host {
            name: name.clone(),
            macs,
            ip: h.ip,
            group: h.group.clone(),
            image,
            kernel,
            cmdline,
            boot,
            line,
        });
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let subnet = subnet.expect("no errors, so the subnet parsed");
    Ok(Inventory {
        path: origin.to_path_buf(),
        cluster: Cluster {
            subnet,
            gateway: c.gateway,
            dns: c.dns.clone(),
            domain: c.domain.clone(),
            nfs_server: c.nfs_server,
            tftp_server: c.tftp_server.unwrap_or(c.nfs_server),
            image: c.image.clone(),
            boot_file: c.boot_file.clone(),
            dnsmasq_tftp: c.dnsmasq_tftp,
            host_files: c.host_files,
        },
        groups: spec
            .groups
            .into_iter()
            .map(|(k, g)| {
                (
                    k,
                    Group {
                        image: g.image,
                        kernel: g.kernel,
                        cmdline: g.cmdline,
                        boot: g.boot,
                    },
                )
            })
            .collect(),
        hosts,
    })
}

fn check_common(errs: &mut Vec<Invalid>, at: &[&str], image: Option<&str>, kernel: Option<&str>) {
    let with = |f: &str| {
        let mut k: Vec<&str> = at.to_vec();
        k.push(f);
        k.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    if let Some(i) = image
        && let Err(e) = crate::image::check_name(i)
    {
        errs.push(Invalid {
            key: with("image"),
            msg: format!("{e:#}"),
        });
    }
    if let Some(k) = kernel
        && let Err(msg) = check_kernel(k)
    {
        errs.push(Invalid {
            key: with("kernel"),
            msg,
        });
    }
}

/// A pinned kernel version (empty: none): it becomes a PXELINUX label and
/// file name, so `[A-Za-z0-9.+~_-]+` only.
pub fn check_kernel(k: &str) -> Result<(), String> {
    if k.is_empty() || crate::pxelinux::is_name(k) {
        Ok(())
    } else {
        Err(format!(
            "{k:?} is not a kernel version; expected A-Z a-z 0-9 . + ~ _ - only, \
             e.g. 6.1.0-18-amd64"
        ))
    }
}

/// A kernel command line: one line of printable text (it follows
/// PXELINUX's `APPEND`).
pub fn check_cmdline(c: &str) -> Result<(), String> {
    match c.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(ch) => Err(format!(
            "the kernel command line holds the control character U+{:04X}; it must be \
             one line of printable text",
            ch as u32
        )),
    }
}

/// An address a host may have: inside the subnet, not its network or
/// broadcast address, not a server's.
fn check_ip_with(
    ip: Ipv4Addr,
    net: &Subnet,
    servers: [(&str, Option<Ipv4Addr>); 3],
) -> Result<(), String> {
    if !net.contains(ip) {
        return Err(format!("{ip} is outside the cluster subnet {net}"));
    }
    if net.prefix < 31 && (ip == net.network || ip == net.broadcast()) {
        return Err(format!("{ip} is the network or broadcast address of {net}"));
    }
    for (what, a) in servers {
        if a == Some(ip) {
            return Err(format!("{ip} is the cluster's {what}"));
        }
    }
    Ok(())
}

impl Cluster {
    /// Whether `ip` may be a host's address (see [`check_ip_with`]).
    pub fn check_ip(&self, ip: Ipv4Addr) -> Result<(), String> {
        check_ip_with(
            ip,
            &self.subnet,
            [
                ("gateway", self.gateway),
                ("NFS server", Some(self.nfs_server)),
                ("TFTP server", Some(self.tftp_server)),
            ],
        )
    }
}

/// Host names are single DNS labels: lower-case letters, digits and `-`.
pub fn check_host_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 63
        && !n.starts_with('-')
        && !n.ends_with('-')
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{n:?} is not a host name: use 1-63 characters a-z 0-9 -, not starting or ending with -"
        ))
    }
}

fn check_domain(d: &str) -> Result<(), String> {
    if d.len() > 253 || d.split('.').any(|l| check_host_name(l).is_err()) {
        return Err(format!(
            "{d:?} is not a DNS domain: dot-separated labels of a-z 0-9 -"
        ));
    }
    Ok(())
}

/// Parse a MAC in any accepted form into the canonical `aa:bb:cc:dd:ee:ff`.
/// Accepts colons or dashes between octets, Cisco dotted `aabb.ccdd.eeff`,
/// or 12 bare hex digits, in either case.
pub fn canonical_mac(s: &str) -> Result<String, String> {
    let t = s.trim();
    let bad = |why: &str| {
        Err(format!(
            "{t:?} is not a MAC address ({why}); use aa:bb:cc:dd:ee:ff, \
             AA-BB-CC-DD-EE-FF or aabb.ccdd.eeff"
        ))
    };
    let hex: String = if t.contains(':') || t.contains('-') {
        let sep = if t.contains(':') { ':' } else { '-' };
        let parts: Vec<&str> = t.split(sep).collect();
        if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
            return bad("expected 6 groups of 2 hex digits");
        }
        parts.concat()
    } else if t.contains('.') {
        let parts: Vec<&str> = t.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
            return bad("expected 3 groups of 4 hex digits");
        }
        parts.concat()
    } else {
        t.to_string()
    };
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad("expected 12 hex digits");
    }
    let hex = hex.to_ascii_lowercase();
    let first = u8::from_str_radix(&hex[..2], 16).expect("checked hex");
    if first & 1 == 1 {
        return bad("a multicast address cannot be a NIC's");
    }
    if hex == "000000000000" {
        return bad("all zero");
    }
    let octets: Vec<&str> = (0..6).map(|i| &hex[2 * i..2 * i + 2]).collect();
    Ok(octets.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_forms() {
        for s in [
            "52:54:00:ab:cd:01",
            "52-54-00-AB-CD-01",
            "5254.00ab.cd01",
            "525400ABCD01",
            " 52:54:00:Ab:cD:01 ",
        ] {
            assert_eq!(canonical_mac(s).unwrap(), "52:54:00:ab:cd:01", "{s}");
        }
        for s in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0g",
            "5254.00ab.cd0",
            "52:54-00:ab:cd:01",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "",
        ] {
            assert!(canonical_mac(s).is_err(), "{s}");
        }
    }

    #[test]
    fn subnets() {
        let n = Subnet::parse("10.18.1.0/24").unwrap();
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 18, 1, 255));
        assert!(n.contains("10.18.1.77".parse().unwrap()));
        assert!(!n.contains("10.18.2.1".parse().unwrap()));
        assert!(
            Subnet::parse("10.18.1.5/24")
                .unwrap_err()
                .contains("10.18.1.0/24")
        );
        assert!(Subnet::parse("10.18.1.0").is_err());
        assert!(Subnet::parse("10.18.1.0/33").is_err());
    }

    const INV: &str = "\
[cluster]
subnet = \"10.18.1.0/24\"
gateway = \"10.18.1.1\"
nfs_server = \"10.18.1.1\"
image = \"minimal\"

[groups.gpu]
image = \"cuda\"
cmdline = \"nomodeset\"

[hosts]
n2 = { mac = \"52-54-00-00-00-02\", ip = \"10.18.1.3\", group = \"gpu\", cmdline = \"quiet\" }
n1 = { mac = [\"5254.0000.0001\", \"52:54:00:00:01:01\"], ip = \"10.18.1.2\" }
";

    #[test]
    fn resolves_in_file_order() {
        let inv = parse(INV, Path::new("inv.toml")).unwrap();
        let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["n2", "n1"]);
        let n2 = &inv.hosts[0];
        assert_eq!(n2.image.as_deref(), Some("cuda"));
        assert_eq!(n2.cmdline, "nomodeset quiet");
        assert_eq!(n2.macs, ["52:54:00:00:00:02"]);
        assert_eq!(n2.line, 12);
        let n1 = &inv.hosts[1];
        assert_eq!(n1.image.as_deref(), Some("minimal"));
        assert_eq!(n1.macs, ["52:54:00:00:00:01", "52:54:00:00:01:01"]);
        assert_eq!(inv.cluster.tftp_server, Ipv4Addr::new(10, 18, 1, 1));
    }

    #[test]
    fn errors_name_line_and_key() {
        let bad = INV.replace("10.18.1.2\"", "10.18.1.3\"");
        let e = format!("{:#}", parse(&bad, Path::new("inv.toml")).unwrap_err());
        assert!(
            e.contains("inv.toml:13:")
                && e.contains("hosts.n1.ip: 10.18.1.3 is also the address of host n2"),
            "{e}"
        );
        let bad = INV.replace("\"52:54:00:00:01:01\"", "\"52:54:00:00:00:02\"");
        let e = format!("{:#}", parse(&bad, Path::new("inv.toml")).unwrap_err());
        assert!(
            e.contains("hosts.n1.mac.1: 52:54:00:00:00:02 is also the MAC of host n2"),
            "{e}"
        );
    }
}
