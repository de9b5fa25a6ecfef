//! The profile's serde model: one struct per TOML table, every field with
//! its default (`deny_unknown_fields` everywhere), so a parsed profile is
//! complete and `profile show` prints exactly what a build will use.

pub use crate::choice::Choice;
use crate::choice::choice;
pub use crate::compression::Compression;
use serde::{Deserialize, Serialize};

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
    #[serde(default)]
    pub units: Units,
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

/// How nodes mount the image root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RootMode {
    /// Read-only, shared by every node; writable paths are tmpfs.
    #[default]
    Ro,
    /// Read-write: nodes write the tree itself.
    Rw,
}

/// Where nodes' logs go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogLayout {
    /// rsyslog writes `<dir>/<hostname>/` on an NFS export.
    #[default]
    PerHost,
    /// Logs stay on the node.
    Local,
}

/// One way a node finds its host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostnameSource {
    /// The node's /etc/hosts entry for its address.
    Hosts,
    /// The name DHCP hands out.
    Dhcp,
    /// Reverse DNS of the node's address.
    Dns,
    /// The profile's `hostname.pattern`.
    Pattern,
}

/// Which builder makes the initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Assembled by nfsroot from the image's files
    /// ([`crate::initramfs::build`]).
    #[default]
    Nfsroot,
    /// The image's own mkinitramfs, in its chroot
    /// ([`crate::initramfs::build_with_initramfs_tools`]).
    InitramfsTools,
}

impl std::str::FromStr for Backend {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "nfsroot" => Ok(Self::Nfsroot),
            "initramfs-tools" => Ok(Self::InitramfsTools),
            _ => anyhow::bail!("unknown initramfs backend {s:?}: use nfsroot or initramfs-tools"),
        }
    }
}

choice!(Backend { Nfsroot => "nfsroot", InitramfsTools => "initramfs-tools" });
choice!(RootMode { Ro => "ro", Rw => "rw" });
choice!(LogLayout { PerHost => "per-host", Local => "local" });
choice!(HostnameSource { Hosts => "hosts", Dhcp => "dhcp", Dns => "dns", Pattern => "pattern" });

