//! Finding, reading and parsing a profile. A bare name is a shipped
//! profile (`<etc-dir>/nfsroot/profiles/`, then the package's
//! `/usr/share/nfsroot/profiles/`, never the current directory); anything
//! else is a file. Serde errors and
//! validation errors both leave here as `FILE:LINE:COL: KEY: MESSAGE`:
//! serde gives a byte span, a validation error a key path, and both are
//! mapped back onto the text with `toml_edit`.
//!
//! Where the shipped files are is fixed when the binary is built: the
//! package build (`scripts/package`) sets `NFSROOT_SHARE_DIR` to
//! `/usr/share/nfsroot`, so no build path reaches the binary; any other
//! build (`cargo build` in a checkout) uses its checkout's `profiles/`
//! while that directory exists, and `/usr/share/nfsroot` otherwise.
use super::Profile;
use super::validate::{Invalid, control_chars, validate};
use anyhow::{Result, anyhow, bail};
use std::path::{Path, PathBuf};

/// Where the Debian package puts shipped profiles (`profiles/`) and the
/// hooks and examples that go with them.
pub const SHARE_DIR: &str = "/usr/share/nfsroot";

/// `NFSROOT_SHARE_DIR` at compile time (the package's build sets it).
const BUILT_SHARE_DIR: Option<&str> = option_env!("NFSROOT_SHARE_DIR");

/// The checkout this binary was built from, unless the build named a
/// share directory: a constant, so a packaged binary holds no build path
/// at any optimisation level (at `opt-level` 0 an unused match arm's
/// string stays in the binary).
const CHECKOUT: &str = match BUILT_SHARE_DIR {
    Some(_) => "",
    None => env!("CARGO_MANIFEST_DIR"),
};

/// The directory of shipped files for this binary (see the module doc).
pub fn share_dir() -> PathBuf {
    match BUILT_SHARE_DIR {
        Some(d) => PathBuf::from(d),
        None => checkout_or_installed(Path::new(CHECKOUT)),
    }
}

/// A source checkout's own files while it exists, else the installed ones.
fn checkout_or_installed(checkout: &Path) -> PathBuf {
    if checkout.join("profiles").is_dir() {
        checkout.to_path_buf()
    } else {
        PathBuf::from(SHARE_DIR)
    }
}

/// A profile together with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub profile: Profile,
    /// The file (or `<builtin>/NAME.toml`).
    pub origin: PathBuf,
    /// The directory relative hook paths are resolved against.
    pub dir: PathBuf,
    /// The source text (its sha256 is the profile digest).
    pub text: String,
}

impl Loaded {
    /// sha256 of the profile text, recorded in the release stamp.
    pub fn digest(&self) -> String {
        crate::fsutil::sha256_bytes(self.text.as_bytes())
    }

    /// A hook path as given in the profile, resolved.
    pub fn hook_path(&self, h: &str) -> PathBuf {
        let p = Path::new(h);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// Where shipped profiles live below the etc dir (`/etc` unless
/// `--etc-dir` / `NFSROOT_ETC_DIR`).
pub const ETC_PROFILES: &str = "nfsroot/profiles";

/// Load a profile. An argument with a `/` or ending in `.toml` is a file;
/// a bare name is a shipped profile: `<etc_dir>/nfsroot/profiles/NAME.toml`,
/// then `<share>/profiles/NAME.toml` ([`share_dir`]). The current directory
/// is never searched: a `profiles/NAME.toml` wherever the admin stands
/// (with hooks that run as root) must not shadow the shipped one.
pub fn load(name_or_path: &str, etc_dir: &Path) -> Result<Loaded> {
    load_from(name_or_path, etc_dir, &share_dir())
}

/// [`load`] with the shipped directory given.
fn load_from(name_or_path: &str, etc_dir: &Path, share: &Path) -> Result<Loaded> {
    if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
        return load_file(Path::new(name_or_path));
    }
    if !is_profile_name(name_or_path) {
        bail!(
            "{name_or_path:?} is not a profile name (letters, digits, . _ -);              to read a file, give a path with a / or ending in .toml"
        );
    }
    let dirs = [etc_dir.join(ETC_PROFILES), share.join("profiles")];
    for dir in &dirs {
        let f = dir.join(format!("{name_or_path}.toml"));
        if f.exists() {
            return load_file(&f);
        }
    }
    bail!(
        "no profile named {name_or_path:?} in {} or {} (shipped: {}); \
         to read a file, give a path with a / or ending in .toml, e.g. ./{name_or_path}.toml",
        dirs[0].display(),
        dirs[1].display(),
        shipped_names(&dirs[1]).join(", ")
    )
}

/// The profile names in a directory of `NAME.toml` files, sorted.
fn shipped_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            n.strip_suffix(".toml").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// A bare profile name: what may follow `<etc>/nfsroot/profiles/`.
fn is_profile_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Read and parse one profile file; relative hooks resolve next to it.
fn load_file(p: &Path) -> Result<Loaded> {
    let text =
        std::fs::read_to_string(p).map_err(|e| anyhow!("reading profile {}: {e}", p.display()))?;
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, p, &dir)
}

