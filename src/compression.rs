//! One compression type for everything nfsroot compresses: initramfs
//! archives and snapshots. The default is gzip everywhere (profile, CLI,
//! library): every kernel, bootloader and `tar` reads it.
//!
//! Spellings: profiles, `nfsroot initramfs build --compression` and every
//! message say `gzip`/`zstd`; snapshot file names, `nfsroot snapshot
//! --format` and snapshot manifests keep the short `gz`/`zst` (manifests
//! written by older versions say so, and [`short`] reads them). Every way
//! in accepts both. How the bytes are made lives with the user:
//! [`crate::snapshot::compress`] on every core, [`crate::initramfs`] in one
//! pass.

use anyhow::{Result, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
}

crate::choice::choice!(Compression { Gzip => "gzip", Zstd => "zstd" });

impl std::str::FromStr for Compression {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gzip" | "gz" => Ok(Self::Gzip),
            "zstd" | "zst" => Ok(Self::Zstd),
            _ => bail!("unknown compression {s:?}: use gzip (gz) or zstd (zst)"),
        }
    }
}

impl Compression {
    /// The short name: `gz` or `zst`.
    pub fn short(self) -> &'static str {
        match self {
            Self::Gzip => "gz",
            Self::Zstd => "zst",
        }
    }

    /// A snapshot's file name suffix, e.g. `tar.gz`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Gzip => "tar.gz",
            Self::Zstd => "tar.zst",
        }
    }

    /// The snapshot level used when none is given.
    pub fn default_level(self) -> u32 {
        match self {
            Self::Gzip => 6,
            Self::Zstd => 3,
        }
    }

    /// Check a snapshot compression level.
    pub fn check_level(self, level: u32) -> Result<()> {
        let (lo, hi) = match self {
            Self::Gzip => (1, 12),
            Self::Zstd => (1, 19),
        };
        if !(lo..=hi).contains(&level) {
            bail!(
                "compression level {level} is out of range for {} ({lo}-{hi})",
                self.short()
            );
        }
        Ok(())
    }
}

/// Serde in the short spelling (`#[serde(with = "crate::compression::short")]`),
/// as snapshot manifests have always written it; either spelling is read.
pub mod short {
    use super::Compression;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(c: &Compression, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.short())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Compression, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: anyhow::Error| D::Error::custom(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Manifest {
        #[serde(with = "short")]
        compression: Compression,
    }

    #[test]
    fn both_spellings_read_each_written_its_way() {
        for (word, c) in [
            ("gz", Compression::Gzip),
            ("gzip", Compression::Gzip),
            ("zst", Compression::Zstd),
            ("zstd", Compression::Zstd),
        ] {
            assert_eq!(word.parse::<Compression>().unwrap(), c);
            let m: Manifest =
                serde_json::from_str(&format!(r#"{{"compression":"{word}"}}"#)).unwrap();
            assert_eq!(m.compression, c);
        }
        let m = Manifest {
            compression: Compression::Zstd,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"compression":"zst"}"#
        );
        assert_eq!(Compression::Gzip.to_string(), "gzip");
        assert!("xz".parse::<Compression>().is_err());
        assert!(Compression::Gzip.check_level(13).is_err());
        assert!(Compression::Zstd.check_level(19).is_ok());
    }
}
