//! The command line as man pages and admins read it (issue 15): help text
//! that speaks of no particular machine, global options under their own
//! heading, and an empty listing that says so.

use crate::common::*;

fn stdout(c: std::process::Command) -> String {
    String::from_utf8(run(c, true).stdout).unwrap()
}

#[test]
fn global_options_have_their_own_heading() {
    let l = TestLayout::temp();
    for sub in [
        &["--help"][..],
        &["build", "--help"],
        &["hosts", "set", "--help"],
    ] {
        let mut c = nfsroot(&l);
        c.args(sub);
        let out = stdout(c);
        let (own, global) = out
            .split_once("Global options:\n")
            .unwrap_or_else(|| panic!("{sub:?}: no global heading in\n{out}"));
        for flag in [
            "--base-dir",
            "--tftp-root",
            "--json",
            "--wait",
            "--inventory",
        ] {
            assert!(global.contains(flag), "{sub:?}: {flag} not global:\n{out}");
            assert!(
                !own.contains(flag),
                "{sub:?}: {flag} before the heading:\n{out}"
            );
        }
    }
}

#[test]
fn help_speaks_of_no_particular_machine() {
    let l = TestLayout::temp();
    let mut c = nfsroot(&l);
    c.args(["boot-test", "--help"]);
    let out = stdout(c);
    // The --accel entry: its line and the ones up to the next option.
    let mut lines = out.lines().skip_while(|l| !l.contains("--accel"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no --accel in\n{out}"));
    let rest = lines.take_while(|l| !l.trim_start().starts_with('-'));
    let accel: String = std::iter::once(first).chain(rest).collect();
    let words: Vec<String> = accel
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .collect();
    for word in ["here", "this", "our"] {
        assert!(
            !words.iter().any(|w| w == word),
            "{word:?} in --accel help:{accel}"
        );
    }
}

#[test]
fn empty_snapshot_list_says_so() {
    let l = TestLayout::temp();
    let mut c = nfsroot(&l);
    c.args(["snapshot", "list", "minimal"]);
    let out = stdout(c);
    assert!(out.starts_with("no snapshots of minimal"), "{out:?}");
    let mut c = nfsroot(&l);
    c.args(["--json", "snapshot", "list", "minimal"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(c)).unwrap();
    assert_eq!(v["result"], serde_json::json!([]));
}
