//! Stand-in for `nfsroot snapshot` until the CLI is wired: snapshot the
//! image directory given (its parent is used as the base directory).
//!
//! usage: snapshot IMAGE_DIR [-o FILE] [--format gz|zst] [--level N] [--threads N]

use anyhow::{Context, Result, bail};
use nfsroot::image::Layout;
use nfsroot::snapshot::{SnapshotOpts, run_snapshot};
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().context("usage: snapshot IMAGE_DIR [options]")?);
    let mut opts = SnapshotOpts::default();
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "-o" => opts.output = Some(PathBuf::from(val()?)),
            "--format" => opts.format = val()?.parse()?,
            "--level" => opts.level = Some(val()?.parse()?),
            "--threads" => opts.threads = Some(val()?.parse()?),
            "--keep" => opts.keep = Some(val()?.parse()?),
            other => bail!("unknown option {other}"),
        }
    }
    let dir =
        std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
    let base = dir
        .parent()
        .context("image dir has no parent")?
        .to_path_buf();
    let layout = Layout {
        base_dir: base.clone(),
        tftp_root: base.join(".nfsroot/tftp"),
        cache_dir: base.join(".nfsroot/cache"),
    };
    opts.image = Some(
        dir.file_name()
            .context("no name")?
            .to_string_lossy()
            .into_owned(),
    );
    let r = run_snapshot(&layout, &opts)?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(())
}
