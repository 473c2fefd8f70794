//! Every pane drawn on ratatui's `TestBackend` from fixed models and compared
//! with the committed screens in `snapshots/` (insta). A changed screen fails
//! here; `INSTA_UPDATE=always` (or `cargo insta review`) takes the new one
//! after a look at the diff.

use super::fixtures::{busy_client, event, exit, hub_node, snapshot};
use super::input::on_key;
use super::model::{Model, Pane};
use super::view::draw;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

fn screen(model: &Model, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
    terminal.draw(|frame| draw(frame, model)).expect("drawn");
    terminal.backend().to_string()
}

/// A busy client seen for a minute: sessions rising and falling, bursts of traffic.
fn busy_model() -> Model {
    let mut m = Model::new("/var/lib/meshproxy/client.sock");
    let mut s = busy_client();
    for i in 0..60u64 {
        s.sessions = usize::try_from((i * 7) % 11).unwrap_or(0);
        s.traffic.bytes_down += (i % 5) * 200_000;
        s.traffic.bytes_up += (i % 3) * 4_000;
        m.on_status(s.clone(), i * 1000);
    }
    let kinds = [
        ("debug", "AppAccepted", "AppAccepted { listener: 0 }"),
        (
            "debug",
            "SessionEstablished",
            "SessionEstablished { exit: 12D3KooWExitFast…, setup: 14ms }",
        ),
        ("info", "Breaker", "Breaker { exit: 12D3KooWExitDown…, to: Open }"),
        ("warn", "HubLinkLost", "HubLinkLost { hub: 12D3KooWHubTwo… }: retrying"),
        ("debug", "SessionClosed", "SessionClosed { up: 512, down: 40960, how: Clean }"),
    ];
    for i in 0..25u64 {
        let (level, kind, detail) = kinds[usize::try_from(i).unwrap_or(0) % kinds.len()];
        m.on_event(event(1_765_138_000_000 + i * 1500, level, kind, detail));
    }
    m
}

fn key(m: &mut Model, code: KeyCode) {
    on_key(m, KeyEvent::new(code, KeyModifiers::NONE));
}

#[test]
fn before_the_node_answers() {
    let m = Model::new("/var/lib/meshproxy/client.sock");
    insta::assert_snapshot!(screen(&m, 80, 12));
}

#[test]
fn a_node_that_went_away_keeps_its_last_screen_and_says_it_retries() {
    let mut m = busy_model();
    m.on_lost("nothing answers on /var/lib/meshproxy/client.sock: the node is not running");
    insta::assert_snapshot!(screen(&m, 100, 26));
}

#[test]
fn lost_before_any_answer() {
    let mut m = Model::new("/tmp/none.sock");
    m.on_lost("no control socket at /tmp/none.sock: is the node running?");
    insta::assert_snapshot!(screen(&m, 80, 10));
}

#[test]
fn overview_of_a_busy_client() {
    insta::assert_snapshot!(screen(&busy_model(), 100, 26));
}

#[test]
fn overview_of_a_fresh_client_with_nothing_yet() {
    let mut m = Model::new("client.sock");
    m.on_status(snapshot(), 0);
    insta::assert_snapshot!(screen(&m, 100, 20));
}

#[test]
fn exits_pane() {
    let mut m = busy_model();
    m.show(Pane::Exits);
    insta::assert_snapshot!(screen(&m, 100, 12));
}

#[test]
fn exits_pane_empty() {
    let mut m = Model::new("client.sock");
    m.on_status(snapshot(), 0);
    m.show(Pane::Exits);
    insta::assert_snapshot!(screen(&m, 80, 8));
}

#[test]
fn a_long_exits_list_scrolled() {
    let mut m = Model::new("client.sock");
    let mut s = busy_client();
    s.exits = (0..60)
        .map(|i| {
            let peer = format!("12D3KooWExitOfALongListxxxxxxxxxxxxxxxxxxxxxxxxx{i:03}");
            let mut e = exit(&peer, Some("direct"), "closed");
            e.latency_ms = Some(f64::from(i) * 1.5);
            e.sessions = i % 4;
            e
        })
        .collect();
    m.on_status(s, 0);
    key(&mut m, KeyCode::Char('2'));
    for _ in 0..15 {
        key(&mut m, KeyCode::Down);
    }
    insta::assert_snapshot!(screen(&m, 100, 14));
}

#[test]
fn exits_filtered_by_country() {
    let mut m = busy_model();
    key(&mut m, KeyCode::Char('2'));
    for c in "/de".chars() {
        key(&mut m, KeyCode::Char(c));
    }
    insta::assert_snapshot!(screen(&m, 100, 10));
}

#[test]
fn exits_on_a_narrow_terminal() {
    let mut m = busy_model();
    m.show(Pane::Exits);
    insta::assert_snapshot!(screen(&m, 44, 12));
}

#[test]
fn overview_on_a_narrow_terminal() {
    insta::assert_snapshot!(screen(&busy_model(), 44, 20));
}

#[test]
fn hubs_pane_of_a_client() {
    let mut m = busy_model();
    m.show(Pane::Hubs);
    insta::assert_snapshot!(screen(&m, 100, 10));
}

#[test]
fn hubs_on_a_narrow_terminal() {
    let mut m = busy_model();
    m.show(Pane::Hubs);
    insta::assert_snapshot!(screen(&m, 50, 8));
}

#[test]
fn hubs_pane_of_a_hub() {
    let mut m = Model::new("hub.sock");
    m.on_status(hub_node(), 0);
    m.show(Pane::Hubs);
    insta::assert_snapshot!(screen(&m, 80, 10));
}

#[test]
fn events_pane_newest_first() {
    let mut m = busy_model();
    m.show(Pane::Events);
    insta::assert_snapshot!(screen(&m, 100, 14));
}

#[test]
fn events_pane_filtered_by_level() {
    let mut m = busy_model();
    key(&mut m, KeyCode::Char('4'));
    for c in "/warn".chars() {
        key(&mut m, KeyCode::Char(c));
    }
    key(&mut m, KeyCode::Enter);
    insta::assert_snapshot!(screen(&m, 100, 10));
}
