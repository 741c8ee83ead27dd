//! The manifest reader and `validate()`: any text is read or refused without a panic, and a
//! Function that validates survives a JSON round trip unchanged (what the REST API and the API
//! server do to it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(functions) = flint_api::manifest::from_yaml(text) else { return };
    for f in functions {
        if flint_api::validate(&f).is_ok() {
            let json = serde_json::to_string(&f).expect("a valid Function serializes");
            let back: flint_api::Function = serde_json::from_str(&json).expect("and reads back");
            assert_eq!(back.spec, f.spec, "{json}");
            assert!(flint_api::validate(&back).is_ok());
        }
    }
});
