//! The REST API's JSON bodies as faas-cli sends them: any body is read or refused without a
//! panic, and a deployment the API accepts is a Function that `validate()` accepts.
#![no_main]

use flint_gateway::rest::types::{DeleteRequest, FunctionDeployment, ScaleRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(deployment) = serde_json::from_slice::<FunctionDeployment>(data)
        && let Ok(f) = deployment.into_function("default")
    {
        assert!(flint_api::validate(&f).is_ok(), "{f:?}");
        assert!(f.metadata.name.as_deref().is_some_and(|n| !n.is_empty()));
    }
    let _ = serde_json::from_slice::<ScaleRequest>(data);
    let _ = serde_json::from_slice::<DeleteRequest>(data);
});
