//! `hosts import`: hosts from a CSV file or `/etc/ethers`-style lines.
//!
//! CSV (`name,mac,ip[,image,group,kernel,cmdline,boot]`, with or without
//! that header, in any column order with it) is read with the `csv` crate:
//! quoted fields may hold commas (`"console=ttyS0,115200 quiet"`) and
//! doubled quotes, rows may be shorter than the header, and blank lines
//! and `#` lines are skipped. Values are one line each, so a quoted field
//! that runs past its line (a missing closing quote) is an error, and so
//! is a quote after a space (`, "x"`), which CSV reads as a literal quote.
//! Ethers-style lines (`MAC IP NAME`, in any order after the MAC) are
//! whitespace separated and parsed by hand. Every row is then checked
//! alone (the same checks as `hosts add`) and against the rows before it;
//! every bad line is reported as `file:line: field: why`, and nothing is
//! returned unless all are good.

use super::edit::{AddHost, check_add};
use super::{BootMode, Inventory};
use anyhow::{Result, bail};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

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
    let mut errs = LineErrors::new(origin);
    let rows = if is_csv(text, origin) {
        csv_rows(text, &mut errs)
    } else {
        ethers_rows(text, &inv.cluster.domain, &mut errs)
    };
    let out = check_rows(rows, inv, replace, &mut errs);
    errs.finish()?;
    if out.is_empty() {
        bail!("{}: no hosts in the file", origin.display());
    }
    Ok(out)
}

/// Failures as `file:line: field: why`, in the order found.
struct LineErrors {
    origin: String,
    list: Vec<String>,
}

impl LineErrors {
    fn new(origin: &Path) -> LineErrors {
        LineErrors {
            origin: origin.display().to_string(),
            list: Vec::new(),
        }
    }

    fn push(&mut self, line: usize, field: &str, msg: String) {
        self.list
            .push(format!("{}:{line}: {field}: {msg}", self.origin));
    }

    /// All failures as one error (at most 20 shown), if any.
    fn finish(self) -> Result<()> {
        if self.list.is_empty() {
            return Ok(());
        }
        let total = self.list.len();
        let mut shown: Vec<String> = self.list.into_iter().take(20).collect();
        if total > 20 {
            shown.push(format!("... and {} more errors", total - 20));
        }
        bail!("{}", shown.join("\n"))
    }
}

/// CSV by extension, or when the first line that is not a comment has a
/// comma.
fn is_csv(text: &str, origin: &Path) -> bool {
    origin
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        || text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l.contains(','))
}

/// CSV rows with the line each starts on; a header row sets the columns.
fn csv_rows(text: &str, errs: &mut LineErrors) -> Vec<(usize, AddHost)> {
    let lines = blank_comments(text);
    // Every line ends in a newline, so a quote left open on the last line
    // shows as a value with a line break too.
    let cleaned = lines.join("\n") + "\n";
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(cleaned.as_bytes());
    let mut columns: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let n = e.position().map_or(0, |p| p.line() as usize);
                errs.push(n, "line", e.to_string());
                continue;
            }
        };
        let n = start_line(&lines, record.position().map_or(1, |p| p.line() as usize));
        if let Some(msg) = quoting_error(&record) {
            errs.push(n, "line", msg);
            continue;
        }
        let fields: Vec<&str> = record.iter().map(str::trim).collect();
        if columns.is_none() {
            let header = is_header(&fields);
            columns = Some(if header {
                header_columns(&fields, n, errs)
            } else {
                CSV_COLUMNS.iter().map(|s| s.to_string()).collect()
            });
            if header {
                continue;
            }
        }
        let cols = columns.as_deref().expect("set by the first row");
        rows.extend(csv_row(cols, &fields, n, errs).map(|a| (n, a)));
    }
    rows
}

/// The lines of `text` with comment lines (indented ones too) blanked:
/// the reader skips blank lines, and line numbers stay those of the file.
fn blank_comments(text: &str) -> Vec<&str> {
    text.lines()
        .map(|l| {
            let t = l.trim();
            if t.is_empty() || t.starts_with('#') {
                ""
            } else {
                l
            }
        })
        .collect()
}

/// The line a record starts on. The reader gives the line where it began
/// looking, before the blank lines it skipped.
fn start_line(lines: &[&str], from: usize) -> usize {
    let skipped = lines
        .iter()
        .skip(from.saturating_sub(1))
        .take_while(|l| l.is_empty())
        .count();
    from + skipped
}

