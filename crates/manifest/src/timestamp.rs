//! Points in time, as backup manifests record them and `recovery_target_time` takes them.
//!
//! A [`Timestamp`] is a count of microseconds since the Unix epoch in UTC, the resolution of
//! PostgreSQL's `timestamptz`. It is written in two text forms:
//!
//! - RFC 3339, for JSON and people: `2026-11-25T05:00:00Z`, `2026-11-25T05:00:00.123456Z`
//!   ([`Display`](std::fmt::Display), serde).
//! - PostgreSQL's, for `recovery_target_time`: `2026-11-25 05:00:00+00`,
//!   `2026-11-25 05:00:00.123456+00` ([`Timestamp::to_postgres`]).
//!
//! [`Timestamp::parse`] reads both, and the variants of PostgreSQL's `timestamptz` input that
//! are used for `recovery_target_time` in practice:
//!
//! ```text
//! 2026-11-25 05:00:00+00          2026-11-25T05:00:00Z
//! 2026-11-25 05:00:00.123456+00:00
//! 2026-11-25 05:00:00 +0530       2026-11-25 05:00+01
//! 2026-11-25 05:00:00 UTC
//! ```
//!
//! That is: a date `YYYY-MM-DD`; `T` or a space; `HH:MM`, optionally `:SS` and a fraction of
//! up to six digits; then, after optional spaces, a zone: `Z`, `UTC`, `GMT`, or an offset
//! `±HH`, `±HH:MM`, `±HHMM` or `±HH:MM:SS`. The zone is required: PostgreSQL would read a time
//! without one in the server's `TimeZone`, which the restoring machine cannot know, so such a
//! time is refused rather than guessed. Seconds may be `60` (a leap second), which PostgreSQL
//! reads as the first second of the next minute; so does this parser. Years run from 1 to
//! 9999.
//!
//! ```
//! use walferry_manifest::Timestamp;
//!
//! let t = Timestamp::parse("2026-11-25 05:00:00.5+01")?;
//! assert_eq!(t.to_string(), "2026-11-25T04:00:00.500000Z");
//! assert_eq!(t.to_postgres(), "2026-11-25 04:00:00.5+00");
//! assert_eq!(Timestamp::parse(&t.to_string())?, t);
//! assert!(Timestamp::parse("2026-11-25 05:00:00").is_err());
//! # Ok::<(), walferry_manifest::TimestampError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// A point in time with microsecond resolution, in UTC.
///
/// The value is private: only years 1 to 9999 are representable, so that every timestamp has
/// an RFC 3339 form. Ordering is chronological.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a text or number is not a [`Timestamp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a timestamp: {reason}")]
pub struct TimestampError {
    /// The rejected text or number.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Timestamp {
    /// The earliest representable time, `0001-01-01T00:00:00Z`.
    pub const MIN: Timestamp = Timestamp(-62_135_596_800 * MICROS_PER_SECOND);
    /// The latest representable time, `9999-12-31T23:59:59.999999Z`.
    pub const MAX: Timestamp = Timestamp(253_402_300_800 * MICROS_PER_SECOND - 1);

    /// The time `micros` microseconds after the Unix epoch; fails outside years 1 to 9999.
    pub fn from_unix_micros(micros: i64) -> Result<Timestamp, TimestampError> {
        if (Self::MIN.0..=Self::MAX.0).contains(&micros) {
            Ok(Timestamp(micros))
        } else {
            Err(TimestampError {
                input: micros.to_string(),
                reason: "outside the years 1 to 9999",
            })
        }
    }

    /// The time `seconds` seconds after the Unix epoch, such as a tar member's `mtime`.
    pub fn from_unix_seconds(seconds: i64) -> Result<Timestamp, TimestampError> {
        let micros = seconds
            .checked_mul(MICROS_PER_SECOND)
            .ok_or_else(|| TimestampError {
                input: seconds.to_string(),
                reason: "outside the years 1 to 9999",
            })?;
        Self::from_unix_micros(micros)
    }