impl Hostname {
    /// The sources as node.conf's `HOSTNAME_SOURCES` lists them: words
    /// separated by spaces, in order.
    pub fn sources_line(&self) -> String {
        let words: Vec<&str> = self.sources.iter().map(|s| s.as_str()).collect();
        words.join(" ")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Nfs {
    /// The NFS server's address as the nodes see it.
    #[serde(default = "d_server")]
    pub server: String,
    /// `ro` or `rw`.
    #[serde(default)]
    pub root_mode: RootMode,
    /// Mount options for the root, after the server path in `nfsroot=`.
    #[serde(default = "d_nfs_options")]
    pub options: String,
}

impl Nfs {
    /// The NFS major version the root's options pin (`vers=` or `nfsvers=`,
    /// the last one wins, as mount reads them): 3 for `vers=3`, 4 for
    /// `vers=4` or `vers=4.2`; None when the mount negotiates.
    pub fn version(&self) -> Option<u32> {
        self.options
            .split(',')
            .filter_map(|o| {
                let o = o.trim();
                o.strip_prefix("vers=")
                    .or_else(|| o.strip_prefix("nfsvers="))
            })
            .next_back()
            .and_then(|v| v.split('.').next()?.parse().ok())
    }

    /// The root's mount options as the kernel command line carries them
    /// (`nfsroot=<server>:<path>,<these>`): the profile's, and `nocto` on a
    /// read-only root unless they say `cto` or `nocto`. Nothing changes a
    /// read-only root under its nodes (`update` swaps in a new tree), so
    /// close-to-open's GETATTR at every open() is a wasted round trip;
    /// cached attributes still expire as usual. Measured under TCG, 5
    /// interleaved direct boots each: 1.5-2 s less userspace (median 10.6
    /// against 12.6 s).
    pub fn root_options(&self) -> String {
        let says = |w: &str| self.options.split(',').any(|o| o.trim() == w);
        if self.root_mode == RootMode::Ro && !says("cto") && !says("nocto") {
            format!("{},nocto", self.options)
        } else {
            self.options.clone()
        }
    }
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
    pub sources: Vec<HostnameSource>,
    /// Fallback pattern, e.g. `node{ip.3:03}`.
    #[serde(default = "d_hostname_pattern")]
    pub pattern: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    /// `per-host` (rsyslog writes <dir>/<hostname>/) or `local`.
    #[serde(default)]
    pub layout: LogLayout,
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
    /// Tree versions `gc` keeps, the current one included (at least 1;
    /// versions a node reported are kept beyond this).
    #[serde(default = "d_keep")]
    pub keep_trees: u32,
    /// Seconds the PXELINUX prompt (and GRUB's menu) waits; 0 boots the
    /// default at once (PXELINUX shows its prompt while Shift is held).
    #[serde(default = "d_prompt")]
    pub prompt_timeout: u32,
    /// Make this image PXELINUX's `default` when publishing.
    #[serde(default = "d_true")]
    pub default: bool,
    /// As the default image, boot iPXE clients (QEMU's and KVM's NICs,
    /// iPXE-flashed cards) from `nfsroot.ipxe` without PXELINUX. Hosts
    /// with a per-host config still go through PXELINUX, found by MAC
    /// only: not by a hand-made hex-IP or subnet file.
    #[serde(default)]
    pub ipxe: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Initramfs {
    /// `nfsroot` (built by this tool) or `initramfs-tools`.
    #[serde(default)]
    pub backend: Backend,
    /// `gzip` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// Module names added to the default set (or `default` alone).
    #[serde(default)]
    pub modules: Vec<String>,
    /// Module names removed from the set.
    #[serde(default)]
    pub exclude_modules: Vec<String>,
    /// The nodes' network card drivers (`igb`, `mlx5_core`, ...): only
    /// these go in, with virtio_net for QEMU. Left out: every Ethernet
    /// driver of the kernel, for nodes of unknown hardware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_drivers: Option<Vec<String>>,
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

/// systemd units on top of the diskless defaults (see `fixups::units`):
/// full unit names such as `getty@tty1.service` or `man-db.timer`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Units {
    /// Units to enable (their `[Install]` links), e.g. a getty on tty1.
    #[serde(default)]
    pub enable: Vec<String>,
    /// Units to mask on top of the defaults for the root mode.
    #[serde(default)]
    pub mask: Vec<String>,
    /// Units the defaults mask that this profile keeps.
    #[serde(default)]
    pub unmask: Vec<String>,
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
fn d_hostname_sources() -> Vec<HostnameSource> {
    use HostnameSource::*;
    vec![Hosts, Dhcp, Dns, Pattern]
}
fn d_hostname_pattern() -> String {
    "node{ip.3:03}".into()
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

impl Profile {
    /// The logs export as nodes mount it, if any (`server:/path`).
    pub fn logs_export(&self, layout: &crate::image::Layout) -> Option<String> {
        if self.logs.layout != LogLayout::PerHost {
            return None;
        }
        if !self.logs.export.is_empty() {
            return Some(self.logs.export.clone());
        }
        if self.nfs.root_mode == RootMode::Ro {
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
    use crate::profile::parse;
    use std::path::Path;

    fn p(text: &str) -> Profile {
        parse(text, Path::new("t.toml"), Path::new("."))
            .unwrap()
            .profile
    }

    /// The words are the ones node.conf, the node script, the kernel
    /// command line and the publish record have always used.
    #[test]
    fn nfs_version_is_the_last_vers_option() {
        let v = |o: &str| {
            Nfs {
                server: "s".into(),
                root_mode: RootMode::Ro,
                options: o.into(),
            }
            .version()
        };
        assert_eq!(v("vers=3,tcp"), Some(3));
        assert_eq!(v("tcp,nfsvers=4.2"), Some(4));
        assert_eq!(v("vers=3,vers=4.1"), Some(4));
        assert_eq!(v("tcp,nolock"), None);
        assert_eq!(v("vers=x"), None);
    }

    #[test]
    fn a_read_only_root_mounts_without_close_to_open() {
        let o = |mode: RootMode, o: &str| {
            Nfs {
                server: "s".into(),
                root_mode: mode,
                options: o.into(),
            }
            .root_options()
        };
        assert_eq!(o(RootMode::Ro, "vers=3,tcp"), "vers=3,tcp,nocto");
        assert_eq!(o(RootMode::Rw, "vers=3,tcp"), "vers=3,tcp");
        assert_eq!(o(RootMode::Ro, "vers=3, cto"), "vers=3, cto");
        assert_eq!(o(RootMode::Ro, "nocto,vers=4.2"), "nocto,vers=4.2");
        assert_eq!(o(RootMode::Ro, "vers=3,noctox"), "vers=3,noctox,nocto");
    }

    #[test]
    fn choices_keep_their_spellings() {
        fn words<T: Choice>() -> Vec<&'static str> {
            T::ALL.iter().map(|c| c.as_str()).collect()
        }
        assert_eq!(words::<RootMode>(), ["ro", "rw"]);
        assert_eq!(words::<LogLayout>(), ["per-host", "local"]);
        assert_eq!(
            words::<HostnameSource>(),
            ["hosts", "dhcp", "dns", "pattern"]
        );
        assert_eq!(words::<Compression>(), ["gzip", "zstd"]);
        assert_eq!(words::<Backend>(), ["nfsroot", "initramfs-tools"]);
        assert_eq!(LogLayout::PerHost.to_string(), "per-host");
        assert_eq!(
            serde_json::to_value(Backend::InitramfsTools).unwrap(),
            "initramfs-tools"
        );
    }

    /// A profile written back to TOML (`profile show`, the saved profile)
    /// reads back the same, enums included.
    #[test]
    fn profile_round_trips_through_toml() {
        let text = "name = \"x\"\n[nfs]\nroot_mode = \"rw\"\n\
                    [logs]\nlayout = \"local\"\n\
                    [hostname]\nsources = [\"dns\", \"pattern\", \"hosts\"]\n\
                    [initramfs]\nbackend = \"initramfs-tools\"\ncompression = \"zstd\"\n";
        let a = p(text);
        assert_eq!(a.nfs.root_mode, RootMode::Rw);
        assert_eq!(a.logs.layout, LogLayout::Local);
        assert_eq!(a.hostname.sources_line(), "dns pattern hosts");
        assert_eq!(a.initramfs.backend, Backend::InitramfsTools);
        assert_eq!(a.initramfs.compression, Compression::Zstd);
        let out = toml::to_string(&a).unwrap();
        assert!(out.contains("root_mode = \"rw\""), "{out}");
        assert!(out.contains("layout = \"local\""), "{out}");
        assert!(out.contains("backend = \"initramfs-tools\""), "{out}");
        assert_eq!(p(&out), a);
        // The defaults too.
        let d = p("name = \"x\"\n");
        assert_eq!(p(&toml::to_string(&d).unwrap()), d);
    }

    /// The profile build saves for publish, sync and boot-test
    /// (`state::save_profile`, re-serialised by `state::saved_profile`)
    /// comes back with the same enums.
    #[test]
    fn saved_profile_keeps_the_enums() {
        let d = tempfile::tempdir().unwrap();
        let layout = crate::image::Layout::under(d.path());
        let text = "name = \"x\"\n[nfs]\nroot_mode = \"rw\"\n[logs]\nlayout = \"local\"\n\
                    [hostname]\nsources = [\"pattern\", \"dhcp\"]\n\
                    [initramfs]\nbackend = \"initramfs-tools\"\ncompression = \"zstd\"\n";
        let l = parse(text, Path::new("t.toml"), Path::new(".")).unwrap();
        crate::state::save_profile(&layout, &l).unwrap();
        let back = crate::state::image_profile(&layout, "x").unwrap();
        assert_eq!(back, l.profile);
        assert_eq!(back.nfs.root_mode, RootMode::Rw);
        assert_eq!(back.hostname.sources_line(), "pattern dhcp");
    }

    #[test]
    fn defaults_fill_in() {
        let l = p("name = \"x\"\n");
        assert_eq!(l.suite, "bookworm");
        assert_eq!(l.nfs.root_mode, RootMode::Ro);
        assert_eq!(l.tmpfs.len(), 2);
        assert_eq!(l.boot.keep_kernels, 3);
        assert_eq!(l.boot.keep_trees, 3);
    }
}
