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
    }
}
