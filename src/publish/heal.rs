//! Healing: published files of older kernels that were deleted or altered
//! by hand are rewritten from the image when it yields the recorded bytes
//! (the kernel as shipped, the initramfs rebuilt: it is reproducible), else
//! their labels leave the boot menu. Every publish runs it.

use super::record::{PublishedKernel, Record, verify};
use crate::fsutil;
use crate::imagefs::ImageRoot;
use crate::kernel;
use crate::profile::Profile;
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// Restore the files of published kernels (other than `current`) that do
/// not match the record: the kernel from the image, the initramfs rebuilt
/// (it is reproducible), each written only when its checksum is the
/// recorded one. A kernel that cannot be restored is dropped from `rec`,
/// with a line saying so. Returns the files written and the kernels lost.
pub fn heal(
    tftp: &Path,
    img: &ImageRoot,
    p: &Profile,
    rec: &mut Record,
    current: &str,
    on_line: &mut dyn FnMut(&str),
) -> Result<(Vec<PathBuf>, Vec<PublishedKernel>)> {
    let mut written = Vec::new();
    let mut lost = Vec::new();
    for k in rec.kernels.iter().filter(|k| k.version != current) {
        if verify(tftp, k).is_ok() {
            continue;
        }
        match restore_files(tftp, img, p, k) {
            Ok(w) => {
                on_line(&format!(
                    "{}: restored {} file(s) altered or deleted by hand",
                    k.version,
                    w.len()
                ));
                written.extend(w);
            }
            Err(e) => {
                on_line(&format!(
                    "{}: its published files were altered or deleted and cannot be \
                     rebuilt ({e:#}); dropping it from the boot menu",
                    k.version
                ));
                lost.push(k.clone());
            }
        }
    }
    rec.kernels
        .retain(|k| !lost.iter().any(|l| l.version == k.version));
    Ok((written, lost))
}

/// Rewrite one published kernel's files from the image if it yields the
/// recorded bytes.
fn restore_files(
    tftp: &Path,
    img: &ImageRoot,
    p: &Profile,
    k: &PublishedKernel,
) -> Result<Vec<PathBuf>> {
    let kern = kernel::select(img, Some(&k.version))?;
    let mut written = Vec::new();
    let kernel_ok = fsutil::sha256_file(&tftp.join(&k.kernel)).ok().as_deref()
        == Some(k.kernel_sha256.as_str());
    if !kernel_ok {
        let data = img.read(&kern.vmlinuz)?;
        if fsutil::sha256_bytes(&data) != k.kernel_sha256 {
            bail!(
                "the image's {} is not the published one",
                img.show(&kern.vmlinuz)
            );
        }
        fsutil::atomic_copy_from(&data[..], &tftp.join(&k.kernel), 0o644)?;
        written.push(tftp.join(&k.kernel));
    }
    let initrd_ok = fsutil::sha256_file(&tftp.join(&k.initrd)).ok().as_deref()
        == Some(k.initrd_sha256.as_str());
    if !initrd_ok {
        let data = super::build_initramfs(img, &kern, p)?;
        if fsutil::sha256_bytes(&data) != k.initrd_sha256 {
            bail!(
                "a rebuilt initramfs for {} differs from the published one",
                k.version
            );
        }
        fsutil::atomic_copy_from(&data[..], &tftp.join(&k.initrd), 0o644)?;
        written.push(tftp.join(&k.initrd));
    }
    verify(tftp, k)?;
    Ok(written)
}
