//! Timeline IDs.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A timeline ID, PostgreSQL's `TimeLineID` (xlogdefs.h).
///
/// A cluster starts on timeline 1 and moves to a new, higher timeline each time archive
/// recovery ends or a standby is promoted. 0 is not a timeline, so the value is private and
/// [`TimelineId::new`] rejects it.
///
/// Written in decimal (`3`), as in history files and `recovery_target_timeline`; file names
/// use eight upper-case hexadecimal digits instead, which [`WalFileName`](crate::WalFileName)
/// handles. Serde writes a number and checks it when reading.
///
/// ```
/// use walferry_wal::TimelineId;
///
/// let tli = TimelineId::new(3)?;
/// assert_eq!(tli.get(), 3);
/// assert_eq!(tli.next(), Some(TimelineId::new(4)?));
/// assert!(TimelineId::new(0).is_err());
/// # Ok::<(), walferry_wal::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct TimelineId(NonZeroU32);

impl TimelineId {
    /// Timeline 1, where every cluster starts. Equivalent of `BootstrapTimeLineID` in xlog.c.
    pub const FIRST: TimelineId = TimelineId(NonZeroU32::MIN);

    /// The timeline with this ID, or an error for 0.
    pub fn new(id: u32) -> Result<Self, Error> {
        NonZeroU32::new(id)
            .map(TimelineId)
            .ok_or_else(|| Error::InvalidTimelineId {
                input: id.to_string(),
                reason: "timeline IDs start at 1",
            })
    }

    /// The ID as a number, at least 1.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// The next timeline ID, or `None` after `u32::MAX`.
    pub const fn next(self) -> Option<Self> {
        match self.0.checked_add(1) {
            Some(next) => Some(TimelineId(next)),
            None => None,
        }
    }
}

impl TryFrom<u32> for TimelineId {
    type Error = Error;

    fn try_from(id: u32) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<TimelineId> for u32 {
    fn from(tli: TimelineId) -> Self {
        tli.get()
    }
}

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.get(), f)
    }
}

impl fmt::Debug for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimelineId({})", self.get())
    }
}

/// Reads a decimal number of at least 1, with no sign or surrounding whitespace.
impl FromStr for TimelineId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| Error::InvalidTimelineId {
            input: s.to_owned(),
            reason,
        };
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("expected a decimal number"));
        }
        let id: u32 = s
            .parse()
            .map_err(|_| invalid("the number does not fit in 32 bits"))?;
        NonZeroU32::new(id)
            .map(TimelineId)
            .ok_or_else(|| invalid("timeline IDs start at 1"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn new_table() {
        assert!(TimelineId::new(0).is_err());
        assert_eq!(TimelineId::new(1).unwrap(), TimelineId::FIRST);
        assert_eq!(TimelineId::new(u32::MAX).unwrap().get(), u32::MAX);
        assert_eq!(TimelineId::new(u32::MAX).unwrap().next(), None);
        assert_eq!(TimelineId::FIRST.next().unwrap().get(), 2);
        assert_eq!(
            TimelineId::new(0).unwrap_err().to_string(),
            "invalid timeline ID '0': timeline IDs start at 1"
        );
    }

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<u32>)] = &[
            ("1", Some(1)),
            ("42", Some(42)),
            ("007", Some(7)),
            ("4294967295", Some(u32::MAX)),
            ("0", None),
            ("00", None),
            ("4294967296", None),
            ("", None),
            ("+1", None),
            ("-1", None),
            (" 1", None),
            ("1 ", None),
            ("0x1", None),
            ("A", None),
            ("١", None),
        ];
        for (text, expected) in cases {
            let parsed = text.parse::<TimelineId>().ok().map(TimelineId::get);
            assert_eq!(parsed, *expected, "{text:?}");
        }
    }

    #[test]
    fn serde_uses_numbers_and_validates() {
        let tli = TimelineId::new(7).unwrap();
        assert_eq!(serde_json::to_string(&tli).unwrap(), "7");
        assert_eq!(serde_json::from_str::<TimelineId>("7").unwrap(), tli);
        assert!(serde_json::from_str::<TimelineId>("0").is_err());
        assert!(serde_json::from_str::<TimelineId>("-1").is_err());
        assert!(serde_json::from_str::<TimelineId>("\"7\"").is_err());
    }

    #[test]
    fn display_and_debug() {
        let tli = TimelineId::new(12).unwrap();
        assert_eq!(tli.to_string(), "12");
        assert_eq!(format!("{tli:?}"), "TimelineId(12)");
    }

    proptest! {
        #[test]
        fn text_round_trips(id in 1u32..) {
            let tli = TimelineId::new(id).unwrap();
            prop_assert_eq!(tli.to_string().parse::<TimelineId>().unwrap(), tli);
            prop_assert_eq!(tli.get(), id);
        }

        #[test]
        fn serde_round_trips(id in 1u32..) {
            let tli = TimelineId::new(id).unwrap();
            let json = serde_json::to_string(&tli).unwrap();
            prop_assert_eq!(serde_json::from_str::<TimelineId>(&json).unwrap(), tli);
        }
    }
}
