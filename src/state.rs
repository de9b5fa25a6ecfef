//! What the tool keeps about each image outside its tree, under
//! `<base-dir>/.nfsroot/` (root-only): the profile it was built from.
//!
//! Build saves the profile (it may hold the root password hash: 0600 in a
//! 0700 directory); publish, upgrade-kernel, sync and boot-test read it
//! back. Server-side decisions about an image (root mode, log export)
//! come from here, never from a file inside the image.

use crate::fsutil;
use crate::image::Layout;
use crate::profile::{Loaded, Profile};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Where the profile an image was built from is kept (for upgrade-kernel).
pub fn saved_profile_path(layout: &Layout, image: &str) -> PathBuf {
    layout
        .state_dir()
        .join("profiles")
        .join(format!("{image}.toml"))
}

/// Keep the profile an image was built from (upgrade-kernel and publish
/// use it later). It can hold the root password hash: the file is 0600 in a
/// 0700 directory.
pub fn save_profile(layout: &Layout, loaded: &Loaded) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let saved = saved_profile_path(layout, &loaded.profile.name);
    let dir = saved.parent().expect("has parent");
    fsutil::mkdir_p(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting mode of {}", dir.display()))?;
    let same = std::fs::read_to_string(&saved).ok().as_deref() == Some(loaded.text.as_str());
    let private = std::fs::metadata(&saved).is_ok_and(|m| m.permissions().mode() & 0o077 == 0);
    if !same || !private {
        fsutil::atomic_write_mode(&saved, loaded.text.as_bytes(), 0o600)?;
    }
    Ok(())
}

/// Load the profile an image was built from.
pub fn saved_profile(layout: &Layout, image: &str) -> Result<Loaded> {
    let p = saved_profile_path(layout, image);
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "reading {} (the profile image {image} was built from); rebuild the image with nfsroot build",
            p.display()
        )
    })?;
    // Hooks do not run after the build; resolve them against the state dir.
    let mut value: toml::Table = toml::from_str(&text)?;
    value.remove("hooks");
    let text = toml::to_string(&value)?;
    crate::profile::parse(&text, &p, p.parent().unwrap_or(Path::new(".")))
}

/// The profile image `image` was built from; the defaults when none is
/// saved (an image made by hand, or by an older nfsroot). Server-side
/// decisions about an image come from here, never from its tree.
pub fn image_profile(layout: &Layout, image: &str) -> Result<Profile> {
    if saved_profile_path(layout, image).is_file() {
        return Ok(saved_profile(layout, image)?.profile);
    }
    let text = format!("name = {}\n", toml::Value::String(image.to_string()));
    Ok(crate::profile::parse(&text, Path::new("(defaults)"), Path::new("."))?.profile)
}
