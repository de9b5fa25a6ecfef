//! `nfsroot hosts`: edit the inventory without disturbing it.
//!
//! Every edit loads the file twice over: as a validated [`Inventory`], to
//! check the change against the other hosts with messages that name the
//! field and the host it collides with, and as a `toml_edit` document, which
//! is changed in place so comments, order and layout stay as the admin left
//! them. New hosts are one inline-table line under `[hosts]`. The edited
//! text is validated again as a whole before it replaces the file
//! atomically, so no sequence of commands can leave an inventory that
//! `sync` would refuse. Edits hold the inventory lock, as `sync` does.
//!
//! `hosts import` reads its file in [`super::import`] and adds the hosts
//! here, as one edit.

use super::model::Firmware;
use super::{BootMode, Host, Inventory, canonical_mac, check_host_name};
use crate::fsutil;
use crate::image::Layout;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value};

/// A host to add.
#[derive(Debug, Clone, Default)]
pub struct AddHost {
    pub name: String,
    /// One or more, in any accepted form.
    pub macs: Vec<String>,
    pub ip: String,
    pub image: Option<String>,
    pub group: Option<String>,
    pub kernel: Option<String>,
    pub cmdline: Option<String>,
    pub boot: Option<BootMode>,
}

/// A change to one host; at most one of image/localboot/disable/enable.
#[derive(Debug, Clone, Default)]
pub struct SetHost {
    pub name: String,
    /// Boot this image (and re-enable the host).
    pub image: Option<String>,
    pub localboot: bool,
    pub disable: bool,
    pub enable: bool,
    /// Pin a kernel version; empty unpins.
    pub kernel: Option<String>,
    /// Extra kernel command line; empty clears.
    pub cmdline: Option<String>,
    /// Pin the loader by firmware (`bios`, `uefi`), or [`FIRMWARE_AUTO`]
    /// to answer by the client architecture again.
    pub firmware: Option<String>,
}

/// `hosts set --firmware auto`: no `firmware` key, the loader by the
/// client architecture the node announces.
pub const FIRMWARE_AUTO: &str = "auto";

/// The words `hosts set --firmware` takes: the inventory's `firmware`
/// values and [`FIRMWARE_AUTO`].
pub fn firmware_words() -> Vec<&'static str> {
    use crate::choice::Choice;
    let mut v: Vec<&str> = Firmware::ALL.iter().map(|f| f.as_str()).collect();
    v.push(FIRMWARE_AUTO);
    v
}

/// One `nfsroot hosts` subcommand.
#[derive(Debug, Clone)]
pub enum HostsCmd {
    Add(AddHost),
    Remove { name: String },
    List,
    Set(SetHost),
    Import { file: PathBuf, replace: bool },
}

/// What a hosts command did.
#[derive(Debug, Clone, Serialize)]
pub struct HostsOutcome {
    /// `add`, `remove`, `list`, `set` or `import`.
    pub action: String,
    pub inventory: PathBuf,
    /// Names of the hosts changed (empty for list, or when nothing changed).
    pub changed: Vec<String>,
    /// For list, every host; otherwise the hosts changed, as now resolved.
    pub hosts: Vec<Host>,
    pub warnings: Vec<String>,
}

