//! Choosing kernel modules for the initramfs from the image's own
//! `modules.dep`, `modules.alias`, `modules.softdep` and `modules.builtin`.
//!
//! Nothing runs `depmod` or `modprobe` at build time: the index files are
//! text, and reading them on the host works for any image architecture. A
//! [`ModuleSpec`] names what the profile wants (`default`, extra names,
//! exclusions); [`ModuleDb::resolve`] turns it into the closure of those
//! modules over hard and soft dependencies, and says which of them `/init`
//! loads unconditionally. Device drivers are never loaded blindly: `/init`
//! hands the modaliases of present PCI and virtio devices to busybox
//! `modprobe`, which matches them against the trimmed `modules.alias` we
//! write (busybox 1.35 does glob matching of aliases itself).

use crate::imagefs::ImageRoot;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the profile asks for. `include` holds module names or the word
/// `default`; `exclude` removes names from the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSpec {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// The root's NFS major version, when the profile pins one: `default`
    /// then brings only that version's client (see [`nfs_modules`]).
    pub nfs_version: Option<u32>,
    /// The network drivers `default` brings: `None` for every Ethernet
    /// driver of the kernel, or the nodes' own (the profile's
    /// `initramfs.net_drivers`), checked by [`ModuleDb::net_drivers`].
    pub net_drivers: Option<Vec<String>>,
}

impl Default for ModuleSpec {
    fn default() -> Self {
        Self {
            include: vec!["default".to_string()],
            exclude: Vec::new(),
            nfs_version: None,
            net_drivers: None,
        }
    }
}

impl ModuleSpec {
    /// Parse a comma/space separated list: plain words are included,
    /// words prefixed with `-` or `!` are excluded. An empty list means
    /// `default`. Example: `default,e1000,-virtio_net`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut spec = Self {
            include: Vec::new(),
            exclude: Vec::new(),
            nfs_version: None,
            net_drivers: None,
        };
        for w in s.split([',', ' ', '\n', '\t']).filter(|w| !w.is_empty()) {
            let (list, name) = match w.strip_prefix(['-', '!']) {
                Some(n) => (&mut spec.exclude, n),
                None => (&mut spec.include, w),
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                bail!("invalid module name {name:?} in module list {s:?}");
            }
            list.push(name.to_string());
        }
        if spec.include.is_empty() {
            spec.include.push("default".to_string());
        }
        Ok(spec)
    }
}

/// Modules always in the default set besides every Ethernet driver and
/// the NFS client ([`nfs_modules`]).
pub const DEFAULT_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

/// The NFS client of the default set, which `/init` loads whatever the
/// hardware: for a root pinned to NFSv3 or v4 only that version's module
/// (the other is the largest module `/init` would load: leaving nfsv4 out
/// took the initramfs from 2.8-3.0 s to 1.2-1.7 s under TCG); all of them
/// when the mount negotiates. Mounts after the switch load theirs from the
/// root's own /lib/modules.
pub fn nfs_modules(version: Option<u32>) -> &'static [&'static str] {
    match version {
        Some(3) => &["nfs", "nfsv3"],
        Some(4) => &["nfs", "nfsv4"],
        _ => &["nfs", "nfsv3", "nfsv4"],
    }
}

/// Directory prefix (in modules.dep) of the Ethernet drivers.
const ETHERNET_PREFIX: &str = "kernel/drivers/net/ethernet/";

/// The canonical module name: file stem with `-` as `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Module name of a modules.dep path (`kernel/fs/nfs/nfs.ko.xz` -> `nfs`).
pub fn name_of(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

/// One module of modules.dep.
#[derive(Debug, Clone)]
pub struct Module {
    /// Path relative to the modules directory, as in modules.dep.
    pub rel: String,
    /// Names of the modules it needs.
    pub deps: Vec<String>,
}

/// The parsed index files of one kernel.
#[derive(Debug)]
pub struct ModuleDb {
    pub kver: String,
    pub dir: PathBuf,
    pub modules: BTreeMap<String, Module>,
    /// `(pattern, module)` from modules.alias, in file order.
    pub aliases: Vec<(String, String)>,
    /// Soft dependencies (pre and post), by module name; entries may be
    /// aliases such as `crypto-crc32c`.
    pub softdeps: BTreeMap<String, Vec<String>>,
    pub builtin: BTreeSet<String>,
}

/// The result of resolving a [`ModuleSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Every module to ship (requested plus dependencies), by name.
    pub modules: BTreeSet<String>,
    /// Modules `/init` loads unconditionally (NFS and explicitly named
    /// modules that are not device drivers).
    pub always_load: Vec<String>,
}

