//! Local replicas' output, kept per function for `/system/logs`: the last lines in a ring (for
//! `tail` and `since`) and a broadcast for `follow`.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use crate::provider::{LogMessage, LogQuery};

const KEEP: usize = 1000;

#[derive(Clone, Default)]
pub struct LogHub(Arc<Mutex<HashMap<(String, String), Channel>>>);

struct Channel {
    recent: VecDeque<(Timestamp, LogMessage)>,
    /// Made when someone follows, dropped when nobody does: a broadcast holds all its slots
    /// (a line each) from the start, which is most of a function's cost when 10,000 are deployed.
    live: Option<broadcast::Sender<LogMessage>>,
}

/// Lines a follower may fall behind by before it skips some.
const FOLLOW_BUFFER: usize = 1024;

impl Channel {
    fn new() -> Self {
        Channel { recent: VecDeque::new(), live: None }
    }
}

impl LogHub {
    /// Records one line a replica wrote.
    pub fn line(&self, namespace: &str, name: &str, instance: &str, text: &str) {
        let now = Timestamp::now();
        let message = LogMessage {
            name: name.to_string(),
            namespace: namespace.to_string(),
            instance: instance.to_string(),
            timestamp: now.to_string(),
            text: text.to_string(),
        };
        let mut all = self.0.lock().unwrap();
        let channel = all.entry((namespace.to_string(), name.to_string())).or_insert_with(Channel::new);
        if channel.recent.len() == KEEP {
            channel.recent.pop_front();
        }
        match &channel.live {
            Some(live) if live.receiver_count() > 0 => {
                let _ = live.send(message.clone());
            }
            Some(_) => channel.live = None,
            None => {}
        }
        channel.recent.push_back((now, message));
    }

    /// Drops what is kept of a function that was deleted.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.0.lock().unwrap().remove(&(namespace.to_string(), name.to_string()));
    }

    /// The lines matching `query`: the kept ones, then (with `follow`) new ones as they come.
    pub fn query(&self, query: &LogQuery) -> BoxStream<'static, LogMessage> {
        let mut all = self.0.lock().unwrap();
        let channel = all.entry((query.namespace.clone(), query.name.clone())).or_insert_with(Channel::new);
        let mut kept: Vec<LogMessage> = channel
            .recent
            .iter()
            .filter(|(at, _)| query.since.is_none_or(|since| *at >= since))
            .map(|(_, m)| m.clone())
            .collect();
        if let Some(tail) = query.tail {
            kept.drain(..kept.len().saturating_sub(tail));
        }
        let past = futures::stream::iter(kept);
        if !query.follow {
            return past.boxed();
        }
        // A reader too slow to keep up skips what it missed rather than stall the replicas.
        let live = channel.live.get_or_insert_with(|| broadcast::channel(FOLLOW_BUFFER).0).subscribe();
        let live = BroadcastStream::new(live).filter_map(|m| futures::future::ready(m.ok()));
        past.chain(live).boxed()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn tail_since_and_follow() {
        let hub = LogHub::default();
        for i in 0..5 {
            hub.line("default", "f", "f-1", &format!("line {i}"));
        }
        hub.line("default", "other", "o-1", "not mine");
        let q = LogQuery { name: "f".into(), namespace: "default".into(), tail: Some(2), ..Default::default() };
        let got: Vec<String> = hub.query(&q).map(|m| m.text).collect().await;
        assert_eq!(got, ["line 3", "line 4"]);

        let q = LogQuery { follow: true, tail: Some(0), ..q };
        let mut live = hub.query(&q);
        hub.line("default", "f", "f-2", "fresh");
        assert_eq!(live.next().await.unwrap().text, "fresh");
        drop(live);
        hub.line("default", "f", "f-2", "nobody follows");
        assert!(hub.0.lock().unwrap()[&("default".to_string(), "f".to_string())].live.is_none());

        hub.forget("default", "f");
        let q = LogQuery { name: "f".into(), namespace: "default".into(), ..Default::default() };
        assert_eq!(hub.query(&q).count().await, 0, "a deleted function's lines are gone");
    }
}
