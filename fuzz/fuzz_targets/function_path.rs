//! The gateway's `/function/NAME[.NAMESPACE][/path]` router: any path splits without a panic
//! into parts that put back together give the path again, and the path below the function
//! starts with `/`.
#![no_main]

use flint_gateway::invoke::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else { return };
    let t = Target::parse(target);
    assert!(t.rest.starts_with('/'), "{t:?}");
    assert!(!t.name.contains(['/', '.']), "{t:?}");
    let mut again = t.name.to_string();
    if let Some(ns) = t.namespace {
        again.push('.');
        again.push_str(ns);
    }
    if target.contains('/') {
        again.push_str(t.rest);
    }
    assert_eq!(again, target);
});
