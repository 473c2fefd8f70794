//! The screen of `meshproxy tui`, drawn from a [`Model`] alone: a header
//! (peer, roles, uptime, whether the node answers), the pane tabs, the pane,
//! and a key line (or the filter being typed). No IO here, so the tests draw
//! it on ratatui's `TestBackend`.

use super::model::{Link, Model, Pane};
use crate::ops::control::render::{duration, short_peer, time_of_day};
use crate::ops::control::snapshot::StatusSnapshot;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table, Tabs, Wrap};
use ratatui::Frame;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, model: &Model) {
    let [header, tabs, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_line(model)), header);
    let titles = Pane::ALL.iter().enumerate().map(|(i, p)| format!("{} {}", i + 1, p.title()));
    let selected = Pane::ALL.iter().position(|p| *p == model.pane).unwrap_or(0);
    let tab_bar = Tabs::new(titles)
        .select(selected)
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD));
    frame.render_widget(tab_bar, tabs);
    match &model.status {
        None => frame.render_widget(waiting(model), body),
        Some(status) => match model.pane {
            Pane::Overview => overview(frame, body, model, status),
            Pane::Exits => exits(frame, body, model, status),
            Pane::Hubs => hubs(frame, body, model, status),
            Pane::Events => events(frame, body, model),
        },
    }
    frame.render_widget(Paragraph::new(footer_line(model)), footer);
}

fn header_line(model: &Model) -> Line<'static> {
    // Whether the node answers comes first: a narrow terminal cuts the end.
    let mut spans = vec![
        Span::from("meshproxy").bold(),
        Span::from("  "),
        match &model.link {
            Link::Connecting => Span::from("connecting…").yellow(),
            Link::Live => Span::from("live").green(),
            Link::Lost(_) => Span::from("disconnected, retrying").red().bold(),
        },
    ];
    if let Some(s) = &model.status {
        let roles = if s.roles.is_empty() { "no role".to_owned() } else { s.roles.join("+") };
        spans.push(Span::from(format!(
            "  {roles}  up {}  peer {}",
            duration(s.uptime_secs),
            s.peer_id
        )));
    } else {
        spans.push(Span::from(format!("  {}", model.socket)));
    }
    Line::from(spans)
}

/// Below this width the tables drop columns and cut peer ids to their tail.
const NARROW: u16 = 80;

/// A peer id as a table shows it: head and tail, or the tail alone when narrow.
fn peer_cell(peer: &str, narrow: bool) -> String {
    if !narrow {
        return short_peer(peer);
    }
    let chars: Vec<char> = peer.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(6)..].iter().collect();
    format!("…{tail}")
}

/// `Exits (3 of 60, from row 16)`: how many the filter shows and where the scroll is.
fn list_title(what: &str, shown: usize, total: usize, scroll: usize) -> String {
    if scroll == 0 {
        format!("{what} ({shown} of {total})")
    } else {
        format!("{what} ({shown} of {total}, from row {})", scroll + 1)
    }
}

fn footer_line(model: &Model) -> Line<'static> {
    if model.editing_filter {
        return Line::from(vec![
            Span::from("filter: ").bold(),
            Span::from(format!("{}▏", model.filter)),
            Span::from("  (enter keeps it, esc clears it)").dim(),
        ]);
    }
    let mut spans = Vec::new();
    if !model.filter.is_empty() {
        spans.push(Span::from(format!("filter \"{}\"  ", model.filter)).yellow());
    }
    spans.push(Span::from("tab/1-4 pane  / filter  ↑↓ PgUp PgDn scroll  q quit").dim());
    Line::from(spans)
}

fn waiting(model: &Model) -> Paragraph<'static> {
    let text = match &model.link {
        Link::Lost(why) => format!("disconnected, retrying every second\n\n{why}"),
        _ => format!("asking the node at {} …", model.socket),
    };
    Paragraph::new(text).wrap(Wrap { trim: false }).block(Block::bordered())
}

/// `12.3 kB`: decimal units, three significant figures.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The newest samples that fit `width` columns (the widget draws from the oldest).
fn tail(samples: &[u64], width: u16) -> &[u64] {
    &samples[samples.len().saturating_sub(usize::from(width))..]
}

