//! The checks that turn the file's shape into a valid [`Inventory`].
//!
//! [`resolve`] checks the whole file in a few small steps (the cluster
//! section, the groups, then each host in file order: name, MACs,
//! address, group, image and kernel) and collects every failure as an
//! [`Invalid`] at its key path, so one run names every bad line; values
//! are resolved host over group over cluster as the host is checked. The
//! single-value checks (`check_*`, [`canonical_mac`]) are public: `hosts
//! add/set/import` use the same ones before they edit the file.

use super::model::{
    BootMode, Cluster, ClusterSpec, FileSpec, Group, GroupSpec, Host, HostSpec, Inventory, Macs,
    Subnet,
};
use crate::profile::{Invalid, invalid};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;

/// Check a parsed file and resolve it; `order` is the hosts' file order
/// with the line of each key (see [`super::parse`]).
pub(super) fn resolve(
    spec: FileSpec,
    order: &[(String, usize)],
    origin: &Path,
) -> Result<Inventory, Vec<Invalid>> {
    let mut errs = Vec::new();
    let subnet = check_cluster(&spec.cluster, &mut errs);
    check_groups(&spec.groups, &mut errs);
    let mut taken = Taken::default();
    let mut hosts = Vec::new();
    for (name, line) in hosts_in_order(&spec, order) {
        let Some(h) = spec.hosts.get(&name) else {
            continue;
        };
        let host = HostCheck {
            spec: &spec,
            subnet,
            name: &name,
            h,
        };
        hosts.push(host.resolve(line, &mut taken, &mut errs));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let subnet = subnet.expect("no errors, so the subnet parsed");
    Ok(Inventory {
        path: origin.to_path_buf(),
        cluster: cluster(&spec.cluster, subnet),
        groups: groups(spec.groups),
        hosts,
    })
}

/// The `[cluster]` checks; returns the subnet when it parsed.
fn check_cluster(c: &ClusterSpec, errs: &mut Vec<Invalid>) -> Option<Subnet> {
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
    if let Err(m) = check_boot_file(&c.boot_file) {
        errs.push(invalid(&["cluster", "boot_file"], m));
    }
    subnet
}

/// The DHCP boot file: a plain path relative to the TFTP root.
fn check_boot_file(f: &str) -> Result<(), String> {
    if f.split('/')
        .all(|p| crate::pxelinux::is_name(p) && p != "." && p != "..")
    {
        return Ok(());
    }
    Err(format!(
        "{f:?} is not a plain path relative to the TFTP root; expected names of \
         A-Z a-z 0-9 . + ~ _ - joined by /, e.g. pxelinux.0 or bios/lpxelinux.0 \
         (no quotes, backslashes, commas or spaces)"
    ))
}

fn check_groups(groups: &BTreeMap<String, GroupSpec>, errs: &mut Vec<Invalid>) {
    for (gname, g) in groups {
        if let Err(m) = check_host_name(gname) {
            errs.push(invalid(&["groups", gname], format!("group name: {m}")));
        }
        check_common(
            errs,
            &["groups", gname],
            g.image.as_deref(),
            g.kernel.as_deref(),
        );
    }
}

/// Host names in file order, then any serde saw that the ordered walk
/// missed (should not happen) with line 0.
fn hosts_in_order(spec: &FileSpec, order: &[(String, usize)]) -> Vec<(String, usize)> {
    let mut names: Vec<(String, usize)> = order.to_vec();
    // A set, not a scan per host: 20,000 hosts must not take minutes.
    let seen: HashSet<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    for k in spec.hosts.keys() {
        if !seen.contains(k.as_str()) {
            names.push((k.clone(), 0));
        }
    }
    names
}

/// MACs and addresses of the hosts checked so far, with their owner.
#[derive(Default)]
struct Taken {
    macs: HashMap<String, String>,
    ips: HashMap<Ipv4Addr, String>,
}

/// One host being checked against the file and the hosts before it.
struct HostCheck<'a> {
    spec: &'a FileSpec,
    subnet: Option<Subnet>,
    name: &'a str,
    h: &'a HostSpec,
}

