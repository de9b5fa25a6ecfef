//! Every command-line type, in one place. Help text stays within 80
//! columns. Each subcommand maps to a plain `run` function elsewhere.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

/// Build, publish, boot-test and snapshot diskless Debian images for
/// PXE/NFS-root clusters.
#[derive(Debug, Parser)]
#[command(name = "nfsroot", version, max_term_width = 80)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Command,
}

/// Options every subcommand takes, shown under their own heading.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Where images live (an image is DIR/NAME)
    #[arg(
        long,
        global = true,
        env = "NFSROOT_BASE_DIR",
        default_value = "/var/lib/nfsroot"
    )]
    pub base_dir: PathBuf,
    /// The TFTP root nodes boot from
    #[arg(
        long,
        global = true,
        env = "NFSROOT_TFTP_ROOT",
        default_value = "/var/lib/tftpboot"
    )]
    pub tftp_root: PathBuf,
    /// Cache of downloaded .debs, reused by every build
    #[arg(
        long,
        global = true,
        env = "NFSROOT_CACHE_DIR",
        default_value = "/var/cache/nfsroot/debs"
    )]
    pub cache_dir: PathBuf,
    /// Show every command run (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print the result as JSON (versioned envelope) on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Wait for an image's lock instead of failing when it is held
    #[arg(long, global = true)]
    pub wait: bool,
    /// The cluster inventory (hosts table)
    #[arg(
        long,
        global = true,
        env = "NFSROOT_INVENTORY",
        default_value = "/etc/nfsroot/inventory.toml"
    )]
    pub inventory: PathBuf,
    /// Where server-side files go (dnsmasq.d/, exports.d/, dhcp/)
    #[arg(long, global = true, env = "NFSROOT_ETC_DIR", default_value = "/etc")]
    pub etc_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a profile, then publish its boot files
    Build(BuildArgs),
    /// Check or show profiles
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// List host prerequisites and whether they are installed
    Doctor,
    /// Run a command inside an image (apt, passwd, ...); running nodes see the change
    Exec(ExecArgs),
    /// Run a command in a clone of an image and make the clone its new tree version
    Update(ExecArgs),
    /// Remove old tree versions that no node reported and keep_trees does not keep
    Gc(GcArgs),
    /// Publish the image's kernels and initramfs to the TFTP root
    Publish(ImageArg),
    /// Publish the newest kernel in the image and switch the boot config
    UpgradeKernel(UpgradeArgs),
    /// Switch the boot config back to an older published kernel
    Rollback(RollbackArgs),
    /// Show the image, its kernels, what is published and any drift
    Status(ImageArg),
    /// Build an initramfs from an image's files (for inspection or bench)
    #[command(subcommand)]
    Initramfs(InitramfsCmd),
    /// Boot an image in QEMU against a real NFS server and check it
    BootTest(BootTestArgs),
    /// Archive an image: a tar.gz or tar.zst with a checksum and a manifest
    Snapshot(SnapshotArgs),
    /// Replace an image with the contents of a snapshot
    Restore(RestoreArgs),
    /// Show what changed in a live image since a snapshot
    Diff(DiffArgs),
    /// Add, remove, change or list the hosts of the inventory
    #[command(subcommand)]
    Hosts(HostsArgs),
    /// Write boot files, DHCP, exports and /etc/hosts from the inventory
    Sync(SyncArgs),
    /// Which node runs what: each host's image, build, kernel, last seen
    Nodes(NodesArgs),
    /// Write the man pages (nfsroot.1, nfsroot-build.1, ...) into DIR
    Man {
        /// Directory for the pages (e.g. /usr/local/share/man/man1)
        dir: PathBuf,
    },
    /// Print a completion script for SHELL on stdout
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// (internal) the half of boot-test that runs in private namespaces
    #[command(hide = true)]
    BootTestInner {
        /// The plan written by boot-test
        plan: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Profile file, or the name of a shipped profile (minimal, cluster)
    pub profile: String,
    /// Replace an existing image (the old one stays until the new is ready)
    #[arg(long)]
    pub force: bool,
    /// Do not publish kernel, initramfs and boot configs after building
    #[arg(long)]
    pub no_publish: bool,
    /// Debian mirror URL (default: the profile's, else the host's)
    #[arg(long, env = "NFSROOT_MIRROR")]
    pub mirror: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCmd {
    /// Validate a profile; errors name file:line:column and the key
    Check {
        /// Profile file or name
        profile: String,
    },
    /// Print the effective profile with every default filled in
    Show {
        /// Profile file or name
        profile: String,
    },
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Image name
    pub image: String,
    /// Command and arguments (after --)
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ImageArg {
    /// Image name (default: the only image)
    pub image: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Image name (default: the only image)
    pub image: Option<String>,
    /// Show what would be written and the config diff; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Image name (default: the only image)
    pub image: Option<String>,
    /// Kernel version to boot (default: the one before the current)
    #[arg(long, conflicts_with = "tree")]
    pub to: Option<String>,
    /// Make this kept tree version current again (see `status`), and
    /// publish its kernel
    #[arg(long)]
    pub tree: Option<String>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Image name (default: every image)
    pub image: Option<String>,
    /// Say what would be removed and why the rest stays; remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum InitramfsCmd {
    /// Write an NFS-root initramfs for a kernel of an image
    Build(InitramfsBuildArgs),
}

#[derive(Debug, Args)]
pub struct InitramfsBuildArgs {
    /// Image name, or a path to a root tree
    pub image: String,
    /// Kernel version (default: the newest in the image)
    #[arg(long)]
    pub kernel: Option<String>,
    /// Output file
    #[arg(short, long)]
    pub output: PathBuf,
    /// Compression
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd"])]
    pub compression: String,
    /// Backend: nfsroot (built here) or initramfs-tools (mkinitramfs)
    #[arg(long, default_value = "nfsroot",
          value_parser = ["nfsroot", "initramfs-tools"])]
    pub backend: String,
    /// Extra module names (or `default`)
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// Module names to leave out
    #[arg(long = "exclude-module", value_name = "NAME")]
    pub exclude: Vec<String>,
    /// A network driver of the nodes: only those named go in, with
    /// virtio_net (default: every Ethernet driver)
    #[arg(long = "net-driver", value_name = "NAME")]
    pub net_drivers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootMethodArg {
    /// QEMU loads the published kernel and initramfs itself
    Direct,
    /// iPXE and nfsroot.ipxe (or pxelinux.0 and pxelinux.cfg), then kernel
    /// and initramfs over TFTP
    Pxe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirmwareArg {
    /// SeaBIOS with iPXE's option ROM
    Bios,
    /// OVMF (Debian's ovmf package)
    Uefi,
}

#[derive(Debug, Args)]
pub struct BootTestArgs {
    /// Image name (default: the only image)
    pub image: Option<String>,
    /// How the VM boots
    #[arg(long, value_enum, default_value = "direct")]
    pub mode: BootMethodArg,
    /// The VM's MAC address
    #[arg(long, default_value = "52:54:00:12:34:56")]
    pub mac: String,
    /// The VM's IPv4 address (QEMU's DHCP hands it out; default: .15 of
    /// the profile's NFS server's /24, 10.0.2.15 for QEMU's default)
    #[arg(long)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// In PXE mode, boot through a per-host config (01-<mac>) instead of
    /// `default`
    #[arg(long)]
    pub per_host: bool,
    /// The VM's firmware in PXE mode: bios (SeaBIOS and iPXE, loading
    /// nfsroot.ipxe) or uefi (OVMF, loading shimx64.efi, then GRUB)
    #[arg(long, value_enum, default_value = "bios")]
    pub firmware: FirmwareArg,
    /// With --firmware uefi: Secure Boot on, with Microsoft's keys
    /// enrolled as on stock machines
    #[arg(long)]
    pub secure_boot: bool,
    /// With --firmware bios: DHCP names pxelinux.0, as for a NIC whose PXE
    /// ROM is not iPXE (default: nfsroot.ipxe, as for QEMU's iPXE ROM)
    #[arg(long, conflicts_with_all = ["host", "hosts"])]
    pub pxelinux: bool,
    /// Seconds before the test gives up
    #[arg(long, default_value = "180")]
    pub timeout: u64,
    /// Keep console, NFS server and QEMU logs even when the test passes
    #[arg(long)]
    pub keep_logs: bool,
    /// QEMU accelerator: tcg works everywhere; kvm is faster, but some
    /// nested-virtualization hosts hang Debian kernels under it
    #[arg(long, default_value = "tcg", value_parser = ["tcg", "kvm"])]
    pub accel: String,
    /// Guest memory in MiB
    #[arg(long, default_value = "512")]
    pub memory: u32,
    /// Guest CPUs (QEMU's -smp): real nodes have several cores, and with
    /// more than one TCG runs the guest's CPUs on as many host threads
    /// (userspace boots about twice as fast with 2 as with 1). Default 2,
    /// or 1 per VM with --hosts (the VMs share the host's cores)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: Option<u32>,
    /// Boot this kernel/initramfs instead of the published default
    /// (direct mode; for negative tests)
    #[arg(long, requires = "initrd")]
    pub kernel: Option<PathBuf>,
    /// Initramfs to boot with --kernel
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Replace the kernel command line (direct mode)
    #[arg(long)]
    pub append: Option<String>,
    /// Expect this host name (default: from the image's hostname rule)
    #[arg(long)]
    pub expect_hostname: Option<String>,
    /// Expect the node not to come up (e.g. a disabled host); pass when it
    /// does not within the timeout
    #[arg(long)]
    pub expect_no_boot: bool,
    /// Boot a read-write profile's root read-write, as deployed: the node
    /// may change the image (for a copy made to test)
    #[arg(long)]
    pub write_root: bool,
    /// After the node line, let the VM run until it powers off (a unit in
    /// the image does), within --timeout
    #[arg(long)]
    pub until_poweroff: bool,
    /// Pass at the node line instead of waiting for the node's boot
    /// analysis after it (systemd-analyze takes 10-20 s under TCG); the
    /// node still writes it to its per-host log
    #[arg(long)]
    pub no_analysis: bool,
    /// Boot this inventory host (its MAC, address, name and image) on a
    /// private bridge at the inventory's server address, through the real
    /// DHCP and TFTP daemons and the configs `sync` wrote under --etc-dir
    /// (needs --mode pxe and --dhcp)
    #[arg(long, requires = "dhcp", conflicts_with_all = ["mac", "ip", "per_host"])]
    pub host: Option<String>,
    /// Boot these inventory hosts at once (comma-separated) as --host
    /// does, against one set of daemons, one VM each; a host the
    /// inventory boots locally or disables must not come up. Reports
    /// each host and the server's CPU and memory during the boots
    #[arg(long, value_delimiter = ',', requires = "dhcp",
          conflicts_with_all = ["host", "mac", "ip", "per_host"])]
    pub hosts: Vec<String>,
    /// With --host or --hosts: dnsmasq (DHCP and TFTP) or dhcpd (ISC
    /// dhcpd, and tftpd-hpa for TFTP)
    #[arg(long, value_enum)]
    pub dhcp: Option<DhcpArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DhcpArg {
    /// dnsmasq serving DHCP and TFTP (dnsmasq.d/nfsroot.conf)
    Dnsmasq,
    /// ISC dhcpd (dhcp/dhcpd.conf) with tftpd-hpa's in.tftpd
    Dhcpd,
}

#[derive(Debug, Subcommand)]
pub enum HostsArgs {
    /// Add a host (one line in the inventory)
    Add {
        /// Host name (a-z 0-9 -)
        name: String,
        /// MAC address (aa:bb:.., AA-BB-.., aabb.ccdd.eeff); repeat for
        /// more NICs
        #[arg(long, required = true)]
        mac: Vec<String>,
        /// IPv4 address, inside the cluster subnet
        #[arg(long)]
        ip: String,
        /// Image to boot (default: the group's or the cluster's)
        #[arg(long)]
        image: Option<String>,
        /// Group whose defaults the host takes
        #[arg(long)]
        group: Option<String>,
    },
    /// Remove a host (its boot files go at the next sync; logs stay)
    Remove {
        /// Host name
        name: String,
    },
    /// List the hosts with their effective image and boot mode
    List,
    /// Change what a host boots
    Set {
        /// Host name
        name: String,
        /// Boot this image (also re-enables a disabled host)
        #[arg(long, group = "mode")]
        image: Option<String>,
        /// Boot from the local disk
        #[arg(long, group = "mode")]
        localboot: bool,
        /// Do not boot at all (PXELINUX says why and gives up)
        #[arg(long, group = "mode")]
        disable: bool,
        /// Boot the host's image again
        #[arg(long, group = "mode")]
        enable: bool,
        /// Pin this kernel version ("" to unpin)
        #[arg(long)]
        kernel: Option<String>,
        /// Extra kernel command line ("" to clear)
        #[arg(long)]
        cmdline: Option<String>,
        /// Pin the loader DHCP hands the host: bios (PXELINUX), uefi
        /// (shim + GRUB), or auto (by the client architecture it announces)
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
            crate::inventory::firmware_words()))]
        firmware: Option<String>,
    },
    /// Add hosts from a CSV file or /etc/ethers-style lines
    Import {
        /// CSV (name,mac,ip[,image,group,kernel,cmdline,boot]) or
        /// ethers lines (MAC IP NAME)
        file: PathBuf,
        /// Update hosts that already exist instead of failing
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Show the diff of every file that would change; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// A node that wrote no state file for this long is not running
    /// (s, m, h or d; nodes write every 5 minutes)
    #[arg(long, default_value = "15m", value_parser = crate::nodes::parse_duration)]
    pub stale_after: u64,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub cmd: Option<SnapshotCmd>,
    /// Image to archive (default: the only image)
    pub image: Option<String>,
    /// Tree version to archive, a BUILD_ID from `status` (default: the
    /// current tree)
    #[arg(long, value_name = "BUILD_ID")]
    pub tree: Option<String>,
    /// Archive file (default: <image>-<UTC time>-<kernel>.tar.gz in the
    /// snapshots directory)
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Compression: gz or zst
    #[arg(long, default_value = "gz")]
    pub format: crate::compression::Compression,
    /// Compression level (gz 1-12, default 6; zst 1-19, default 3)
    #[arg(long)]
    pub level: Option<u32>,
    /// Keep only the newest N snapshots of the image afterwards
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Compression threads (default: all cores)
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// List an image's snapshots, oldest first
    List {
        /// Image name (default: the only image)
        image: Option<String>,
    },
    /// Check an archive's checksum and its manifest against its contents
    Verify {
        /// Snapshot archive
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot archive (.tar.gz, .tar.zst or .tar)
    pub file: PathBuf,
    /// Image to restore into (default: the one named in the manifest)
    #[arg(long)]
    pub image: Option<String>,
    /// Replace the image if it exists (the old tree stays until the
    /// new one is in place)
    #[arg(long)]
    pub force: bool,
    /// Restore an archive that has no .sha256 file beside it
    #[arg(long)]
    pub no_checksum: bool,
    /// Restore device nodes outside /dev too (refused by default: a device
    /// node gives whoever can open it on a node the device itself)
    #[arg(long)]
    pub allow_devices: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Image name
    pub image: String,
    /// Snapshot archive to compare with
    pub file: PathBuf,
    /// Tree version to compare, a BUILD_ID from `status` (default: the
    /// current tree)
    #[arg(long, value_name = "BUILD_ID")]
    pub tree: Option<String>,
}
