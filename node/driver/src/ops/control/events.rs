//! [`EventFeed`]: the node's events as the control endpoint hands them out —
//! a live stream for `events` clients and a small ring of the last warnings
//! for `status`.
//!
//! The runner publishes every core event it logs; publishing never waits.
//! Each `events` client reads the stream through its own cursor into one
//! shared ring of [`EVENT_QUEUE`] lines (a `tokio::sync::broadcast`
//! channel): a client that falls further behind than that is dropped
//! (counted as `lagged`), one whose socket takes no bytes for the write
//! deadline is dropped too (counted as `stalled`). The node never blocks on
//! a client.

use super::protocol::{line, EventLine, EventRecord, VERSION};
use super::snapshot::{ControlView, TrafficView};
use bytes::Bytes;
use meshproxy_core::io::Event;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use tracing::Level;

/// Event lines a follower may fall behind before it is dropped.
pub const EVENT_QUEUE: usize = 256;
/// Warnings `status` shows (the most recent ones).
pub const RECENT_WARNINGS: usize = 16;

/// A warning the node logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub message: String,
}

/// Why a follower of `events` was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// It fell more than [`EVENT_QUEUE`] events behind.
    Lagged,
    /// A write to it did not finish within the write deadline.
    Stalled,
}

/// The node's event stream and recent warnings. One per node, shared by the
/// runner (which publishes) and the control endpoint (which reads).
#[derive(Debug)]
pub struct EventFeed {
    lines: broadcast::Sender<Bytes>,
    warnings: Mutex<VecDeque<LogLine>>,
    followers: AtomicUsize,
    lagged: AtomicU64,
    stalled: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    sessions_closed: AtomicU64,
}

impl Default for EventFeed {
    fn default() -> EventFeed {
        EventFeed {
            lines: broadcast::channel(EVENT_QUEUE).0,
            warnings: Mutex::new(VecDeque::with_capacity(RECENT_WARNINGS)),
            followers: AtomicUsize::new(0),
            lagged: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            sessions_closed: AtomicU64::new(0),
        }
    }
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The event's variant name: its `Debug` text up to the first field.
fn kind_of(detail: &str) -> &str {
    let end = detail.find([' ', '{', '(']).unwrap_or(detail.len());
    &detail[..end]
}

impl EventFeed {
    /// A feed with no followers.
    pub fn new() -> Arc<EventFeed> {
        Arc::new(EventFeed::default())
    }

    /// A core event, logged at `level` (with `note` explaining it, if any).
    pub fn publish(&self, level: Level, event: &Event, note: Option<&str>) {
        if let Event::SessionClosed { up, down, .. } = event {
            // Counted here, whoever follows: `meshproxy tui` draws throughput from the
            // difference between two snapshots' totals.
            self.bytes_up.fetch_add(*up, Ordering::Relaxed);
            self.bytes_down.fetch_add(*down, Ordering::Relaxed);
            self.sessions_closed.fetch_add(1, Ordering::Relaxed);
        }
        let warn = level <= Level::WARN;
        if !warn && self.lines.receiver_count() == 0 {
            return; // the common case: nobody follows, nothing to keep
        }
        let mut detail = format!("{event:?}");
        if let Some(note) = note {
            detail = format!("{detail}: {note}");
        }
        let at_ms = now_ms();
        if self.lines.receiver_count() > 0 {
            let record = EventRecord {
                at_ms,
                level: level.as_str().to_ascii_lowercase(),
                kind: kind_of(&detail).to_owned(),
                detail: detail.clone(),
            };
            // No receiver left meanwhile is fine: nobody to tell.
            let _ = self.lines.send(Bytes::from(line(&EventLine { v: VERSION, event: record })));
        }
        if warn {
            self.warning(at_ms, detail);
        }
    }

    fn warning(&self, at_ms: u64, message: String) {
        let mut ring = self.warnings.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if ring.len() == RECENT_WARNINGS {
            ring.pop_front();
        }
        ring.push_back(LogLine { at_ms, message });
    }

    /// The last warnings, oldest first.
    pub fn recent_warnings(&self) -> Vec<LogLine> {
        let ring = self.warnings.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        ring.iter().cloned().collect()
    }

    /// A new follower: its cursor into the stream, and a guard that counts
    /// it among the followers until dropped.
    pub fn follow(self: &Arc<Self>) -> (broadcast::Receiver<Bytes>, Follower) {
        self.followers.fetch_add(1, Ordering::Relaxed);
        (self.lines.subscribe(), Follower(self.clone()))
    }

    /// Counts a follower dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) {
        let counter = match reason {
            DropReason::Lagged => &self.lagged,
            DropReason::Stalled => &self.stalled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The endpoint's counts, for `status`.
    pub fn counts(&self) -> ControlView {
        ControlView {
            event_clients: self.followers.load(Ordering::Relaxed),
            dropped_lagged: self.lagged.load(Ordering::Relaxed),
            dropped_stalled: self.stalled.load(Ordering::Relaxed),
        }
    }
}

impl EventFeed {
    /// The bytes and sessions of the sessions that ended since start, for `status`.
    pub fn traffic(&self) -> TrafficView {
        TrafficView {
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            sessions_closed: self.sessions_closed.load(Ordering::Relaxed),
        }
    }
}

/// Counts one follower of the feed while it lives.
#[derive(Debug)]
pub struct Follower(Arc<EventFeed>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshproxy_core::ids::PeerId;

    #[test]
    fn warnings_keep_the_last_few_and_events_reach_followers_with_their_kind() {
        let feed = EventFeed::new();
        let lost = Event::HubLinkLost { hub: PeerId::from_u64(7) };
        for _ in 0..RECENT_WARNINGS + 3 {
            feed.publish(Level::WARN, &lost, Some("retrying"));
        }
        let warnings = feed.recent_warnings();
        assert_eq!(warnings.len(), RECENT_WARNINGS);
        assert!(warnings[0].message.starts_with("HubLinkLost"), "{:?}", warnings[0]);
        assert!(warnings[0].message.ends_with(": retrying"));
        let (mut rx, follower) = feed.follow();
        assert_eq!(feed.counts().event_clients, 1);
        feed.publish(Level::DEBUG, &lost, None);
        let got = rx.try_recv().expect("an event line");
        let parsed: EventLine = serde_json::from_slice(&got).expect("one JSON line");
        assert_eq!(parsed.event.kind, "HubLinkLost");
        assert_eq!(parsed.event.level, "debug");
        assert!(got.ends_with(b"\n"));
        drop(follower);
        assert_eq!(feed.counts().event_clients, 0);
    }

    #[test]
    fn ended_sessions_add_up_into_the_traffic_totals_with_or_without_followers() {
        let feed = EventFeed::new();
        assert_eq!(feed.traffic(), TrafficView::default());
        let closed =
            |up, down| Event::SessionClosed { up, down, how: meshproxy_core::io::SpliceEnd::Clean };
        feed.publish(Level::DEBUG, &closed(10, 2000), None);
        let (_rx, _follower) = feed.follow();
        feed.publish(Level::DEBUG, &closed(5, 1000), None);
        feed.publish(Level::WARN, &Event::HubLinkLost { hub: PeerId::from_u64(7) }, None);
        let t = feed.traffic();
        assert_eq!((t.bytes_up, t.bytes_down, t.sessions_closed), (15, 3000, 2));
    }
}