impl HostsOutcome {
    /// Human-readable output: a table for list, a summary otherwise.
    pub fn text(&self) -> String {
        let mut s = String::new();
        if self.action == "list" {
            s.push_str(&list_table(&self.hosts));
        } else if self.changed.is_empty() {
            let _ = writeln!(s, "{}: nothing to change", self.action);
        } else {
            let verb = match self.action.as_str() {
                "add" => "added",
                "remove" => "removed",
                "set" => "changed",
                _ => "imported",
            };
            let _ = writeln!(
                s,
                "{verb} {} in {}; run nfsroot sync to apply",
                self.changed.join(", "),
                self.inventory.display()
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }
}

/// `hosts list` as a table.
pub fn list_table(hosts: &[Host]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "MAC".into(),
        "IP".into(),
        "IMAGE".into(),
        "BOOT".into(),
        "KERNEL".into(),
        "CMDLINE".into(),
    ]];
    for h in hosts {
        rows.push([
            h.name.clone(),
            h.macs.join(","),
            h.ip.to_string(),
            h.image.clone().unwrap_or_else(|| "-".into()),
            h.boot.as_str().into(),
            h.kernel.clone().unwrap_or_else(|| "-".into()),
            if h.cmdline.is_empty() {
                "-".into()
            } else {
                h.cmdline.clone()
            },
        ]);
    }
    let mut w = [0usize; 7];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut s = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let _ = write!(line, "{c:<width$}  ", width = w[i]);
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// Run one hosts subcommand against the inventory at `inv_path`.
pub fn run_hosts(layout: &Layout, inv_path: &Path, cmd: HostsCmd) -> Result<HostsOutcome> {
    let mut out = HostsOutcome {
        action: String::new(),
        inventory: inv_path.to_path_buf(),
        changed: vec![],
        hosts: vec![],
        warnings: vec![],
    };
    if let HostsCmd::List = cmd {
        out.action = "list".into();
        out.hosts = super::load(inv_path)?.hosts;
        return Ok(out);
    }
    fsutil::mkdir_p(&layout.base_dir)?;
    let _lock = super::sync::inventory_lock(layout, "hosts", false)?;
    let text = super::parse::read_text(inv_path)?;
    let inv = super::parse(&text, inv_path);
    let mut doc: DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", inv_path.display()))?;
    out.action = cmd.action().into();
    out.changed = edit_doc(&mut doc, inv, inv_path, cmd)?;
    let new_text = doc.to_string();
    let new_inv = super::parse(&new_text, inv_path)
        .context("the edited inventory would be invalid; nothing was written")?;
    if new_text != text {
        let mode = std::fs::metadata(inv_path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        fsutil::atomic_write_mode(inv_path, new_text.as_bytes(), mode)?;
    } else {
        out.changed.clear();
    }
    out.hosts = out
        .changed
        .iter()
        .filter_map(|n| new_inv.host(n).cloned())
        .collect();
    out.warnings = image_warnings(layout, &out.hosts)?;
    Ok(out)
}

impl HostsCmd {
    /// The subcommand's name, as [`HostsOutcome::action`].
    fn action(&self) -> &'static str {
        match self {
            HostsCmd::Add(_) => "add",
            HostsCmd::Remove { .. } => "remove",
            HostsCmd::List => "list",
            HostsCmd::Set(_) => "set",
            HostsCmd::Import { .. } => "import",
        }
    }
}

/// Apply an edit to the document; returns the names of the hosts it
/// touches. `inv` is the file before the edit, validated (remove works on
/// an invalid file too: removing the bad host may be the fix).
fn edit_doc(
    doc: &mut DocumentMut,
    inv: Result<Inventory>,
    inv_path: &Path,
    cmd: HostsCmd,
) -> Result<Vec<String>> {
    match cmd {
        HostsCmd::List => unreachable!("list edits nothing"),
        HostsCmd::Add(a) => {
            let a = check_add(&inv?, a, None)
                .map_err(|(field, msg)| anyhow::anyhow!("hosts add {field}: {msg}"))?;
            insert_host(doc, &a);
            Ok(vec![a.name])
        }
        HostsCmd::Remove { name } => {
            let removed = doc
                .get_mut("hosts")
                .and_then(Item::as_table_like_mut)
                .and_then(|t| t.remove(&name));
            if removed.is_none() {
                bail!("no host {name} in {}", inv_path.display());
            }
            Ok(vec![name])
        }
        HostsCmd::Set(s) => {
            let changed = set_host(&inv?, doc, &s)?;
            Ok(if changed { vec![s.name] } else { vec![] })
        }
        HostsCmd::Import { file, replace } => {
            let inv = inv?;
            let data = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let rows = super::import::parse_import(&data, &file, &inv, replace)?;
            for a in &rows {
                insert_host(doc, a);
            }
            Ok(rows.into_iter().map(|a| a.name).collect())
        }
    }
}

/// Hosts that boot an image that is not built or not published yet.
fn image_warnings(layout: &Layout, hosts: &[Host]) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for h in hosts {
        if let (Some(img), BootMode::Image) = (&h.image, h.boot) {
            if !layout.image_dir(img).join("etc").is_dir() {
                warnings.push(format!(
                    "host {}: image {img} does not exist yet; build it before nfsroot sync",
                    h.name
                ));
            } else if crate::publish::Record::load(layout, img)?.is_none() {
                warnings.push(format!(
                    "host {}: image {img} is not published; run nfsroot publish {img}",
                    h.name
                ));
            }
        }
    }
    Ok(warnings)
}

