//! Go `time.Time` as it appears in tailcfg JSON: an RFC 3339 string with optional fraction and
//! any UTC offset. Go's zero time, `"0001-01-01T00:00:00Z"`, means "unset"/"never" in fields such
//! as `Node.KeyExpiry`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// An instant with nanosecond precision, kept in UTC. Serializes like Go's `time.Time`
/// (RFC 3339 in UTC, `Z`, fraction without trailing zeros).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Time {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    unix_secs: i64,
    nanos: u32,
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

impl Time {
    /// Go's zero `time.Time`, 0001-01-01T00:00:00Z.
    pub const ZERO: Time = Time {
        unix_secs: -62_135_596_800,
        nanos: 0,
    };
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Time = Time {
        unix_secs: 0,
        nanos: 0,
    };

    /// `nanos` above 999 999 999 carries into the seconds.
    pub const fn from_unix(secs: i64, nanos: u32) -> Time {
        Time {
            unix_secs: secs + (nanos / 1_000_000_000) as i64,
            nanos: nanos % 1_000_000_000,
        }
    }

    pub const fn unix_secs(&self) -> i64 {
        self.unix_secs
    }

    pub const fn subsec_nanos(&self) -> u32 {
        self.nanos
    }

    /// Whether this is Go's zero time ("unset", e.g. a key that never expires).
    pub fn is_zero(&self) -> bool {
        *self == Time::ZERO
    }

    pub fn now() -> Time {
        Time::from(SystemTime::now())
    }

    /// As a `SystemTime` (always representable on Linux, whose `SystemTime` is an i64 of seconds).
    pub fn to_system_time(&self) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(self.nanos));
        if self.unix_secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(self.unix_secs as u64) + nanos
        } else {
            UNIX_EPOCH - Duration::from_secs(self.unix_secs.unsigned_abs()) + nanos
        }
    }
}

impl From<SystemTime> for Time {
    fn from(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time::from_unix(d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let (mut secs, mut nanos) = (-(d.as_secs() as i64), d.subsec_nanos());
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Time::from_unix(secs, nanos)
            }
        }
    }
}

impl FromStr for Time {
    type Err = Error;

    /// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (also lowercase `t`/`z`, as Go accepts).
    fn from_str(s: &str) -> Result<Time, Error> {
        let bad = || Error::Time(s.chars().take(64).collect());
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Result<u32, Error> {
            let part = b.get(r).ok_or_else(bad)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            Ok(part.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
        };
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
            return Err(bad());
        }
        if b[13] != b':' || b[16] != b':' {
            return Err(bad());
        }
        let (year, month, day) = (i64::from(num(0..4)?), num(5..7)?, num(8..10)?);
        let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(bad());
        }
        if hour > 23 || min > 59 || sec > 59 {
            return Err(bad());
        }
        let mut i = 19;
        let mut nanos = 0u32;
        if b[i] == b'.' {
            let start = i + 1;
            i = start;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let digits = i - start;
            if digits == 0 || digits > 9 {
                return Err(bad());
            }
            nanos = num(start..i)? * 10u32.pow((9 - digits) as u32);
        }
        let offset_secs: i64 = match b.get(i..) {
            Some(b"Z" | b"z") => 0,
            Some([sign @ (b'+' | b'-'), _, _, b':', _, _]) => {
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return Err(bad());
                }
                let o = i64::from(oh * 3600 + om * 60);
                if *sign == b'+' { o } else { -o }
            }
            _ => return Err(bad()),
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + i64::from(hour * 3600 + min * 60 + sec) - offset_secs;
        Ok(Time::from_unix(secs, nanos))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.unix_secs.div_euclid(86_400);
        let sod = self.unix_secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )?;
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Default for Time {
    /// Go's zero time, like Go.
    fn default() -> Time {
        Time::ZERO
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_zero_time() {
        let t: Time = "0001-01-01T00:00:00Z".parse().unwrap();
        assert!(t.is_zero());
        assert_eq!(t, Time::default());
        assert_eq!(t.to_string(), "0001-01-01T00:00:00Z");
        let json: Time = serde_json::from_str("\"0001-01-01T00:00:00Z\"").unwrap();
        assert!(json.is_zero());
    }

    #[test]
    fn parses_go_forms() {
        let t: Time = "1970-01-01T00:02:03Z".parse().unwrap();
        assert_eq!((t.unix_secs(), t.subsec_nanos()), (123, 0));
        let t: Time = "2026-08-22T10:11:12.123456789Z".parse().unwrap();
        assert_eq!(t.subsec_nanos(), 123_456_789);
        assert_eq!(t.to_string(), "2026-08-22T10:11:12.123456789Z");
        let t: Time = "2026-08-22T10:11:12.5Z".parse().unwrap();
        assert_eq!(t.subsec_nanos(), 500_000_000);
        assert_eq!(t.to_string(), "2026-08-22T10:11:12.5Z");
        let offset: Time = "2026-08-22T12:11:12.5+02:00".parse().unwrap();
        assert_eq!(offset, t);
        let neg: Time = "2026-08-22T05:41:12.5-04:30".parse().unwrap();
        assert_eq!(neg, t);
        let leap: Time = "2024-02-29T23:59:59Z".parse().unwrap();
        assert_eq!(leap.unix_secs(), 1_709_251_199);
        assert_eq!(leap.to_string(), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn rejects_bad_times() {
        for s in [
            "",
            "2026-08-22",
            "2026-08-22T10:11:12",
            "2026-08-22 10:11:12Z",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-08-22T24:00:00Z",
            "2026-08-22T10:11:12.Z",
            "2026-08-22T10:11:12.1234567890Z",
            "2026-08-22T10:11:12+0200",
            "2026-08-22T10:11:12Zjunk",
            "2026-08-2éT10:11:12Z",
        ] {
            assert!(s.parse::<Time>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn system_time_round_trip() {
        let now = SystemTime::now();
        assert_eq!(Time::from(now).to_system_time(), now);
        let before = UNIX_EPOCH - Duration::new(5, 250);
        let t = Time::from(before);
        assert_eq!((t.unix_secs(), t.subsec_nanos()), (-6, 999_999_750));
        assert_eq!(t.to_system_time(), before);
        assert_eq!(
            Time::ZERO.to_system_time(),
            UNIX_EPOCH - Duration::from_secs(62_135_596_800)
        );
    }
}
