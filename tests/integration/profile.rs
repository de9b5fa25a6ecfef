//! Profiles through the real binary: the shipped ones check and show, and
//! every broken profile in tests/corpus/profiles gives an error naming
//! file:line:column and the key, exits non-zero, and creates nothing.

use crate::common::*;
use std::path::PathBuf;

#[test]
fn shipped_profiles_check_and_show() {
    let l = TestLayout::temp();
    for p in ["minimal", "cluster"] {
        let mut c = nfsroot(&l);
        c.args(["profile", "check"])
            .arg(repo().join(format!("profiles/{p}.toml")));
        run(c, true);
        let mut c = nfsroot(&l);
        c.args(["--json", "profile", "show", p]);
        let out = run(c, true);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["result"]["name"], p);
        // Defaults are filled in.
        assert!(v["result"]["boot"]["keep_kernels"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn broken_profile_corpus() {
    let dir = repo().join("tests/corpus/profiles");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let expect = std::fs::read_to_string(case.with_extension("expect")).unwrap();
        for cmd in [&["profile", "check"][..], &["build", "--no-publish"][..]] {
            let l = TestLayout::temp();
            let mut c = nfsroot(&l);
            c.args(cmd).arg(case).current_dir(&dir);
            let out = c.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(1) {
                failures.push(format!(
                    "{}: {cmd:?} exited {:?}",
                    case.display(),
                    out.status.code()
                ));
            }
            for frag in expect.lines().filter(|l| !l.is_empty()) {
                if !err.contains(frag) {
                    failures.push(format!(
                        "{}: {cmd:?}: {frag:?} not in {err:?}",
                        case.display()
                    ));
                }
            }
            // Nothing was created on disk.
            let left: Vec<_> = std::fs::read_dir(&l.base).unwrap().collect();
            if !left.is_empty() {
                failures.push(format!("{}: {cmd:?} created {left:?}", case.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn usage_errors_exit_2() {
    let l = TestLayout::temp();
    let mut c = nfsroot(&l);
    c.arg("no-such-command");
    assert_eq!(c.output().unwrap().status.code(), Some(2));
    let mut c = nfsroot(&l);
    c.args(["boot-test", "--mode", "floppy"]);
    assert_eq!(c.output().unwrap().status.code(), Some(2));
}

/// A bare name is a shipped profile: a `profiles/minimal.toml` in the
/// directory the admin stands in (it could carry root-run hooks) does not
/// shadow the shipped one; an argument ending in `.toml` reads that file.
#[test]
fn cwd_profiles_do_not_shadow_shipped_ones() {
    let l = TestLayout::temp();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cwd.path().join("profiles")).unwrap();
    std::fs::write(
        cwd.path().join("profiles/minimal.toml"),
        "name = \"evil\"\n",
    )
    .unwrap();
    std::fs::write(cwd.path().join("minimal"), "name = \"evil2\"\n").unwrap();
    let mut c = nfsroot(&l);
    c.args(["--json", "profile", "show", "minimal"])
        .current_dir(cwd.path());
    let v: serde_json::Value = serde_json::from_slice(&run(c, true).stdout).unwrap();
    assert_eq!(v["result"]["name"], "minimal");
    // The explicit forms read the file.
    let mut c = nfsroot(&l);
    c.args(["--json", "profile", "show", "profiles/minimal.toml"])
        .current_dir(cwd.path());
    let v: serde_json::Value = serde_json::from_slice(&run(c, true).stdout).unwrap();
    assert_eq!(v["result"]["name"], "evil");
    // <etc>/nfsroot/profiles comes before the shipped profile.
    let shipped = l.etc().join("nfsroot/profiles");
    std::fs::create_dir_all(&shipped).unwrap();
    std::fs::write(shipped.join("minimal.toml"), "name = \"site\"\n").unwrap();
    let mut c = nfsroot(&l);
    c.args(["--json", "profile", "show", "minimal"])
        .current_dir(cwd.path());
    let v: serde_json::Value = serde_json::from_slice(&run(c, true).stdout).unwrap();
    assert_eq!(v["result"]["name"], "site");
}

/// A reader that closes the pipe early (`nfsroot hosts list | head -1`)
/// ends the command quietly with exit 0, not a panic (exit 101).
#[test]
fn closed_stdout_exits_zero_quietly() {
    use std::process::Stdio;
    let l = TestLayout::temp();
    let inv = l.etc().join("nfsroot/inventory.toml");
    std::fs::create_dir_all(inv.parent().unwrap()).unwrap();
    std::fs::write(&inv, nfsroot::inventory::EXAMPLE).unwrap();
    for args in [&["hosts", "list"][..], &["profile", "show", "minimal"][..]] {
        let mut c = nfsroot(&l);
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        // No reader at all: the first write gets EPIPE.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}
