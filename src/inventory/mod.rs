//! The cluster inventory: one TOML table of hosts from which every per-host
//! file is generated, so adding a node is one line and one command.
//!
//! The file has a `[cluster]` section (subnet, gateway, DNS, domain, NFS and
//! TFTP server, default image), optional `[groups.NAME]` defaults, and a
//! `[hosts]` table with one inline table per host, keyed by name, so TOML
//! itself rejects a duplicate name. It is parsed like a profile ([`parse()`]):
//! serde with `deny_unknown_fields` gives shape errors with a span, then
//! [`validate`] checks the whole (MAC syntax, duplicate MACs and addresses, addresses
//! outside the subnet, unknown groups, hosts without an image, kernel
//! versions and boot file in the syntax PXELINUX, dhcpd and dnsmasq need,
//! and no control character in any key or value of the text) and every
//! error names `file:line:col` and the key. Values are resolved once, host
//! over group over cluster, into [`Inventory`] ([`model`] holds the types);
//! everything downstream reads only that. Edits ([`edit`]: `hosts add`,
//! `remove`, `set`; [`import`]: `hosts import` from CSV or ethers lines) go
//! through `toml_edit`, so comments and layout of a hand-kept file survive,
//! and the edited text is re-validated before it is written atomically.
//! [`render`] turns an inventory into text (pure functions); [`sync`] plans
//! what that text and the per-host names mean on disk and applies what
//! differs.
//!
//! MACs are stored in one canonical form, lower-case with colons; input may
//! also use dashes, upper case, or Cisco's `aabb.ccdd.eeff`.

pub mod edit;
pub mod import;
pub mod model;
pub mod parse;
pub mod render;
pub mod sync;
pub mod validate;

pub use edit::{HostsCmd, HostsOutcome, firmware_words, run_hosts};
pub use model::{BootMode, Cluster, Group, Host, HostFiles, Inventory, Subnet};
pub use parse::{load, parse};
pub use sync::{
    SyncOptions, SyncReport, host_boot_config, image_hosts_into, run_sync, run_sync_with,
};
pub use validate::{canonical_mac, check_cmdline, check_host_name, check_kernel};

/// Where the inventory lives unless `--inventory` / `NFSROOT_INVENTORY`.
pub const DEFAULT_PATH: &str = "/etc/nfsroot/inventory.toml";

/// A minimal inventory, shown when the file does not exist yet (and
/// shipped as the package's example).
pub const EXAMPLE: &str = include_str!("example.toml");
