//! The one integration-test binary: every test drives the real `nfsroot`
//! executable in its own temp directories (never the host's /var/lib or
//! /etc). Tests that need a real image share one built from
//! `profiles/minimal.toml` by [`common::fixture`], built once per checkout.

mod boot;
mod build;
mod cli_flags;
mod cli_text;
mod cluster;
mod common;
mod crash;
mod hostile;
mod initramfs;
mod inventory_boot;
mod nodes;
mod package;
mod profile;
mod seeds;
mod snapshot_cli;
mod trees;
mod uefi;
mod upgrade;
