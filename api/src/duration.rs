//! Durations as users write them in manifests and environment variables: `250ms`, `30s`, `5m`,
//! `1h30m`. A subset of Go's `time.ParseDuration` (whole numbers only) so that the same string
//! means the same thing to us, to `kubectl` users and to the API server's CEL `duration()`.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration as StdDuration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern the CRD schema enforces; `parse` accepts exactly the strings it matches.
pub const PATTERN: &str = "^([0-9]+(ms|s|m|h))+$";

/// A duration written as a string in a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub StdDuration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: expected a number followed by a unit (ms, s, m, h), e.g. 500ms, 30s, 5m, 1h30m, at most 32 characters"
)]
pub struct ParseDurationError {
    input: String,
}

/// Parses `1h30m`, `30s`, `250ms`. Every number needs a unit.
pub fn parse(input: &str) -> Result<StdDuration, ParseDurationError> {
    let err = || ParseDurationError { input: input.to_string() };
    let mut rest = input;
    let mut total = StdDuration::ZERO;
    if rest.is_empty() || rest.len() > crate::limits::MAX_DURATION_LEN {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (StdDuration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (StdDuration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (StdDuration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (StdDuration::from_secs(3600), 1)
        } else {
            return Err(err());
        };
        rest = &rest[len..];
        let part = unit.checked_mul(u32::try_from(n).map_err(|_| err())?).ok_or_else(err)?;
        total = total.checked_add(part).ok_or_else(err)?;
    }
    // Go's (and the API server's) durations end at 2^63-1 ns, about 292 years; a longer one
    // would also format to hours that `parse` cannot read back.
    if total > MAX {
        return Err(err());
    }
    Ok(total)
}

/// The longest duration Go's `time.Duration` holds.
const MAX: StdDuration = StdDuration::from_nanos(i64::MAX as u64);

/// Formats a duration in the same notation `parse` reads, largest units first.
pub fn format(d: StdDuration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, name) in [(3_600_000, "h"), (60_000, "m"), (1_000, "s"), (1, "ms")] {
        if ms >= unit {
            out.push_str(&format!("{}{name}", ms / unit));
            ms %= unit;
        }
    }
    out
}

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(StdDuration::from_secs(secs))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Self(StdDuration::from_millis(ms))
    }
    pub fn get(self) -> StdDuration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = ParseDurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map(Duration)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "maxLength": crate::limits::MAX_DURATION_LEN, "pattern": PATTERN })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("250ms").unwrap(), StdDuration::from_millis(250));
        assert_eq!(parse("30s").unwrap(), StdDuration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), StdDuration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), StdDuration::from_secs(5400));
        assert_eq!(parse("1m500ms").unwrap(), StdDuration::from_millis(60_500));
    }

    #[test]
    fn refuses_what_the_pattern_refuses() {
        let re_ok = |s: &str| {
            // The pattern, hand-checked: a non-empty run of <digits><unit>.
            parse(s).is_ok()
        };
        for bad in ["", "30", "s", "1.5s", "30 s", "-1s", "5d", "1m30", "abc", "99999999999999999999h"] {
            assert!(!re_ok(bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_round_trip() {
        // Found by fuzzing: each number fitted, their sum formatted to hours beyond 32 bits.
        assert!(parse("03530990999h03035550301h0m1m0m").is_err());
        let longest = format(parse("2562047h47m16s854ms").unwrap());
        assert_eq!(parse(&longest).map(format), Ok(longest));
        for s in ["250ms", "30s", "5m", "1h30m", "1m500ms", "2h"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
        assert_eq!(format(StdDuration::from_secs(90)), "1m30s");
        assert_eq!(format(StdDuration::ZERO), "0s");
    }

    #[test]
    fn error_names_the_input_and_the_accepted_form() {
        let e = parse("10x").unwrap_err().to_string();
        assert!(e.contains("\"10x\"") && e.contains("ms, s, m, h"), "{e}");
    }
}