fn read_optional(img: &ImageRoot, path: &Path) -> Result<String> {
    Ok(img.read_to_string_opt(path)?.unwrap_or_default())
}

impl ModuleDb {
    /// Read the index files in `dir` (`lib/modules/<kver>` inside `img`).
    pub fn load(img: &ImageRoot, dir: &Path, kver: &str) -> Result<Self> {
        let dep_path = dir.join("modules.dep");
        let dep = img.read_to_string_opt(&dep_path)?.with_context(|| {
            format!(
                "reading {} (kernel {kver}; run depmod {kver} in the image)",
                img.show(&dep_path)
            )
        })?;
        let mut db = Self {
            kver: kver.to_string(),
            dir: dir.to_path_buf(),
            modules: BTreeMap::new(),
            aliases: Vec::new(),
            softdeps: BTreeMap::new(),
            builtin: BTreeSet::new(),
        };
        db.parse_dep(&dep)
            .with_context(|| format!("parsing {}", img.show(&dep_path)))?;
        db.parse_alias(&read_optional(img, &dir.join("modules.alias"))?);
        db.parse_softdep(&read_optional(img, &dir.join("modules.softdep"))?);
        for l in read_optional(img, &dir.join("modules.builtin"))?.lines() {
            if !l.trim().is_empty() {
                db.builtin.insert(name_of(l.trim()));
            }
        }
        Ok(db)
    }