fn overview(frame: &mut Frame<'_>, area: Rect, model: &Model, s: &StatusSnapshot) {
    let [charts, info] = Layout::vertical([Constraint::Length(6), Constraint::Min(0)]).areas(area);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(charts);
    let sessions = model.sessions.samples();
    let block = Block::bordered().title(format!("Sessions open: {}", s.sessions));
    let width = block.inner(left).width;
    let chart = Sparkline::default().block(block).data(tail(&sessions, width)).cyan();
    frame.render_widget(chart, left);
    let rate = model.throughput.last().map_or_else(|| "-".to_owned(), |r| bytes(r) + "/s");
    let throughput = model.throughput.samples();
    let block = Block::bordered().title(format!("Throughput (ended sessions): {rate}"));
    let width = block.inner(right).width;
    let chart = Sparkline::default().block(block).data(tail(&throughput, width)).magenta();
    frame.render_widget(chart, right);

    let mut lines = Vec::new();
    let c = &s.connections;
    lines.push(Line::from(format!(
        "version {}  reachability {}  connections {} direct, {} relayed  reservations {}",
        s.version, s.reachability, c.direct, c.relayed, c.reservations
    )));
    let t = &s.traffic;
    lines.push(Line::from(format!(
        "ended sessions {}  up {}  down {}",
        t.sessions_closed,
        bytes(t.bytes_up),
        bytes(t.bytes_down)
    )));
    for addr in &s.p2p_addrs {
        lines.push(Line::from(format!("p2p      {addr}")));
    }
    if let Some(metrics) = &s.metrics {
        lines.push(Line::from(format!("metrics  http://{metrics}/metrics")));
    }
    if let Some(hub) = &s.hub {
        lines.push(Line::from(format!(
            "hub      {} peers admitted, {} exits in the directory",
            hub.admitted_peers, hub.directory_entries
        )));
    }
    if !s.hubs.is_empty() {
        let admitted = s.hubs.iter().filter(|h| h.admitted).count();
        lines.push(Line::from(format!("hubs     {admitted} of {} admitted", s.hubs.len())));
    }
    if s.roles.iter().any(|r| r == "client") {
        let open = s.exits.iter().filter(|e| e.breaker != "closed").count();
        lines.push(Line::from(format!(
            "exits    {} known, {open} with the breaker not closed",
            s.exits.len()
        )));
        for l in &s.listeners {
            let bind = l.bind.as_deref().unwrap_or("-");
            lines
                .push(Line::from(format!("listener #{} {bind}  {} sessions", l.index, l.sessions)));
        }
        for p in &s.pins {
            let session = p.session.as_deref().unwrap_or("(whole listener)");
            lines.push(Line::from(format!(
                "pin      listener #{} {session} -> {}  idle {}",
                p.listener,
                short_peer(&p.exit),
                duration(p.idle_secs)
            )));
        }
    }
    if !s.recent_warnings.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from("Recent warnings (UTC)").bold());
        for w in s.recent_warnings.iter().rev() {
            lines.push(Line::from(vec![
                Span::from(time_of_day(w.at_ms)),
                Span::from("  "),
                Span::from(w.message.clone()).yellow(),
            ]));
        }
    }
    if let Link::Lost(why) = &model.link {
        lines.insert(0, Line::from(format!("disconnected, retrying: {why}")).red());
    }
    let node =
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title("Node"));
    frame.render_widget(node, info);
}

fn breaker_style(breaker: &str) -> Style {
    match breaker {
        "closed" => Style::new().fg(Color::Green),
        "open" => Style::new().fg(Color::Red),
        _ => Style::new().fg(Color::Yellow),
    }
}

