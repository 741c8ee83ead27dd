//! The rules a Function must follow, written once: the CRD schema (patterns, ranges, CEL) and
//! `validate()` both read them from here, so the API server and Flint refuse the same things.

/// Longest Function name: `NAME-canary` must still be a valid Service name (63 characters).
pub const MAX_NAME_LEN: usize = 63 - CANARY_SUFFIX.len();
/// Suffix of the canary's Deployment and Service.
pub const CANARY_SUFFIX: &str = "-canary";
/// Function names are DNS-1035 labels (they become Service names).
pub const DNS1035_LABEL: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
pub const DNS1123_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
pub const QUALIFIED_NAME: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
pub const LABEL_VALUE: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";
pub const IMAGE_PATTERN: &str = r"^\S+$";
pub const ENV_NAME_PATTERN: &str = "^[-._a-zA-Z][-._a-zA-Z0-9]*$";
pub const SECRET_KEY_PATTERN: &str = "^[-._a-zA-Z0-9]+$";
pub const CRON_PATTERN: &str = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|(\S+\s+){4,5}\S+)$";
/// An IANA time zone's shape (`UTC`, `Europe/Berlin`, `America/Argentina/Buenos_Aires`,
/// `Etc/GMT+2`); whether it names a zone is for `validate()`, which knows the database.
pub const TIME_ZONE_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";
/// An HTTP token (header and cookie names).
pub const TOKEN_PATTERN: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
pub const PATH_PATTERN: &str = r"^/[^\s?#]*$";
/// A NATS subject a trigger listens on: dot-separated tokens, `*` for any one token after the
/// first, `>` for the rest at the end. The first token is literal, so that no trigger can
/// overlap Flint's own `flint.` subjects (see `RESERVED_SUBJECT`).
pub const SUBJECT_PATTERN: &str = r"^[A-Za-z0-9_-]+(\.([A-Za-z0-9_-]+|\*))*(\.>)?$";
/// First token of the subjects Flint keeps its asynchronous calls and dead letters under.
pub const RESERVED_SUBJECT: &str = "flint";
/// Prefix of labels and annotations Flint sets itself.
pub const RESERVED_PREFIX: &str = "flint.dev/";

pub const MAX_LIST: usize = 128;
/// Environment variables of one version.
pub const MAX_ENV: usize = 128;
/// Labels, and annotations, of a function's pods.
pub const MAX_LABELS: usize = 64;
/// Longest strings the CEL rules read: the API server prices each rule by the largest input it
/// could see, so every string, list and map a rule touches is bounded (generously).
pub const MAX_IMAGE_LEN: usize = 1024;
pub const MAX_DURATION_LEN: usize = 32;
pub const MAX_QUANTITY_LEN: usize = 64;
pub const MAX_CRON_LEN: usize = 128;
pub const MAX_TIME_ZONE_LEN: usize = 64;
/// Scheduled minimums of one function.
pub const MAX_SCHEDULES: usize = 16;
pub const MAX_PATH_LEN: usize = 1024;
pub const MAX_SUBJECT_LEN: usize = 255;
pub const MAX_REPLICAS: i32 = 1000;
pub const MAX_TARGET: i32 = 100_000;
pub const MAX_CONCURRENCY: i32 = 100_000;
pub const MAX_RATE: i32 = 1_000_000;
pub const MAX_QUEUE: i32 = 100_000;

/// A regex as a CEL string literal: CEL reads `\.` as an (invalid) escape, so backslashes double.
fn cel_str(pattern: &str) -> String {
    format!("'{}'", pattern.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub fn reserved_keys_rule() -> String {
    format!("self.all(k, !k.startsWith({}))", cel_str(RESERVED_PREFIX))
}
/// `requests.X <= limits.X` where both are set.
pub fn limit_rule(resource: &str) -> String {
    format!(
        "!has(self.requests) || !has(self.limits) || !has(self.requests.{resource}) || !has(self.limits.{resource}) \
         || quantity(self.limits.{resource}).compareTo(quantity(self.requests.{resource})) >= 0"
    )
}
/// A duration (already matching `duration::PATTERN`) is positive when any of its numbers is: a
/// cheap check on a bounded string that, unlike `duration(self)`, adds no conversion error to
/// the pattern's own message.
pub const POSITIVE_DURATION_RULE: &str = "self.matches('[1-9]')";

#[cfg(test)]
mod tests {
    #[test]
    fn cel_strings_escape_backslashes_and_quotes() {
        assert_eq!(super::cel_str(r"^a\.b'$"), r"'^a\\.b\'$'");
    }

    #[test]
    fn name_limit_leaves_room_for_the_canary_suffix() {
        assert_eq!(super::MAX_NAME_LEN + super::CANARY_SUFFIX.len(), 63);
    }
}