fn is_header(fields: &[&str]) -> bool {
    fields
        .first()
        .is_some_and(|f| f.eq_ignore_ascii_case("name"))
}

/// The columns a header names; unknown and missing required ones are
/// errors on its line.
fn header_columns(fields: &[&str], n: usize, errs: &mut LineErrors) -> Vec<String> {
    let columns: Vec<String> = fields.iter().map(|f| f.to_ascii_lowercase()).collect();
    for c in &columns {
        if !CSV_COLUMNS.contains(&c.as_str()) {
            errs.push(
                n,
                c,
                format!("unknown column; columns are {}", CSV_COLUMNS.join(",")),
            );
        }
    }
    for need in ["name", "mac", "ip"] {
        if !columns.iter().any(|c| c == need) {
            errs.push(n, need, "required column missing from the header".into());
        }
    }
    columns
}

/// One CSV row as a host to add; `None` (with the error pushed) when its
/// shape is wrong. The values are checked later, with the other rows.
fn csv_row(
    columns: &[String],
    fields: &[&str],
    n: usize,
    errs: &mut LineErrors,
) -> Option<AddHost> {
    if fields.len() > columns.len() {
        let msg = format!(
            "{} fields, but there are {} columns ({})",
            fields.len(),
            columns.len(),
            columns.join(",")
        );
        errs.push(n, "line", msg);
        return None;
    }
    let get = |c: &str| {
        columns
            .iter()
            .position(|x| x == c)
            .and_then(|i| fields.get(i))
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty())
    };
    let boot = match get("boot").map(|b| parse_boot(&b)).transpose() {
        Ok(b) => b,
        Err(msg) => {
            errs.push(n, "boot", msg);
            return None;
        }
    };
    Some(AddHost {
        name: get("name").unwrap_or_default(),
        macs: split_macs(&get("mac").unwrap_or_default()),
        ip: get("ip").unwrap_or_default(),
        image: get("image"),
        group: get("group"),
        kernel: get("kernel"),
        cmdline: get("cmdline"),
        boot,
    })
}

/// What CSV accepts but cannot be meant: a quoted field that ran on past
/// its line, or a quote after a space (read as a literal quote).
fn quoting_error(record: &csv::StringRecord) -> Option<String> {
    if record.iter().any(|f| f.contains(['\n', '\r'])) {
        return Some(
            "a quoted field runs past the end of its line; close the quote on the same line".into(),
        );
    }
    if record.iter().any(|f| f.trim_start().starts_with('"')) {
        return Some(
            "a quote after a space is read as part of the value; write ,\"...\" with no \
             space before the opening quote"
                .into(),
        );
    }
    None
}

/// Several MACs in one field, separated by `;`, `|` or spaces.
fn split_macs(field: &str) -> Vec<String> {
    field
        .split([';', ' ', '|'])
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn parse_boot(b: &str) -> Result<BootMode, String> {
    match b {
        "image" => Ok(BootMode::Image),
        "localboot" => Ok(BootMode::Localboot),
        "disabled" => Ok(BootMode::Disabled),
        _ => Err(format!("{b:?} is not one of image, localboot, disabled")),
    }
}

/// Ethers-style rows: `MAC` then an IP and a name in either order (a
/// name's cluster domain is dropped); `#` starts a comment.
fn ethers_rows(text: &str, domain: &str, errs: &mut LineErrors) -> Vec<(usize, AddHost)> {
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(a) = ethers_row(line, domain, n, errs) {
            rows.push((n, a));
        }
    }
    rows
}

fn ethers_row(line: &str, domain: &str, n: usize, errs: &mut LineErrors) -> Option<AddHost> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let mut a = AddHost {
        macs: vec![toks[0].to_string()],
        ..AddHost::default()
    };
    for t in &toks[1..] {
        if t.parse::<Ipv4Addr>().is_ok() && a.ip.is_empty() {
            a.ip = t.to_string();
        } else if a.name.is_empty() {
            let d = format!(".{domain}");
            a.name = t.strip_suffix(d.as_str()).unwrap_or(t).to_string();
        } else {
            errs.push(
                n,
                "line",
                format!("unexpected {t:?}; ethers-style lines are MAC IP NAME"),
            );
        }
    }
    if a.ip.is_empty() {
        errs.push(
            n,
            "ip",
            "no IPv4 address on the line; write MAC IP NAME".into(),
        );
        return None;
    }
    if a.name.is_empty() {
        errs.push(
            n,
            "name",
            "no host name on the line; write MAC IP NAME".into(),
        );
        return None;
    }
    Some(a)
}

