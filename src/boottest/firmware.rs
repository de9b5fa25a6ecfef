//! The VM's firmware and machine, for a PXE boot test: SeaBIOS (QEMU's
//! default) with iPXE's option ROM on the NIC, booting `nfsroot.ipxe` as
//! the DHCP configs `sync` writes answer an iPXE client (or `pxelinux.0`,
//! as they answer other BIOS PXE ROMs, with `pxelinux`); or
//! OVMF, Debian's UEFI firmware (the `_4M` builds of the `ovmf` package),
//! booting `shimx64.efi` through OVMF's own network stack. OVMF's code is
//! read-only; its variables are a per-run writable copy in the test's work
//! directory, so no run sees another's boot entries. With Secure Boot, the
//! `secboot` code (which needs SMM, so a q35 machine with `smm=on` and
//! secured flash) and the variables with Microsoft's keys enrolled
//! (`OVMF_VARS_4M.ms.fd`): the keys real machines ship with, which Debian's
//! shim is signed for. The NIC has no option ROM then (`romfile=`): with
//! iPXE's ROM driving it, shim's own TFTP fetch of GRUB failed
//! (`Verification failed: (0x2) Invalid Parameter`); and it is made the
//! boot device by `bootindex`, as a node's boot order would, rather than
//! SeaBIOS's `-boot n`. Everything here is pure except [`machine_args`],
//! which copies the variables file.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where Debian's `ovmf` package puts its firmware images.
const OVMF_DIR: &str = "/usr/share/OVMF";

/// The firmware a test boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS and iPXE's option ROM, loading nfsroot.ipxe (or
    /// pxelinux.0, see [`Machine::pxelinux`]).
    #[default]
    Bios,
    /// OVMF, loading shimx64.efi.
    Uefi,
}

/// The firmware and whether Secure Boot is on (UEFI only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub firmware: Firmware,
    pub secure_boot: bool,
    /// BIOS: DHCP names `pxelinux.0`, as it does for a NIC whose PXE ROM
    /// is not iPXE, instead of the iPXE script.
    #[serde(default)]
    pub pxelinux: bool,
}

impl Machine {
    /// A combination the test can run: Secure Boot needs UEFI, and UEFI
    /// boots over the network (direct mode loads the kernel without any
    /// firmware boot path).
    pub fn check(&self, pxe: bool) -> Result<()> {
        if self.secure_boot && self.firmware != Firmware::Uefi {
            bail!("--secure-boot needs --firmware uefi (BIOS firmware has no Secure Boot)");
        }
        if self.pxelinux && (self.firmware != Firmware::Bios || !pxe) {
            bail!(
                "--pxelinux needs --firmware bios and --mode pxe: it is the boot file DHCP \
                 names for a BIOS PXE ROM that is not iPXE"
            );
        }
        if self.firmware == Firmware::Uefi && !pxe {
            bail!(
                "--firmware uefi needs --mode pxe: direct mode hands QEMU the kernel, so no \
                 firmware boot path (shim, GRUB) would be tested"
            );
        }
        Ok(())
    }

