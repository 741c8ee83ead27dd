//! `validate()`: every rule of a Function checked in one pass, every problem reported with the
//! path of its field. The operator, local mode and the REST API all call it; the CRD schema
//! carries the same rules (see `limits`) for the API server.

use std::{collections::BTreeMap, fmt, sync::LazyLock, time::Duration as StdDuration};

use regex::Regex;

use crate::{
    duration::Duration,
    function::{
        Canary, CronTrigger, EnvVar, Function, FunctionSpec, NatsTrigger, ResourceList, Resources, Throttle, Trigger,
    },
    limits::*,
    quantity,
};

/// One thing wrong with a Function, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.scale.min`.
    pub field: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a Function.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<FieldError>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Invalid {
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid(vec![FieldError { field: field.into(), message: message.into() }])
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("limits patterns are valid regexes")
}

static DNS1035: LazyLock<Regex> = LazyLock::new(|| re(DNS1035_LABEL));
static DNS1123: LazyLock<Regex> = LazyLock::new(|| re(DNS1123_SUBDOMAIN));
static QUALIFIED: LazyLock<Regex> = LazyLock::new(|| re(QUALIFIED_NAME));
static LABEL_VAL: LazyLock<Regex> = LazyLock::new(|| re(LABEL_VALUE));
static IMAGE: LazyLock<Regex> = LazyLock::new(|| re(IMAGE_PATTERN));
static ENV_NAME: LazyLock<Regex> = LazyLock::new(|| re(ENV_NAME_PATTERN));
static SECRET_KEY: LazyLock<Regex> = LazyLock::new(|| re(SECRET_KEY_PATTERN));
static CRON_SHAPE: LazyLock<Regex> = LazyLock::new(|| re(CRON_PATTERN));
static PATH: LazyLock<Regex> = LazyLock::new(|| re(PATH_PATTERN));
static TOKEN: LazyLock<Regex> = LazyLock::new(|| re(TOKEN_PATTERN));
static SUBJECT: LazyLock<Regex> = LazyLock::new(|| re(SUBJECT_PATTERN));

/// Collects problems with their field paths.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }
    fn check(&mut self, ok: bool, field: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.add(field, message);
        }
    }
    fn range(&mut self, field: &str, v: i32, min: i32, max: i32) {
        self.check((min..=max).contains(&v), field, format!("must be between {min} and {max} (got {v})"));
    }
    fn positive(&mut self, field: &str, d: Duration) {
        self.check(d.get() > StdDuration::ZERO, field, "must be greater than 0s");
    }
    fn max_items(&mut self, field: &str, len: usize) {
        self.at_most(field, len, MAX_LIST);
    }
    fn at_most(&mut self, field: &str, len: usize, max: usize) {
        self.check(len <= max, field, format!("at most {max} items (got {len})"));
    }
    fn max_len(&mut self, field: &str, text: &str, max: usize) {
        self.check(text.len() <= max, field, format!("at most {max} characters (got {})", text.len()));
    }
}

/// Checks a whole Function: its name and its spec.
pub fn validate(f: &Function) -> Result<(), Invalid> {
    let mut p = Problems::default();
    match f.metadata.name.as_deref() {
        None | Some("") => p.add("metadata.name", "is required"),
        Some(name) => check_name(&mut p, name),
    }
    check_spec(&mut p, &f.spec);
    if p.0.is_empty() { Ok(()) } else { Err(Invalid(p.0)) }
}

fn check_name(p: &mut Problems, name: &str) {
    p.check(
        name.len() <= MAX_NAME_LEN,
        "metadata.name",
        format!(
            "must be at most {MAX_NAME_LEN} characters so that {name}{CANARY_SUFFIX} is a valid Service name (got {})",
            name.len()
        ),
    );
    p.check(
        DNS1035.is_match(name),
        "metadata.name",
        format!("{name:?} must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter and ending with a letter or digit"),
    );
}

