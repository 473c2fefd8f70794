//! Text for people: `meshproxy status` and `meshproxy state show` without
//! `--json`. Aligned tables, one screen for a typical node; peer ids are cut
//! to their head and tail (`--json` has them whole).

use super::events::LogLine;
use super::snapshot::{PinView, StatusSnapshot};
use std::fmt::Write as _;

/// Columns aligned on the widest cell, two spaces apart.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str]) -> Table {
        Table { rows: vec![head.iter().map(|h| (*h).to_owned()).collect()] }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn write(&self, out: &mut String) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max())
            .map(Option::unwrap_or_default)
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let width = widths.get(c).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<width$}  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// `12D3KooWAbc…xyz123`: enough to tell peers apart on one screen.
pub fn short_peer(peer: &str) -> String {
    let chars: Vec<char> = peer.chars().collect();
    if chars.len() <= 20 {
        return peer.to_owned();
    }
    let head: String = chars[..10].iter().collect();
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("{head}…{tail}")
}

/// `3h 02m 05s`, `4m 10s`, `12s`.
pub fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m {s:02}s"),
    }
}

/// The time of day (UTC) of a Unix time in milliseconds.
pub fn time_of_day(at_ms: u64) -> String {
    let secs = at_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

/// `meshproxy status`'s screen.
pub fn status(s: &StatusSnapshot) -> String {
    let mut out = String::new();
    let roles = if s.roles.is_empty() { "none".to_owned() } else { s.roles.join(", ") };
    let _ = writeln!(
        out,
        "meshproxy {}  peer {}  roles {roles}  up {}  reachability {}",
        s.version,
        short_peer(&s.peer_id),
        duration(s.uptime_secs),
        s.reachability
    );
    let c = &s.connections;
    let _ = writeln!(
        out,
        "sessions {}  connections {} direct, {} relayed  reservations {}",
        s.sessions, c.direct, c.relayed, c.reservations
    );
    for addr in &s.p2p_addrs {
        let _ = writeln!(out, "p2p      {addr}");
    }
    if let Some(metrics) = &s.metrics {
        let _ = writeln!(out, "metrics  http://{metrics}/metrics");
    }
    if let Some(hub) = &s.hub {
        let _ = writeln!(
            out,
            "hub      {} peers admitted, {} exits in the directory",
            hub.admitted_peers, hub.directory_entries
        );
    }
    if !s.hubs.is_empty() {
        out.push_str("\nHUBS\n");
        let mut t = Table::new(&["PEER", "CONNECTED", "ADMITTED", "REGISTERED", "RESERVATION"]);
        // Only exits register; for a client the column would say a misleading "no".
        let exit = s.roles.iter().any(|r| r == "exit");
        for h in &s.hubs {
            t.row(vec![
                short_peer(&h.peer),
                or_dash(h.connected.as_deref()),
                if h.admitted { "yes".into() } else { format!("no ({})", h.link) },
                if exit { yes(h.registered) } else { "-".into() },
                h.reservation.clone(),
            ]);
        }
        t.write(&mut out);
    }
    if s.roles.iter().any(|r| r == "client") {
        let _ = writeln!(out, "\nEXITS ({})", s.exits.len());
        let mut t =
            Table::new(&["PEER", "PATH", "LATENCY", "BREAKER", "SESSIONS", "FAILURES", "COUNTRY"]);
        for e in &s.exits {
            let path = match (&e.path, &e.via) {
                (Some(p), Some(via)) => format!("{p} via {}", short_peer(via)),
                (Some(p), None) => p.clone(),
                (None, _) => "-".into(),
            };
            t.row(vec![
                short_peer(&e.peer),
                path,
                e.latency_ms.map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms")),
                e.breaker.clone(),
                e.sessions.to_string(),
                e.failures.to_string(),
                or_dash(e.country.as_deref()),
            ]);
        }
        t.write(&mut out);
        out.push_str("\nLISTENERS\n");
        let mut t = Table::new(&["#", "ADDRESS", "SESSIONS"]);
        for l in &s.listeners {
            t.row(vec![l.index.to_string(), or_dash(l.bind.as_deref()), l.sessions.to_string()]);
        }
        t.write(&mut out);
        let _ = writeln!(out, "\nSTICKY PINS ({})", s.pins.len());
        if !s.pins.is_empty() {
            pins_table(&s.pins, "IDLE").write(&mut out);
        }
    }
    if !s.recent_warnings.is_empty() {
        out.push_str("\nRECENT WARNINGS (UTC)\n");
        warnings(&s.recent_warnings, &mut out);
    }
    let ctl = &s.control;
    if ctl.dropped_lagged + ctl.dropped_stalled > 0 {
        let _ = writeln!(
            out,
            "\ncontrol: {} event clients; dropped {} that fell behind, {} that stopped reading",
            ctl.event_clients, ctl.dropped_lagged, ctl.dropped_stalled
        );
    }
    out
}

fn pins_table(pins: &[PinView], idle: &str) -> Table {
    let mut t = Table::new(&["LISTENER", "SESSION", "EXIT", idle]);
    for p in pins {
        t.row(vec![
            p.listener.to_string(),
            p.session.clone().unwrap_or_else(|| "(whole listener)".into()),
            short_peer(&p.exit),
            duration(p.idle_secs),
        ]);
    }
    t
}

fn warnings(lines: &[LogLine], out: &mut String) {
    for w in lines {
        let _ = writeln!(out, "{}  {}", time_of_day(w.at_ms), w.message);
    }
}

/// `meshproxy state show`'s listing.
pub fn state(file: &str, pins: &[PinView]) -> String {
    let mut out = format!("{file}: {} sticky pins\n", pins.len());
    if !pins.is_empty() {
        // Idle times are relative to the pin used last before the file was written.
        pins_table(pins, "IDLE BEFORE NEWEST").write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_numbers_read_well() {
        let mut t = Table::new(&["A", "LONG HEADER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        let mut out = String::new();
        t.write(&mut out);
        assert_eq!(out, "A          LONG HEADER\nwide cell  x\n");
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m 05s");
        assert_eq!(duration(3 * 3600 + 125), "3h 02m 05s");
        assert_eq!(time_of_day(86_400_000 + 3_723_000), "01:02:03");
        let id = "12D3KooWBhbrxj5U4PNaMF1ZLsVPUBMBYQELFnTzVkGEjcLdKjBv";
        assert_eq!(short_peer(id), "12D3KooWBh…LdKjBv");
    }
}
