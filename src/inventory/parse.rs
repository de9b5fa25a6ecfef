//! Reading the inventory file: TOML through serde into the file's shape
//! ([`super::model`]), then [`super::validate`]'s checks, with every
//! failure reported as `file:line:col: key: message`.
//!
//! Shape errors come from serde with a span; validation failures carry a
//! key path, which is located in the text afterwards (only the first ones,
//! so a file with thousands of bad hosts is refused in linear time).
//! Control characters are checked on the text itself, where every key and
//! value, including ones the model drops, can be named.

use super::EXAMPLE;
use super::model::{FileSpec, Inventory};
use super::validate::resolve;
use crate::profile::Invalid;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Read and validate the inventory at `path`.
pub fn load(path: &Path) -> Result<Inventory> {
    parse(&read_text(path)?, path)
}

/// The inventory's text; a missing file is an error that shows how to
/// write one.
pub(super) fn read_text(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no inventory at {}; create it (or pass --inventory FILE), e.g.:\n{EXAMPLE}",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Parse and validate inventory text; `origin` names it in errors and in
/// the comments of generated files, so it must be one line.
pub fn parse(text: &str, origin: &Path) -> Result<Inventory> {
    if origin.to_string_lossy().contains(char::is_control) {
        bail!(
            "inventory path {:?} holds a newline or another control character; \
             rename the file (its path is quoted in generated files)",
            origin
        );
    }
    let spec: FileSpec = match toml::from_str(text) {
        Ok(s) => s,
        Err(e) => {
            let start = e.span().map_or(0, |s| s.start);
            let (line, col) = crate::profile::line_col(text, start);
            let key = crate::profile::key_at(text, start)
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            let mut msg = e.message().trim_end().to_string();
            if msg.contains("untagged enum Macs") {
                msg = "expected a MAC address string or a list of them".into();
            }
            bail!("{}:{line}:{col}: {key}{msg}", origin.display());
        }
    };
    let order = host_order(text);
    // Control characters are checked on the text, where every key and
    // value (including ones the model drops) can be named.
    let mut errs = crate::profile::control_chars(text);
    match resolve(spec, &order, origin) {
        Ok(inv) if errs.is_empty() => Ok(inv),
        Ok(_) => Err(located(text, origin, errs)),
        Err(e) => {
            errs.extend(e);
            Err(located(text, origin, errs))
        }
    }
}

/// Validation failures as `file:line:col: key: message` lines, in file
/// order, at most 20.
fn located(text: &str, origin: &Path, errs: Vec<Invalid>) -> anyhow::Error {
    // Locating an error re-reads the document: only the first ones (they
    // come in file order) are located, so a file with thousands of bad
    // hosts is refused in time linear in its size.
    let total = errs.len();
    let doc = toml_edit::ImDocument::parse(text.to_string()).ok();
    let mut located: Vec<(usize, usize, String)> = errs
        .into_iter()
        .take(40)
        .map(|e| {
            let (l, c) = doc
                .as_ref()
                .and_then(|d| crate::profile::locate_in(d, text, &e.key))
                .unwrap_or((1, 1));
            (
                l,
                c,
                format!(
                    "{}:{l}:{c}: {}: {}",
                    origin.display(),
                    e.key.join("."),
                    e.msg
                ),
            )
        })
        .collect();
    located.sort();
    located.dedup();
    let n = located.len() + (total - total.min(40));
    let mut msg: Vec<String> = located.into_iter().take(20).map(|e| e.2).collect();
    if n > 20 {
        msg.push(format!("... and {} more errors", n - 20));
    }
    anyhow::anyhow!("{}", msg.join("\n"))
}

/// Host names in file order with the line of their key.
fn host_order(text: &str) -> Vec<(String, usize)> {
    let Ok(doc) = toml_edit::ImDocument::parse(text.to_string()) else {
        return vec![];
    };
    let Some(hosts) = doc.get("hosts").and_then(|h| h.as_table_like()) else {
        return vec![];
    };
    // Line starts once, then a binary search per host: a line count from
    // the top for each of 20,000 hosts would be quadratic.
    let starts: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
    let line_of = |off: usize| starts.partition_point(|&i| i < off) + 1;
    hosts
        .iter()
        .map(|(k, _)| {
            let line = hosts
                .get_key_value(k)
                .and_then(|(kk, _)| kk.span())
                .map(|s| line_of(s.start))
                .unwrap_or(0);
            (k.to_string(), line)
        })
        .collect()
}
