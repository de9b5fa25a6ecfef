//! Man pages and shell completions, generated from the clap types in
//! [`crate::cli`] by the binary itself (`nfsroot man DIR`, `nfsroot
//! completions SHELL`), so they cannot drift from the options they
//! describe. The Debian package runs both at build time
//! (`scripts/package`); someone who installs from source runs them by
//! hand. Output depends only on the CLI definition: no date, no
//! environment values, no paths, so two package builds give the same bytes.

use crate::cli::Cli;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The command as man pages and completions see it: `help` is left out
/// (every page documents `--help`), hidden subcommands stay hidden.
fn command() -> clap::Command {
    Cli::command().disable_help_subcommand(true)
}

/// Write `nfsroot.1` and one page per visible subcommand
/// (`nfsroot-build.1`, `nfsroot-hosts-add.1`, ...) into `dir`; returns
/// the files written, sorted.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    crate::fsutil::mkdir_p(dir)?;
    let mut written = Vec::new();
    let mut cmd = command();
    cmd.build();
    write_page_tree(&cmd, dir, &mut written)?;
    written.sort();
    Ok(written)
}

/// One page for `cmd`, then one for each visible subcommand below it.
fn write_page_tree(cmd: &clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page_tree(sub, dir, out)?;
    }
    let man = clap_mangen::Man::new(cmd.clone()).manual("nfsroot manual");
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)
        .with_context(|| format!("rendering man page {}", path.display()))?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    out.push(path);
    Ok(())
}

/// The completion script for `shell`, for a binary called `nfsroot`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut command(), "nfsroot", &mut buf);
    buf
}

/// Print the completion script for `shell` on stdout.
pub fn print_completions(shell: clap_complete::Shell) -> Result<()> {
    std::io::stdout()
        .write_all(&completions(shell))
        .context("writing completions to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap_complete::Shell;

    /// One page per visible subcommand, nested ones included; hidden ones
    /// (boot-test-inner) and `help` have none.
    #[test]
    fn a_page_per_subcommand() {
        let d = tempfile::tempdir().unwrap();
        let pages = write_man_pages(d.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in ["nfsroot.1", "nfsroot-build.1", "nfsroot-hosts-set.1"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("inner") || n.contains("help"))
        );
        let build = std::fs::read_to_string(d.path().join("nfsroot-build.1")).unwrap();
        assert!(build.contains("no\\-publish"), "{build}");
        assert!(build.contains("NFSROOT_BASE_DIR"), "{build}");
    }

    #[test]
    fn completions_know_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = String::from_utf8(completions(shell)).unwrap();
            for sub in ["upgrade-kernel", "boot-test", "snapshot"] {
                assert!(s.contains(sub), "{shell}: no {sub}");
            }
        }
    }
}
