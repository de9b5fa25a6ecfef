//! `/etc/nfsroot-release`: which image this is and where it came from, as
//! shell-sourceable lines (the boot hook prints BUILD_ID on the console).

use super::{Ctx, write_file};
use crate::imagefs::ImageRoot;
use anyhow::Result;

/// The release stamp. Pure.
pub fn render(ctx: &Ctx<'_>) -> String {
    let p = ctx.profile;
    format!(
        "NAME={}\nBUILD_ID={}\nBUILD_DATE={}\nPROFILE_SHA256={}\nSUITE={}\nARCHITECTURE={}\nNFSROOT_VERSION={}\n",
        p.name,
        ctx.build_id,
        ctx.build_date,
        ctx.profile_digest,
        p.suite,
        p.architecture,
        env!("CARGO_PKG_VERSION")
    )
}

pub fn apply(root: &ImageRoot, ctx: &Ctx<'_>) -> Result<bool> {
    write_file(root, "/etc/nfsroot-release", &render(ctx), 0o644)
}

/// A restored tree is a new version: its stamp gets `build_id` and
/// `build_date`, every other line stays. Returns the id it had.
pub fn restamp(root: &ImageRoot, build_id: &str, build_date: &str) -> Result<Option<String>> {
    let text = root
        .read_to_string_opt("etc/nfsroot-release")?
        .unwrap_or_default();
    let mut old = None;
    let mut out: Vec<String> = vec![
        format!("BUILD_ID={build_id}"),
        format!("BUILD_DATE={build_date}"),
    ];
    for l in text.lines() {
        match l.split_once('=') {
            Some(("BUILD_ID", v)) => old = Some(v.trim_matches('"').to_string()),
            Some(("BUILD_DATE", _)) => {}
            _ => out.push(l.to_string()),
        }
    }
    write_file(
        root,
        "/etc/nfsroot-release",
        &(out.join("\n") + "\n"),
        0o644,
    )?;
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn stamp() {
        let p = profile("");
        let d = fake_root();
        idempotent(super::apply, d.path(), &ctx(&p));
        let t = std::fs::read_to_string(d.path().join("etc/nfsroot-release")).unwrap();
        assert!(
            t.starts_with("NAME=t\nBUILD_ID=20260101T000000Z-abcdef\n"),
            "{t}"
        );
        let img = crate::imagefs::ImageRoot::open(d.path()).unwrap();
        let old = super::restamp(&img, "new-id", "2027").unwrap();
        assert_eq!(old.as_deref(), Some("20260101T000000Z-abcdef"));
        let t2 = std::fs::read_to_string(d.path().join("etc/nfsroot-release")).unwrap();
        assert!(
            t2.starts_with("BUILD_ID=new-id\nBUILD_DATE=2027\nNAME=t\n"),
            "{t2}"
        );
        assert_eq!(t2.lines().count(), t.lines().count(), "{t2}");
    }
}