fn check_spec(p: &mut Problems, s: &FunctionSpec) {
    check_image(p, "spec.image", &s.image);
    if let Some(command) = &s.command {
        p.check(
            !command.is_empty(),
            "spec.command",
            "must not be empty when set; remove it to use the image's fprocess",
        );
        p.max_items("spec.command", command.len());
    }
    if let Some(args) = &s.args {
        p.max_items("spec.args", args.len());
    }
    check_env(p, "spec.env", &s.env);
    p.max_items("spec.envFrom", s.env_from.len());
    for (i, e) in s.env_from.iter().enumerate() {
        check_dns1123(p, &format!("spec.envFrom[{i}].secretRef.name"), &e.secret_ref.name.0);
    }
    p.max_items("spec.secrets", s.secrets.len());
    for (i, secret) in s.secrets.iter().enumerate() {
        let field = format!("spec.secrets[{i}]");
        check_dns1123(p, &field, &secret.0);
        if let Some(first) = s.secrets[..i].iter().position(|o| o == secret) {
            p.add(field, format!("duplicate of spec.secrets[{first}] ({:?})", secret.0));
        }
    }
    check_keys(p, "spec.labels", &s.labels);
    for (k, v) in &s.labels {
        p.check(
            LABEL_VAL.is_match(v),
            format!("spec.labels.{k}"),
            format!("{v:?} must be at most 63 alphanumerics, '-', '_', '.', beginning and ending with an alphanumeric"),
        );
    }
    check_keys(p, "spec.annotations", &s.annotations);
    if let Some(r) = &s.resources {
        check_resources(p, r);
    }
    if let Some(sa) = &s.service_account_name {
        check_dns1123(p, "spec.serviceAccountName", sa);
    }
    p.positive("spec.timeout", s.timeout);
    p.range("spec.concurrency", s.concurrency, 0, MAX_CONCURRENCY);
    p.range("spec.scale.min", s.scale.min, 0, MAX_REPLICAS);
    p.range("spec.scale.max", s.scale.max, 1, MAX_REPLICAS);
    p.check(
        s.scale.min <= s.scale.max,
        "spec.scale.min",
        format!("must be <= spec.scale.max ({} > {})", s.scale.min, s.scale.max),
    );
    if let Some(initial) = s.scale.initial {
        p.check(
            (s.scale.min..=s.scale.max).contains(&initial),
            "spec.scale.initial",
            format!(
                "must be between spec.scale.min and spec.scale.max ({initial} not in {}..={})",
                s.scale.min, s.scale.max
            ),
        );
    }
    p.range("spec.scale.target", s.scale.target, 1, MAX_TARGET);
    p.positive("spec.scale.zeroAfter", s.scale.zero_after);
    if let Some(idle) = &s.scale.idle {
        p.positive("spec.scale.idle.maxKeepAlive", idle.max_keep_alive);
    }
    p.at_most("spec.scale.schedule", s.scale.schedule.len(), MAX_SCHEDULES);
    for (i, m) in s.scale.schedule.iter().enumerate() {
        let field = format!("spec.scale.schedule[{i}]");
        check_schedule(p, &format!("{field}.cron"), &m.cron);
        p.range(&format!("{field}.min"), m.min, 0, MAX_REPLICAS);
        p.check(
            m.min <= s.scale.max,
            format!("{field}.min"),
            format!("must be <= spec.scale.max ({} > {})", m.min, s.scale.max),
        );
        p.positive(&format!("{field}.for"), m.lasting);
        if let Some(zone) = &m.time_zone {
            let f = format!("{field}.timeZone");
            p.max_len(&f, zone, MAX_TIME_ZONE_LEN);
            if let Err(why) = crate::cron::time_zone(Some(zone)) {
                p.add(f, why);
            }
        }
    }
    if let Some(t) = &s.throttle {
        check_throttle(p, t);
    }
    if let Some(c) = &s.canary {
        check_canary(p, c);
    }
    p.max_items("spec.triggers", s.triggers.len());
    for (i, t) in s.triggers.iter().enumerate() {
        check_trigger(p, &format!("spec.triggers[{i}]"), t);
    }
}

fn check_throttle(p: &mut Problems, t: &Throttle) {
    if let Some(rate) = t.rate {
        p.range("spec.throttle.rate", rate, 1, MAX_RATE);
    }
    if let Some(burst) = t.burst {
        p.range("spec.throttle.burst", burst, 1, MAX_RATE);
        p.check(t.rate.is_some(), "spec.throttle.burst", "needs spec.throttle.rate");
    }
    if let Some(n) = t.max_in_flight {
        p.range("spec.throttle.maxInFlight", n, 1, MAX_CONCURRENCY);
    }
    p.range("spec.throttle.queue", t.queue, 0, MAX_QUEUE);
}