    /// The file the VM's DHCP answer names: what the DHCP configs `sync`
    /// writes give a client of this architecture (QEMU's BIOS NIC ROM is
    /// iPXE).
    pub fn bootfile(&self) -> &'static str {
        match self.firmware {
            Firmware::Bios if self.pxelinux => "pxelinux.0",
            Firmware::Bios => crate::ipxe::TOP,
            Firmware::Uefi => "shimx64.efi",
        }
    }

    /// How the report names it.
    pub fn describe(&self) -> &'static str {
        match (self.firmware, self.secure_boot) {
            (Firmware::Bios, _) => "bios",
            (Firmware::Uefi, false) => "uefi",
            (Firmware::Uefi, true) => "uefi, secure boot",
        }
    }

    /// OVMF's code and variables template; `None` for BIOS.
    fn ovmf_files(&self) -> Option<(PathBuf, PathBuf)> {
        let (code, vars) = match (self.firmware, self.secure_boot) {
            (Firmware::Bios, _) => return None,
            (Firmware::Uefi, false) => ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
            (Firmware::Uefi, true) => ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
        };
        let dir = Path::new(OVMF_DIR);
        Some((dir.join(code), dir.join(vars)))
    }

    /// The firmware files exist (before anything starts).
    pub fn preflight(&self) -> Result<()> {
        if let Some((code, vars)) = self.ovmf_files() {
            for f in [code, vars] {
                if !f.is_file() {
                    bail!(
                        "{} not found; install it with: apt-get install ovmf",
                        f.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// QEMU's machine and firmware arguments; for UEFI, the variables are
    /// copied to `work/ovmf-vars.fd` first.
    pub fn machine_args(&self, work: &Path) -> Result<Vec<String>> {
        let Some((code, template)) = self.ovmf_files() else {
            return Ok(vec![]);
        };
        let vars = work.join("ovmf-vars.fd");
        std::fs::copy(&template, &vars)
            .with_context(|| format!("copying {} to {}", template.display(), vars.display()))?;
        Ok(self.uefi_args(&code, &vars))
    }

    fn uefi_args(&self, code: &Path, vars: &Path) -> Vec<String> {
        let mut a: Vec<String> = if self.secure_boot {
            vec![
                "-machine".into(),
                "q35,smm=on".into(),
                "-global".into(),
                "driver=cfi.pflash01,property=secure,value=on".into(),
            ]
        } else {
            vec!["-machine".into(), "q35".into()]
        };
        for (unit, file, ro) in [(0, code, ",readonly=on"), (1, vars, "")] {
            a.push("-drive".into());
            a.push(format!(
                "if=pflash,format=raw,unit={unit}{ro},file={}",
                file.display()
            ));
        }
        a
    }

    /// QEMU's arguments for a PXE boot: for BIOS, boot from the network
    /// (`-boot n`) with SeaBIOS's console redirection on, as on real
    /// nodes: it mirrors screen output to COM1 (I/O port 0x3f8, in
    /// `work/sercon-port` as a little-endian integer); without it, iPXE's
    /// messages and PXELINUX's SAY lines never reach the serial console
    /// (PXELINUX's modules snapshot the serial port before the config's
    /// SERIAL line is read). OVMF needs nothing: the NIC's `bootindex`
    /// makes it the boot device, and OVMF writes its console to the serial
    /// port itself.
    pub fn pxe_args(&self, work: &Path) -> Result<Vec<String>> {
        if self.firmware == Firmware::Uefi {
            return Ok(vec![]);
        }
        let port = work.join("sercon-port");
        std::fs::write(&port, 0x3f8u16.to_le_bytes())
            .with_context(|| format!("writing {}", port.display()))?;
        Ok(vec![
            "-boot".into(),
            "n".into(),
            "-fw_cfg".into(),
            format!("name=etc/sercon-port,file={}", port.display()),
        ])
    }

    /// The NIC's `-device` argument: for UEFI, no option ROM and first in
    /// the boot order.
    pub fn nic(&self, mac: &str) -> String {
        let nic = format!("virtio-net-pci,netdev=n0,mac={mac}");
        match self.firmware {
            Firmware::Bios => nic,
            Firmware::Uefi => format!("{nic},romfile=,bootindex=1"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SB: Machine = Machine {
        firmware: Firmware::Uefi,
        secure_boot: true,
        pxelinux: false,
    };

    #[test]
    fn combinations() {
        assert!(Machine::default().check(false).is_ok());
        assert!(SB.check(true).is_ok());
        let e = SB.check(false).unwrap_err().to_string();
        assert!(e.starts_with("--firmware uefi needs --mode pxe"), "{e}");
        let bios_sb = Machine {
            firmware: Firmware::Bios,
            secure_boot: true,
            pxelinux: false,
        };
        let e = bios_sb.check(true).unwrap_err().to_string();
        assert!(e.starts_with("--secure-boot needs --firmware uefi"), "{e}");
        let pxelinux = Machine {
            pxelinux: true,
            ..Machine::default()
        };
        assert!(pxelinux.check(true).is_ok());
        assert_eq!(pxelinux.bootfile(), "pxelinux.0");
        for m in [
            Machine {
                firmware: Firmware::Uefi,
                ..pxelinux
            },
            pxelinux,
        ] {
            let pxe = m.firmware == Firmware::Uefi;
            let e = m.check(pxe).unwrap_err().to_string();
            assert!(
                e.starts_with("--pxelinux needs --firmware bios and --mode pxe"),
                "{e}"
            );
        }
    }

    #[test]
    fn secure_boot_machine() {
        let a = SB.uefi_args(Path::new("/c.fd"), Path::new("/w/v.fd"));
        assert_eq!(
            a.join(" "),
            "-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on \
             -drive if=pflash,format=raw,unit=0,readonly=on,file=/c.fd \
             -drive if=pflash,format=raw,unit=1,file=/w/v.fd"
        );
        let (code, vars) = SB.ovmf_files().unwrap();
        assert_eq!(code, Path::new("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"));
        assert_eq!(vars, Path::new("/usr/share/OVMF/OVMF_VARS_4M.ms.fd"));
        assert_eq!(SB.bootfile(), "shimx64.efi");
        assert_eq!(
            SB.nic("52:54:00:12:34:56"),
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=,bootindex=1"
        );
    }

    #[test]
    fn bios_machine_is_qemus_default() {
        let d = tempfile::tempdir().unwrap();
        let bios = Machine::default();
        assert!(bios.machine_args(d.path()).unwrap().is_empty());
        assert_eq!(bios.bootfile(), "nfsroot.ipxe");
        assert_eq!(bios.nic("m"), "virtio-net-pci,netdev=n0,mac=m");
        assert!(bios.preflight().is_ok());
    }

    #[test]
    fn uefi_without_secure_boot_and_a_per_run_vars_copy() {
        let d = tempfile::tempdir().unwrap();
        let m = Machine {
            firmware: Firmware::Uefi,
            ..Machine::default()
        };
        m.preflight()
            .expect("the ovmf package (scripts/setup installs it)");
        let a = m.machine_args(d.path()).unwrap();
        assert_eq!(a[..2], ["-machine", "q35"]);
        let vars = d.path().join("ovmf-vars.fd");
        assert_eq!(
            a.last().unwrap(),
            &format!("if=pflash,format=raw,unit=1,file={}", vars.display())
        );
        let template = std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.fd").unwrap();
        assert_eq!(std::fs::read(&vars).unwrap(), template);
    }
}
