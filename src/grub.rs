//! GRUB boot configs for UEFI nodes: a pure rendering of the same
//! [`crate::bootcfg`] model PXELINUX configs come from, and a parser that
//! reads back what a config names (for drift checks and crash tests).
//!
//! Where the signed GRUB looks. Debian's `grubnetx64.efi.signed` (GRUB
//! 2.06, grub-efi-amd64-signed 1+2.06+13+deb12u2), published as
//! `grubx64.efi`, carries three objects in its `mods` section (read with
//! `objcopy --only-section=mods` and the `mimg` module header): the
//! prefix `/grub`, which GRUB completes with the device it was loaded from
//! (a run showed `prefix=(tftp,10.0.2.2)/grub`); the embedded config
//! `normal (memdisk)/grub.cfg`; and a FAT memdisk whose `grub.cfg` says
//! `if [ -e $prefix/x86_64-efi/grub.cfg ]; then source
//! $prefix/x86_64-efi/grub.cfg; else source $prefix/grub.cfg; fi`. So the
//! config is [`DIR`]`/`[`TOP`] under the TFTP root (nfsroot never writes
//! `grub/x86_64-efi/`). The image holds `grub_net_search_config_file`
//! (GRUB's own per-MAC/per-IP search), but `normal` only runs it when it
//! is given no file, and the embedded config gives it one: this GRUB never
//! searches per-host names. The top config does it instead
//! ([`try_render_top`]): `configfile` on [`mac_file_name`] built from
//! `$net_default_mac` (`regexp` splits it; GRUB prints it in lower case),
//! then on [`ip_file_name`] built from `$net_default_ip` (dotted: GRUB's
//! script cannot turn it into PXELINUX's hex), else its own menu, the
//! default image's. Per-host names keep GRUB's own spelling for the MAC
//! (`grub.cfg-01-<mac>`). Tried under QEMU with OVMF and these files
//! (TCG, GRUB up about 15 s after power-on): `regexp` splits
//! `$net_default_mac`; `[ -e FILE ]` is false for every file over TFTP
//! (GRUB's network file system lists no directories), so the search calls
//! `configfile` unconditionally: a missing name returns quietly and the
//! next is tried; an existing one is read as a new menu and never returns.
//!
//! Quoting. GRUB's script expands `$` and treats quotes, `;`, `|`, `&`,
//! `<`, `>`, `{`, `}` and `#` specially; every word this module writes
//! that is not made of plain characters is single-quoted (a `'` inside
//! becomes `'\''`). The `linux` command hands its arguments to the kernel
//! with `"`, `'` and `\` backslash-escaped, so a command line holding them
//! would not reach the kernel as PXELINUX passes it: [`check`] refuses it,
//! on top of [`bootcfg::check`]'s rules.

use crate::bootcfg::{self, Boot, Config, Parsed};
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The directory under the TFTP root the signed GRUB reads (its prefix).
pub const DIR: &str = "grub";
/// The config GRUB reads first, in [`DIR`]: the default image's menu,
/// after the per-host search.
pub const TOP: &str = "grub.cfg";

/// An image's own GRUB config name, in [`DIR`].
pub fn image_config_name(image: &str) -> String {
    format!("nfsroot-{image}.cfg")
}

/// The per-MAC config name, in [`DIR`]: `grub.cfg-01-aa-bb-cc-dd-ee-ff`.
pub fn mac_file_name(mac: &str) -> String {
    format!("grub.cfg-01-{}", mac.to_ascii_lowercase().replace(':', "-"))
}

/// The per-IP config name, in [`DIR`]: `grub.cfg-10.0.2.15`.
pub fn ip_file_name(ip: Ipv4Addr) -> String {
    format!("grub.cfg-{ip}")
}

/// The names the top config looks up for a node, in its order (the first
/// that exists wins), each in [`DIR`].
pub fn host_file_names(mac: &str, ip: Option<Ipv4Addr>) -> Vec<String> {
    let mut v = vec![mac_file_name(mac)];
    v.extend(ip.map(ip_file_name));
    v
}