    fn parse_dep(&mut self, text: &str) -> Result<()> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (m, deps) = line
                .split_once(':')
                .with_context(|| format!("line {}: no ':' in {line:?}", n + 1))?;
            self.modules.insert(
                name_of(m),
                Module {
                    rel: m.to_string(),
                    deps: deps.split_whitespace().map(name_of).collect(),
                },
            );
        }
        Ok(())
    }

    fn parse_alias(&mut self, text: &str) {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(pat), Some(m)) = (w.next(), w.next(), w.next()) {
                self.aliases.push((pat.to_string(), normalize(m)));
            }
        }
    }

    fn parse_softdep(&mut self, text: &str) {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(m) = w.next() else { continue };
            let deps: Vec<String> = w
                .filter(|t| *t != "pre:" && *t != "post:")
                .map(str::to_string)
                .collect();
            self.softdeps.entry(normalize(m)).or_default().extend(deps);
        }
    }

    /// Modules a soft dependency names: the module itself, or the modules
    /// an exact (non-glob) alias points to. Unknown ones (often built in)
    /// resolve to nothing.
    fn soft_targets(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        if self.modules.contains_key(&n) {
            return vec![n];
        }
        self.aliases
            .iter()
            .filter(|(pat, m)| pat == name && self.modules.contains_key(m))
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Whether `name` has an alias for a device bus (`pci:`, `virtio:`...),
    /// i.e. is a driver loaded for hardware rather than a service module.
    pub fn is_device_driver(&self, name: &str) -> bool {
        self.aliases
            .iter()
            .any(|(pat, m)| m == name && pat.contains(':'))
    }

    /// The default set: the network drivers ([`Self::net_drivers`]),
    /// virtio_pci/virtio_net and the NFS client for the spec's NFS version
    /// (those the kernel has as modules).
    pub fn default_set(&self, spec: &ModuleSpec) -> Result<BTreeSet<String>> {
        let mut s = self.net_drivers(spec.net_drivers.as_deref())?;
        s.extend(
            DEFAULT_MODULES
                .iter()
                .chain(nfs_modules(spec.nfs_version))
                .filter(|n| self.modules.contains_key(**n))
                .map(|n| n.to_string()),
        );
        Ok(s)
    }

    /// The network drivers to ship: every module under
    /// `drivers/net/ethernet/` when `names` is `None` (nodes of unknown
    /// hardware: 34 of the 42 MB that Debian 12's kernel puts in the
    /// archive), else those names (the nodes' own cards: a 2 MB
    /// initramfs for every node to fetch at once). Each name must be a
    /// device driver of this kernel, or built into it.
    pub fn net_drivers(&self, names: Option<&[String]>) -> Result<BTreeSet<String>> {
        let Some(names) = names else {
            return Ok(self
                .modules
                .iter()
                .filter(|(_, m)| m.rel.starts_with(ETHERNET_PREFIX))
                .map(|(n, _)| n.clone())
                .collect());
        };
        let mut s = BTreeSet::new();
        for name in names {
            let n = normalize(name);
            self.check_known(&n).context("initramfs.net_drivers")?;
            if self.builtin.contains(&n) {
                continue;
            }
            if !self.is_device_driver(&n) {
                bail!(
                    "initramfs.net_drivers: {n} is not a device driver of kernel {} \
                     (no device alias in {}): list the nodes' network card drivers \
                     as lsmod names them, e.g. igb, ixgbe, mlx5_core",
                    self.kver,
                    self.dir.join("modules.alias").display()
                );
            }
            s.insert(n);
        }
        Ok(s)
    }

    fn check_known(&self, name: &str) -> Result<()> {
        if !self.modules.contains_key(name) && !self.builtin.contains(name) {
            bail!(
                "unknown module {name} for kernel {}: not in {}",
                self.kver,
                self.dir.join("modules.dep").display()
            );
        }
        Ok(())
    }

    /// Resolve `spec` to the modules to ship, closed over dependencies.
    pub fn resolve(&self, spec: &ModuleSpec) -> Result<Selection> {
        let mut wanted = BTreeSet::new();
        let mut always = Vec::new();
        // An empty list means the default set, as in `parse`.
        let default = ["default".to_string()];
        let include = if spec.include.is_empty() {
            &default[..]
        } else {
            &spec.include[..]
        };
        for item in include {
            if item == "default" {
                wanted.extend(self.default_set(spec)?);
                always.extend(
                    nfs_modules(spec.nfs_version)
                        .iter()
                        .filter(|n| self.modules.contains_key(**n))
                        .map(|n| n.to_string()),
                );
                continue;
            }
            let n = normalize(item);
            self.check_known(&n)?;
            if self.modules.contains_key(&n) {
                if !self.is_device_driver(&n) {
                    always.push(n.clone());
                }
                wanted.insert(n);
            }
        }
        let mut excluded = BTreeSet::new();
        for item in &spec.exclude {
            let n = normalize(item);
            self.check_known(&n)?;
            excluded.insert(n);
        }
        wanted.retain(|n| !excluded.contains(n));
        always.retain(|n| !excluded.contains(n));

        // Close over hard and soft dependencies, remembering who pulled
        // each module in so a conflict with an exclusion can be named.
        let mut closed = BTreeSet::new();
        let mut stack: Vec<(String, Option<String>)> =
            wanted.iter().rev().map(|n| (n.clone(), None)).collect();
        while let Some((n, by)) = stack.pop() {
            if excluded.contains(&n) {
                bail!(
                    "module {n} is excluded but {} needs it (kernel {})",
                    by.as_deref().unwrap_or("?"),
                    self.kver
                );
            }
            if !closed.insert(n.clone()) {
                continue;
            }
            let m = self.modules.get(&n).with_context(|| {
                format!(
                    "module {n} (needed by {}) is missing from modules.dep of kernel {}",
                    by.as_deref().unwrap_or("?"),
                    self.kver
                )
            })?;
            for d in &m.deps {
                stack.push((d.clone(), Some(n.clone())));
            }
            for s in self.softdeps.get(&n).into_iter().flatten() {
                for t in self.soft_targets(s) {
                    if !excluded.contains(&t) {
                        stack.push((t, Some(n.clone())));
                    }
                }
            }
        }
        let mut seen = BTreeSet::new();
        always.retain(|n| seen.insert(n.clone()));
        Ok(Selection {
            modules: closed,
            always_load: always,
        })
    }

    /// modules.dep for the selection, with paths as they are in the
    /// initramfs (compressed modules are shipped decompressed).
    pub fn trimmed_dep(&self, sel: &Selection) -> String {
        let mut out = String::new();
        for n in &sel.modules {
            let m = &self.modules[n];
            out.push_str(&shipped_rel(&m.rel));
            out.push(':');
            for d in &m.deps {
                out.push(' ');
                out.push_str(&shipped_rel(&self.modules[d].rel));
            }
            out.push('\n');
        }
        out
    }

    /// modules.alias lines of the selected modules, in the original order.
    pub fn trimmed_alias(&self, sel: &Selection) -> String {
        let mut out = String::new();
        for (pat, m) in &self.aliases {
            if sel.modules.contains(m) {
                out.push_str(&format!("alias {pat} {m}\n"));
            }
        }
        out
    }
}

