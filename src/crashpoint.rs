//! Deterministic crash points: fault injection for the crash tests.
//!
//! Every write step that a booting node or a later run depends on (each
//! atomic rename, the publish record, the config switch, the snapshot
//! commit, the image swap) calls `crash_point!("stage.step")`. In a debug
//! build, when the environment variable `NFSROOT_CRASH_AT` names that point,
//! the process sends itself SIGKILL right there: no unwinding, no
//! destructors, no temp-file cleanup, as a power cut or `kill -9` leaves
//! things. `NFSROOT_CRASH_AT=NAME@N` dies the Nth time the point is reached
//! (`atomic.before_rename@3`: before the third atomic rename of the run), so
//! a test can walk every rename of a command in turn. Just before dying it
//! prints `nfsroot: crash point NAME` on stderr, so a test can tell the
//! point was reached. In release builds the macro expands to nothing and the
//! variable is never read.
//!
//! [`POINTS`] names every point, so a new write step without one shows in
//! review; a unit test checks the list against the source tree. The `fail`
//! crate does this with a cargo feature and names registered at run time;
//! the integration tests run the plain debug binary, and a const list is
//! what review needs, so the few lines here stay.

/// The environment variable naming the point to die at (`NAME` or `NAME@N`).
pub const ENV: &str = "NFSROOT_CRASH_AT";

/// Every crash point in the source, by stage.
pub const POINTS: &[&str] = &[
    // fsutil::AtomicFile::commit: the temp file is complete and synced,
    // the final name still holds the old content.
    "atomic.before_rename",
    // publish / upgrade-kernel (publish/mod.rs)
    "publish.boot_files",
    "publish.record",
    "publish.between_configs",
    "publish.grub_config",
    "publish.configs",
    "publish.retire",
    "publish.retired",
    // rollback (publish/rollback.rs)
    "rollback.configs",
    "rollback.between_configs",
    "rollback.grub_config",
    // snapshot (snapshot/create.rs)
    "snapshot.archive_written",
    "snapshot.manifest",
    "snapshot.checksum",
    "snapshot.prune",
    // restore (snapshot/mod.rs), then the swap it shares with build
    "restore.extracted",
    // image::swap_into_place (build and restore)
    "swap.before_exchange",
    "swap.after_exchange",
    // image::keep_old: the old tree is in its version directory, the
    // switch journal not yet removed
    "swap.kept",
    // update (update.rs): the clone is complete, the command not yet run
    "update.cloned",
    // update: the command and the fixups ran in the clone, before the swap
    "update.ready",
    // gc (gc.rs): before removing one old version
    "gc.remove",
];

/// Die here if `NFSROOT_CRASH_AT` names this point (debug builds only).
/// `$name` must be one of [`POINTS`](crate::crashpoint::POINTS).
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {{
        #[cfg(debug_assertions)]
        $crate::crashpoint::hit($name);
    }};
}

/// The point and the hit count a `NAME` or `NAME@N` value asks for.
#[cfg(debug_assertions)]
fn parse(v: &str) -> (&str, u32) {
    match v.rsplit_once('@') {
        Some((name, n)) => match n.parse() {
            Ok(n) => (name, n),
            Err(_) => (v, 1),
        },
        None => (v, 1),
    }
}

/// The macro's body: count the hits of the named point, SIGKILL self at
/// the one asked for.
#[cfg(debug_assertions)]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HITS: AtomicU32 = AtomicU32::new(0);
    assert!(
        POINTS.contains(&name),
        "crash point {name} is not in POINTS"
    );
    let Some(want) = std::env::var_os(ENV) else {
        return;
    };
    let want = want.to_string_lossy();
    let (point, nth) = parse(&want);
    if point != name || HITS.fetch_add(1, Ordering::SeqCst) + 1 != nth {
        return;
    }
    eprintln!("nfsroot: crash point {name}");
    use rustix::process::{Signal, getpid, kill_process};
    let _ = kill_process(getpid(), Signal::KILL);
    // SIGKILL cannot be caught; should it ever fail to be sent, still die
    // without cleanup.
    std::process::abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[cfg(debug_assertions)]
    #[test]
    fn parse_name_and_count() {
        assert_eq!(parse("publish.record"), ("publish.record", 1));
        assert_eq!(parse("atomic.before_rename@3"), ("atomic.before_rename", 3));
        // Not a count: the whole value is the name, which matches nothing.
        assert_eq!(parse("a@b"), ("a@b", 1));
    }

    /// Every `crash_point!("...")` in src/ with the file it is in.
    fn used_in_source() -> Vec<(String, String)> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let marker = concat!("crash_point", "!(\"");
        let mut used = Vec::new();
        for e in walkdir::WalkDir::new(&src).into_iter().flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "rs") || p.ends_with("crashpoint.rs") {
                continue;
            }
            let text = std::fs::read_to_string(p).unwrap();
            for (i, _) in text.match_indices(marker) {
                let rest = &text[i + marker.len()..];
                let name = &rest[..rest.find('"').unwrap()];
                used.push((name.to_string(), p.display().to_string()));
            }
        }
        used
    }

    #[test]
    fn points_list_matches_the_source() {
        let listed: BTreeSet<&str> = POINTS.iter().copied().collect();
        assert_eq!(listed.len(), POINTS.len(), "a name is listed twice");
        let used = used_in_source();
        for (name, file) in &used {
            assert!(
                listed.contains(name.as_str()),
                "{file} uses crash point {name}, which POINTS does not list"
            );
        }
        let used: BTreeSet<&str> = used.iter().map(|(n, _)| n.as_str()).collect();
        for name in &listed {
            assert!(
                used.contains(name),
                "POINTS lists {name}, which no source file uses"
            );
            assert!(!name.contains('@'), "{name}: '@' separates the count");
        }
    }
}
