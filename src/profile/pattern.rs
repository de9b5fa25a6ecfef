//! Hostname patterns: the fallback name a node gives itself from its
//! address or MAC (`node{ip.3:03}`). Validation renders the pattern once to
//! check it; boot-test renders it to predict a node's name.

use super::validate::is_hostname;
use anyhow::{Result, anyhow, bail};
use std::net::Ipv4Addr;

/// Render a hostname pattern for an address and MAC.
///
/// Placeholders: `{ip.N}` (octet N, 0-3), `{ip.N:0W}` (zero-padded to W),
/// `{ip.hex}` (PXELINUX hex name, lower case), `{mac}` (hex digits only).
pub fn render_pattern(pattern: &str, ip: Ipv4Addr, mac: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find('}')
            .ok_or_else(|| anyhow!("unclosed '{{' in {pattern:?}"))?
            + i;
        let ph = &rest[i + 1..end];
        let (name, fmt) = ph.split_once(':').unwrap_or((ph, ""));
        let val = match name {
            "ip.0" | "ip.1" | "ip.2" | "ip.3" => {
                let o = ip.octets()[(name.as_bytes()[3] - b'0') as usize];
                match fmt {
                    "" => o.to_string(),
                    f if f.len() == 2 && f.starts_with('0') && f.as_bytes()[1].is_ascii_digit() => {
                        format!("{o:0w$}", w = (f.as_bytes()[1] - b'0') as usize)
                    }
                    f => bail!(
                        "placeholder {{{ph}}}: unknown format {f:?}; expected :0W, e.g. {{ip.3:03}}"
                    ),
                }
            }
            "ip.hex" => crate::pxelinux::hex_ip(ip).to_ascii_lowercase(),
            "mac" => mac.replace([':', '-'], "").to_ascii_lowercase(),
            _ => bail!(
                "unknown placeholder {{{ph}}} in {pattern:?}; allowed: {{ip.0}}..{{ip.3}}, {{ip.N:0W}}, {{ip.hex}}, {{mac}}"
            ),
        };
        out.push_str(&val);
        rest = &rest[end + 1..];
    }
    if rest.contains('}') {
        bail!("unmatched '}}' in {pattern:?}");
    }
    out.push_str(rest);
    if !is_hostname(&out) || out.contains('.') {
        bail!(
            "{pattern:?} gives {out:?}, which is not a valid host name (letters, digits and -, \
             not starting or ending with -)"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let ip = Ipv4Addr::new(10, 0, 2, 15);
        assert_eq!(render_pattern("node{ip.3:03}", ip, "").unwrap(), "node015");
        assert_eq!(render_pattern("n{ip.2}-{ip.3}", ip, "").unwrap(), "n2-15");
        assert_eq!(render_pattern("h{ip.hex}", ip, "").unwrap(), "h0a00020f");
        assert_eq!(
            render_pattern("m{mac}", ip, "52:54:00:AA:bb:01").unwrap(),
            "m525400aabb01"
        );
        assert!(render_pattern("n{ip.4}", ip, "").is_err());
        assert!(render_pattern("n{ip.3", ip, "").is_err());
        assert!(render_pattern("bad_{ip.3}", ip, "").is_err());
    }
}