    /// The time a [`SystemTime`] stands for, truncated to the microsecond.
    pub fn from_system_time(time: SystemTime) -> Result<Timestamp, TimestampError> {
        let out_of_range = || TimestampError {
            input: format!("{time:?}"),
            reason: "outside the years 1 to 9999",
        };
        let micros = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).map_err(|_| out_of_range())?,
            Err(before) => i64::try_from(before.duration().as_micros())
                .map_err(|_| out_of_range())?
                .checked_neg()
                .ok_or_else(out_of_range)?,
        };
        Self::from_unix_micros(micros).map_err(|_| out_of_range())
    }

    /// Microseconds since the Unix epoch.
    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    /// Reads a timestamp in one of the forms listed in the [module documentation](self).
    pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
        let fail = |reason| TimestampError {
            input: text.to_owned(),
            reason,
        };
        let mut p = Cursor {
            rest: text.trim().as_bytes(),
        };
        let year = p
            .digits(4)
            .ok_or_else(|| fail("expected a date YYYY-MM-DD"))?;
        p.expect(b'-')
            .ok_or_else(|| fail("expected a date YYYY-MM-DD"))?;
        let month = p
            .digits(2)
            .ok_or_else(|| fail("expected a date YYYY-MM-DD"))?;
        p.expect(b'-')
            .ok_or_else(|| fail("expected a date YYYY-MM-DD"))?;
        let day = p
            .digits(2)
            .ok_or_else(|| fail("expected a date YYYY-MM-DD"))?;
        if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(fail("no such date"));
        }
        if !(p.eat(b'T') || p.eat(b't') || p.eat(b' ')) {
            return Err(fail("expected 'T' or a space and a time after the date"));
        }
        let hour = p
            .digits(2)
            .ok_or_else(|| fail("expected a time HH:MM:SS"))?;
        p.expect(b':')
            .ok_or_else(|| fail("expected a time HH:MM:SS"))?;
        let minute = p
            .digits(2)
            .ok_or_else(|| fail("expected a time HH:MM:SS"))?;
        let mut second = 0;
        let mut micros = 0;
        if p.eat(b':') {
            second = p
                .digits(2)
                .ok_or_else(|| fail("expected a time HH:MM:SS"))?;
            if p.eat(b'.') {
                let (fraction, len) = p.fraction();
                if len == 0 {
                    return Err(fail("expected digits after the decimal point"));
                }
                if len > 6 {
                    return Err(fail(
                        "more than six fractional digits; PostgreSQL keeps microseconds",
                    ));
                }
                micros = fraction * 10_i64.pow(6 - len);
            }
        }
        if hour > 23 || minute > 59 || second > 60 {
            return Err(fail("no such time of day"));
        }
        while p.eat(b' ') {}
        let offset_seconds = p.zone().map_err(fail)?;
        if !p.rest.is_empty() {
            return Err(fail("unexpected text after the time zone"));
        }
        let days = days_from_civil(year, month, day);
        let seconds = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_seconds;
        Timestamp::from_unix_micros(seconds * MICROS_PER_SECOND + micros)
            .map_err(|_| fail("outside the years 1 to 9999"))
    }

    /// The PostgreSQL text form for `recovery_target_time`, in UTC:
    /// `2026-11-25 05:00:00+00`, with a fraction (trailing zeros removed) when there is one.
    pub fn to_postgres(self) -> String {
        let parts = self.parts();
        let mut out = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            parts.year, parts.month, parts.day, parts.hour, parts.minute, parts.second
        );
        if parts.micros != 0 {
            let fraction = format!("{:06}", parts.micros);
            out.push('.');
            out.push_str(fraction.trim_end_matches('0'));
        }
        out.push_str("+00");
        out
    }

    fn parts(self) -> Parts {
        let seconds = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = self.0.rem_euclid(MICROS_PER_SECOND);
        let days = seconds.div_euclid(SECONDS_PER_DAY);
        let of_day = seconds.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        Parts {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
            micros,
        }
    }
}

struct Parts {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    micros: i64,
}

/// Writes RFC 3339 in UTC: `2026-11-25T05:00:00Z`, or with six fractional digits when the
/// fraction is not zero.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.parts();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            p.year, p.month, p.day, p.hour, p.minute, p.second
        )?;
        if p.micros != 0 {
            write!(f, ".{:06}", p.micros)?;
        }
        f.write_str("Z")
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

