//! How urgent a protocol's messages are to send.
//!
//! Each local protocol has a [`ProtocolPriority`] (default `Normal`), set when it
//! is registered and changeable at run time. Under saturation, the sends of a
//! higher priority go first: a stream a pool hands back goes to its highest
//! waiting borrower, a connection's stream budget to its highest waiting open, and
//! on the wire the large writes of a lower priority pause between slices while a
//! higher one is writing on the same connection.

use std::{fmt, str::FromStr};

/// How urgent a protocol's messages are (see the module docs). Ordered:
/// `Low < Normal < High`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ProtocolPriority {
    /// Bulk traffic (sync, large transfers): yields to everything else.
    Low,
    /// Everything not marked otherwise. Default.
    #[default]
    Normal,
    /// Urgent, usually small messages (consensus votes): goes first.
    High,
}

impl ProtocolPriority {
    /// Every level, lowest first.
    pub const ALL: [ProtocolPriority; 3] = [Self::Low, Self::Normal, Self::High];

    /// The level's name, as [`FromStr`] reads it: `low`, `normal` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }

    /// 0 for `Low`, 1 for `Normal`, 2 for `High`: an index into per-level tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The level with this [`index`](Self::index), if any.
    pub fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }
}

impl fmt::Display for ProtocolPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Written as its name (`low`, `normal`, `high`); read in any case, as
/// [`FromStr`] reads it.
#[cfg(feature = "serde")]
impl serde::Serialize for ProtocolPriority {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for ProtocolPriority {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A priority name that is none of `low`, `normal` or `high`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority {0:?}: expected low, normal or high")]
pub struct UnknownPriority(pub String);

impl FromStr for ProtocolPriority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPriority(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_named_both_ways() {
        assert!(ProtocolPriority::Low < ProtocolPriority::Normal);
        assert!(ProtocolPriority::Normal < ProtocolPriority::High);
        assert_eq!(ProtocolPriority::default(), ProtocolPriority::Normal);
        for level in ProtocolPriority::ALL {
            assert_eq!(level.as_str().parse::<ProtocolPriority>(), Ok(level));
            assert_eq!(ProtocolPriority::from_index(level.index()), Some(level));
        }
        assert_eq!(
            "HIGH".parse::<ProtocolPriority>(),
            Ok(ProtocolPriority::High)
        );
        assert_eq!(
            "urgent".parse::<ProtocolPriority>(),
            Err(UnknownPriority("urgent".into()))
        );
    }
}
