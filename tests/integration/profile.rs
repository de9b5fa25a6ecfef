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
