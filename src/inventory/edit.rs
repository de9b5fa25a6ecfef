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
//! `hosts import` reads CSV (`name,mac,ip[,image,group,kernel,cmdline,
//! boot]`, with or without that header) or `/etc/ethers`-style lines
//! (`MAC IP NAME`, in any order after the MAC); every bad line is reported
//! as `file:line: field: why`, and nothing is written unless all are good.

use super::{BootMode, Host, Inventory, canonical_mac, check_host_name};
use crate::fsutil;
use crate::image::Layout;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::HashMap;
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
    let text = read_inventory(inv_path)?;
    let inv = super::parse(&text, inv_path);
    let mut doc: DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", inv_path.display()))?;
    match cmd {
        HostsCmd::List => unreachable!("handled above"),
        HostsCmd::Add(a) => {
            out.action = "add".into();
            let inv = inv?;
            let a = check_add(&inv, a, None)
                .map_err(|(field, msg)| anyhow::anyhow!("hosts add {field}: {msg}"))?;
            insert_host(&mut doc, &a);
            out.changed.push(a.name.clone());
        }
        HostsCmd::Remove { name } => {
            out.action = "remove".into();
            // Works on an invalid inventory too: removing the bad host may
            // be the fix.
            let removed = doc
                .get_mut("hosts")
                .and_then(Item::as_table_like_mut)
                .and_then(|t| t.remove(&name));
            if removed.is_none() {
                bail!("no host {name} in {}", inv_path.display());
            }
            out.changed.push(name);
        }
        HostsCmd::Set(s) => {
            out.action = "set".into();
            let inv = inv?;
            if set_host(&inv, &mut doc, &s)? {
                out.changed.push(s.name.clone());
            }
        }
        HostsCmd::Import { file, replace } => {
            out.action = "import".into();
            let inv = inv?;
            let data = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let rows = parse_import(&data, &file, &inv, replace)?;
            for a in &rows {
                insert_host(&mut doc, a);
                out.changed.push(a.name.clone());
            }
        }
    }
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
    for h in &out.hosts {
        if let (Some(img), BootMode::Image) = (&h.image, h.boot) {
            if !layout.image_dir(img).join("etc").is_dir() {
                out.warnings.push(format!(
                    "host {}: image {img} does not exist yet; build it before nfsroot sync",
                    h.name
                ));
            } else if crate::publish::Record::load(layout, img)?.is_none() {
                out.warnings.push(format!(
                    "host {}: image {img} is not published; run nfsroot publish {img}",
                    h.name
                ));
            }
        }
    }
    Ok(out)
}

fn read_inventory(p: &Path) -> Result<String> {
    match std::fs::read_to_string(p) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no inventory at {}; create it (or pass --inventory FILE), e.g.:\n{}",
            p.display(),
            super::EXAMPLE
        ),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Where a host is defined, for messages.
fn at(inv: &Inventory, h: &Host) -> String {
    format!("{}:{}", inv.path.display(), h.line)
}

