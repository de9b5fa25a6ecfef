//! The inventory's types: the file's shape as serde reads it (`*Spec`,
//! private to parsing and validation) and the resolved model everything
//! downstream reads ([`Inventory`], [`Cluster`], [`Host`], [`BootMode`],
//! [`HostFiles`], [`Subnet`]). Constructors that check live in
//! [`super::validate`]; these types only hold values.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

// ---------------------------------------------------------------- file shape

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpec {
    pub(super) cluster: ClusterSpec,
    #[serde(default)]
    pub(super) groups: BTreeMap<String, GroupSpec>,
    #[serde(default)]
    pub(super) hosts: BTreeMap<String, HostSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterSpec {
    pub(super) subnet: String,
    #[serde(default)]
    pub(super) gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub(super) dns: Vec<Ipv4Addr>,
    #[serde(default)]
    pub(super) domain: String,
    pub(super) nfs_server: Ipv4Addr,
    #[serde(default)]
    pub(super) tftp_server: Option<Ipv4Addr>,
    #[serde(default)]
    pub(super) image: Option<String>,
    #[serde(default = "d_boot_file")]
    pub(super) boot_file: String,
    #[serde(default = "d_true")]
    pub(super) dnsmasq_tftp: bool,
    #[serde(default)]
    pub(super) host_files: HostFiles,
}

fn d_boot_file() -> String {
    "pxelinux.0".into()
}
fn d_true() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupSpec {
    #[serde(default)]
    pub(super) image: Option<String>,
    #[serde(default)]
    pub(super) kernel: Option<String>,
    #[serde(default)]
    pub(super) cmdline: Option<String>,
    #[serde(default)]
    pub(super) boot: Option<BootMode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum Macs {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostSpec {
    pub(super) mac: Macs,
    pub(super) ip: Ipv4Addr,
    #[serde(default)]
    pub(super) group: Option<String>,
    #[serde(default)]
    pub(super) image: Option<String>,
    #[serde(default)]
    pub(super) kernel: Option<String>,
    #[serde(default)]
    pub(super) cmdline: Option<String>,
    #[serde(default)]
    pub(super) boot: Option<BootMode>,
    #[serde(default)]
    pub(super) firmware: Option<Firmware>,
}

// ------------------------------------------------------------ resolved model

/// The firmware a host boots with, when a site pins its loader: `bios`
/// gets PXELINUX, `uefi` Debian's signed shim + GRUB, whatever client
/// architecture (DHCP option 93) the node announces. Unpinned hosts are
/// answered by the architecture they announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}
crate::choice::choice!(Firmware { Bios => "bios", Uefi => "uefi" });

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
    /// The loader's firmware when pinned; `None`: by client architecture.
    pub firmware: Option<Firmware>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
