//! `/etc/mtab` is the kernel's mount table, never a file that a shared
//! root would have every node overwrite.

use super::{Ctx, symlink};
use crate::imagefs::ImageRoot;
use anyhow::Result;

pub fn apply(root: &ImageRoot, _ctx: &Ctx<'_>) -> Result<bool> {
    symlink(root, "/etc/mtab", "../proc/self/mounts")
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn mtab_is_a_link() {
        let p = profile("");
        let d = fake_root();
        idempotent(super::apply, d.path(), &ctx(&p));
        assert_eq!(
            std::fs::read_link(d.path().join("etc/mtab")).unwrap(),
            std::path::Path::new("../proc/self/mounts")
        );
    }
}
