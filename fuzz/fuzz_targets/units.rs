//! The duration and quantity parsers: no panic on any input; a parsed duration formats to text
//! that parses to the same duration; each parser accepts exactly the strings its CRD pattern
//! matches (so `validate()` and the API server agree).
#![no_main]

use flint_api::{duration, quantity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    static DURATION: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(duration::PATTERN).unwrap());
    static QUANTITY: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(quantity::PATTERN).unwrap());
    let shaped = text.len() <= flint_api::limits::MAX_DURATION_LEN && DURATION.is_match(text);
    let parsed = duration::parse(text).is_ok();
    // Beyond the shape, only a duration too long to hold (about 292 years) is refused.
    assert!(!parsed || shaped, "{text:?} parsed but does not match the pattern");
    assert!(parsed || !shaped || !small(text), "{text:?} matches the pattern but was refused");
    assert_eq!(quantity::parse(text).is_some(), QUANTITY.is_match(text), "{text:?}");
    if let Ok(d) = duration::parse(text) {
        let written = duration::format(d);
        assert_eq!(duration::parse(&written), Ok(d), "{text:?} -> {written:?}");
    }
});

/// Whether every number is below 100,000: then the whole (at most 32 characters) is far from
/// the longest duration there is.
fn small(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .all(|n| n.parse::<u32>().is_ok_and(|n| n < 100_000))
}
