//! POSIX ACLs between the kernel's xattr form and tar's text form.
//!
//! The kernel stores an ACL as the `system.posix_acl_access` (or
//! `_default`) xattr: a version word and sorted 8-byte entries. GNU tar and
//! bsdtar carry ACLs as `SCHILY.acl.access`/`SCHILY.acl.default` text
//! (`user:1000:r-x` lines); GNU tar also stores the raw xattr. Snapshots
//! write both, with numeric ids, so either kind of reader restores them;
//! restore prefers the raw value and falls back to the text, resolving a
//! name that is not a number against the host's user database as tar does.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;

pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED: u32 = u32::MAX;

/// Kernel xattr value to tar text (numeric ids, one entry a line).
pub fn to_text(v: &[u8]) -> Option<String> {
    if v.len() < 4 || (v.len() - 4) % 8 != 0 {
        return None;
    }
    if u32::from_le_bytes(v[..4].try_into().ok()?) != VERSION {
        return None;
    }
    let mut s = String::new();
    for e in v[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let (kind, qual) = match tag {
            USER_OBJ => ("user", String::new()),
            USER => ("user", id.to_string()),
            GROUP_OBJ => ("group", String::new()),
            GROUP => ("group", id.to_string()),
            MASK => ("mask", String::new()),
            OTHER => ("other", String::new()),
            _ => return None,
        };
        let p = |bit: u16, c: char| if perm & bit != 0 { c } else { '-' };
        s.push_str(&format!(
            "{kind}:{qual}:{}{}{}\n",
            p(4, 'r'),
            p(2, 'w'),
            p(1, 'x')
        ));
    }
    Some(s)
}

fn lookup_id(name: &str, group: bool) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    if group {
        let g = nix::unistd::Group::from_name(name).ok()??;
        Some(g.gid.as_raw())
    } else {
        let u = nix::unistd::User::from_name(name).ok()??;
        Some(u.uid.as_raw())
    }
}

/// Tar text to the kernel xattr value. Accepts `,` or newline separators,
/// comments, names or numbers, and libarchive's trailing `:id` field.
pub fn from_text(text: &str) -> Result<Vec<u8>> {
    let mut entries: Vec<(u16, u32, u16)> = Vec::new();
    for raw in text.split([',', '\n']) {
        let e = raw.split('#').next().unwrap_or("").trim();
        if e.is_empty() {
            continue;
        }
        let f: Vec<&str> = e.split(':').collect();
        if f.len() < 3 {
            bail!("ACL entry {e:?} is not tag:qualifier:perms");
        }
        let (tag, qual, perms) = (f[0], f[1], f[2]);
        let explicit_id = f.get(3).and_then(|s| s.parse::<u32>().ok());
        let perm = perms.chars().try_fold(0u16, |acc, c| match c {
            'r' => Some(acc | 4),
            'w' => Some(acc | 2),
            'x' => Some(acc | 1),
            '-' => Some(acc),
            _ => None,
        });
        let perm = perm.with_context(|| format!("ACL entry {e:?} has bad permissions"))?;
        let (t, id) = match (tag, qual.is_empty()) {
            ("user" | "u", true) => (USER_OBJ, UNDEFINED),
            ("group" | "g", true) => (GROUP_OBJ, UNDEFINED),
            ("mask" | "m", _) => (MASK, UNDEFINED),
            ("other" | "o", _) => (OTHER, UNDEFINED),
            ("user" | "u", false) => (
                USER,
                explicit_id
                    .or_else(|| lookup_id(qual, false))
                    .with_context(|| format!("ACL user {qual:?} is unknown on this host"))?,
            ),
            ("group" | "g", false) => (
                GROUP,
                explicit_id
                    .or_else(|| lookup_id(qual, true))
                    .with_context(|| format!("ACL group {qual:?} is unknown on this host"))?,
            ),
            _ => bail!("ACL entry {e:?} has an unknown tag"),
        };
        entries.push((t, id, perm));
    }
    entries.sort();
    let mut v = VERSION.to_le_bytes().to_vec();
    for (t, id, p) in entries {
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    Ok(v)
}

/// Whether an ACL value holds only the three entries the mode expresses.
fn is_minimal(v: &[u8]) -> bool {
    v.len() == 4 + 3 * 8
}

/// `SCHILY.acl.*` text records for the ACL xattrs among `xattrs`.
pub fn pax_records(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for (k, v) in xattrs {
        let key: &[u8] = if k == ACCESS {
            b"SCHILY.acl.access"
        } else if k == DEFAULT {
            b"SCHILY.acl.default"
        } else {
            continue;
        };
        if let Some(t) = to_text(v) {
            out.push((key.to_vec(), t.into_bytes()));
        }
    }
    out
}

/// Add ACL xattrs from `SCHILY.acl.*` text where the raw value is absent.
pub fn merge_text_acls(
    pax: &HashMap<Vec<u8>, Vec<u8>>,
    xattrs: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<()> {
    for (key, name) in [
        (&b"SCHILY.acl.access"[..], ACCESS),
        (&b"SCHILY.acl.default"[..], DEFAULT),
    ] {
        let Some(text) = pax.get(key) else { continue };
        if xattrs.iter().any(|(k, _)| k == name) {
            continue;
        }
        let text = String::from_utf8_lossy(text);
        let v = from_text(&text).with_context(|| format!("{}", String::from_utf8_lossy(key)))?;
        if v.len() == 4 || (name == ACCESS && is_minimal(&v)) {
            // An access ACL of three entries is just the mode.
            continue;
        }
        xattrs.push((name.to_vec(), v));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_roundtrip_matches_gnu_tar() {
        // The raw value and text GNU tar 1.34 stored for one file.
        let raw = hex::decode(
            "0200000001000600ffffffff02000500d204000004000400ffffffff\
             080006003700000010000700ffffffff20000400ffffffff",
        )
        .unwrap();
        let text = "user::rw-\nuser:1234:r-x\ngroup::r--\ngroup:55:rw-\nmask::rwx\nother::r--\n";
        assert_eq!(to_text(&raw).unwrap(), text);
        assert_eq!(from_text(text).unwrap(), raw);
        assert_eq!(
            from_text("u::rw-,g::r--,o::r--,u:1234:r-x:1234,g:55:rw-,m::rwx").unwrap(),
            raw
        );
    }
}