/// Whether `n` is a per-host name the top config looks up.
pub fn is_host_file(n: &str) -> bool {
    let Some(rest) = n.strip_prefix("grub.cfg-") else {
        return false;
    };
    let mac = rest.len() == 20
        && rest.starts_with("01-")
        && rest[3..]
            .split('-')
            .all(|p| p.len() == 2 && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let ip = rest
        .parse::<Ipv4Addr>()
        .is_ok_and(|a| a.to_string() == rest);
    mac || ip
}

/// Render a config, or one that boots nothing and says why when the data
/// cannot be written safely (see [`try_render`]). Pure.
pub fn render(c: &Config) -> String {
    try_render(c).unwrap_or_else(|_| render_unchecked(&bootcfg::refused(c), false))
}

/// Render a config after checking it (see [`check`]). Pure.
pub fn try_render(c: &Config) -> Result<String> {
    check(c)?;
    Ok(render_unchecked(c, false))
}

/// Render [`TOP`]: the per-host search, then `c`'s menu.
pub fn try_render_top(c: &Config) -> Result<String> {
    check(c)?;
    Ok(render_unchecked(c, true))
}

/// [`bootcfg::check`], and no `"`, `'` or `\` in a command line (GRUB
/// would pass them escaped).
pub fn check(c: &Config) -> Result<()> {
    bootcfg::check(c)?;
    if let Boot::Entries(entries) = &c.boot {
        for e in entries {
            if e.append.contains(['"', '\'', '\\']) {
                bail!(
                    "refusing to render the command line of label {} for GRUB: it holds a \
                     quote or backslash, which GRUB's linux command passes to the kernel \
                     backslash-escaped",
                    e.label
                );
            }
        }
    }
    Ok(())
}

/// A word for GRUB's script: as is when plain, else single-quoted.
pub fn quote(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=/.,:_+~@%-".contains(&b));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// The per-host search [`TOP`] starts with (after the console).
fn search_snippet() -> String {
    let hex = "([0-9a-f][0-9a-f])";
    let re = format!("^{hex}:{hex}:{hex}:{hex}:{hex}:{hex}$");
    let sets: Vec<String> = (1..=6).map(|i| format!("--set={i}:nfsroot_m{i}")).collect();
    let mac =
        mac_file_name("$nfsroot_m1:$nfsroot_m2:$nfsroot_m3:$nfsroot_m4:$nfsroot_m5:$nfsroot_m6");
    let ip = ip_file_name(Ipv4Addr::UNSPECIFIED).replace("0.0.0.0", "$net_default_ip");
    format!(
        "# per-host configs first (this GRUB does not search for them itself);\n\
         # configfile on a missing file returns quietly, and `[ -e ]` is false\n\
         # for every file over TFTP, so there is no test\n\
         if regexp {} '{re}' \"$net_default_mac\"; then\n\
         \x20 configfile \"$prefix/{mac}\"\n\
         fi\n\
         if [ -n \"$net_default_ip\" ]; then\n\
         \x20 configfile \"$prefix/{ip}\"\n\
         fi\n",
        sets.join(" ")
    )
}

fn render_unchecked(c: &Config, top: bool) -> String {
    let mut s = String::new();
    for l in c.header.lines() {
        let _ = writeln!(s, "# {}", bootcfg::one_line(l));
    }
    if let Some((port, baud)) = c.serial {
        let _ = writeln!(s, "serial --unit={port} --speed={baud}");
        let _ = writeln!(s, "terminal_input serial console");
        let _ = writeln!(s, "terminal_output serial console");
    }
    if top {
        s.push_str(&search_snippet());
    }
    let say = |s: &mut String, m: &str| {
        let _ = writeln!(
            s,
            "echo {}",
            quote(&bootcfg::one_line(&format!("nfsroot: {m}")))
        );
    };
    match &c.boot {
        Boot::Entries(entries) => {
            let Some(first) = entries.first() else {
                return s;
            };
            let _ = writeln!(s, "set default={}", quote(&first.label));
            let _ = writeln!(s, "set timeout={}", c.timeout_s);
            let labels: Vec<&str> = entries.iter().map(|e| e.label.as_str()).collect();
            say(
                &mut s,
                &format!("booting {} (labels: {})", first.label, labels.join(" ")),
            );
            for e in entries {
                let _ = writeln!(s, "\nmenuentry {} {{", quote(&e.label));
                let mut linux = format!("  linux /{}", e.kernel);
                for w in e.append.split_whitespace() {
                    linux.push(' ');
                    linux.push_str(&quote(w));
                }
                let _ = writeln!(s, "{linux}");
                let _ = writeln!(s, "  initrd /{}\n}}", e.initrd);
            }
        }
        Boot::Local => {
            say(&mut s, crate::bootcfg::LOCAL_BOOT_SAY);
            // Back to the firmware, which tries its next boot option.
            let _ = writeln!(s, "exit");
        }
        Boot::Disabled(why) => {
            say(&mut s, why);
            say(&mut s, "this host boots nothing; powering off");
            let _ = writeln!(s, "sleep 10\nhalt");
        }
    }
    s
}

/// Split one line of GRUB script into words: single quotes literal,
/// double quotes and backslashes as GRUB reads them (no `$` expansion).
fn words(line: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut it = line.chars();
    while let Some(ch) = it.next() {
        match ch {
            '\'' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => bail!("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('"') => break,
                        Some('\\') => cur.extend(it.next()),
                        Some(c) => cur.push(c),
                        None => bail!("unterminated double quote"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(it.next());
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// A path as a config names it, relative to the TFTP root: `/a/b` or
/// `(tftp,server)/a/b` becomes `a/b`.
fn tftp_relative(p: &str) -> String {
    let p = match p.strip_prefix('(') {
        Some(r) => r.split_once(')').map_or(r, |(_, rest)| rest),
        None => p,
    };
    p.trim_start_matches('/').to_string()
}

/// Parse the subset of GRUB script [`render`] writes (and that hand-made
/// configs commonly use): `set default=`, `menuentry '...' {`, `linux`
/// (or `linuxefi`), `initrd`, `}`. Fails on a default naming no entry, an
/// entry without a kernel, or an unclosed entry; errors name the line.
pub fn parse(text: &str) -> Result<Parsed> {
    let mut p = Parsed::default();
    let mut cur: Option<bootcfg::Entry> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let w = words(raw).map_err(|e| anyhow::anyhow!("line {line}: {e}"))?;
        let Some(kw) = w.first() else { continue };
        match (kw.as_str(), cur.as_mut()) {
            ("menuentry", None) => {
                if w.last().map(String::as_str) != Some("{") || w.len() < 3 {
                    bail!("line {line}: expected menuentry 'TITLE' ... {{");
                }
                cur = Some(bootcfg::Entry {
                    label: w[1].clone(),
                    kernel: String::new(),
                    initrd: String::new(),
                    append: String::new(),
                });
            }
            ("menuentry", Some(_)) => bail!("line {line}: menuentry inside a menuentry"),
            ("linux" | "linuxefi", Some(e)) if w.len() >= 2 => {
                e.kernel = tftp_relative(&w[1]);
                e.append = w[2..].join(" ");
            }
            ("initrd" | "initrdefi", Some(e)) if w.len() >= 2 => e.initrd = tftp_relative(&w[1]),
            ("}", Some(_)) => {
                let e = cur.take().expect("matched Some");
                if e.kernel.is_empty() {
                    bail!("line {line}: menuentry {} has no linux line", e.label);
                }
                p.entries.push(e);
            }
            ("set", _) => {
                if let Some(v) = w.get(1).and_then(|a| a.strip_prefix("default=")) {
                    p.default = Some(v.to_string());
                }
            }
            _ => {}
        }
    }
    if let Some(e) = cur {
        bail!("menuentry {} is not closed with }}", e.label);
    }
    resolve_default(&mut p)?;
    Ok(p)
}

/// GRUB's default: unset means the first entry, a number an index, else
/// a title; stored as the entry's title.
fn resolve_default(p: &mut Parsed) -> Result<()> {
    let d = match p.default.take() {
        None => p.entries.first().map(|e| e.label.clone()),
        Some(d) => {
            let e = match d.parse::<usize>() {
                Ok(i) => p.entries.get(i),
                Err(_) => p.entries.iter().find(|e| e.label == d),
            };
            match e {
                Some(e) => Some(e.label.clone()),
                None if p.entries.is_empty() => None,
                None => bail!("default names entry {d:?}, which the config does not define"),
            }
        }
    };
    p.default = d;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootcfg::Entry;

    fn entry(v: &str) -> Entry {
        Entry {
            label: format!("img-{v}"),
            kernel: format!("img/vmlinuz-{v}"),
            initrd: format!("img/initrd.img-{v}-0123abcd"),
            append: "root=/dev/nfs nfsroot=10.0.2.2:/srv/img,vers=3,tcp ip=dhcp ro \
                     console=tty0 console=ttyS0,115200n8"
                .into(),
        }
    }

    fn config(boot: Boot) -> Config {
        Config {
            header: "generated by nfsroot for image img; do not edit".into(),
            serial: Some((0, 115200)),
            timeout_s: 3,
            boot,
        }
    }

    #[test]
    fn render_then_parse() {
        let entries = vec![entry("6.1.0-10"), entry("6.1.0-9")];
        let c = config(Boot::Entries(entries.clone()));
        let text = try_render(&c).unwrap();
        assert!(
            text.starts_with(
                "# generated by nfsroot for image img; do not edit\n\
                 serial --unit=0 --speed=115200\n\
                 terminal_input serial console\nterminal_output serial console\n\
                 set default=img-6.1.0-10\nset timeout=3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "menuentry img-6.1.0-9 {\n  linux /img/vmlinuz-6.1.0-9 root=/dev/nfs \
                 nfsroot=10.0.2.2:/srv/img,vers=3,tcp ip=dhcp ro console=tty0 \
                 console=ttyS0,115200n8\n  initrd /img/initrd.img-6.1.0-9-0123abcd\n}\n"
            ),
            "{text}"
        );
        let p = parse(&text).unwrap();
        assert_eq!(p.entries, entries);
        assert_eq!(p.default_entry(), Some(&entries[0]));
        // The top config names the same entries, after the search.
        let top = try_render_top(&c).unwrap();
        assert_eq!(parse(&top).unwrap(), p);
        assert!(top.contains("$net_default_mac"), "{top}");
        assert!(!text.contains("configfile"), "{text}");
    }

    #[test]
    fn search_names_match_the_name_functions() {
        let top = try_render_top(&config(Boot::Local)).unwrap();
        assert!(
            top.contains(
                "configfile \"$prefix/grub.cfg-01-$nfsroot_m1-$nfsroot_m2-$nfsroot_m3-\
                 $nfsroot_m4-$nfsroot_m5-$nfsroot_m6\""
            ),
            "{top}"
        );
        assert!(top.contains("configfile \"$prefix/grub.cfg-$net_default_ip\""));
        assert_eq!(
            mac_file_name("52:54:00:AB:cd:01"),
            "grub.cfg-01-52-54-00-ab-cd-01"
        );
        assert_eq!(
            ip_file_name("10.0.2.15".parse().unwrap()),
            "grub.cfg-10.0.2.15"
        );
        for n in host_file_names("52:54:00:AB:cd:01", Some("10.0.2.15".parse().unwrap())) {
            assert!(is_host_file(&n), "{n}");
        }
        for n in [
            "grub.cfg",
            "nfsroot-img.cfg",
            "grub.cfg-01-52-54",
            "grub.cfg-10.0.2.015",
        ] {
            assert!(!is_host_file(n), "{n}");
        }
    }

    #[test]
    fn local_and_disabled() {
        let t = try_render(&config(Boot::Local)).unwrap();
        assert!(
            t.ends_with("echo 'nfsroot: booting from the local disk'\nexit\n"),
            "{t}"
        );
        assert!(parse(&t).unwrap().entries.is_empty());
        let t = try_render(&config(Boot::Disabled("host n1's disabled\n$x".into()))).unwrap();
        assert!(
            t.contains("echo 'nfsroot: host n1'\\''s disabled?$x'\n"),
            "{t}"
        );
        assert!(t.ends_with("halt\n"), "{t}");
        assert_eq!(
            words("echo 'nfsroot: host n1'\\''s disabled?$x'").unwrap()[1],
            "nfsroot: host n1's disabled?$x"
        );
    }

    /// Values that would start directives of their own, or reach the
    /// kernel changed, are refused; `render` then boots nothing.
    #[test]
    fn injection_is_refused() {
        let evil = [
            Entry {
                label: "x' {\n}".into(),
                ..entry("6.1.0")
            },
            Entry {
                kernel: "../etc/shadow".into(),
                ..entry("6.1.0")
            },
            Entry {
                append: "ro\n}\nmenuentry evil {".into(),
                ..entry("6.1.0")
            },
            Entry {
                append: "ro init='/bin/sh'".into(),
                ..entry("6.1.0")
            },
            Entry {
                append: r"ro x=a\b".into(),
                ..entry("6.1.0")
            },
        ];
        for e in evil {
            let c = config(Boot::Entries(vec![entry("6.1.0-9"), e]));
            let err = try_render(&c).unwrap_err().to_string();
            assert!(err.starts_with("refusing to render"), "{err}");
            let t = render(&c);
            assert!(parse(&t).unwrap().entries.is_empty(), "{t}");
            assert!(
                !t.contains("evil") && !t.contains("shadow") && t.ends_with("halt\n"),
                "{t}"
            );
        }
        // `$`, `;` and braces in a command line stay literal words.
        let mut e = entry("6.1.0");
        e.append = "ro x=$y;reboot {a}".into();
        let t = try_render(&config(Boot::Entries(vec![e.clone()]))).unwrap();
        assert!(t.contains(" ro 'x=$y;reboot' '{a}'\n"), "{t}");
        assert_eq!(parse(&t).unwrap().entries, vec![e]);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = parse("menuentry a {\n  initrd /i\n}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("no linux"), "{e}");
        let e = parse("set default=b\nmenuentry a {\n linux /k\n}\n").unwrap_err();
        assert!(e.to_string().contains("\"b\""), "{e}");
        assert!(parse("menuentry a {\n linux /k\n").is_err());
        assert!(
            parse("echo 'x\n")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        let p = parse("set default=1\nmenuentry a {\n linux (tftp,1.2.3.4)/k\n}\nmenuentry b {\nlinux /j\n}\n").unwrap();
        assert_eq!(p.default_entry().unwrap().kernel, "j");
        assert_eq!(p.entries[0].kernel, "k");
    }
}
