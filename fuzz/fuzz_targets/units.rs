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
    let short = text.len() <= flint_api::limits::MAX_DURATION_LEN;
    assert_eq!(duration::parse(text).is_ok(), short && DURATION.is_match(text) && fits(text), "{text:?}");
    assert_eq!(quantity::parse(text).is_some(), QUANTITY.is_match(text), "{text:?}");
    if let Ok(d) = duration::parse(text) {
        let written = duration::format(d);
        assert_eq!(duration::parse(&written), Ok(d), "{text:?} -> {written:?}");
    }
});

/// Whether a duration the pattern matches is small enough to hold (each number fits 32 bits
/// and the sum a `Duration`); larger ones are refused with the same message.
fn fits(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).all(|n| n.parse::<u32>().is_ok())
}
