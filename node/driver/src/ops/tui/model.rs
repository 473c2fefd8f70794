//! What `meshproxy tui` shows, as plain data: the last status snapshot, the
//! histories drawn as sparklines, the recent events, and the view's own
//! state (pane, filter, scroll). Everything here is a pure function of the
//! messages fed in (snapshots with the time they arrived, events, losses of
//! the node), so the view and the tests need no socket and no clock.

use crate::ops::control::protocol::EventRecord;
use crate::ops::control::snapshot::{ExitView, HubView, StatusSnapshot};
use std::collections::VecDeque;

/// Samples a sparkline keeps: two minutes at one snapshot a second, wider
/// than any terminal row needs.
pub const HISTORY: usize = 120;
/// Events kept for the events pane (the oldest go first).
pub const EVENTS_KEPT: usize = 500;
/// Longest filter kept (a pasted screenful is cut).
pub const MAX_FILTER: usize = 64;

/// The panes, in the order of their keys `1`–`4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    /// Roles, counts, sparklines, listeners, pins, warnings.
    Overview,
    /// The exits a client knows.
    Exits,
    /// The configured hubs (and, on a hub, what it holds).
    Hubs,
    /// The node's event stream.
    Events,
}

impl Pane {
    /// Every pane, in key order.
    pub const ALL: [Pane; 4] = [Pane::Overview, Pane::Exits, Pane::Hubs, Pane::Events];

    /// Its tab title.
    pub fn title(self) -> &'static str {
        match self {
            Pane::Overview => "Overview",
            Pane::Exits => "Exits",
            Pane::Hubs => "Hubs",
            Pane::Events => "Events",
        }
    }

    fn index(self) -> usize {
        Pane::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    /// The pane after this one (tab), wrapping round.
    pub fn next(self) -> Pane {
        Pane::ALL[(self.index() + 1) % Pane::ALL.len()]
    }

    /// The pane before this one (shift-tab), wrapping round.
    pub fn previous(self) -> Pane {
        Pane::ALL[(self.index() + Pane::ALL.len() - 1) % Pane::ALL.len()]
    }
}

/// Whether the node answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// No answer yet.
    Connecting,
    /// The last status request was answered.
    Live,
    /// The last request failed (the node stopped, say); the view keeps the
    /// last snapshot and the loop keeps asking.
    Lost(String),
}

/// A bounded series of samples, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    samples: VecDeque<u64>,
}

