//! Profiles: the TOML that describes an image.
//!
//! A profile is parsed with serde (`deny_unknown_fields` everywhere), then
//! validated as a whole. Both kinds of error carry the file, the line and
//! column, the key, and what is allowed: serde errors come with a byte span
//! from the toml parser; semantic errors find their key's span by walking a
//! `toml_edit` document of the same text. Every value that reaches a
//! generated file is checked for that file's syntax (fstab, exports, shadow,
//! authorized_keys, the kernel command line, PXELINUX), and no key or value
//! may hold a control character. Defaults are filled by serde, so
//! `profile show` prints exactly what a build will use.
//!
//! A profile argument with a `/` or ending in `.toml` is a file; a bare name
//! is a shipped profile, looked up in `<etc-dir>/nfsroot/profiles/` and then
//! in `/usr/share/nfsroot/profiles/` (a source checkout's own `profiles/`
//! for a development build), never in the current directory.
//!
//! The module is split by stage: `model` holds the serde structs and
//! their defaults, `load` finds, reads and parses a profile and maps
//! errors to file:line:column, `validate` checks the parsed profile one
//! section at a time, and `pattern` renders the hostname pattern.

mod load;
mod model;
mod pattern;
mod validate;

pub use load::{ETC_PROFILES, Loaded, SHARE_DIR, load, parse, share_dir};
pub(crate) use load::{key_at, line_col, locate_in};
pub use model::*;
pub use pattern::render_pattern;
pub use validate::{
    ARCHES, SUITES, VARIANTS, is_host, is_hostname, is_plain_abs_path, is_unit_name,
};
pub(crate) use validate::{Invalid, control_chars, invalid};
