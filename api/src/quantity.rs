//! Kubernetes resource quantities (`500m`, `1.5`, `128Mi`, `1G`), parsed only far enough to
//! compare a request with its limit. The pattern is the API server's own, so the CRD schema and
//! `validate()` accept the same strings.

/// The API server's quantity grammar (apimachinery `resource.Quantity`).
pub const PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// The value of a quantity in base units (cores, bytes), or `None` when it is not a quantity.
/// Exactly the strings `PATTERN` matches are quantities (fuzzed: `fuzz/fuzz_targets/units.rs`).
pub fn parse(s: &str) -> Option<f64> {
    static GRAMMAR: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(PATTERN).expect("PATTERN is a valid regex"));
    if !GRAMMAR.is_match(s) {
        return None;
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powf(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_the_suffixes_users_write() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("1.5Gi"), Some(1.5 * 1024f64.powi(3)));
    }

    #[test]
    fn refuses_what_is_not_a_quantity() {
        // "1e-21E3" and "1einf" were taken for numbers before the grammar was checked (found by fuzzing).
        for bad in ["", "lots", "12XB", "1.2.3", "Mi", "1e-21E3", "1einf", "1eNaN"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