fn exits(frame: &mut Frame<'_>, area: Rect, model: &Model, s: &StatusSnapshot) {
    let shown = model.exits();
    let block =
        Block::bordered().title(list_title("Exits", shown.len(), s.exits.len(), model.scroll));
    if shown.is_empty() {
        let why = if !s.roles.iter().any(|r| r == "client") {
            "this node is not a client: it uses no exits"
        } else if s.exits.is_empty() {
            "no exits known yet (the hubs have listed none)"
        } else {
            "no exit matches the filter"
        };
        frame.render_widget(Paragraph::new(why).block(block), area);
        return;
    }
    let narrow = area.width < NARROW;
    let rows = shown.iter().skip(model.scroll).map(|e| {
        let path = match (&e.path, &e.via, narrow) {
            (Some(p), Some(via), false) => format!("{p} via {}", short_peer(via)),
            (Some(p), _, _) => p.clone(),
            (None, _, _) => "-".into(),
        };
        let mut cells = vec![
            Cell::from(peer_cell(&e.peer, narrow)),
            Cell::from(path),
            Cell::from(e.latency_ms.map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms"))),
            Cell::from(e.breaker.clone()).style(breaker_style(&e.breaker)),
            Cell::from(e.sessions.to_string()),
        ];
        if !narrow {
            cells.push(Cell::from(e.failures.to_string()));
            cells.push(Cell::from(e.country.clone().unwrap_or_else(|| "-".into())));
        }
        Row::new(cells)
    });
    let table = if narrow {
        let widths = [
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(4),
        ];
        let head = ["PEER", "PATH", "LATENCY", "BREAKER", "SESS"];
        Table::new(rows, widths).header(Row::new(head).bold())
    } else {
        let widths = [
            Constraint::Length(18),
            Constraint::Min(8),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(7),
        ];
        let head = ["PEER", "PATH", "LATENCY", "BREAKER", "SESSIONS", "FAILURES", "COUNTRY"];
        Table::new(rows, widths).header(Row::new(head).bold())
    };
    let table = table.block(block);
    frame.render_widget(table, area);
}

fn hubs(frame: &mut Frame<'_>, area: Rect, model: &Model, s: &StatusSnapshot) {
    let [held, list] = Layout::vertical([
        Constraint::Length(if s.hub.is_some() { 3 } else { 0 }),
        Constraint::Min(0),
    ])
    .areas(area);
    if let Some(hub) = &s.hub {
        let text = format!(
            "{} peers admitted, {} exits in the directory",
            hub.admitted_peers, hub.directory_entries
        );
        frame.render_widget(Paragraph::new(text).block(Block::bordered().title("This hub")), held);
    }
    let shown = model.hubs();
    let block =
        Block::bordered().title(list_title("Hubs", shown.len(), s.hubs.len(), model.scroll));
    if shown.is_empty() {
        let why = if s.hubs.is_empty() {
            "no hubs configured (a hub alone needs none)"
        } else {
            "no hub matches the filter"
        };
        frame.render_widget(Paragraph::new(why).block(block), list);
        return;
    }
    // Only exits register; for a client the column would say a misleading "no".
    let exit = s.roles.iter().any(|r| r == "exit");
    let narrow = list.width < NARROW;
    let yes = |b: bool| if b { "yes" } else { "no" };
    let rows = shown.iter().skip(model.scroll).map(|h| {
        Row::new(vec![
            Cell::from(peer_cell(&h.peer, narrow)),
            Cell::from(h.connected.clone().unwrap_or_else(|| "-".into())),
            Cell::from(yes(h.admitted)).style(if h.admitted {
                Style::new().fg(Color::Green)
            } else {
                Style::new().fg(Color::Red)
            }),
            Cell::from(h.link.clone()),
            Cell::from(if exit { yes(h.registered) } else { "-" }),
            Cell::from(h.reservation.clone()),
        ])
    });
    let widths = [
        Constraint::Length(if narrow { 7 } else { 18 }),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(15),
        Constraint::Length(11),
        Constraint::Min(11),
    ];
    let head = ["PEER", "CONNECTED", "ADMITTED", "LINK", "REGISTERED", "RESERVATION"];
    let table = Table::new(rows, widths).header(Row::new(head).bold()).block(block);
    frame.render_widget(table, list);
}

fn level_style(level: &str) -> Style {
    match level {
        "warn" | "error" => Style::new().fg(Color::Yellow),
        "info" => Style::new(),
        _ => Style::new().add_modifier(Modifier::DIM),
    }
}

fn events(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let shown = model.events();
    let title = list_title("Events", shown.len(), model.events.len(), model.scroll);
    let block = Block::bordered().title(format!("{title} newest first, UTC"));
    if shown.is_empty() {
        let why = if model.events.is_empty() {
            "no events yet (they appear as the node logs them)"
        } else {
            "no event matches the filter"
        };
        frame.render_widget(Paragraph::new(why).block(block), area);
        return;
    }
    let height = usize::from(block.inner(area).height);
    let lines: Vec<Line<'_>> = shown
        .iter()
        .skip(model.scroll)
        .take(height)
        .map(|e| {
            // The detail starts with the kind (`Breaker { … }`): the kind in bold, once.
            let rest = match e.detail.strip_prefix(e.kind.as_str()) {
                Some(rest) => rest.to_owned(),
                None => format!(" {}", e.detail),
            };
            Line::from(vec![
                Span::from(time_of_day(e.at_ms)),
                Span::from(format!(" {:<5} ", e.level)).style(level_style(&e.level)),
                Span::from(e.kind.clone()).bold(),
                Span::from(rest).style(level_style(&e.level)),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
