//! nfsroot builds a diskless Debian image from a TOML profile and runs its
//! life on a PXE/NFS-root cluster.
//!
//! The design in a paragraph: a [`profile`] is parsed and validated into one
//! value. `build` is a straight list of small steps over that value and a
//! staging tree: [`bootstrap`], the diskless fixups, stage hooks, then an
//! atomic swap into `<base-dir>/<name>` ([`image`]), all under the image's
//! lock. Boot artifacts come from the image's own files: [`kernel`] finds
//! kernels, [`initramfs`] assembles an NFS-root initramfs, [`publish`] puts
//! kernel, initramfs and PXELINUX configs into the TFTP root, config last.
//! [`boottest`] proves the result boots, in QEMU against a real NFS server.
//! The image tree is untrusted input (nodes, archives and packages write
//! it): every stage reads and writes it only through [`imagefs::ImageRoot`],
//! its binaries run only in its chroot, and server-side decisions come from
//! the saved profile ([`state`]), never from the tree. Every file a node or
//! an admin relies on is written through [`fsutil::AtomicFile`]; every
//! external program runs through [`exec::Cmd`].

pub mod bootcfg;
pub mod bootstrap;
pub mod boottest;
pub mod build;
pub mod choice;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod compression;
pub mod crashpoint;
pub mod docs;
pub mod doctor;
pub mod exec;
pub mod extents;
pub mod facts;
pub mod fixups;
pub mod fsutil;
pub mod gc;
pub mod grub;
pub mod hooks;
pub mod hostkeys;
pub mod image;
pub mod imagefs;
pub mod initramfs;
pub mod inventory;
pub mod ipxe;
pub mod kernel;
pub mod nodes;
pub mod profile;
pub mod progress;
pub mod publish;
pub mod pxelinux;
pub mod snapshot;
pub mod state;
pub mod textdiff;
pub mod update;
pub mod versions;