/// The path a module has in the initramfs: always an uncompressed `.ko`.
pub fn shipped_rel(rel: &str) -> String {
    for ext in [".ko.xz", ".ko.zst", ".ko.gz"] {
        if let Some(stem) = rel.strip_suffix(ext) {
            return format!("{stem}.ko");
        }
    }
    rel.to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny module tree: nfs stack, two NICs, virtio, and a softdep.
    pub(crate) fn fake_tree(dir: &Path) {
        let dep = "\
kernel/fs/nfs/nfs.ko: kernel/fs/lockd/lockd.ko kernel/net/sunrpc/sunrpc.ko
kernel/fs/nfs/nfsv3.ko: kernel/fs/nfs/nfs.ko kernel/fs/lockd/lockd.ko kernel/net/sunrpc/sunrpc.ko
kernel/fs/nfs/nfsv4.ko.zst: kernel/fs/nfs/nfs.ko kernel/net/sunrpc/sunrpc.ko
kernel/fs/lockd/lockd.ko: kernel/net/sunrpc/sunrpc.ko
kernel/net/sunrpc/sunrpc.ko:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/drivers/net/ethernet/realtek/8139too.ko: kernel/drivers/net/mii.ko
kernel/drivers/net/mii.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko
kernel/fs/overlayfs/overlay.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/gpu/drm/drm.ko:
";
        let alias = "\
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139too
alias virtio:d00000001v* virtio_net
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias fs-nfs nfs
alias crypto-crc32c crc32c_generic
alias fs-overlay overlay
";
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("modules.dep"), dep).unwrap();
        std::fs::write(dir.join("modules.alias"), alias).unwrap();
        std::fs::write(
            dir.join("modules.softdep"),
            "# comment\nsoftdep lockd pre: crypto-crc32c\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/net/unix/unix.ko\n").unwrap();
        for l in dep.lines() {
            let rel = l.split(':').next().unwrap();
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let body = format!("module {rel}");
            if rel.ends_with(".zst") {
                std::fs::write(&p, zstd::encode_all(body.as_bytes(), 3).unwrap()).unwrap();
            } else {
                std::fs::write(&p, body).unwrap();
            }
        }
    }

    fn db() -> (tempfile::TempDir, ModuleDb) {
        let d = tempfile::tempdir().unwrap();
        fake_tree(d.path());
        let img = ImageRoot::open(d.path()).unwrap();
        let db = ModuleDb::load(&img, Path::new(""), "6.1.0-9-amd64").unwrap();
        (d, db)
    }

    fn names(s: &BTreeSet<String>) -> Vec<&str> {
        s.iter().map(String::as_str).collect()
    }

    #[test]
    fn default_closure() {
        let (_d, db) = db();
        let sel = db.resolve(&ModuleSpec::default()).unwrap();
        assert_eq!(
            names(&sel.modules),
            [
                "8139too",
                "crc32c_generic",
                "e1000",
                "lockd",
                "mii",
                "net_failover",
                "nfs",
                "nfsv3",
                "nfsv4",
                "sunrpc",
                "virtio",
                "virtio_net",
                "virtio_pci"
            ]
        );
        assert_eq!(sel.always_load, ["nfs", "nfsv3", "nfsv4"]);
    }

    /// A root pinned to one NFS version gets that version's client only;
    /// a module named in the list still comes.
    #[test]
    fn default_follows_the_roots_nfs_version() {
        let (_d, db) = db();
        for (version, want, not) in [(Some(3), "nfsv3", "nfsv4"), (Some(4), "nfsv4", "nfsv3")] {
            let spec = ModuleSpec {
                nfs_version: version,
                ..ModuleSpec::default()
            };
            let sel = db.resolve(&spec).unwrap();
            assert!(
                sel.modules.contains(want) && !sel.modules.contains(not),
                "{version:?}"
            );
            assert_eq!(sel.always_load, ["nfs", want]);
        }
        let spec = ModuleSpec {
            nfs_version: Some(3),
            ..ModuleSpec::parse("default,nfsv4").unwrap()
        };
        let sel = db.resolve(&spec).unwrap();
        assert_eq!(sel.always_load, ["nfs", "nfsv3", "nfsv4"]);
    }

    #[test]
    fn exclude_nics() {
        let (_d, db) = db();
        let spec = ModuleSpec::parse("default,-virtio_net,-e1000,-8139too,-virtio_pci").unwrap();
        let sel = db.resolve(&spec).unwrap();
        assert!(!sel.modules.contains("virtio_net"));
        assert!(!sel.modules.contains("e1000"));
        assert!(!sel.modules.contains("mii"));
        assert!(sel.modules.contains("nfsv4"));
    }

    #[test]
    fn explicit_names_only() {
        let (_d, db) = db();
        let spec = ModuleSpec {
            include: vec![
                "e1000".into(),
                "overlay".into(),
                "nfs".into(),
                "unix".into(),
            ],
            exclude: vec![],
            nfs_version: None,
            net_drivers: None,
        };
        let sel = db.resolve(&spec).unwrap();
        assert_eq!(
            names(&sel.modules),
            [
                "crc32c_generic",
                "e1000",
                "lockd",
                "nfs",
                "overlay",
                "sunrpc"
            ]
        );
        // e1000 is a PCI driver: loaded by modalias, not unconditionally.
        assert_eq!(sel.always_load, ["overlay", "nfs"]);
    }

    /// A profile's `net_drivers` replace every Ethernet driver: the other
    /// NICs' drivers (and `mii`, which only 8139too needs) stay out, the
    /// virtio pair and the NFS client stay in.
    #[test]
    fn net_drivers_replace_every_ethernet_driver() {
        let (_d, db) = db();
        let spec = ModuleSpec {
            net_drivers: Some(vec!["e1000".into()]),
            ..ModuleSpec::default()
        };
        let sel = db.resolve(&spec).unwrap();
        assert!(sel.modules.contains("e1000") && sel.modules.contains("virtio_net"));
        assert!(!sel.modules.contains("8139too") && !sel.modules.contains("mii"));
        assert!(sel.modules.contains("nfsv3"));
        // A driver built into the kernel needs nothing shipped.
        let spec = ModuleSpec {
            net_drivers: Some(vec!["unix".into()]),
            ..ModuleSpec::default()
        };
        assert!(!db.resolve(&spec).unwrap().modules.contains("e1000"));
    }

    #[test]
    fn net_drivers_must_be_this_kernels_device_drivers() {
        let (_d, db) = db();
        for (name, want) in [
            ("e1001", "unknown module e1001"),
            ("overlay", "overlay is not a device driver"),
        ] {
            let spec = ModuleSpec {
                net_drivers: Some(vec![name.into()]),
                ..ModuleSpec::default()
            };
            let e = format!("{:#}", db.resolve(&spec).unwrap_err());
            assert!(e.starts_with("initramfs.net_drivers: "), "{e}");
            assert!(e.contains(want) && e.contains("6.1.0-9-amd64"), "{e}");
        }
    }

    #[test]
    fn unknown_names_are_errors() {
        let (_d, db) = db();
        for spec in ["e1001", "default,-nosuch"] {
            let e = format!(
                "{:#}",
                db.resolve(&ModuleSpec::parse(spec).unwrap()).unwrap_err()
            );
            assert!(e.contains("unknown module"), "{e}");
            assert!(e.contains("6.1.0-9-amd64"), "{e}");
        }
    }

    #[test]
    fn excluding_a_needed_dependency_is_an_error() {
        let (_d, db) = db();
        let e = db
            .resolve(&ModuleSpec::parse("nfs,-sunrpc").unwrap())
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("sunrpc is excluded but"), "{e}");
    }

    #[test]
    fn trimmed_indexes() {
        let (_d, db) = db();
        let sel = db
            .resolve(&ModuleSpec::parse("nfsv4,e1000").unwrap())
            .unwrap();
        let dep = db.trimmed_dep(&sel);
        assert!(
            dep.contains(
                "kernel/fs/nfs/nfsv4.ko: kernel/fs/nfs/nfs.ko kernel/net/sunrpc/sunrpc.ko\n"
            ),
            "{dep}"
        );
        assert!(!dep.contains(".zst"));
        let alias = db.trimmed_alias(&sel);
        assert!(alias.contains("alias fs-nfs nfs\n"));
        assert!(alias.contains("e1000\n"));
        assert!(!alias.contains("virtio"));
    }

    #[test]
    fn spec_parsing() {
        assert_eq!(ModuleSpec::parse("").unwrap(), ModuleSpec::default());
        let s = ModuleSpec::parse("default, e1000 !virtio_net -8139too").unwrap();
        assert_eq!(s.include, ["default", "e1000"]);
        assert_eq!(s.exclude, ["virtio_net", "8139too"]);
        assert_eq!(ModuleSpec::parse("-e1000").unwrap().include, ["default"]);
        assert!(ModuleSpec::parse("a/b").is_err());
        assert_eq!(name_of("kernel/x/intel-uncore.ko.zst"), "intel_uncore");
        assert_eq!(shipped_rel("kernel/a/b.ko.zst"), "kernel/a/b.ko");
    }
}