/// Reads the forms [`Timestamp::parse`] reads.
impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A byte-wise reader of timestamp text.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    /// Exactly `count` ASCII digits.
    fn digits(&mut self, count: usize) -> Option<i64> {
        let (digits, rest) = self.rest.split_at_checked(count)?;
        let mut value = 0;
        for &b in digits {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(b - b'0');
        }
        self.rest = rest;
        Some(value)
    }

    /// Any number of digits, as a value (of the first seven at most) and a count.
    fn fraction(&mut self) -> (i64, u32) {
        let mut value = 0;
        let mut len = 0;
        while let Some((&b, rest)) = self.rest.split_first()
            && b.is_ascii_digit()
        {
            if len < 7 {
                value = value * 10 + i64::from(b - b'0');
            }
            len += 1;
            self.rest = rest;
        }
        (value, len)
    }

    fn eat(&mut self, byte: u8) -> bool {
        match self.rest.split_first() {
            Some((&b, rest)) if b == byte => {
                self.rest = rest;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// The zone, as seconds east of UTC.
    fn zone(&mut self) -> Result<i64, &'static str> {
        for name in [&b"Z"[..], b"z", b"UTC", b"GMT"] {
            if self.rest == name {
                self.rest = &[];
                return Ok(0);
            }
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else if self.rest.is_empty() {
            return Err(
                "no time zone; PostgreSQL would use the server's TimeZone setting, \
                        which the restore cannot know; HINT: add +00 or Z for UTC",
            );
        } else {
            return Err("expected a time zone: Z, UTC or an offset such as +00 or -05:30");
        };
        let bad = "expected an offset ±HH, ±HH:MM, ±HHMM or ±HH:MM:SS";
        let hours = self.digits(2).ok_or(bad)?;
        let mut minutes = 0;
        let mut seconds = 0;
        if self.eat(b':') {
            minutes = self.digits(2).ok_or(bad)?;
            if self.eat(b':') {
                seconds = self.digits(2).ok_or(bad)?;
            }
        } else if !self.rest.is_empty() {
            minutes = self.digits(2).ok_or(bad)?;
        }
        // PostgreSQL accepts offsets up to 15:59:59 (MAX_TZDISP_HOUR in datetime.h).
        if hours > 15 || minutes > 59 || seconds > 59 {
            return Err("the time zone offset is out of range");
        }
        Ok(sign * (hours * 3600 + minutes * 60 + seconds))
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    #[test]
    fn reads_the_forms_recovery_target_time_takes() {
        let base = 1_795_582_800 * MICROS_PER_SECOND; // 2026-11-25T05:00:00Z
        let cases: &[(&str, i64)] = &[
            ("2026-11-25 05:00:00+00", base),
            ("2026-11-25T05:00:00Z", base),
            ("2026-11-25t05:00:00z", base),
            ("2026-11-25 05:00:00 UTC", base),
            ("2026-11-25 05:00:00 GMT", base),
            ("2026-11-25 05:00+00", base),
            ("  2026-11-25 05:00:00+00  ", base),
            ("2026-11-25 05:00:00.123456+00:00", base + 123_456),
            ("2026-11-25 05:00:00.5+00", base + 500_000),
            ("2026-11-25 06:00:00+01", base),
            ("2026-11-25 10:30:00 +0530", base),
            ("2026-11-25 10:30:00+05:30", base),
            ("2026-11-25 00:00:00-05", base),
            ("2026-11-25 05:00:10+00:00:10", base),
            ("2026-11-25 04:59:60+00", base),
        ];
        for &(text, micros) in cases {
            assert_eq!(
                Timestamp::parse(text).map(Timestamp::unix_micros),
                Ok(micros),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_read_exactly() {
        for text in [
            "",
            "2026-11-25 05:00:00",
            "2026-11-25",
            "2026-13-01 00:00:00+00",
            "2026-02-29 00:00:00+00",
            "2026-11-25 24:00:00+00",
            "2026-11-25 05:00:00.1234567+00",
            "2026-11-25 05:00:00.+00",
            "2026-11-25 05:00:00+16",
            "2026-11-25 05:00:00 Europe/Paris",
            "2026-11-25 05:00:00+00 garbage",
            "26-11-25 05:00:00+00",
            "0000-01-01 00:00:00+00",
            "0001-01-01 00:00:00+01",
        ] {
            assert!(Timestamp::parse(text).is_err(), "{text}");
        }
        let err = Timestamp::parse("2026-11-25 05:00:00").unwrap_err();
        assert!(err.to_string().contains("HINT"), "{err}");
    }

    #[test]
    fn writes_rfc3339_and_postgres_forms() {
        let t = ts("2026-11-25 05:00:00+00");
        assert_eq!(t.to_string(), "2026-11-25T05:00:00Z");
        assert_eq!(t.to_postgres(), "2026-11-25 05:00:00+00");
        let t = ts("2026-11-25 05:00:00.000120+00");
        assert_eq!(t.to_string(), "2026-11-25T05:00:00.000120Z");
        assert_eq!(t.to_postgres(), "2026-11-25 05:00:00.00012+00");
        assert_eq!(Timestamp::MIN.to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(ts("1969-12-31 23:59:59.999999+00").unix_micros(), -1);
        assert_eq!(
            ts("2000-02-29 12:00:00+00").to_string(),
            "2000-02-29T12:00:00Z"
        );
    }

    #[test]
    fn both_forms_round_trip_across_the_range() {
        // A deterministic spread of values, including the ends and negative times.
        let mut micros = vec![Timestamp::MIN.0, Timestamp::MAX.0, 0, -1, 1];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let span = u64::try_from(Timestamp::MAX.0 - Timestamp::MIN.0).unwrap();
            micros.push(Timestamp::MIN.0 + i64::try_from(x % span).unwrap());
        }
        for m in micros {
            let t = Timestamp::from_unix_micros(m).unwrap();
            assert_eq!(ts(&t.to_string()), t, "{t}");
            assert_eq!(ts(&t.to_postgres()), t, "{t}");
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        }
        assert!(Timestamp::from_unix_micros(Timestamp::MAX.0 + 1).is_err());
        assert!(Timestamp::from_unix_micros(i64::MIN).is_err());
    }

    #[test]
    fn converts_system_time_and_seconds() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_500_000);
        assert_eq!(
            Timestamp::from_system_time(t).unwrap().unix_micros(),
            1_500_000
        );
        let before = UNIX_EPOCH - std::time::Duration::from_secs(2);
        assert_eq!(
            Timestamp::from_system_time(before).unwrap().unix_micros(),
            -2_000_000
        );
        assert_eq!(
            Timestamp::from_unix_seconds(1_795_582_800).unwrap(),
            ts("2026-11-25T05:00:00Z")
        );
        assert!(Timestamp::from_unix_seconds(i64::MAX).is_err());
    }
}
