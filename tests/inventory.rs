//! Library-level tests of the cluster inventory: `hosts` edits, `sync`
//! output against expected text, the generated DHCP configs against the
//! real `dnsmasq --test` and `dhcpd -t`, and a corpus of malformed input.
//! Every test works in its own temp directories (never the host's /etc,
//! /var/lib/tftpboot or /var/lib/nfsroot).

use nfsroot::image::Layout;
use nfsroot::inventory::edit::{AddHost, SetHost};
use nfsroot::inventory::{self, BootMode, HostsCmd};
use nfsroot::publish::{PublishedKernel, Record};
use nfsroot::{grub, pxelinux};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A temp server: base dir, TFTP root, etc dir, inventory path.
struct Server {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    layout: Layout,
    etc: PathBuf,
    inv: PathBuf,
}

impl Server {
    fn new() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let layout = Layout {
            base_dir: root.join("nfsroot"),
            tftp_root: root.join("tftp"),
            cache_dir: root.join("cache"),
        };
        let etc = root.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        let inv = root.join("inventory.toml");
        Server {
            _tmp: tmp,
            root,
            layout,
            etc,
            inv,
        }
    }

    /// An image tree with /etc/hosts and, optionally, the profile it was
    /// built from (saved where build saves it: sync takes the root mode and
    /// log places from there, never from the image), and a published
    /// record with two kernels (the newer default) whose config is written
    /// as publish does.
    fn image(&self, name: &str, profile: Option<&str>, default: bool) {
        let dir = self.layout.image_dir(name);
        std::fs::create_dir_all(dir.join("etc/nfsroot")).unwrap();
        std::fs::create_dir_all(dir.join("var/log")).unwrap();
        std::fs::write(
            dir.join("etc/hosts"),
            "127.0.0.1\tlocalhost\n# hand edit above the block\n10.9.9.9\tnas\n",
        )
        .unwrap();
        if let Some(p) = profile {
            let saved = self.layout.base_dir.join(".nfsroot/profiles");
            std::fs::create_dir_all(&saved).unwrap();
            std::fs::write(saved.join(format!("{name}.toml")), p).unwrap();
        }
        let k = |v: &str| PublishedKernel {
            version: v.into(),
            kernel: format!("{name}/vmlinuz-{v}"),
            initrd: format!("{name}/initrd.img-{v}-0123abcd"),
            kernel_sha256: "00".repeat(32),
            initrd_sha256: "11".repeat(32),
            backend: "nfsroot".into(),
            append: format!("root=/dev/nfs nfsroot=10.18.1.1:/srv/{name},vers=3 ip=dhcp ro"),
            published_at: "2026-01-01T00:00:00Z".into(),
        };
        let rec = Record {
            image: name.into(),
            kernels: vec![k("6.1.0-9-amd64"), k("6.1.0-10-amd64")],
            default: Some("6.1.0-10-amd64".into()),
            serial: Some("ttyS0,115200".into()),
            timeout_s: 3,
            ipxe: false,
            files: Default::default(),
        };
        rec.save(&self.layout).unwrap();
        // PXELINUX and GRUB configs, as publish writes them.
        for c in nfsroot::publish::config_files(&self.layout, &rec, default).unwrap() {
            std::fs::create_dir_all(c.path.parent().unwrap()).unwrap();
            std::fs::write(&c.path, &c.text).unwrap();
        }
    }

    fn write_inv(&self, text: &str) {
        std::fs::write(&self.inv, text).unwrap();
    }

    fn sync(&self, dry: bool) -> inventory::SyncReport {
        inventory::run_sync(&self.layout, &self.inv, &self.etc, dry)
            .unwrap_or_else(|e| panic!("sync: {e:#}"))
    }

    fn hosts(&self, cmd: HostsCmd) -> anyhow::Result<inventory::HostsOutcome> {
        inventory::run_hosts(&self.layout, &self.inv, cmd)
    }

    fn read(&self, p: impl AsRef<Path>) -> String {
        let p = p.as_ref();
        let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        t.replace(&self.root.to_string_lossy().into_owned(), "/T")
    }

    fn cfg(&self, name: &str) -> PathBuf {
        self.layout.tftp_root.join("pxelinux.cfg").join(name)
    }

    fn link(&self, name: &str) -> String {
        std::fs::read_link(self.cfg(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .to_string_lossy()
            .into_owned()
    }
}

const THREE: &str = "\
# The test cluster.
[cluster]
subnet = \"10.18.1.0/24\"
gateway = \"10.18.1.1\"
dns = [\"10.18.1.1\"]
domain = \"cluster.example\"
nfs_server = \"10.18.1.1\"
image = \"minimal\"

[groups.gpu]
image = \"cuda\"

[hosts]
n001 = { mac = \"52:54:00:00:01:01\", ip = \"10.18.1.2\" }
n002 = { mac = \"52-54-00-00-01-02\", ip = \"10.18.1.3\", kernel = \"6.1.0-9-amd64\", cmdline = \"quiet\" }
g001 = { mac = [\"5254.0000.0201\", \"52:54:00:00:02:02\"], ip = \"10.18.1.18\", group = \"gpu\" }
";

fn three() -> Server {
    let s = Server::new();
    s.image("minimal", None, true);
    s.image(
        "cuda",
        Some("name = \"cuda\"\n[nfs]\nroot_mode = \"rw\"\n[logs]\nlayout = \"per-host\"\ndir = \"/var/log/hosts\"\n"),
        false,
    );
    s.write_inv(THREE);
    s
}

#[test]
fn three_hosts_render_expected_files() {
    let s = three();
    let r = s.sync(false);
    assert_eq!(r.hosts, 3);
    assert_eq!(r.following_default, ["n001"]);
    assert_eq!(r.host_files, ["n002", "g001"]);

    // n001 boots default: no per-host names.
    assert!(!s.cfg("01-52-54-00-00-01-01").exists());
    assert!(!s.cfg("0A120102").exists());
    // n002: its own file (pinned kernel first, extra cmdline); the hex
    // name links to it.
    assert_eq!(
        s.read(s.cfg("01-52-54-00-00-01-02")),
        "\
# generated by nfsroot sync for host n002 (image minimal); do not edit: use nfsroot hosts set, then nfsroot sync
SERIAL 0 115200
DEFAULT minimal-6.1.0-9-amd64
PROMPT 1
TIMEOUT 30
SAY nfsroot: booting minimal-6.1.0-9-amd64 (labels: minimal-6.1.0-9-amd64 minimal-6.1.0-10-amd64)

LABEL minimal-6.1.0-9-amd64
  KERNEL minimal/vmlinuz-6.1.0-9-amd64
  INITRD minimal/initrd.img-6.1.0-9-amd64-0123abcd
  APPEND root=/dev/nfs nfsroot=10.18.1.1:/srv/minimal,vers=3 ip=dhcp ro quiet

LABEL minimal-6.1.0-10-amd64
  KERNEL minimal/vmlinuz-6.1.0-10-amd64
  INITRD minimal/initrd.img-6.1.0-10-amd64-0123abcd
  APPEND root=/dev/nfs nfsroot=10.18.1.1:/srv/minimal,vers=3 ip=dhcp ro quiet
"
    );
    assert_eq!(s.link("0A120103"), "01-52-54-00-00-01-02");
    // g001 boots its image's own config: every name links to it, so
    // upgrade-kernel and rollback of cuda reach it without a sync.
    for n in ["01-52-54-00-00-02-01", "01-52-54-00-00-02-02", "0A120112"] {
        assert_eq!(s.link(n), "nfsroot-cuda", "{n}");
    }
    let g = pxelinux::parse(&s.read(s.cfg("0A120112"))).unwrap();
    assert_eq!(g.default.as_deref(), Some("cuda-6.1.0-10-amd64"));

    // The same hosts' GRUB names (UEFI nodes), from the same model: n001
    // follows grub/grub.cfg, n002 has its own file naming what its
    // PXELINUX file names, g001's names link to cuda's GRUB config.
    let gcfg = |n: &str| s.layout.tftp_root.join("grub").join(n);
    let glink = |n: &str| {
        std::fs::read_link(gcfg(n))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert!(!gcfg("grub.cfg-01-52-54-00-00-01-01").exists());
    assert!(!gcfg("grub.cfg-10.18.1.2").exists());
    let n002_grub = grub::parse(&s.read(gcfg("grub.cfg-01-52-54-00-00-01-02"))).unwrap();
    let n002_pxe = pxelinux::parse(&s.read(s.cfg("01-52-54-00-00-01-02"))).unwrap();
    assert_eq!(n002_grub, n002_pxe);
    assert_eq!(n002_grub.default.as_deref(), Some("minimal-6.1.0-9-amd64"));
    assert_eq!(glink("grub.cfg-10.18.1.3"), "grub.cfg-01-52-54-00-00-01-02");
    for n in [
        "grub.cfg-01-52-54-00-00-02-01",
        "grub.cfg-01-52-54-00-00-02-02",
        "grub.cfg-10.18.1.18",
    ] {
        assert_eq!(glink(n), "nfsroot-cuda.cfg", "{n}");
    }
    let g = grub::parse(&s.read(gcfg("grub.cfg-10.18.1.18"))).unwrap();
    assert_eq!(g.default.as_deref(), Some("cuda-6.1.0-10-amd64"));

    assert_eq!(
        s.read(s.etc.join("dnsmasq.d/nfsroot.conf")),
        "\
# BEGIN nfsroot inventory
# generated by nfsroot sync from /T/inventory.toml; edit the inventory, not these lines
dhcp-range=set:nfsroot,10.18.1.0,static,255.255.255.0,infinite
dhcp-option=tag:nfsroot,option:router,10.18.1.1
dhcp-option=tag:nfsroot,option:dns-server,10.18.1.1
dhcp-option=tag:nfsroot,option:domain-name,cluster.example
# loader by client architecture (option 93): pxelinux.0 for BIOS (0), shimx64.efi for x86-64 UEFI (7, 9); arm64 UEFI (11) gets none: no arm64 loader is published yet
dhcp-match=set:nfsroot-efi64,option:client-arch,7
dhcp-match=set:nfsroot-efi64,option:client-arch,9
dhcp-match=set:nfsroot-arm64,option:client-arch,11
# iPXE BIOS clients (option 175) get nfsroot.ipxe: it boots the default image, or chains pxelinux.0 (the image's boot.ipxe off); hosts with a per-host PXELINUX config get pxelinux.0
dhcp-match=set:nfsroot-ipxe,175
dhcp-boot=tag:nfsroot,tag:nfsroot-bios,tag:!nfsroot-ipxe,pxelinux.0,,10.18.1.1
dhcp-boot=tag:nfsroot,tag:nfsroot-bios,tag:nfsroot-ipxe,tag:nfsroot-pxelinux,pxelinux.0,,10.18.1.1
dhcp-boot=tag:nfsroot,tag:nfsroot-bios,tag:nfsroot-ipxe,tag:!nfsroot-pxelinux,nfsroot.ipxe,,10.18.1.1
dhcp-boot=tag:nfsroot,tag:nfsroot-uefi,shimx64.efi,,10.18.1.1
dhcp-boot=tag:nfsroot,tag:!nfsroot-bios,tag:!nfsroot-uefi,tag:nfsroot-efi64,shimx64.efi,,10.18.1.1
dhcp-boot=tag:nfsroot,tag:!nfsroot-bios,tag:!nfsroot-uefi,tag:!nfsroot-efi64,tag:!nfsroot-arm64,tag:!nfsroot-ipxe,pxelinux.0,,10.18.1.1
dhcp-boot=tag:nfsroot,tag:!nfsroot-bios,tag:!nfsroot-uefi,tag:!nfsroot-efi64,tag:!nfsroot-arm64,tag:nfsroot-ipxe,tag:nfsroot-pxelinux,pxelinux.0,,10.18.1.1
dhcp-boot=tag:nfsroot,tag:!nfsroot-bios,tag:!nfsroot-uefi,tag:!nfsroot-efi64,tag:!nfsroot-arm64,tag:nfsroot-ipxe,tag:!nfsroot-pxelinux,nfsroot.ipxe,,10.18.1.1
# iPXE: no ProxyDHCP server here; do not wait 2 s for one (no-pxedhcp)
dhcp-option=tag:nfsroot,encap:175,176,1b
enable-tftp
tftp-root=/T/tftp
dhcp-host=52:54:00:00:01:01,10.18.1.2,n001
dhcp-host=52:54:00:00:01:02,set:nfsroot-pxelinux,10.18.1.3,n002
dhcp-host=52:54:00:00:02:01,52:54:00:00:02:02,set:nfsroot-pxelinux,10.18.1.18,g001
# END nfsroot inventory
"
    );
    let dhcpd = s.read(s.etc.join("dhcp/dhcpd.conf"));
    let (prologue, block) = dhcpd.split_once("# BEGIN").unwrap();
    assert!(
        prologue.contains(
            "subnet 10.18.1.0 netmask 255.255.255.0 {\n  option routers 10.18.1.1;\n  \
             option domain-name-servers 10.18.1.1;\n  option domain-name \"cluster.example\";\n  \
             next-server 10.18.1.1;\n  if exists user-class and option user-class = \"iPXE\" {\n    \
             filename \"nfsroot.ipxe\";\n  } else {\n    filename \"pxelinux.0\";\n  }\n  \
             # iPXE: no ProxyDHCP server here; do not wait 2 s for one (no-pxedhcp)\n  \
             option ipxe.no-pxedhcp 1;\n}\n"
        ),
        "{prologue}"
    );
    assert_eq!(
        block,
        " nfsroot inventory
# generated by nfsroot sync from /T/inventory.toml; edit the inventory, not these lines
host n001 {
  hardware ethernet 52:54:00:00:01:01;
  fixed-address 10.18.1.2;
  option host-name \"n001\";
  next-server 10.18.1.1;
  if option pxe-system-type = 00:07 or option pxe-system-type = 00:09 {
    filename \"shimx64.efi\";
  } elsif option pxe-system-type = 00:0b {
    # arm64 UEFI: no loader published yet
  } elsif exists user-class and option user-class = \"iPXE\" {
    filename \"nfsroot.ipxe\";
  } else {
    filename \"pxelinux.0\";
  }
}
host n002 {
  hardware ethernet 52:54:00:00:01:02;
  fixed-address 10.18.1.3;
  option host-name \"n002\";
  next-server 10.18.1.1;
  if option pxe-system-type = 00:07 or option pxe-system-type = 00:09 {
    filename \"shimx64.efi\";
  } elsif option pxe-system-type = 00:0b {
    # arm64 UEFI: no loader published yet
  } else {
    filename \"pxelinux.0\";
  }
}
host g001 {
  hardware ethernet 52:54:00:00:02:01;
  fixed-address 10.18.1.18;
  option host-name \"g001\";
  next-server 10.18.1.1;
  if option pxe-system-type = 00:07 or option pxe-system-type = 00:09 {
    filename \"shimx64.efi\";
  } elsif option pxe-system-type = 00:0b {
    # arm64 UEFI: no loader published yet
  } else {
    filename \"pxelinux.0\";
  }
}
host g001.nic2 {
  hardware ethernet 52:54:00:00:02:02;
  fixed-address 10.18.1.18;
  option host-name \"g001\";
  next-server 10.18.1.1;
  if option pxe-system-type = 00:07 or option pxe-system-type = 00:09 {
    filename \"shimx64.efi\";
  } elsif option pxe-system-type = 00:0b {
    # arm64 UEFI: no loader published yet
  } else {
    filename \"pxelinux.0\";
  }
}
# END nfsroot inventory
"
    );
    assert_eq!(
        s.read(s.etc.join("exports.d/nfsroot.exports")),
        "\
# BEGIN nfsroot inventory
# generated by nfsroot sync from /T/inventory.toml; edit the inventory, not these lines
# image cuda: root file system (rw)
/T/nfsroot/cuda 10.18.1.0/24(rw,no_root_squash,no_subtree_check)
# image minimal: root file system (ro)
/T/nfsroot/minimal 10.18.1.0/24(ro,no_root_squash,no_subtree_check)
# image minimal: per-host logs, written as squashed root
/T/nfsroot/.logs/minimal 10.18.1.0/24(rw,root_squash,no_subtree_check)
# host n001: its ssh host keys, for it alone
/T/nfsroot/.nfsroot/hostkeys/n001 10.18.1.2(ro,no_root_squash,no_subtree_check)
# host n002: its ssh host keys, for it alone
/T/nfsroot/.nfsroot/hostkeys/n002 10.18.1.3(ro,no_root_squash,no_subtree_check)
# host g001: its ssh host keys, for it alone
/T/nfsroot/.nfsroot/hostkeys/g001 10.18.1.18(ro,no_root_squash,no_subtree_check)
# END nfsroot inventory
"
    );
    // Each host got its own ssh keys, private to root, none alike.
    let fps: Vec<String> = ["n001", "n002", "g001"]
        .iter()
        .map(|h| {
            nfsroot::hostkeys::host_fingerprint(&s.layout, h)
                .unwrap()
                .unwrap()
        })
        .collect();
    assert!(
        fps[0] != fps[1] && fps[1] != fps[2] && fps[0] != fps[2],
        "{fps:?}"
    );
    let hosts_block = "\
# BEGIN nfsroot inventory
# generated by nfsroot sync from /T/inventory.toml; edit the inventory, not these lines
10.18.1.2\tn001.cluster.example n001
10.18.1.3\tn002.cluster.example n002
10.18.1.18\tg001.cluster.example g001
# END nfsroot inventory
";
    for img in ["minimal", "cuda"] {
        assert_eq!(
            s.read(s.layout.image_dir(img).join("etc/hosts")),
            format!(
                "127.0.0.1\tlocalhost\n# hand edit above the block\n10.9.9.9\tnas\n{hosts_block}"
            ),
        );
    }

    // Log directories: on the ro image's log export, owned by the user
    // squashed root becomes; inside the rw image's own /var/log/hosts.
    for (p, uid) in [
        (s.layout.logs_dir("minimal").join("n001"), 65534),
        (s.layout.logs_dir("minimal").join("n002"), 65534),
        (s.layout.image_dir("cuda").join("var/log/hosts/g001"), 0),
    ] {
        let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(m.is_dir());
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (uid, uid, 0o755),
            "{}",
            p.display()
        );
    }

    // The boot-test entry point agrees with the file.
    let inv = inventory::load(&s.inv).unwrap();
    let c = inventory::host_boot_config(&s.layout, &inv, "n002").unwrap();
    assert_eq!(
        pxelinux::render(&c),
        std::fs::read_to_string(s.cfg("01-52-54-00-00-01-02")).unwrap()
    );

    // A second sync changes nothing.
    let again = s.sync(false);
    assert!(again.changes.is_empty(), "{}", again.text());
}

#[test]
fn hand_edits_outside_markers_survive() {
    let s = three();
    s.sync(false);
    let hosts = s.layout.image_dir("minimal").join("etc/hosts");
    let edited = format!(
        "# top\n{}10.9.9.10\tbackup\n",
        std::fs::read_to_string(&hosts).unwrap()
    );
    std::fs::write(&hosts, &edited).unwrap();
    let dns = s.etc.join("dnsmasq.d/nfsroot.conf");
    std::fs::write(
        &dns,
        format!("log-dhcp\n{}", std::fs::read_to_string(&dns).unwrap()),
    )
    .unwrap();
    let dh = s.etc.join("dhcp/dhcpd.conf");
    let t = std::fs::read_to_string(&dh)
        .unwrap()
        .replace("max-lease-time 86400;", "max-lease-time 7200;");
    std::fs::write(&dh, &t).unwrap();

    s.hosts(HostsCmd::Remove {
        name: "n002".into(),
    })
    .unwrap();
    let r = s.sync(false);
    let t = std::fs::read_to_string(&hosts).unwrap();
    assert!(
        t.starts_with("# top\n127.0.0.1\tlocalhost\n")
            && t.ends_with("# END nfsroot inventory\n10.9.9.10\tbackup\n"),
        "{t}"
    );
    assert!(!t.contains("n002"));
    let d = std::fs::read_to_string(&dns).unwrap();
    assert!(
        d.starts_with("log-dhcp\n# BEGIN") && !d.contains("n002"),
        "{d}"
    );
    let d = std::fs::read_to_string(&dh).unwrap();
    assert!(
        d.contains("max-lease-time 7200;") && !d.contains("n002"),
        "{d}"
    );
    // n002's names are gone; nothing else in pxelinux.cfg was touched.
    assert!(!s.cfg("01-52-54-00-00-01-02").exists());
    assert!(std::fs::symlink_metadata(s.cfg("0A120103")).is_err());
    assert!(s.cfg("nfsroot-minimal").exists() && s.cfg("default").exists());
    assert!(
        r.changes
            .iter()
            .any(|c| c.action == "remove" && c.path.ends_with("0A120103")),
        "{}",
        r.text()
    );
    // Its log directory stays: it holds logs. Its ssh keys go.
    assert!(s.layout.logs_dir("minimal").join("n002").is_dir());
    assert!(!nfsroot::hostkeys::host_dir(&s.layout, "n002").exists());
    assert!(nfsroot::hostkeys::complete(&s.layout, "n001"));
}

#[test]
fn hand_made_host_files_are_never_swept() {
    let s = three();
    let mine = s.cfg("01-aa-bb-cc-dd-ee-f0");
    std::fs::write(&mine, "DEFAULT x\nLABEL x\n  KERNEL k\n").unwrap();
    std::os::unix::fs::symlink("nfsroot-minimal", s.cfg("0A120163")).unwrap();
    s.sync(false);
    s.hosts(HostsCmd::Remove {
        name: "g001".into(),
    })
    .unwrap();
    s.sync(false);
    assert!(mine.exists());
    assert_eq!(s.link("0A120163"), "nfsroot-minimal");
    assert!(std::fs::symlink_metadata(s.cfg("0A120112")).is_err());
}

#[test]
fn dry_run_shows_diffs_and_writes_nothing() {
    let s = three();
    s.sync(false);
    s.hosts(HostsCmd::Set(SetHost {
        name: "n001".into(),
        disable: true,
        ..SetHost::default()
    }))
    .unwrap();
    let before = snapshot(&s.root);
    let r = s.sync(true);
    assert_eq!(before, snapshot(&s.root), "a dry run wrote something");
    let text = r.text();
    assert!(text.contains("write  "), "{text}");
    assert!(
        text.contains("+SAY nfsroot: host n001 is disabled by nfsroot"),
        "{text}"
    );
    assert!(
        text.contains("link   ") && text.contains("0A120102 -> 01-52-54-00-00-01-01"),
        "{text}"
    );
    assert!(text.contains("dry run: nothing written"), "{text}");
    // Then the real one: the disabled host's file says why and never
    // names a kernel.
    s.sync(false);
    let t = s.read(s.cfg("0A120102"));
    assert!(t.contains("LOCALBOOT -1") && !t.contains("KERNEL"), "{t}");
    let r = s.sync(true);
    assert!(r.changes.is_empty(), "{}", r.text());
}

fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut v: Vec<_> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| !e.path().to_string_lossy().contains("/locks/"))
        .map(|e| {
            let m = e.path().symlink_metadata().unwrap();
            let data = if m.is_file() {
                std::fs::read(e.path()).unwrap()
            } else if m.is_symlink() {
                std::fs::read_link(e.path())
                    .unwrap()
                    .to_string_lossy()
                    .as_bytes()
                    .to_vec()
            } else {
                vec![]
            };
            (e.path().to_path_buf(), data, m.mode())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn add_set_remove_round_trip() {
    let s = three();
    let add = |name: &str, mac: &str, ip: &str, image: Option<&str>| {
        HostsCmd::Add(AddHost {
            name: name.into(),
            macs: vec![mac.into()],
            ip: ip.into(),
            image: image.map(String::from),
            ..AddHost::default()
        })
    };
    let o = s
        .hosts(add("n004", "52-54-00-AA-BB-04", "10.18.1.4", Some("cuda")))
        .unwrap();
    assert_eq!(o.changed, ["n004"]);
    let text = std::fs::read_to_string(&s.inv).unwrap();
    assert_eq!(
        text,
        format!(
            "{THREE}n004 = {{ mac = \"52:54:00:aa:bb:04\", ip = \"10.18.1.4\", image = \"cuda\" }}\n"
        )
    );
    let list = s.hosts(HostsCmd::List).unwrap();
    let n4 = list.hosts.iter().find(|h| h.name == "n004").unwrap();
    assert_eq!(
        (n4.image.as_deref(), n4.boot),
        (Some("cuda"), BootMode::Image)
    );
    let row: Vec<String> = list
        .text()
        .lines()
        .find(|l| l.starts_with("n004 "))
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        row,
        [
            "n004",
            "52:54:00:aa:bb:04",
            "10.18.1.4",
            "cuda",
            "image",
            "-",
            "-"
        ]
    );
    let json = serde_json::to_value(&list).unwrap();
    assert_eq!(json["hosts"][3]["macs"][0], "52:54:00:aa:bb:04");

    let set = |f: fn(&mut SetHost)| {
        let mut a = SetHost {
            name: "n004".into(),
            ..SetHost::default()
        };
        f(&mut a);
        s.hosts(HostsCmd::Set(a)).unwrap();
        inventory::load(&s.inv)
            .unwrap()
            .host("n004")
            .unwrap()
            .clone()
    };
    assert_eq!(set(|a| a.disable = true).boot, BootMode::Disabled);
    assert!(
        std::fs::read_to_string(&s.inv)
            .unwrap()
            .contains("boot = \"disabled\"")
    );
    assert_eq!(set(|a| a.localboot = true).boot, BootMode::Localboot);
    assert_eq!(set(|a| a.enable = true).boot, BootMode::Image);
    let h = set(|a| a.image = Some("minimal".into()));
    assert_eq!(
        (h.image.as_deref(), h.boot),
        (Some("minimal"), BootMode::Image)
    );
    assert_eq!(
        set(|a| a.kernel = Some("6.1.0-9-amd64".into()))
            .kernel
            .as_deref(),
        Some("6.1.0-9-amd64")
    );
    assert_eq!(set(|a| a.kernel = Some(String::new())).kernel, None);
    set(|a| a.image = Some("cuda".into()));
    assert_eq!(
        std::fs::read_to_string(&s.inv).unwrap(),
        format!(
            "{THREE}n004 = {{ mac = \"52:54:00:aa:bb:04\", ip = \"10.18.1.4\", image = \"cuda\" }}\n"
        ),
        "enable removes the boot key again"
    );
    s.hosts(HostsCmd::Remove {
        name: "n004".into(),
    })
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&s.inv).unwrap(),
        THREE,
        "add then remove is a no-op"
    );

    // Each collision names the field and the other host.
    let e = |cmd| format!("{:#}", s.hosts(cmd).unwrap_err());
    let m = e(add("n001", "52:54:00:00:09:01", "10.18.1.90", None));
    assert!(
        m.contains("name") && m.contains("already exists") && m.contains("inventory.toml:14"),
        "{m}"
    );
    let m = e(add("n005", "52:54:00:00:01:02", "10.18.1.90", None));
    assert!(m.contains("--mac") && m.contains("host n002"), "{m}");
    let m = e(add("n005", "52:54:00:00:09:01", "10.18.1.3", None));
    assert!(m.contains("--ip") && m.contains("host n002"), "{m}");
    let m = e(add("n005", "52:54:00:00:09:01", "10.18.2.3", None));
    assert!(
        m.contains("--ip: 10.18.2.3 is outside the cluster subnet 10.18.1.0/24"),
        "{m}"
    );
    let m = e(add("n005", "52:54:00:00:09", "10.18.1.90", None));
    assert!(
        m.contains("--mac") && m.contains("not a MAC address"),
        "{m}"
    );
    let m = e(HostsCmd::Remove {
        name: "nope".into(),
    });
    assert!(m.contains("no host nope"), "{m}");
    assert_eq!(
        std::fs::read_to_string(&s.inv).unwrap(),
        THREE,
        "failed edits write nothing"
    );
}

#[test]
fn import_csv_and_ethers() {
    let s = three();
    let csv = s.root.join("new.csv");
    std::fs::write(
        &csv,
        "name,mac,ip,image,cmdline\n\
         c001,52:54:00:00:03:01,10.18.1.31,cuda,\n\
         c002,52-54-00-00-03-02,10.18.1.32,,\"console=ttyS0,115200\"\n",
    )
    .unwrap();
    let o = s
        .hosts(HostsCmd::Import {
            file: csv,
            replace: false,
        })
        .unwrap();
    assert_eq!(o.changed, ["c001", "c002"]);
    let ethers = s.root.join("ethers");
    std::fs::write(
        &ethers,
        "# from the old server\n52:54:00:00:04:01 10.18.1.41 e001\n5254.0000.0402 e002.cluster.example 10.18.1.42 # spare\n",
    )
    .unwrap();
    s.hosts(HostsCmd::Import {
        file: ethers.clone(),
        replace: false,
    })
    .unwrap();
    let inv = inventory::load(&s.inv).unwrap();
    assert_eq!(inv.host("c002").unwrap().cmdline, "console=ttyS0,115200");
    assert_eq!(inv.host("e002").unwrap().macs, ["52:54:00:00:04:02"]);
    assert_eq!(inv.hosts.len(), 7);
    // Again: the names exist; with --replace it is accepted.
    let m = format!(
        "{:#}",
        s.hosts(HostsCmd::Import {
            file: ethers.clone(),
            replace: false
        })
        .unwrap_err()
    );
    assert!(
        m.contains("ethers:2: name: host e001 already exists") && m.contains("--replace"),
        "{m}"
    );
    let o = s
        .hosts(HostsCmd::Import {
            file: ethers,
            replace: true,
        })
        .unwrap();
    assert!(o.changed.is_empty(), "same values: nothing changed");
}

const FIRMWARE: &str = "\
[cluster]
subnet = \"10.18.1.0/24\"
nfs_server = \"10.18.1.1\"
image = \"minimal\"

[hosts]
any = { mac = \"52:54:00:00:03:01\", ip = \"10.18.1.31\" }
bios = { mac = \"52:54:00:00:03:02\", ip = \"10.18.1.32\", firmware = \"bios\" }
uefi = { mac = \"52:54:00:00:03:03\", ip = \"10.18.1.33\", firmware = \"uefi\" }
local = { mac = \"52:54:00:00:03:04\", ip = \"10.18.1.34\", boot = \"localboot\" }
off = { mac = \"52:54:00:00:03:05\", ip = \"10.18.1.35\", boot = \"disabled\" }
";

/// The loader dnsmasq gives a host announcing `arch`: its `dhcp-host`
/// line's tags plus the `dhcp-match` tags for `arch`, evaluated against
/// every `dhcp-boot` line as dnsmasq does (all of a line's tags must hold;
/// `tag:!x` must not). An `ipxe` client sends option 175. Fails if two
/// lines match.
fn dnsmasq_loader(conf: &str, mac: &str, arch: u16, ipxe: bool) -> Option<String> {
    let mut tags = vec!["nfsroot".to_string()];
    for l in conf.lines() {
        if let Some(m) = l.strip_prefix("dhcp-match=set:") {
            let (tag, rest) = m.split_once(',').unwrap();
            if rest == format!("option:client-arch,{arch}") || (ipxe && rest == "175") {
                tags.push(tag.into());
            }
        }
        if let Some(h) = l.strip_prefix("dhcp-host=")
            && h.split(',').any(|f| f == mac)
        {
            tags.extend(
                h.split(',')
                    .filter_map(|f| f.strip_prefix("set:"))
                    .map(String::from),
            );
        }
    }
    let mut found = None;
    for l in conf.lines() {
        let Some(b) = l.strip_prefix("dhcp-boot=") else {
            continue;
        };
        let fields: Vec<&str> = b.split(',').collect();
        let holds = fields
            .iter()
            .filter_map(|f| f.strip_prefix("tag:"))
            .all(|t| match t.strip_prefix('!') {
                Some(neg) => !tags.iter().any(|x| x == neg),
                None => tags.iter().any(|x| x == t),
            });
        if holds {
            let file = fields.iter().find(|f| !f.starts_with("tag:")).unwrap();
            assert!(
                found.is_none(),
                "two dhcp-boot lines match {mac} arch {arch}:\n{conf}"
            );
            found = Some(file.to_string());
        }
    }
    found
}

/// The loader dhcpd gives a host announcing `arch`: its host block's
/// `filename`, through the `if`/`elsif`/`else` on pxe-system-type and (an
/// `ipxe` client) the user class.
fn dhcpd_loader(conf: &str, host: &str, arch: u16, ipxe: bool) -> Option<String> {
    let block = conf.split(&format!("host {host} {{\n")).nth(1).unwrap();
    let code = format!("{:02x}:{:02x}", arch >> 8, arch & 0xff);
    let mut taking = true;
    let mut taken = false;
    for l in block.lines().map(str::trim) {
        if l == "}" && !taken && taking {
            break;
        }
        if let Some(cond) = l.strip_prefix("if ").or(l.strip_prefix("} elsif ")) {
            taking = !taken
                && (cond.contains(&format!("pxe-system-type = {code}"))
                    || (ipxe && cond.contains("option user-class = \"iPXE\"")));
            taken |= taking;
        } else if l == "} else {" {
            taking = !taken;
            taken = true;
        } else if l == "}" {
            if taken {
                taking = true;
                taken = false;
                continue;
            }
            break;
        } else if let Some(f) = l.strip_prefix("filename \"")
            && taking
        {
            return Some(f.trim_end_matches("\";").to_string());
        }
    }
    None
}

/// Which loader each client architecture is given, by dnsmasq and by
/// dhcpd, pinned or not; both daemons accept the configs; localboot and
/// disabled hosts get GRUB configs that exit to the firmware / halt.
#[test]
fn loader_by_client_architecture() {
    let s = Server::new();
    s.image("minimal", None, true);
    s.write_inv(FIRMWARE);
    s.sync(false);
    let dns = s.read(s.etc.join("dnsmasq.d/nfsroot.conf"));
    let dhcpd = s.read(s.etc.join("dhcp/dhcpd.conf"));
    let (bios, uefi) = (
        Some("pxelinux.0".to_string()),
        Some("shimx64.efi".to_string()),
    );
    // (host, mac, arch, expected loader)
    let cases = [
        ("any", "52:54:00:00:03:01", 0, &bios),
        ("any", "52:54:00:00:03:01", 7, &uefi),
        ("any", "52:54:00:00:03:01", 9, &uefi),
        ("any", "52:54:00:00:03:01", 11, &None),
        ("bios", "52:54:00:00:03:02", 0, &bios),
        ("bios", "52:54:00:00:03:02", 7, &bios),
        ("uefi", "52:54:00:00:03:03", 0, &uefi),
        ("uefi", "52:54:00:00:03:03", 9, &uefi),
        ("local", "52:54:00:00:03:04", 7, &uefi),
    ];
    for (host, mac, arch, want) in cases {
        assert_eq!(
            &dnsmasq_loader(&dns, mac, arch, false),
            want,
            "dnsmasq: {host} arch {arch}\n{dns}"
        );
        assert_eq!(
            &dhcpd_loader(&dhcpd, host, arch, false),
            want,
            "dhcpd: {host} arch {arch}\n{dhcpd}"
        );
    }
    // iPXE clients: BIOS ones get the published iPXE script, UEFI ones
    // shim as before (Secure Boot needs the signed chain); hosts with a
    // per-host PXELINUX config (local boot, disabled) pxelinux.0, which
    // reads it.
    let script = Some("nfsroot.ipxe".to_string());
    for (host, mac, arch, want) in [
        ("any", "52:54:00:00:03:01", 0, &script),
        ("any", "52:54:00:00:03:01", 7, &uefi),
        ("bios", "52:54:00:00:03:02", 7, &script),
        ("uefi", "52:54:00:00:03:03", 0, &uefi),
        ("local", "52:54:00:00:03:04", 0, &bios),
        ("off", "52:54:00:00:03:05", 0, &bios),
    ] {
        assert_eq!(
            &dnsmasq_loader(&dns, mac, arch, true),
            want,
            "dnsmasq: {host} {arch}\n{dns}"
        );
        assert_eq!(
            &dhcpd_loader(&dhcpd, host, arch, true),
            want,
            "dhcpd: {host} {arch}\n{dhcpd}"
        );
    }
    daemons_accept(&s.etc);
    // A hand-made per-subnet PXELINUX file (10.18.1.16-31, seed 003's
    // habit) covers `any`: iPXE cannot look it up, so after a sync `any`
    // gets pxelinux.0 whatever its firmware; `bios` (10.18.1.32) still
    // gets the script.
    std::fs::write(
        s.cfg("0A12011"),
        "DEFAULT local\nLABEL local\n  LOCALBOOT 0\n",
    )
    .unwrap();
    s.sync(false);
    let dns = s.read(s.etc.join("dnsmasq.d/nfsroot.conf"));
    let dhcpd = s.read(s.etc.join("dhcp/dhcpd.conf"));
    for (host, mac, want) in [
        ("any", "52:54:00:00:03:01", &bios),
        ("bios", "52:54:00:00:03:02", &script),
    ] {
        assert_eq!(
            &dnsmasq_loader(&dns, mac, 0, true),
            want,
            "dnsmasq: {host}\n{dns}"
        );
        assert_eq!(
            &dhcpd_loader(&dhcpd, host, 0, true),
            want,
            "dhcpd: {host}\n{dhcpd}"
        );
    }
    // Localboot and disabled hosts: GRUB configs of their own.
    let g = |n: &str| s.read(s.layout.tftp_root.join("grub").join(n));
    let local = g("grub.cfg-01-52-54-00-00-03-04");
    assert!(
        local.ends_with("\nexit\n") && grub::parse(&local).unwrap().entries.is_empty(),
        "{local}"
    );
    let off = g("grub.cfg-10.18.1.35");
    assert!(
        off.contains("echo 'nfsroot: host off is disabled by nfsroot'\n")
            && off.ends_with("halt\n"),
        "{off}"
    );
    assert!(
        s.read(s.cfg("01-52-54-00-00-03-05"))
            .contains("LOCALBOOT -1")
    );
}

/// `hosts set --firmware` through the binary: `uefi` pins a host to shim
/// whatever it announces, `auto` takes a pin away (the key goes, the
/// other lines stay byte for byte), a wrong word fails naming the allowed
/// ones and changes nothing; the next sync's DHCP configs follow.
#[test]
fn hosts_set_firmware_through_the_binary() {
    let s = Server::new();
    s.image("minimal", None, true);
    s.write_inv(FIRMWARE);
    let bin = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nfsroot"))
            .env("NFSROOT_BASE_DIR", &s.layout.base_dir)
            .env("NFSROOT_TFTP_ROOT", &s.layout.tftp_root)
            .env("NFSROOT_INVENTORY", &s.inv)
            .env("NFSROOT_ETC_DIR", &s.etc)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    assert_eq!(
        bin(&["hosts", "set", "any", "--firmware", "uefi"]).0,
        Some(0)
    );
    assert_eq!(
        bin(&["hosts", "set", "bios", "--firmware", "auto"]).0,
        Some(0)
    );
    let text = std::fs::read_to_string(&s.inv).unwrap();
    let want = FIRMWARE
        .replace(
            "any = { mac = \"52:54:00:00:03:01\", ip = \"10.18.1.31\" }",
            "any = { mac = \"52:54:00:00:03:01\", ip = \"10.18.1.31\", firmware = \"uefi\" }",
        )
        .replace(", firmware = \"bios\"", "");
    assert_ne!(want, FIRMWARE);
    assert_eq!(text, want);
    let (code, err) = bin(&["hosts", "set", "uefi", "--firmware", "efi"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("efi") && err.contains("bios, uefi, auto"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&s.inv).unwrap(), want);
    assert_eq!(bin(&["sync"]).0, Some(0));
    let dns = s.read(s.etc.join("dnsmasq.d/nfsroot.conf"));
    let dhcpd = s.read(s.etc.join("dhcp/dhcpd.conf"));
    let (bios, uefi) = (
        Some("pxelinux.0".to_string()),
        Some("shimx64.efi".to_string()),
    );
    for (host, mac, arch, want) in [
        ("any", "52:54:00:00:03:01", 0, &uefi),
        ("any", "52:54:00:00:03:01", 7, &uefi),
        ("bios", "52:54:00:00:03:02", 0, &bios),
        ("bios", "52:54:00:00:03:02", 7, &uefi),
        ("uefi", "52:54:00:00:03:03", 0, &uefi),
    ] {
        assert_eq!(
            &dnsmasq_loader(&dns, mac, arch, false),
            want,
            "{host} {arch}\n{dns}"
        );
        assert_eq!(
            &dhcpd_loader(&dhcpd, host, arch, false),
            want,
            "{host} {arch}\n{dhcpd}"
        );
    }
}

#[test]
fn hex_names() {
    let s = Server::new();
    s.image("minimal", None, false);
    s.write_inv(
        "[cluster]\nsubnet = \"172.16.0.0/16\"\nnfs_server = \"172.16.0.1\"\nimage = \"minimal\"\n\
         [hosts]\nh = { mac = \"52:54:00:00:00:0a\", ip = \"172.16.1.10\" }\n\
         k = { mac = \"52:54:00:00:00:0b\", ip = \"172.16.1.18\" }\n",
    );
    let r = s.sync(false);
    assert_eq!(
        r.following_default.len(),
        0,
        "no default: every host gets names"
    );
    assert_eq!(s.link("AC10010A"), "nfsroot-minimal");
    assert_eq!(s.link("AC100112"), "nfsroot-minimal");
    assert_eq!(s.link("01-52-54-00-00-00-0a"), "nfsroot-minimal");
    assert_eq!(pxelinux::hex_ip("10.18.1.2".parse().unwrap()), "0A120102");
}

#[test]
fn unpublished_image_fails_before_writing() {
    let s = three();
    std::fs::remove_file(s.layout.record_path("cuda")).unwrap();
    let e = inventory::run_sync(&s.layout, &s.inv, &s.etc, false).unwrap_err();
    let m = format!("{e:#}");
    assert!(
        m.contains("host g001: image cuda is not published; run nfsroot publish cuda"),
        "{m}"
    );
    assert!(!s.etc.join("dnsmasq.d").exists());
}

/// Run a checker; a missing tool fails the test naming its package.
fn check_tool(bin: &str, package: &str, args: &[&str], file: &Path) {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: install the {package} package (apt-get install {package})"
    );
    let out = Command::new(bin).args(args).arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "{bin} {} {} failed:\n{}{}\n--- file ---\n{}",
        args.join(" "),
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// `dnsmasq --test` and `dhcpd -t` accept the configs sync wrote under `etc`.
fn daemons_accept(etc: &Path) {
    check_tool(
        "/usr/sbin/dnsmasq",
        "dnsmasq-base",
        &["--test", "-C"],
        &etc.join("dnsmasq.d/nfsroot.conf"),
    );
    check_tool(
        "/usr/sbin/dhcpd",
        "isc-dhcp-server",
        &["-t", "-cf"],
        &etc.join("dhcp/dhcpd.conf"),
    );
}

#[test]
fn generated_dhcp_configs_pass_their_daemons_checks() {
    let s = three();
    s.sync(false);
    daemons_accept(&s.etc);
    exportfs_accepts(&s.etc.join("exports.d/nfsroot.exports"));
}

/// The kernel server's `exportfs -ra` accepts the exports sync wrote
/// (syntax, options, every exported path there) and `exportfs -v` lists
/// each. Run in private mount and network namespaces, the file bound over
/// /etc/exports and a tmpfs on /var/lib/nfs: the host's exports, etab and
/// nfsd caches are never touched.
fn exportfs_accepts(file: &Path) {
    for p in ["/usr/sbin/exportfs", "/etc/exports", "/var/lib/nfs"] {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: install the nfs-kernel-server package \
             (apt-get install nfs-kernel-server; scripts/setup keeps it stopped)"
        );
    }
    let script = "mount --bind \"$1\" /etc/exports && mount -t tmpfs tmpfs /var/lib/nfs \
                  && exportfs -ra && exportfs -v";
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private", "--"])
        .args(["sh", "-c", script, "sh"])
        .arg(file)
        .output()
        .expect("no unshare: apt-get install util-linux");
    let text = std::fs::read_to_string(file).unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exportfs -ra refused {}:\n{listed}{}\n--- file ---\n{text}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // One line per export in the file; exportfs -v: the path, then its
    // clients and options on an indented line.
    let want = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let got = listed
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(char::is_whitespace))
        .count();
    assert!(want > 0, "{text}");
    assert_eq!(got, want, "exportfs -v:\n{listed}\n--- file ---\n{text}");
}

/// A 1000-host inventory renders and syncs completely (the time it takes
/// is `scripts/bench inventory`'s, never asserted on a shared machine).
#[test]
fn thousand_hosts_render_and_sync() {
    let s = Server::new();
    s.image("minimal", None, true);
    let mut text = String::from(
        "[cluster]\nsubnet = \"10.20.0.0/16\"\ngateway = \"10.20.0.1\"\nnfs_server = \"10.20.0.1\"\n\
         domain = \"big.example\"\nimage = \"minimal\"\n[hosts]\n",
    );
    for i in 0..1000u32 {
        let ip = 0x0a14_0100 + i; // 10.20.1.0 ..
        let ip = std::net::Ipv4Addr::from(ip + 2);
        // Every third host differs from default.
        let extra = if i % 3 == 0 {
            ", cmdline = \"quiet\""
        } else {
            ""
        };
        text.push_str(&format!(
            "n{i:04} = {{ mac = \"52:54:00:01:{:02x}:{:02x}\", ip = \"{ip}\"{extra} }}\n",
            i >> 8,
            i & 0xff
        ));
    }
    s.write_inv(&text);
    let inv = inventory::parse(&text, &s.inv).unwrap();
    assert_eq!(inv.hosts.len(), 1000);
    let rec = Record::load(&s.layout, "minimal").unwrap().unwrap();
    let mut total = 0;
    for h in &inv.hosts {
        total += pxelinux::render(&inventory::render::boot_config(h, Some(&rec)).unwrap()).len();
    }
    let route = inventory::render::IpxeRoute::new(&inv, true, Default::default());
    total += inventory::render::dnsmasq(&inv, &s.layout.tftp_root, &route).len();
    total += inventory::render::dhcpd_hosts(&inv, &route).len();
    total += inventory::render::hosts_block(&inv).len();
    assert!(total > 100_000);

    let r = s.sync(false);
    assert_eq!(r.host_files.len(), 334);
    let cfgd = s.layout.tftp_root.join("pxelinux.cfg");
    let per_host = std::fs::read_dir(&cfgd)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("01-"))
        .count();
    assert_eq!(per_host, 334);
    let hosts = std::fs::read_to_string(s.layout.image_dir("minimal").join("etc/hosts")).unwrap();
    assert!(
        hosts.contains("10.20.1.2\tn0000") && hosts.contains("10.20.4.233\tn0999"),
        "{hosts}"
    );
    let r = s.sync(false);
    assert!(r.changes.is_empty(), "{:?}", r.changes);
    check_tool(
        "/usr/sbin/dnsmasq",
        "dnsmasq-base",
        &["--test", "-C"],
        &s.etc.join("dnsmasq.d/nfsroot.conf"),
    );
}

/// Every file under tests/corpus/inventory/ is broken input with a sibling
/// `.expect` listing fragments the error must contain (one a line); `@`
/// stands for the file's own path. `.toml` files are loaded as
/// inventories; `.csv` and `.ethers` files are imported into `_base.toml`.
#[test]
fn malformed_corpus_errors_name_line_and_field() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/inventory");
    let base = dir.join("_base.toml");
    let mut n = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "expect"))
        .filter(|p| p != &base)
        .collect();
    entries.sort();
    let mut failures = Vec::new();
    for f in entries {
        let expect = std::fs::read_to_string(f.with_extension(format!(
            "{}.expect",
            f.extension().unwrap().to_string_lossy()
        )))
        .unwrap_or_else(|e| panic!("{}: no .expect file: {e}", f.display()));
        let err = if f.extension().unwrap() == "toml" {
            inventory::load(&f).err()
        } else {
            let s = Server::new();
            std::fs::copy(&base, &s.inv).unwrap();
            let r = s.hosts(HostsCmd::Import {
                file: f.clone(),
                replace: false,
            });
            if r.is_ok() {
                failures.push(format!("{}: import succeeded", f.display()));
                continue;
            }
            assert_eq!(
                std::fs::read(&s.inv).unwrap(),
                std::fs::read(&base).unwrap()
            );
            r.err()
        };
        let Some(err) = err else {
            failures.push(format!("{}: no error", f.display()));
            continue;
        };
        let msg = format!("{err:#}");
        let me = f.display().to_string();
        // file:line always, then the expected fragments (field included).
        let has_line = msg
            .match_indices(&format!("{me}:"))
            .any(|(i, m)| msg[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
        if !has_line {
            failures.push(format!("{me}: no {me}:LINE in:\n{msg}"));
        }
        for frag in expect.lines().filter(|l| !l.trim().is_empty()) {
            let frag = frag.replace('@', &me);
            if !msg.contains(&frag) {
                failures.push(format!("{me}: missing {frag:?} in:\n{msg}"));
            }
        }
        n += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(n >= 15, "only {n} corpus files");
}

/// A node of a read-write image (or a restored archive) controls every
/// file in the tree and in its log export: none of it may steer sync.
#[test]
fn hostile_image_does_not_steer_sync() {
    use std::os::unix::fs::{MetadataExt, symlink};
    let s = three();
    let outside = s.root.join("outside");
    std::fs::create_dir_all(outside.join("d")).unwrap();
    std::fs::write(outside.join("hosts"), "keep\n").unwrap();
    let before = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode())
    };
    let d_before = before(&outside.join("d"));
    // A poisoned node.conf: logs exported from the server's `/`, and a log
    // dir that climbs out of the image.
    let img = s.layout.image_dir("minimal");
    std::fs::write(
        img.join("etc/nfsroot/node.conf"),
        format!(
            "ROOT_MODE='rw'\nLOG_EXPORT='10.18.1.1:/'\nLOG_DIR='/../../../../{}'\n",
            outside.display()
        ),
    )
    .unwrap();
    // etc/hosts links out of the image, and so does a host's log directory
    // in the rw image and in the ro image's export.
    std::fs::remove_file(img.join("etc/hosts")).unwrap();
    symlink(outside.join("hosts"), img.join("etc/hosts")).unwrap();
    let cuda_logs = s.layout.image_dir("cuda").join("var/log/hosts");
    std::fs::create_dir_all(&cuda_logs).unwrap();
    symlink(outside.join("d"), cuda_logs.join("g001")).unwrap();
    let export = s.layout.base_dir.join(".logs/minimal");
    std::fs::create_dir_all(&export).unwrap();
    symlink(outside.join("d"), export.join("n001")).unwrap();

    let err = inventory::run_sync(&s.layout, &s.inv, &s.etc, false).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("exists and is not a directory"), "{msg}");
    // Nothing outside changed, and the exports name no path from node.conf.
    assert_eq!(
        std::fs::read_to_string(outside.join("hosts")).unwrap(),
        "keep\n"
    );
    assert_eq!(before(&outside.join("d")), d_before);
    // With the planted log links gone, sync succeeds: etc/hosts is
    // replaced inside the image, never written through.
    std::fs::remove_file(cuda_logs.join("g001")).unwrap();
    std::fs::remove_file(export.join("n001")).unwrap();
    s.sync(false);
    assert_eq!(
        std::fs::read_to_string(outside.join("hosts")).unwrap(),
        "keep\n"
    );
    assert!(
        std::fs::symlink_metadata(img.join("etc/hosts"))
            .unwrap()
            .is_file()
    );
    let exports = s.read(s.etc.join("exports.d/nfsroot.exports"));
    assert!(!exports.contains("\n/ "), "{exports}");
    assert!(!exports.contains("outside"), "{exports}");
    assert!(
        exports.contains("/T/nfsroot/minimal 10.18.1.0/24(ro,"),
        "{exports}"
    );
    assert_eq!(before(&outside.join("d")), d_before);
}

/// A bounded fuzz of the two parsers an admin feeds by hand (profiles and
/// inventories): valid and broken seeds from the shipped profiles and the
/// corpora, mutated by byte flips, TOML-token insertions, deletions,
/// duplications and truncation, for a few seconds with a fixed seed. Every
/// input either parses or is refused with an error; none panics, and none
/// takes more than a second. Then inputs built to be slow (huge, deeply
/// nested, long strings) must be refused or parsed in time linear in size.
#[test]
fn parsers_survive_mutated_and_hostile_input() {
    use std::time::{Duration, Instant};
    let mut seeds: Vec<(bool, String)> = vec![(false, THREE.to_string())];
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (dir, is_profile) in [
        ("profiles", true),
        ("tests/corpus/profiles", true),
        ("tests/corpus/inventory", false),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(repo.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for f in files {
            seeds.push((is_profile, std::fs::read_to_string(f).unwrap()));
        }
    }
    assert!(seeds.len() > 50, "{} seeds", seeds.len());
    let parse = |profile: bool, text: &str| -> Duration {
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| {
            if profile {
                nfsroot::profile::parse(text, Path::new("f.toml"), Path::new("/nonexistent"))
                    .map(|_| ())
            } else {
                inventory::parse(text, Path::new("inventory.toml")).map(|_| ())
            }
        });
        assert!(r.is_ok(), "parser panicked on:\n{text:?}");
        t.elapsed()
    };
    const TOKENS: &[&str] = &[
        "\"",
        "'",
        "'''",
        "\"\"\"",
        "[",
        "]",
        "[[",
        "]]",
        "{",
        "}",
        "=",
        ",",
        ".",
        "\n",
        "#",
        "\\",
        "\\u00",
        "\\U0010FFFF",
        "\u{0}",
        "\u{7f}",
        "\r",
        "\t",
        "-",
        "+",
        ":",
        "0x",
        "1e999",
        "99999999999999999999999",
        "nan",
        "inf",
        "true",
        "1979-05-27T07:32:00Z",
        "ip = ",
        "mac = ",
        "[hosts]\n",
        "[cluster]\n",
        "name = ",
        "\"10.0.2.300\"",
        "\"aa:bb\"",
    ];
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| -> usize {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n.max(1) as u64) as usize
    };
    let start = Instant::now();
    let (mut runs, mut worst) = (0, Duration::ZERO);
    while start.elapsed() < Duration::from_secs(6) && runs < 200_000 {
        let (profile, seed) = &seeds[next(seeds.len())];
        let mut b = seed.clone().into_bytes();
        for _ in 0..=next(4) {
            let at = next(b.len() + 1);
            match next(5) {
                0 if !b.is_empty() => {
                    let i = at.min(b.len() - 1);
                    b[i] ^= 1 << next(8);
                }
                1 => {
                    let t = TOKENS[next(TOKENS.len())].as_bytes();
                    b.splice(at..at, t.iter().copied());
                }
                2 => {
                    let end = (at + next(40)).min(b.len());
                    b.drain(at..end);
                }
                3 => {
                    let end = (at + next(200)).min(b.len());
                    let chunk = b[at..end].to_vec();
                    b.splice(at..at, chunk);
                }
                _ => b.truncate(at),
            }
        }
        let text = String::from_utf8_lossy(&b);
        worst = worst.max(parse(*profile, &text));
        runs += 1;
    }
    eprintln!(
        "parser fuzz: {runs} inputs in {:.1?}, slowest {worst:?}",
        start.elapsed()
    );
    assert!(runs > 1000, "only {runs} inputs ran");

    // Built to be slow: each must be parsed or refused in time linear in
    // its size (20,000 hosts used to take minutes: a scan per host, and a
    // re-parse of the whole file per error).
    let hosts = |n: usize, subnet: &str| -> String {
        let mut t = format!(
            "[cluster]\nsubnet = \"{subnet}\"\ngateway = \"10.18.0.1\"\n\
             nfs_server = \"10.18.0.1\"\nimage = \"minimal\"\n\n[hosts]\n"
        );
        for i in 0..n {
            t.push_str(&format!(
                "h{i} = {{ mac = \"52:54:00:{:02x}:{:02x}:{:02x}\", ip = \"10.18.{}.{}\" }}\n",
                i / 65536,
                i / 256 % 256,
                i % 256,
                1 + i / 250,
                2 + i % 250
            ));
        }
        t
    };
    let deep = format!(
        "name = \"x\"\na = {}{}\n",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let long = format!(
        "name = \"x\"\n[boot]\ncmdline = \"{}\"\n",
        "a".repeat(8 << 20)
    );
    let comments = format!("{}name = \"x\"\n", "# comment line\n".repeat(500_000));
    // Speed is a benchmark's business (scripts/bench inventory), not a
    // test's on a shared machine: these only guard against the hangs of
    // old (minutes: a scan per host, a re-parse of the whole file per
    // error), with limits hundreds of times the measured 35 ms-2.4 s.
    for subnet in ["10.18.0.0/16", "10.18.1.0/24"] {
        let (small, big) = (
            parse(false, &hosts(2_000, subnet)),
            parse(false, &hosts(20_000, subnet)),
        );
        eprintln!("{subnet}: 2,000 hosts {small:?}, 20,000 hosts {big:?}");
        assert!(
            big < Duration::from_secs(120),
            "{subnet}: 20,000 hosts took {big:?}: a hang"
        );
    }
    for (profile, text) in [
        (true, deep.clone()),
        (false, deep),
        (true, long),
        (true, comments),
    ] {
        let took = parse(profile, &text);
        eprintln!("{} KiB: {took:?}", text.len() / 1024);
        assert!(
            took < Duration::from_secs(120),
            "{} KiB took {took:?}: a hang",
            text.len() / 1024
        );
    }
}