fn check_image(p: &mut Problems, field: &str, image: &str) {
    p.check(!image.is_empty(), field, "is required, e.g. ghcr.io/acme/hello:1.0");
    p.max_len(field, image, MAX_IMAGE_LEN);
    p.check(image.is_empty() || IMAGE.is_match(image), field, format!("{image:?} must not contain white space"));
}

fn check_dns1123(p: &mut Problems, field: &str, name: &str) {
    p.check(
        name.len() <= 253 && DNS1123.is_match(name),
        field,
        format!(
            "{name:?} must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', at most 253 characters"
        ),
    );
}

fn check_env(p: &mut Problems, field: &str, env: &[EnvVar]) {
    p.at_most(field, env.len(), MAX_ENV);
    for (i, e) in env.iter().enumerate() {
        let at = format!("{field}[{i}]");
        p.check(
            ENV_NAME.is_match(&e.name),
            format!("{at}.name"),
            format!("{:?} must be letters, digits, '_', '-' or '.', not starting with a digit", e.name),
        );
        if let Some(first) = env[..i].iter().position(|o| o.name == e.name) {
            p.add(format!("{at}.name"), format!("duplicate of {field}[{first}].name ({:?})", e.name));
        }
        p.check(!(e.value.is_some() && e.value_from.is_some()), at.as_str(), "set value or valueFrom, not both");
        if let Some(from) = &e.value_from {
            let r = &from.secret_key_ref;
            check_dns1123(p, &format!("{at}.valueFrom.secretKeyRef.name"), &r.name.0);
            p.check(
                SECRET_KEY.is_match(&r.key),
                format!("{at}.valueFrom.secretKeyRef.key"),
                format!("{:?} must be letters, digits, '-', '_' or '.'", r.key),
            );
        }
    }
}

fn check_keys(p: &mut Problems, field: &str, map: &BTreeMap<String, String>) {
    p.check(map.len() <= MAX_LABELS, field, format!("at most {MAX_LABELS} entries (got {})", map.len()));
    for k in map.keys() {
        p.check(
            QUALIFIED.is_match(k),
            format!("{field}.{k}"),
            "key must be a qualified name (optional DNS prefix/, then 1-63 alphanumerics, '-', '_', '.')",
        );
        p.check(
            !k.starts_with(RESERVED_PREFIX),
            format!("{field}.{k}"),
            format!("keys under {RESERVED_PREFIX} are reserved for Flint"),
        );
    }
}

fn check_resources(p: &mut Problems, r: &Resources) {
    for which in ["cpu", "memory"] {
        let request = quantity_of(p, "requests", which, r.requests.as_ref());
        let limit = quantity_of(p, "limits", which, r.limits.as_ref());
        if let (Some((request, rs)), Some((limit, ls))) = (request, limit) {
            p.check(
                limit >= request,
                format!("spec.resources.limits.{which}"),
                format!("must be >= spec.resources.requests.{which} ({ls} < {rs})"),
            );
        }
    }
}

/// The parsed value and text of `requests.cpu` (say), reporting it when it is not a quantity.
fn quantity_of<'a>(
    p: &mut Problems,
    kind: &str,
    which: &str,
    list: Option<&'a ResourceList>,
) -> Option<(f64, &'a str)> {
    let list = list?;
    let text = if which == "cpu" { list.cpu.as_deref() } else { list.memory.as_deref() }?;
    let q = quantity::parse(text).filter(|_| text.len() <= MAX_QUANTITY_LEN);
    p.check(
        q.is_some(),
        format!("spec.resources.{kind}.{which}"),
        format!("{text:?} is not a quantity (e.g. 250m, 1, 128Mi, 1Gi)"),
    );
    Some((q?, text))
}

