//! Exit statuses in words, for logs and error bodies.

use std::{os::unix::process::ExitStatusExt, process::ExitStatus};

/// "exited with status 3", "was killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended ({status})"),
    }
}
