//! Cron triggers (`spec.triggers[].cron`): at each scheduled time (UTC) the gateway invokes the
//! function like any caller, `POST /function/NAME.NAMESPACE/PATH` with the trigger's body, on
//! its own address, so the call is routed, scaled from zero, counted and logged as any other.
//! On Kubernetes only the replica that holds the autoscaler's Lease fires them (once, not once
//! per replica).
//!
//! Each call carries `X-Flint-Cron-Time`, the scheduled time it is for (RFC 3339, UTC): a call
//! can run late on a busy machine, and a handler that must do each tick's work once needs to
//! know which tick it holds. A tick that falls while no replica fires (no Lease holder, the
//! gateway down) is not fired later.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::{client::SelfClient, provider::Provider};

pub struct Cron {
    pub provider: Arc<dyn Provider>,
    /// The gateway itself.
    pub client: SelfClient,
}

/// Longest a cron call may take before it is logged as failed (the function's own timeout
/// answers first).
const CALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// (namespace, name, trigger index, schedule) → the next time it fires.
type Key = (String, String, usize, String);

impl Cron {
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut next: HashMap<Key, DateTime<Utc>> = HashMap::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => return,
            }
            let now = Utc::now();
            // A set: a list's `contains` per kept entry was quadratic in the triggers.
            let mut seen = HashSet::new();
            for (namespace, name, function) in self.provider.triggers() {
                for (i, trigger) in function.spec.triggers.iter().enumerate() {
                    let Some(t) = &trigger.cron else { continue };
                    let key = (namespace.clone(), name.clone(), i, t.schedule.clone());
                    seen.insert(key.clone());
                    let Ok(schedule) = flint_api::cron::parse(&t.schedule) else { continue };
                    // One that never fires (written before validate() refused it) is never due.
                    let due = *next.entry(key.clone()).or_insert_with(|| {
                        schedule.find_next_occurrence(&now, false).unwrap_or(DateTime::<Utc>::MAX_UTC)
                    });
                    if now < due {
                        continue;
                    }
                    next.insert(
                        key,
                        schedule.find_next_occurrence(&now, false).unwrap_or(now + chrono::Duration::hours(1)),
                    );
                    let tick = due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    let call = (namespace.clone(), name.clone(), t.path.clone(), t.body.clone().unwrap_or_default());
                    tokio::spawn(self.clone().fire(call, tick));
                }
            }
            next.retain(|k, _| seen.contains(k));
        }
    }

    async fn fire(self: Arc<Self>, (namespace, name, path, body): (String, String, String, String), tick: String) {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-flint-trigger", hyper::header::HeaderValue::from_static("cron"));
        headers.insert("x-flint-cron-time", tick.parse().expect("an RFC 3339 time is a header value"));
        let url = format!("/function/{name}.{namespace}{path}");
        // Nobody reads a cron call's answer: a little is read, so that it counts as received.
        let answer = (CALL_TIMEOUT, 64 << 10);
        let called = self.client.invoke(&namespace, &name, hyper::Method::POST, &path, headers, body.into(), answer);
        match called.await {
            Ok(answer) => {
                tracing::info!(function = %name, %url, %tick, status = answer.status.as_u16(), "cron trigger fired")
            }
            Err(e) => tracing::warn!(function = %name, %url, %tick, error = %e, "cron trigger failed"),
        }
    }
}