fn check_canary(p: &mut Problems, c: &Canary) {
    check_image(p, "spec.canary.image", &c.image);
    check_env(p, "spec.canary.env", &c.env);
    p.range("spec.canary.weight", c.weight, 0, 100);
    if let Some(sticky) = &c.sticky {
        p.check(
            sticky.header.is_some() != sticky.cookie.is_some(),
            "spec.canary.sticky",
            "set header or cookie, not both",
        );
        for (field, name) in [("header", &sticky.header), ("cookie", &sticky.cookie)] {
            if let Some(name) = name {
                p.check(
                    !name.is_empty() && name.len() <= 256 && TOKEN.is_match(name),
                    format!("spec.canary.sticky.{field}"),
                    format!("{name:?} is not a {field} name"),
                );
            }
        }
    }
    if let Some(a) = &c.analysis {
        p.positive("spec.canary.analysis.interval", a.interval);
        p.range("spec.canary.analysis.stepWeight", a.step_weight, 1, 100);
        p.range("spec.canary.analysis.maxWeight", a.max_weight, 1, 100);
        p.check(
            a.max_weight >= a.step_weight,
            "spec.canary.analysis.maxWeight",
            format!("must be >= spec.canary.analysis.stepWeight ({} < {})", a.max_weight, a.step_weight),
        );
        p.check(
            (0.0..=100.0).contains(&a.min_success_rate),
            "spec.canary.analysis.minSuccessRate",
            format!("must be a percentage between 0 and 100 (got {})", a.min_success_rate),
        );
        p.positive("spec.canary.analysis.maxP99Latency", a.max_p99_latency);
        p.range("spec.canary.analysis.minRequests", a.min_requests, 0, 1_000_000);
        p.check(
            c.weight <= a.max_weight,
            "spec.canary.weight",
            format!("must be <= spec.canary.analysis.maxWeight ({} > {})", c.weight, a.max_weight),
        );
    }
}

fn check_trigger(p: &mut Problems, field: &str, t: &Trigger) {
    match (&t.cron, &t.nats) {
        (Some(cron), None) => check_cron(p, &format!("{field}.cron"), cron),
        (None, Some(nats)) => check_nats(p, &format!("{field}.nats"), nats),
        _ => p.add(field.to_string(), "set exactly one of cron or nats"),
    }
}

fn check_cron(p: &mut Problems, field: &str, t: &CronTrigger) {
    check_schedule(p, &format!("{field}.schedule"), &t.schedule);
    check_path(p, &format!("{field}.path"), &t.path);
}

fn check_schedule(p: &mut Problems, field: &str, schedule: &str) {
    let parsed = if schedule.len() > MAX_CRON_LEN {
        Some(format!("at most {MAX_CRON_LEN} characters"))
    } else if CRON_SHAPE.is_match(schedule) {
        match crate::cron::parse(schedule) {
            Ok(cron) if !crate::cron::fires(&cron) => Some("it never fires (no such date)".into()),
            parsed => parsed.err(),
        }
    } else {
        Some("expected five fields (minute hour day-of-month month day-of-week), six with seconds first, or a macro such as @hourly".into())
    };
    if let Some(why) = parsed {
        p.add(field.to_string(), format!("{schedule:?} is not a cron expression: {why}"));
    }
}

fn check_nats(p: &mut Problems, field: &str, t: &NatsTrigger) {
    let subject = &t.subject;
    let f = format!("{field}.subject");
    if subject.len() > MAX_SUBJECT_LEN {
        p.add(f, format!("at most {MAX_SUBJECT_LEN} characters"));
    } else if !SUBJECT.is_match(subject) {
        p.add(
            f,
            format!(
                "{subject:?} is not a NATS subject a trigger can take: dot-separated tokens of letters, digits, \
                 '_' and '-', '*' for one token after the first, '>' for the rest at the end"
            ),
        );
    } else if subject.split('.').next() == Some(RESERVED_SUBJECT) {
        p.add(f, format!("{subject:?}: subjects under {RESERVED_SUBJECT}. are Flint's own"));
    }
    check_path(p, &format!("{field}.path"), &t.path);
}

fn check_path(p: &mut Problems, field: &str, path: &str) {
    p.max_len(field, path, MAX_PATH_LEN);
    p.check(
        PATH.is_match(path),
        field.to_string(),
        format!("{path:?} must start with '/' and contain no white space, '?' or '#'"),
    );
}

impl Function {
    /// See [`validate`].
    pub fn validate(&self) -> Result<(), Invalid> {
        validate(self)
    }
}
