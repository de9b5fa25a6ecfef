//! The node's state file, kept fresh: `nfsroot-node-state.timer` runs
//! `nfsroot-node state` every 5 minutes (the ready hook writes it once at
//! boot, after the node line), so `nfsroot nodes` on the master can tell a
//! running node from one that went away. The service writes only the
//! node's own per-host log directory (the log export on a read-only root),
//! never shared image state, so it is not one of the writers the units
//! fixup masks. Installed only with per-host logs: without them there is
//! no directory of the node's own on the server; the link that enables
//! the timer is then removed.

use super::{Ctx, remove, symlink, write_file};
use crate::imagefs::ImageRoot;
use crate::profile::LogLayout;
use anyhow::Result;

const UNITS: &str = "/usr/lib/systemd/system";
const SERVICE: &str = "nfsroot-node-state.service";
const TIMER: &str = "nfsroot-node-state.timer";
const WANTS: &str = "/etc/systemd/system/timers.target.wants";

const SERVICE_UNIT: &str = "\
[Unit]
Description=nfsroot: record what this node runs in its per-host log directory
After=nfsroot-hostname.service remote-fs.target

[Service]
Type=oneshot
ExecStart=/usr/lib/nfsroot/nfsroot-node state
";

/// Every 5 minutes, from 5 minutes after boot (the ready hook wrote the
/// first one); spread by up to 30 s so a cluster booted at once does not
/// write in step.
const TIMER_UNIT: &str = "\
[Unit]
Description=nfsroot: record what this node runs, every 5 minutes

[Timer]
OnBootSec=5min
OnUnitActiveSec=5min
AccuracySec=30s
RandomizedDelaySec=30s

[Install]
WantedBy=timers.target
";

pub fn apply(root: &ImageRoot, ctx: &Ctx<'_>) -> Result<bool> {
    let link = format!("{WANTS}/{TIMER}");
    let mut c = write_file(root, &format!("{UNITS}/{SERVICE}"), SERVICE_UNIT, 0o644)?;
    c |= write_file(root, &format!("{UNITS}/{TIMER}"), TIMER_UNIT, 0o644)?;
    if ctx.profile.logs.layout == LogLayout::PerHost {
        c |= symlink(root, &link, &format!("{UNITS}/{TIMER}"))?;
    } else {
        c |= remove(root, &link)?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn timer_enabled_with_per_host_logs_only() {
        let d = fake_root();
        let link = d
            .path()
            .join("etc/systemd/system/timers.target.wants/nfsroot-node-state.timer");
        idempotent(apply, d.path(), &ctx(&profile("")));
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            std::path::Path::new("/usr/lib/systemd/system/nfsroot-node-state.timer")
        );
        let timer = std::fs::read_to_string(
            d.path()
                .join("usr/lib/systemd/system/nfsroot-node-state.timer"),
        )
        .unwrap();
        assert!(timer.contains("OnUnitActiveSec=5min\n"), "{timer}");
        let local = profile("[logs]\nlayout = \"local\"\n");
        assert!(apply(&img(d.path()), &ctx(&local)).unwrap());
        assert!(!link.exists() && !link.is_symlink());
    }

    /// Not among the units the units fixup masks: it writes no shared state.
    #[test]
    fn not_masked() {
        for extra in ["", "[nfs]\nroot_mode = \"rw\"\n"] {
            let p = profile(extra);
            let masked = crate::fixups::units::masked(&p);
            assert!(
                !masked.iter().any(|u| u.starts_with("nfsroot-")),
                "{masked:?}"
            );
        }
    }
}