impl History {
    /// Appends a sample, dropping the oldest past [`HISTORY`].
    pub fn push(&mut self, sample: u64) {
        if self.samples.len() == HISTORY {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<u64> {
        self.samples.iter().copied().collect()
    }

    /// The newest sample.
    pub fn last(&self) -> Option<u64> {
        self.samples.back().copied()
    }

    /// How many samples it holds.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Everything the view draws.
#[derive(Clone, Debug)]
pub struct Model {
    /// The control socket asked (shown in the title).
    pub socket: String,
    /// Whether the node answers.
    pub link: Link,
    /// The last snapshot the node sent.
    pub status: Option<StatusSnapshot>,
    /// Sessions open, one sample per snapshot.
    pub sessions: History,
    /// Bytes per second (both ways) of the sessions that ended between two snapshots.
    pub throughput: History,
    /// The events followed, oldest first, at most [`EVENTS_KEPT`].
    pub events: VecDeque<EventRecord>,
    /// The pane shown.
    pub pane: Pane,
    /// Only rows containing this (case-insensitively) are shown; empty: all.
    pub filter: String,
    /// Whether keys are typed into the filter.
    pub editing_filter: bool,
    /// Rows scrolled past at the top of the pane's list.
    pub scroll: usize,
    /// The previous snapshot's traffic total and when it came (ms), for the rate.
    last_traffic: Option<(u64, u64)>,
}

impl Model {
    /// The model before the node answered.
    pub fn new(socket: impl Into<String>) -> Model {
        Model {
            socket: socket.into(),
            link: Link::Connecting,
            status: None,
            sessions: History::default(),
            throughput: History::default(),
            events: VecDeque::new(),
            pane: Pane::Overview,
            filter: String::new(),
            editing_filter: false,
            scroll: 0,
            last_traffic: None,
        }
    }

    /// A snapshot that arrived at `now_ms` (any monotonic milliseconds).
    pub fn on_status(&mut self, status: StatusSnapshot, now_ms: u64) {
        self.sessions.push(u64::try_from(status.sessions).unwrap_or(u64::MAX));
        let total = status.traffic.bytes_up.saturating_add(status.traffic.bytes_down);
        if let Some((before, at)) = self.last_traffic {
            let elapsed = now_ms.saturating_sub(at).max(1);
            // A restarted node counts from zero again: no negative rate.
            let rate = total.saturating_sub(before).saturating_mul(1000) / elapsed;
            self.throughput.push(rate);
        }
        self.last_traffic = Some((total, now_ms));
        self.status = Some(status);
        self.link = Link::Live;
    }

    /// The node did not answer (`why` says how).
    pub fn on_lost(&mut self, why: impl Into<String>) {
        self.link = Link::Lost(why.into());
        // The next answer may come from a restarted node: its totals start again.
        self.last_traffic = None;
    }

    /// An event the node streamed.
    pub fn on_event(&mut self, event: EventRecord) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn matches(&self, text: &[&str]) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        text.iter().any(|t| t.to_lowercase().contains(&needle))
    }

    /// The exits the filter lets through (by peer, path, breaker or country).
    pub fn exits(&self) -> Vec<&ExitView> {
        let Some(status) = &self.status else { return Vec::new() };
        status
            .exits
            .iter()
            .filter(|e| {
                self.matches(&[
                    &e.peer,
                    e.path.as_deref().unwrap_or(""),
                    &e.breaker,
                    e.country.as_deref().unwrap_or(""),
                ])
            })
            .collect()
    }

    /// The hubs the filter lets through (by peer, link or reservation).
    pub fn hubs(&self) -> Vec<&HubView> {
        let Some(status) = &self.status else { return Vec::new() };
        status.hubs.iter().filter(|h| self.matches(&[&h.peer, &h.link, &h.reservation])).collect()
    }

    /// The events the filter lets through (by kind, level or detail), newest first.
    pub fn events(&self) -> Vec<&EventRecord> {
        self.events.iter().rev().filter(|e| self.matches(&[&e.kind, &e.level, &e.detail])).collect()
    }

    /// Rows of the pane shown, for bounding the scroll.
    pub fn rows(&self) -> usize {
        match self.pane {
            Pane::Overview => 0,
            Pane::Exits => self.exits().len(),
            Pane::Hubs => self.hubs().len(),
            Pane::Events => self.events().len(),
        }
    }

    /// Shows `pane`, scrolled to its top.
    pub fn show(&mut self, pane: Pane) {
        self.pane = pane;
        self.scroll = 0;
    }

    /// Scrolls by `delta` rows, staying within the pane's rows.
    pub fn scroll_by(&mut self, delta: isize) {
        let last = self.rows().saturating_sub(1);
        self.scroll = self.scroll.saturating_add_signed(delta).min(last);
    }

    /// Scrolls to the last row.
    pub fn scroll_to_end(&mut self) {
        self.scroll = self.rows().saturating_sub(1);
    }

    /// Adds a character to the filter (up to [`MAX_FILTER`]).
    pub fn type_filter(&mut self, c: char) {
        if self.filter.chars().count() < MAX_FILTER && !c.is_control() {
            self.filter.push(c);
            self.scroll = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tui::fixtures::{exit, snapshot};

    fn record(kind: &str, detail: &str) -> EventRecord {
        EventRecord { at_ms: 0, level: "debug".into(), kind: kind.into(), detail: detail.into() }
    }

    #[test]
    fn histories_stay_bounded_and_keep_the_newest() {
        let mut m = Model::new("x.sock");
        for i in 0..(HISTORY as u64 + 50) {
            let mut s = snapshot();
            s.sessions = usize::try_from(i).unwrap_or(0);
            s.traffic.bytes_down = i * 1000;
            m.on_status(s, i * 1000);
        }
        assert_eq!(m.sessions.len(), HISTORY);
        assert_eq!(m.throughput.len(), HISTORY);
        assert_eq!(m.sessions.samples()[0], 50);
        assert_eq!(m.sessions.last(), Some(HISTORY as u64 + 49));
        assert_eq!(m.throughput.last(), Some(1000), "1000 bytes in 1 s");
        for i in 0..EVENTS_KEPT + 10 {
            m.on_event(record("AppAccepted", &i.to_string()));
        }
        assert_eq!(m.events.len(), EVENTS_KEPT);
        assert_eq!(m.events()[0].detail, (EVENTS_KEPT + 9).to_string(), "newest first");
    }

    #[test]
    fn throughput_is_the_rate_between_snapshots_and_restarts_do_not_go_negative() {
        let mut m = Model::new("x.sock");
        let mut s = snapshot();
        s.traffic.bytes_up = 1_000;
        m.on_status(s.clone(), 10_000);
        assert!(m.throughput.is_empty(), "one snapshot gives no rate");
        s.traffic.bytes_up = 5_000;
        s.traffic.bytes_down = 1_000;
        m.on_status(s.clone(), 12_000);
        assert_eq!(m.throughput.last(), Some(2_500), "5000 bytes in 2 s");
        m.on_lost("nothing answers");
        assert_eq!(m.link, Link::Lost("nothing answers".into()));
        assert!(m.status.is_some(), "the last snapshot stays on screen");
        s.traffic.bytes_up = 10;
        s.traffic.bytes_down = 0;
        m.on_status(s.clone(), 13_000);
        assert_eq!(m.throughput.len(), 1, "the restarted node's first snapshot gives no rate");
        s.traffic.bytes_up = 0;
        m.on_status(s, 14_000);
        assert_eq!(m.throughput.last(), Some(0));
        assert_eq!(m.link, Link::Live);
    }

    #[test]
    fn the_filter_matches_any_column_case_insensitively_and_is_bounded() {
        let mut m = Model::new("x.sock");
        let mut s = snapshot();
        let mut de = exit("12D3KooWGermanExit", Some("relayed"), "closed");
        de.country = Some("DE".into());
        s.exits = vec![exit("12D3KooWFastOne", Some("direct"), "closed"), de];
        m.on_status(s, 0);
        m.on_event(record("SessionEstablished", "SessionEstablished { … }"));
        m.on_event(record("Breaker", "Breaker { to: Open }"));
        assert_eq!(m.exits().len(), 2);
        for c in "de".chars() {
            m.type_filter(c);
        }
        let peers: Vec<&str> = m.exits().iter().map(|e| e.peer.as_str()).collect();
        assert_eq!(peers, ["12D3KooWGermanExit"], "country DE; 'direct' has no 'de'");
        m.filter = "OPEN".into();
        let kinds: Vec<&str> = m.events().iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["Breaker"]);
        m.filter.clear();
        for _ in 0..200 {
            m.type_filter('x');
        }
        assert_eq!(m.filter.len(), MAX_FILTER);
        m.type_filter('\u{7}');
        assert_eq!(m.filter.len(), MAX_FILTER, "control characters are not typed");
    }

    #[test]
    fn panes_cycle_and_scrolling_stays_within_the_rows() {
        let mut m = Model::new("x.sock");
        assert_eq!(m.pane, Pane::Overview);
        assert_eq!(Pane::Overview.previous(), Pane::Events);
        assert_eq!(Pane::Events.next(), Pane::Overview);
        let mut s = snapshot();
        s.exits = (0..5).map(|i| exit(&format!("peer{i}"), None, "closed")).collect();
        m.on_status(s, 0);
        m.show(Pane::Exits);
        m.scroll_by(3);
        assert_eq!(m.scroll, 3);
        m.scroll_by(10);
        assert_eq!(m.scroll, 4, "the last row stays in view");
        m.scroll_by(-10);
        assert_eq!(m.scroll, 0);
        m.scroll_to_end();
        assert_eq!(m.scroll, 4);
        m.show(Pane::Hubs);
        assert_eq!(m.scroll, 0, "a new pane starts at its top");
    }
}