/// Parse and validate profile text; `origin` names it in errors.
pub fn parse(text: &str, origin: &Path, dir: &Path) -> Result<Loaded> {
    // First, so no message (serde's included) echoes a control character.
    if let Some(e) = control_chars(text).into_iter().next() {
        return Err(at_key(text, origin, &e));
    }
    let profile: Profile = match toml::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            let start = e.span().map_or(0, |s| s.start);
            let (line, col) = line_col(text, start);
            // Name the key, as validation errors do (serde gives a span).
            let msg = e.message().trim_end();
            let key = key_at(text, start)
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            bail!("{}:{line}:{col}: {key}{msg}", origin.display());
        }
    };
    let loaded = Loaded {
        profile,
        origin: origin.to_path_buf(),
        dir: dir.to_path_buf(),
        text: text.to_string(),
    };
    if let Err(e) = validate(&loaded) {
        return Err(at_key(text, origin, &e));
    }
    Ok(loaded)
}

/// A validation failure as `FILE:LINE:COL: KEY: MESSAGE`.
fn at_key(text: &str, origin: &Path, e: &Invalid) -> anyhow::Error {
    let (line, col) = locate(text, &e.key).unwrap_or((1, 1));
    anyhow!(
        "{}:{line}:{col}: {}: {}",
        origin.display(),
        e.key.join("."),
        e.msg
    )
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, off: usize) -> (usize, usize) {
    let before = &text[..off.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// The dotted key path of the deepest key or value at byte `off`, so a
/// serde error (which has only a span) can name its field.
pub(crate) fn key_at(text: &str, off: usize) -> Option<String> {
    use toml_edit::{Item, Value};
    fn within(span: Option<std::ops::Range<usize>>, off: usize) -> bool {
        span.is_some_and(|s| s.start <= off && off < s.end.max(s.start + 1))
    }
    fn value(v: &Value, off: usize, path: &mut Vec<String>) {
        match v {
            Value::InlineTable(t) => {
                for (k, v) in t.iter() {
                    let kspan = t.key(k).and_then(|kk| kk.span());
                    if within(kspan, off) || within(v.span(), off) {
                        path.push(k.to_string());
                        value(v, off, path);
                        return;
                    }
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    if within(v.span(), off) {
                        path.push(i.to_string());
                        value(v, off, path);
                        return;
                    }
                }
            }
            _ => {}
        }
    }
    fn table(t: &toml_edit::Table, off: usize, path: &mut Vec<String>) -> bool {
        for (k, it) in t.iter() {
            let kspan = t.key(k).and_then(|kk| kk.span());
            match it {
                Item::Value(v) if within(kspan, off) || within(v.span(), off) => {
                    path.push(k.to_string());
                    value(v, off, path);
                    return true;
                }
                Item::Table(sub) => {
                    path.push(k.to_string());
                    if table(sub, off, path) || within(sub.span(), off) {
                        return true;
                    }
                    path.pop();
                }
                _ => {}
            }
        }
        false
    }
    let doc = toml_edit::ImDocument::parse(text.to_string()).ok()?;
    let mut path = Vec::new();
    table(doc.as_table(), off, &mut path);
    (!path.is_empty()).then(|| path.join("."))
}

/// Find the span of a key path (`["mounts","1","target"]`) in the text:
/// the deepest key that exists, so a missing key points at its table.
pub(crate) fn locate(text: &str, key: &[String]) -> Option<(usize, usize)> {
    let doc = toml_edit::ImDocument::parse(text.to_string()).ok()?;
    locate_in(&doc, text, key)
}

/// [`locate`] in an already parsed document (for callers locating many
/// keys: one parse, not one per key).
pub(crate) fn locate_in(
    doc: &toml_edit::ImDocument<String>,
    text: &str,
    key: &[String],
) -> Option<(usize, usize)> {
    use toml_edit::{Item, Value};
    enum Node<'a> {
        Item(&'a Item),
        Table(&'a dyn toml_edit::TableLike),
        Value(&'a Value),
    }
    let mut best: Option<usize> = None;
    let mut cur = Node::Item(doc.as_item());
    for k in key {
        let idx = k.parse::<usize>().ok();
        cur = match (cur, idx) {
            (Node::Item(Item::ArrayOfTables(a)), Some(i)) => {
                let t = a.get(i)?;
                if let Some(s) = t.span() {
                    best = Some(s.start);
                }
                Node::Table(t)
            }
            (Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)), Some(i)) => {
                let v = a.get(i)?;
                if let Some(s) = v.span() {
                    best = Some(s.start);
                }
                Node::Value(v)
            }
            (Node::Item(it), None) => {
                let (kk, v) = it.as_table_like()?.get_key_value(k)?;
                if let Some(s) = kk.span() {
                    best = Some(s.start);
                }
                Node::Item(v)
            }
            (Node::Table(t), None) => {
                let (kk, v) = t.get_key_value(k)?;
                if let Some(s) = kk.span() {
                    best = Some(s.start);
                }
                Node::Item(v)
            }
            (Node::Value(Value::InlineTable(t)), None) => {
                let (kk, v) = t.get_key_value(k)?;
                if let Some(s) = kk.span() {
                    best = Some(s.start);
                }
                Node::Item(v)
            }
            _ => break,
        };
    }
    best.map(|b| line_col(text, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Hooks;

    fn p(text: &str) -> Result<Loaded> {
        parse(text, Path::new("t.toml"), Path::new("."))
    }

    /// The shipped profiles parse; hooks they name would resolve next to
    /// them, never in the current directory. In a checkout, the checkout's
    /// own profiles are the shipped ones.
    #[test]
    fn shipped_profiles_parse() {
        let etc = tempfile::tempdir().unwrap();
        let share = share_dir();
        assert_eq!(share, Path::new(env!("CARGO_MANIFEST_DIR")));
        for n in ["minimal", "cluster"] {
            let l = load(n, etc.path()).unwrap();
            assert_eq!(l.origin, share.join(format!("profiles/{n}.toml")));
            assert_eq!(l.dir, share.join("profiles"));
            assert_eq!(l.profile.hooks, Hooks::default(), "{n}");
        }
    }

    /// A checkout that is gone (the binary was copied elsewhere) falls
    /// back to the installed files.
    #[test]
    fn gone_checkout_means_installed_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(checkout_or_installed(d.path()), Path::new(SHARE_DIR));
        std::fs::create_dir(d.path().join("profiles")).unwrap();
        assert_eq!(checkout_or_installed(d.path()), d.path());
    }

    #[test]
    fn etc_profiles_come_before_shipped_ones() {
        let etc = tempfile::tempdir().unwrap();
        let share = tempfile::tempdir().unwrap();
        let shipped = share.path().join("profiles");
        std::fs::create_dir_all(&shipped).unwrap();
        std::fs::write(shipped.join("minimal.toml"), "name = \"shipped\"\n").unwrap();
        std::fs::write(shipped.join("other.toml"), "name = \"other\"\n").unwrap();
        let l = load_from("minimal", etc.path(), share.path()).unwrap();
        assert_eq!(l.profile.name, "shipped");
        let dir = etc.path().join(ETC_PROFILES);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("minimal.toml"), "name = \"site\"\n").unwrap();
        let l = load_from("minimal", etc.path(), share.path()).unwrap();
        assert_eq!(l.profile.name, "site");
        assert_eq!(l.origin, dir.join("minimal.toml"));
        let e = load_from("nosuch", etc.path(), share.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("./nosuch.toml"), "{e}");
        assert!(e.contains("(shipped: minimal, other)"), "{e}");
        assert!(load_from("../x", etc.path(), share.path()).is_err());
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = p("name = \"x\"\n[nfs]\nservr = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:3:1:"), "{e}");
        assert!(e.contains("servr"), "{e}");
        assert!(e.contains("expected one of"), "{e}");
    }

    #[test]
    fn syntax_error_has_position() {
        let e = p("name = \"x\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:1:"), "{e}");
    }

    /// A bad choice names the file, the line and column of the value, the
    /// key, what was found and what is allowed; a value of the wrong type
    /// says what it is.
    #[test]
    fn bad_choice_names_value_and_allowed() {
        for (text, want) in [
            (
                "name = \"x\"\n[nfs]\nroot_mode = \"readonly\"\n",
                "t.toml:3:13: nfs.root_mode: \"readonly\" is not allowed; expected one of: ro, rw",
            ),
            (
                "name = \"x\"\n[logs]\nlayout = \"perhost\"\n",
                "t.toml:3:10: logs.layout: \"perhost\" is not allowed; expected one of: per-host, local",
            ),
            (
                "name = \"x\"\n[hostname]\nsources = [\"dns\", \"ldap\"]\n",
                "t.toml:3:19: hostname.sources.1: \"ldap\" is not allowed; \
                 expected one of: hosts, dhcp, dns, pattern",
            ),
            (
                "name = \"x\"\n[initramfs]\ncompression = \"gz\"\n",
                "t.toml:3:15: initramfs.compression: \"gz\" is not allowed; expected one of: gzip, zstd",
            ),
            (
                "name = \"x\"\n[initramfs]\nbackend = \"dracut\"\n",
                "t.toml:3:11: initramfs.backend: \"dracut\" is not allowed; \
                 expected one of: nfsroot, initramfs-tools",
            ),
            (
                "name = \"x\"\n[nfs]\nroot_mode = 1\n",
                "t.toml:3:13: nfs.root_mode: invalid type: integer `1`, expected a string",
            ),
        ] {
            let e = p(text).unwrap_err().to_string();
            assert_eq!(e, want);
        }
    }

    /// Control characters are refused before serde reads the text, so no
    /// error (serde's `unknown variant` included) echoes a newline.
    #[test]
    fn control_characters_come_before_serde_errors() {
        for text in [
            "name = \"x\"\nbootstrapper = \"auto\\nevil\"\n",
            "name = \"x\"\n[nfs]\nroot_mode = \"ro\\nrw\"\n",
        ] {
            let e = p(text).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e:?}");
            assert!(e.contains("control character U+000A"), "{e}");
        }
    }
}