/// Where a host is defined, for messages.
fn at(inv: &Inventory, h: &Host) -> String {
    format!("{}:{}", inv.path.display(), h.line)
}

/// A failed check of a new host: the field (as `hosts add` names it)
/// and why.
type Refusal = (&'static str, String);

/// Check a new host against the inventory; returns it with canonical
/// MACs, or (field, message). `replacing` names a host being replaced,
/// whose own MACs and address do not collide.
pub(super) fn check_add(
    inv: &Inventory,
    mut a: AddHost,
    replacing: Option<&str>,
) -> Result<AddHost, Refusal> {
    check_host_name(&a.name).map_err(|m| ("name", m))?;
    if replacing.is_none()
        && let Some(h) = inv.host(&a.name)
    {
        return Err((
            "name",
            format!(
                "host {} already exists ({}); change it with nfsroot hosts set",
                a.name,
                at(inv, h)
            ),
        ));
    }
    a.macs = new_macs(inv, &a.macs, replacing)?;
    a.ip = new_ip(inv, &a.ip, replacing)?.to_string();
    if let Some(i) = &a.image {
        crate::image::check_name(i).map_err(|e| ("--image", format!("{e:#}")))?;
    }
    if let Some(k) = &a.kernel {
        super::check_kernel(k).map_err(|m| ("--kernel", m))?;
    }
    if let Some(c) = &a.cmdline {
        super::check_cmdline(c).map_err(|m| ("--cmdline", m))?;
    }
    if let Some(g) = &a.group
        && !inv.groups.contains_key(g)
    {
        let known: Vec<&str> = inv.groups.keys().map(String::as_str).collect();
        return Err((
            "--group",
            format!(
                "no group {g:?} in the inventory (groups: {})",
                known.join(", ")
            ),
        ));
    }
    Ok(a)
}

/// A new host's MACs, canonical: at least one, none twice, none another
/// host's (but `replacing`'s).
fn new_macs(
    inv: &Inventory,
    given: &[String],
    replacing: Option<&str>,
) -> Result<Vec<String>, Refusal> {
    if given.is_empty() {
        return Err(("--mac", "at least one MAC address is needed".into()));
    }
    let mut macs: Vec<String> = Vec::new();
    for m in given {
        let c = canonical_mac(m).map_err(|e| ("--mac", e))?;
        if let Some(h) = inv
            .hosts
            .iter()
            .filter(|h| Some(h.name.as_str()) != replacing)
            .find(|h| h.macs.contains(&c))
        {
            return Err((
                "--mac",
                format!("{c} is already the MAC of host {} ({})", h.name, at(inv, h)),
            ));
        }
        if macs.contains(&c) {
            return Err(("--mac", format!("{c} is given twice")));
        }
        macs.push(c);
    }
    Ok(macs)
}

/// A new host's address: one a host may have, not another host's (but
/// `replacing`'s).
fn new_ip(inv: &Inventory, given: &str, replacing: Option<&str>) -> Result<Ipv4Addr, Refusal> {
    let ip: Ipv4Addr = given
        .trim()
        .parse()
        .map_err(|_| ("--ip", format!("{given:?} is not an IPv4 address")))?;
    inv.cluster.check_ip(ip).map_err(|m| ("--ip", m))?;
    if let Some(h) = inv
        .hosts
        .iter()
        .filter(|h| Some(h.name.as_str()) != replacing)
        .find(|h| h.ip == ip)
    {
        return Err((
            "--ip",
            format!(
                "{ip} is already the address of host {} ({})",
                h.name,
                at(inv, h)
            ),
        ));
    }
    Ok(ip)
}

/// The flags of `hosts set` make sense together and their values are
/// valid.
fn check_set(s: &SetHost) -> Result<()> {
    let modes = [s.image.is_some(), s.localboot, s.disable, s.enable]
        .iter()
        .filter(|b| **b)
        .count();
    if modes > 1 {
        bail!("hosts set: give only one of --image, --localboot, --disable, --enable");
    }
    if modes == 0 && s.kernel.is_none() && s.cmdline.is_none() && s.firmware.is_none() {
        bail!(
            "hosts set {}: nothing to change; give --image I, --localboot, --disable, \
             --enable, --kernel, --cmdline or --firmware",
            s.name
        );
    }
    if let Some(f) = &s.firmware
        && !firmware_words().contains(&f.as_str())
    {
        bail!(
            "hosts set --firmware: {}",
            crate::choice::not_allowed(f, &firmware_words())
        );
    }
    if let Some(i) = &s.image {
        crate::image::check_name(i).with_context(|| "hosts set --image".to_string())?;
    }
    if let Some(k) = &s.kernel {
        super::check_kernel(k).map_err(|m| anyhow::anyhow!("hosts set --kernel: {m}"))?;
    }
    if let Some(c) = &s.cmdline {
        super::check_cmdline(c).map_err(|m| anyhow::anyhow!("hosts set --cmdline: {m}"))?;
    }
    Ok(())
}

/// The inline table of a host, fields in a fixed order.
fn host_value(a: &AddHost) -> InlineTable {
    let mut t = InlineTable::new();
    if a.macs.len() == 1 {
        t.insert("mac", a.macs[0].as_str().into());
    } else {
        let arr: Array = a.macs.iter().map(String::as_str).collect();
        t.insert("mac", Value::Array(arr));
    }
    t.insert("ip", a.ip.as_str().into());
    for (k, v) in [
        ("group", &a.group),
        ("image", &a.image),
        ("kernel", &a.kernel),
        ("cmdline", &a.cmdline),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            t.insert(k, v.into());
        }
    }
    if let Some(b) = a.boot {
        t.insert("boot", b.as_str().into());
    }
    t.fmt();
    t
}