impl HostCheck<'_> {
    /// Check every field (errors in the order of the fields) and resolve
    /// the host over its group and the cluster.
    fn resolve(&self, line: usize, taken: &mut Taken, errs: &mut Vec<Invalid>) -> Host {
        let (name, h, c) = (self.name, self.h, &self.spec.cluster);
        if let Err(m) = check_host_name(name) {
            errs.push(self.err(&[], format!("host name: {m}")));
        }
        let macs = self.macs(taken, errs);
        self.ip(taken, errs);
        let g = self.group(errs).unwrap_or_default();
        check_common(
            errs,
            &["hosts", name],
            h.image.as_deref(),
            h.kernel.as_deref(),
        );
        let image = h.image.clone().or(g.image.clone()).or(c.image.clone());
        let boot = h.boot.or(g.boot).unwrap_or_default();
        if boot == BootMode::Image && image.is_none() {
            errs.push(self.err(
                &[],
                "no image: set image on the host, its group, or [cluster]".into(),
            ));
        }
        Host {
            name: name.to_string(),
            macs,
            ip: h.ip,
            group: h.group.clone(),
            image,
            kernel: h.kernel.clone().or(g.kernel).filter(|k| !k.is_empty()),
            cmdline: join_cmdline(g.cmdline.as_deref(), h.cmdline.as_deref()),
            boot,
            firmware: h.firmware,
            line,
        }
    }

    /// A failure at `hosts.NAME.<field...>`.
    fn err(&self, field: &[&str], msg: String) -> Invalid {
        let mut key = vec!["hosts".to_string(), self.name.to_string()];
        key.extend(field.iter().map(|f| f.to_string()));
        Invalid { key, msg }
    }

    /// The host's MACs, canonical; each must be new to the file.
    fn macs(&self, taken: &mut Taken, errs: &mut Vec<Invalid>) -> Vec<String> {
        let raw: Vec<String> = match &self.h.mac {
            Macs::One(m) => vec![m.clone()],
            Macs::Many(v) => v.clone(),
        };
        if raw.is_empty() {
            errs.push(self.err(&["mac"], "at least one MAC address is needed".into()));
        }
        let mut macs = Vec::new();
        for (i, m) in raw.iter().enumerate() {
            let index = i.to_string();
            let field: &[&str] = match self.h.mac {
                Macs::Many(_) => &["mac", &index],
                Macs::One(_) => &["mac"],
            };
            match canonical_mac(m) {
                Ok(cm) => match taken.macs.get(&cm) {
                    Some(other) => {
                        let what = if other == self.name {
                            "is listed twice for this host".to_string()
                        } else {
                            format!("is also the MAC of host {other}")
                        };
                        errs.push(self.err(field, format!("{cm} {what}")));
                    }
                    None => {
                        taken.macs.insert(cm.clone(), self.name.to_string());
                        macs.push(cm);
                    }
                },
                Err(e) => errs.push(self.err(field, e)),
            }
        }
        macs
    }

    /// The address: inside the subnet, no server's, new to the file.
    fn ip(&self, taken: &mut Taken, errs: &mut Vec<Invalid>) {
        let (ip, c) = (self.h.ip, &self.spec.cluster);
        if let Some(net) = self.subnet {
            let servers = [
                ("gateway", c.gateway),
                ("NFS server", Some(c.nfs_server)),
                ("TFTP server", c.tftp_server),
            ];
            if let Err(m) = check_ip_with(ip, &net, servers) {
                errs.push(self.err(&["ip"], m));
            }
        }
        if let Some(other) = taken.ips.get(&ip) {
            errs.push(self.err(&["ip"], format!("{ip} is also the address of host {other}")));
        } else {
            taken.ips.insert(ip, self.name.to_string());
        }
    }

    /// The host's group, which must be defined.
    fn group(&self, errs: &mut Vec<Invalid>) -> Option<GroupSpec> {
        let g = self.h.group.as_ref()?;
        if let Some(gs) = self.spec.groups.get(g) {
            return Some(gs.clone());
        }
        let known: Vec<&str> = self.spec.groups.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            String::new()
        } else {
            format!(" (groups: {})", known.join(", "))
        };
        errs.push(self.err(&["group"], format!("no group {g:?} in [groups]{known}")));
        None
    }
}

/// Extra kernel command line: the group's, then the host's.
fn join_cmdline(group: Option<&str>, host: Option<&str>) -> String {
    [group, host]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn cluster(c: &ClusterSpec, subnet: Subnet) -> Cluster {
    Cluster {
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
    }
}

fn groups(specs: BTreeMap<String, GroupSpec>) -> BTreeMap<String, Group> {
    specs
        .into_iter()
        .map(|(k, g)| {
            let g = Group {
                image: g.image,
                kernel: g.kernel,
                cmdline: g.cmdline,
                boot: g.boot,
            };
            (k, g)
        })
        .collect()
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
    use crate::inventory::parse;

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