/// Each row alone (as `hosts add` checks it), then against the earlier
/// rows; returns the good rows.
fn check_rows(
    rows: Vec<(usize, AddHost)>,
    inv: &Inventory,
    replace: bool,
    errs: &mut LineErrors,
) -> Vec<AddHost> {
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
                errs.push(n, field.trim_start_matches("--"), msg);
                continue;
            }
        };
        let mut dup = false;
        if let Some(l) = names.insert(a.name.clone(), n) {
            errs.push(n, "name", format!("{} is also on line {l}", a.name));
            dup = true;
        }
        for m in &a.macs {
            if let Some(l) = macs.insert(m.clone(), n) {
                errs.push(n, "mac", format!("{m} is also on line {l}"));
                dup = true;
            }
        }
        if let Some(l) = ips.insert(a.ip.clone(), n) {
            errs.push(n, "ip", format!("{} is also on line {l}", a.ip));
            dup = true;
        }
        if !dup {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "\
[cluster]
subnet = \"10.18.1.0/24\"
nfs_server = \"10.18.1.1\"
image = \"minimal\"

[hosts]
n1 = { mac = \"52:54:00:00:00:01\", ip = \"10.18.1.11\" }
";

    fn import(text: &str) -> Result<Vec<AddHost>> {
        let inv = crate::inventory::parse(INV, Path::new("inv.toml")).unwrap();
        parse_import(text, Path::new("new.csv"), &inv, false)
    }

    fn error(text: &str) -> String {
        format!("{:#}", import(text).unwrap_err())
    }

    /// A quoted field keeps its commas and doubled quotes; split on every
    /// comma, the cmdline would run into the boot column.
    #[test]
    fn quoted_fields_keep_commas() {
        let rows = import(
            "c1,52:54:00:00:01:01,10.18.1.21,,,,\"console=ttyS0,115200 quiet\"\n\
             c2,52:54:00:00:01:02,10.18.1.22,,,,\"a=\"\"b,c\"\"\",disabled\n",
        )
        .unwrap();
        assert_eq!(
            rows[0].cmdline.as_deref(),
            Some("console=ttyS0,115200 quiet")
        );
        assert_eq!(rows[0].boot, None);
        assert_eq!(rows[1].cmdline.as_deref(), Some("a=\"b,c\""));
        assert_eq!(rows[1].boot, Some(BootMode::Disabled));
        // With a header: a naive split would count 5 fields for 4 columns.
        let rows = import(
            "name,mac,ip,cmdline\nc1,52:54:00:00:01:01,10.18.1.21,\"console=ttyS0,115200 quiet\"\n",
        )
        .unwrap();
        assert_eq!(
            rows[0].cmdline.as_deref(),
            Some("console=ttyS0,115200 quiet")
        );
    }

    /// Header in any order, rows shorter than it, spaces around values,
    /// and errors on the line each row is on, comments and blanks counted.
    #[test]
    fn header_short_rows_and_line_numbers() {
        let rows = import(" Name ,IP, MAC,image\n c1 ,10.18.1.21 ,\t52:54:00:00:01:01\n").unwrap();
        assert_eq!(rows[0].name, "c1");
        assert_eq!(rows[0].ip, "10.18.1.21");
        assert_eq!(rows[0].image, None);
        let e = error(
            "# hosts\n\nname,mac,ip\n  # indented comment\nc1,52:54:00:00:01,10.18.1.21\n\
             c2,52:54:00:00:01:02,10.18.1.22,x\n",
        );
        assert!(e.contains("new.csv:5: mac: "), "{e}");
        assert!(
            e.contains("new.csv:6: line: 4 fields, but there are 3 columns"),
            "{e}"
        );
    }

    /// CSV would accept these, but no value may hold a line break, and a
    /// quote after a space is a literal quote: both are refused by line.
    #[test]
    fn quoting_mistakes_are_errors() {
        let e = error("c1,52:54:00:00:01:01,10.18.1.21,,,,\"quiet\n");
        assert!(
            e.contains("new.csv:1: line: a quoted field runs past the end of its line"),
            "{e}"
        );
        let e = error("c1,52:54:00:00:01:01,10.18.1.21,,,, \"console=ttyS0,115200\"\n");
        assert!(e.contains("new.csv:1: line: a quote after a space"), "{e}");
    }
}