/// Add (or replace in place) a host's line under `[hosts]`.
fn insert_host(doc: &mut DocumentMut, a: &AddHost) {
    if doc.get("hosts").is_none() {
        doc.insert("hosts", Item::Table(Table::new()));
    }
    if let Some(t) = doc["hosts"].as_table_mut() {
        t.set_implicit(false);
    }
    let hosts = doc["hosts"]
        .as_table_like_mut()
        .expect("hosts is a table (checked by the inventory parse)");
    hosts.insert(&a.name, Item::Value(Value::InlineTable(host_value(a))));
}

/// Change a host in place: the boot mode (a host whose group gives that
/// mode loses its own `boot` key), kernel and cmdline (empty removes),
/// firmware (`auto` removes).
fn set_host(inv: &Inventory, doc: &mut DocumentMut, s: &SetHost) -> Result<bool> {
    let h = inv
        .host(&s.name)
        .with_context(|| format!("no host {} in {}", s.name, inv.path.display()))?;
    check_set(s)?;
    // What the host gets without its own `boot` key.
    let inherited = h
        .group
        .as_ref()
        .and_then(|g| inv.groups.get(g))
        .and_then(|g| g.boot)
        .unwrap_or_default();
    let t = doc["hosts"][&s.name]
        .as_table_like_mut()
        .with_context(|| format!("hosts.{} is not a table", s.name))?;
    let set_boot = |t: &mut dyn toml_edit::TableLike, m: BootMode| {
        if m == inherited {
            t.remove("boot");
        } else {
            t.insert("boot", toml_edit::value(m.as_str()));
        }
    };
    if let Some(i) = &s.image {
        t.insert("image", toml_edit::value(i.as_str()));
        set_boot(t, BootMode::Image);
    }
    if s.localboot {
        set_boot(t, BootMode::Localboot);
    }
    if s.disable {
        set_boot(t, BootMode::Disabled);
    }
    if s.enable {
        set_boot(t, BootMode::Image);
    }
    let firmware = s
        .firmware
        .as_ref()
        .map(|f| if f == FIRMWARE_AUTO { "" } else { f.as_str() }.to_string());
    for (k, v) in [
        ("kernel", &s.kernel),
        ("cmdline", &s.cmdline),
        ("firmware", &firmware),
    ] {
        match v.as_deref() {
            Some("") => {
                t.remove(k);
            }
            Some(v) => {
                t.insert(k, toml_edit::value(v));
            }
            None => {}
        }
    }
    // A key appended after the old last one would keep that one's padding
    // (`ip = "..." , image = ...`): lay a one-line host out afresh.
    if let Some(t) = doc["hosts"][&s.name].as_inline_table_mut() {
        t.fmt();
    }
    // Whether anything changed is decided by comparing the texts.
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_host_creates_the_table_and_keeps_comments() {
        let mut doc: DocumentMut = "# cluster\n[cluster] # here\nsubnet = \"10.0.0.0/24\"\n"
            .parse()
            .unwrap();
        insert_host(
            &mut doc,
            &AddHost {
                name: "a".into(),
                macs: vec!["52:54:00:00:00:01".into(), "52:54:00:00:00:02".into()],
                ip: "10.0.0.2".into(),
                boot: Some(BootMode::Disabled),
                ..AddHost::default()
            },
        );
        assert_eq!(
            doc.to_string(),
            "# cluster\n[cluster] # here\nsubnet = \"10.0.0.0/24\"\n\n[hosts]\n\
             a = { mac = [\"52:54:00:00:00:01\", \"52:54:00:00:00:02\"], ip = \"10.0.0.2\", boot = \"disabled\" }\n"
        );
    }

    /// Keys `hosts set` appends to a one-line host sit like the others:
    /// `ip = "..", image = ".."`, never `ip = ".." , image = ".."`.
    #[test]
    fn set_keeps_inline_tables_tidy() {
        let text = "[cluster]\nsubnet = \"10.0.0.0/24\"\nnfs_server = \"10.0.0.1\"\nimage = \"minimal\"\n\n[hosts]\n\
                    a = { mac = \"52:54:00:00:00:01\", ip = \"10.0.0.2\" }\n";
        let inv = super::super::parse::parse(text, Path::new("i.toml")).unwrap();
        let mut doc: DocumentMut = text.parse().unwrap();
        let set = |doc: &mut DocumentMut, s: SetHost| set_host(&inv, doc, &s).unwrap();
        let image = Some("minimal".to_string());
        set(
            &mut doc,
            SetHost {
                name: "a".into(),
                image,
                ..SetHost::default()
            },
        );
        set(
            &mut doc,
            SetHost {
                name: "a".into(),
                localboot: true,
                ..SetHost::default()
            },
        );
        assert!(
            doc.to_string().ends_with(
                "a = { mac = \"52:54:00:00:00:01\", ip = \"10.0.0.2\", \
                 image = \"minimal\", boot = \"localboot\" }\n"
            ),
            "{doc}"
        );
    }
}
