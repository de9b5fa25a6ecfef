//! Settings with a fixed set of words (`root_mode = "rw"`, `compression =
//! "zstd"`, ...): one trait, one serde visitor and one macro, so every such
//! enum reads, prints and rejects a bad word the same way, wherever it is
//! defined (profile, compression, initramfs). A leaf module: it depends on
//! nothing else in the crate.

/// The message for a value outside a fixed set: what was found, quoted (so
/// no control character is echoed), and what is allowed.
pub fn not_allowed(v: &str, allowed: &[&str]) -> String {
    format!(
        "{v:?} is not allowed; expected one of: {}",
        allowed.join(", ")
    )
}

/// A setting with a fixed set of spellings. [`choice!`] implements it,
/// with `as_str()`, `Display` and serde, for an enum and its TOML words:
/// the same words are read from the profile, printed by `profile show` and
/// written into node.conf and the kernel command line.
pub trait Choice: Copy + 'static {
    /// Every value, in the order the error message lists them.
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
}

/// Deserialize a [`Choice`] from its word. A bad value gets the message it
/// has always had: what was found (quoted, so no control character is
/// echoed) and what is allowed; serde's derived enums say `unknown variant`
/// instead, and for a value of the wrong type not what was found.
pub fn deserialize_choice<'de, T: Choice, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<T, D::Error> {
    d.deserialize_str(ChoiceVisitor(std::marker::PhantomData))
}

/// Checks the word inside the value's own deserializer, so the error has
/// that value's span (an array element's, not the whole array's).
struct ChoiceVisitor<T>(std::marker::PhantomData<T>);

impl<T: Choice> serde::de::Visitor<'_> for ChoiceVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
        T::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = T::ALL.iter().map(|c| c.as_str()).collect();
                E::custom(not_allowed(s, &names))
            })
    }
}

/// `choice!(Enum { Variant => "word", ... })`: [`Choice`], an inherent
/// `as_str()`, `Display`, `Serialize` and `Deserialize` by those words.
macro_rules! choice {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $crate::choice::Choice for $t {
            const ALL: &'static [Self] = &[$(Self::$v),*];
            fn as_str(self) -> &'static str {
                Self::as_str(self)
            }
        }
        impl $t {
            /// The word a profile spells this value with.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$v => $s,)*
                }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                $crate::choice::deserialize_choice(d)
            }
        }
    };
}
pub(crate) use choice;
