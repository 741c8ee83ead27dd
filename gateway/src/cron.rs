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

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::provider::Provider;

pub struct Cron {
    pub provider: Arc<dyn Provider>,
    /// The gateway's own base URL (`http://127.0.0.1:8080`).
    pub base: String,
    /// `Authorization` header value when functions are behind basic auth.
    pub authorization: Option<String>,
}

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
            let mut seen = Vec::new();
            for (namespace, name, function) in self.provider.triggers() {
                for (i, trigger) in function.spec.triggers.iter().enumerate() {
                    let t = &trigger.cron;
                    let key = (namespace.clone(), name.clone(), i, t.schedule.clone());
                    seen.push(key.clone());
                    let Ok(schedule) = flint_api::cron::parse(&t.schedule) else { continue };
                    let due = *next
                        .entry(key.clone())
                        .or_insert_with(|| schedule.find_next_occurrence(&now, false).unwrap_or(now));
                    if now < due {
                        continue;
                    }
                    next.insert(
                        key,
                        schedule.find_next_occurrence(&now, false).unwrap_or(now + chrono::Duration::hours(1)),
                    );
                    let url = format!("{}/function/{name}.{namespace}{}", self.base, t.path);
                    let tick = due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    tokio::spawn(self.clone().fire(url, t.body.clone().unwrap_or_default(), name.clone(), tick));
                }
            }
            next.retain(|k, _| seen.contains(k));
        }
    }

    async fn fire(self: Arc<Self>, url: String, body: String, name: String, tick: String) {
        let mut headers = vec![("x-flint-trigger", "cron"), ("x-flint-cron-time", tick.as_str())];
        if let Some(auth) = &self.authorization {
            headers.push(("authorization", auth.as_str()));
        }
        match call(&url, &headers, body).await {
            Ok(status) => tracing::info!(function = %name, %url, %tick, status, "cron trigger fired"),
            Err(e) => tracing::warn!(function = %name, %url, %tick, error = %e, "cron trigger failed"),
        }
    }
}

async fn call(url: &str, headers: &[(&str, &str)], body: String) -> Result<u16, String> {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut req = hyper::Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(bytes::Bytes::from(body))).map_err(|e| e.to_string())?;
    let response = client.request(req).await.map_err(|e| flint_http::error_chain(&e))?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}