/// Check a new host against the inventory; returns it with canonical
/// MACs, or (field, message). `replacing` names a host being replaced,
/// whose own MACs and address do not collide.
fn check_add(
    inv: &Inventory,
    mut a: AddHost,
    replacing: Option<&str>,
) -> Result<AddHost, (&'static str, String)> {
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
    let others = |h: &&Host| Some(h.name.as_str()) != replacing;
    if a.macs.is_empty() {
        return Err(("--mac", "at least one MAC address is needed".into()));
    }
    let mut macs: Vec<String> = Vec::new();
    for m in &a.macs {
        let c = canonical_mac(m).map_err(|e| ("--mac", e))?;
        if let Some(h) = inv
            .hosts
            .iter()
            .filter(others)
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
    a.macs = macs;
    let ip: Ipv4Addr =
        a.ip.trim()
            .parse()
            .map_err(|_| ("--ip", format!("{:?} is not an IPv4 address", a.ip)))?;
    inv.cluster.check_ip(ip).map_err(|m| ("--ip", m))?;
    if let Some(h) = inv.hosts.iter().filter(others).find(|h| h.ip == ip) {
        return Err((
            "--ip",
            format!(
                "{ip} is already the address of host {} ({})",
                h.name,
                at(inv, h)
            ),
        ));
    }
    a.ip = ip.to_string();
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

fn set_host(inv: &Inventory, doc: &mut DocumentMut, s: &SetHost) -> Result<bool> {
    let h = inv
        .host(&s.name)
        .with_context(|| format!("no host {} in {}", s.name, inv.path.display()))?;
    let modes = [s.image.is_some(), s.localboot, s.disable, s.enable]
        .iter()
        .filter(|b| **b)
        .count();
    if modes > 1 {
        bail!("hosts set: give only one of --image, --localboot, --disable, --enable");
    }
    if modes == 0 && s.kernel.is_none() && s.cmdline.is_none() {
        bail!(
            "hosts set {}: nothing to change; give --image I, --localboot, --disable or --enable",
            s.name
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
    for (k, v) in [("kernel", &s.kernel), ("cmdline", &s.cmdline)] {
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
    // Whether anything changed is decided by comparing the texts.
    Ok(true)
}

/// The columns of an import CSV, in positional order.
pub const CSV_COLUMNS: &[&str] = &[
    "name", "mac", "ip", "image", "group", "kernel", "cmdline", "boot",
];

/// Parse an import file (CSV or ethers lines) into hosts, checked against
/// `inv` and each other. Errors list every bad line as
/// `file:line: field: why`.
pub fn parse_import(
    text: &str,
    origin: &Path,
    inv: &Inventory,
    replace: bool,
) -> Result<Vec<AddHost>> {
    let is_csv = origin
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        || text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l.contains(','));
    let mut errs: Vec<String> = Vec::new();
    let mut rows: Vec<(usize, AddHost)> = Vec::new();
    let mut err = |line: usize, field: &str, msg: String| {
        errs.push(format!("{}:{line}: {field}: {msg}", origin.display()));
    };
    if is_csv {
        let mut columns: Vec<String> = CSV_COLUMNS.iter().map(|s| s.to_string()).collect();
        let mut first = true;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = match split_csv(line) {
                Ok(f) => f,
                Err(m) => {
                    err(n, "line", m);
                    continue;
                }
            };
            if first {
                first = false;
                if fields[0].eq_ignore_ascii_case("name") {
                    columns = fields.iter().map(|f| f.to_ascii_lowercase()).collect();
                    for c in &columns {
                        if !CSV_COLUMNS.contains(&c.as_str()) {
                            err(
                                n,
                                c,
                                format!("unknown column; columns are {}", CSV_COLUMNS.join(",")),
                            );
                        }
                    }
                    for need in ["name", "mac", "ip"] {
                        if !columns.iter().any(|c| c == need) {
                            err(n, need, "required column missing from the header".into());
                        }
                    }
                    continue;
                }
            }
            if fields.len() > columns.len() {
                err(
                    n,
                    "line",
                    format!(
                        "{} fields, but there are {} columns ({})",
                        fields.len(),
                        columns.len(),
                        columns.join(",")
                    ),
                );
                continue;
            }
            let get = |c: &str| {
                columns
                    .iter()
                    .position(|x| x == c)
                    .and_then(|i| fields.get(i))
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            };
            let mut a = AddHost {
                name: get("name").unwrap_or_default(),
                macs: get("mac")
                    .unwrap_or_default()
                    .split([';', ' ', '|'])
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                ip: get("ip").unwrap_or_default(),
                image: get("image"),
                group: get("group"),
                kernel: get("kernel"),
                cmdline: get("cmdline"),
                boot: None,
            };
            if let Some(b) = get("boot") {
                match b.as_str() {
                    "image" => a.boot = Some(BootMode::Image),
                    "localboot" => a.boot = Some(BootMode::Localboot),
                    "disabled" => a.boot = Some(BootMode::Disabled),
                    _ => {
                        err(
                            n,
                            "boot",
                            format!("{b:?} is not one of image, localboot, disabled"),
                        );
                        continue;
                    }
                }
            }
            rows.push((n, a));
        }
    } else {
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let toks: Vec<&str> = line.split_whitespace().collect();
            let mut a = AddHost {
                macs: vec![toks[0].to_string()],
                ..AddHost::default()
            };
            for t in &toks[1..] {
                if t.parse::<Ipv4Addr>().is_ok() && a.ip.is_empty() {
                    a.ip = t.to_string();
                } else if a.name.is_empty() {
                    let d = format!(".{}", inv.cluster.domain);
                    a.name = t.strip_suffix(d.as_str()).unwrap_or(t).to_string();
                } else {
                    err(
                        n,
                        "line",
                        format!("unexpected {t:?}; ethers-style lines are MAC IP NAME"),
                    );
                }
            }
            if a.ip.is_empty() {
                err(
                    n,
                    "ip",
                    "no IPv4 address on the line; write MAC IP NAME".into(),
                );
                continue;
            }
            if a.name.is_empty() {
                err(
                    n,
                    "name",
                    "no host name on the line; write MAC IP NAME".into(),
                );
                continue;
            }
            rows.push((n, a));
        }
    }
    // Each row alone, then against the earlier rows.
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut macs: HashMap<String, usize> = HashMap::new();
    let mut ips: HashMap<String, usize> = HashMap::new();
    for (n, a) in rows {
        let replacing = (replace && inv.host(&a.name).is_some()).then(|| a.name.clone());
        let a = match check_add(inv, a, replacing.as_deref()) {
            Ok(a) => a,
            Err((field, msg)) => {
                let msg = if field == "name" && msg.contains("already exists") {
                    format!("{msg}, or pass --replace")
                } else {
                    msg
                };
                err(n, field.trim_start_matches("--"), msg);
                continue;
            }
        };
        let mut dup = false;
        if let Some(l) = names.insert(a.name.clone(), n) {
            err(n, "name", format!("{} is also on line {l}", a.name));
            dup = true;
        }
        for m in &a.macs {
            if let Some(l) = macs.insert(m.clone(), n) {
                err(n, "mac", format!("{m} is also on line {l}"));
                dup = true;
            }
        }
        if let Some(l) = ips.insert(a.ip.clone(), n) {
            err(n, "ip", format!("{} is also on line {l}", a.ip));
            dup = true;
        }
        if !dup {
            out.push(a);
        }
    }
    if !errs.is_empty() {
        let total = errs.len();
        let mut shown: Vec<String> = errs.into_iter().take(20).collect();
        if total > 20 {
            shown.push(format!("... and {} more errors", total - 20));
        }
        bail!("{}", shown.join("\n"));
    }
    if out.is_empty() {
        bail!("{}: no hosts in the file", origin.display());
    }
    Ok(out)
}

/// Split one CSV line: commas, with double-quoted fields (`""` is a quote).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if cur.trim().is_empty() => {
                cur.clear();
                quoted = true;
            }
            ('"', true) => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            }
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(cur);
    Ok(out)
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

    #[test]
    fn csv_split() {
        assert_eq!(split_csv("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            split_csv("n1,m,\"console=ttyS0,115200 \"\"x\"\"\"").unwrap(),
            ["n1", "m", "console=ttyS0,115200 \"x\""]
        );
        assert!(split_csv("a,\"b").is_err());
    }
}
