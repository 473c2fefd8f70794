//! Keys, applied to the [`Model`]: a pure function, so every binding is
//! tested without a terminal.
//!
//! | key | does |
//! | --- | --- |
//! | `1`–`4`, Tab, Shift-Tab | switch pane |
//! | `/` | type a filter (Enter keeps it, Esc clears it) |
//! | ↑ ↓ `k` `j`, PgUp PgDn, Home End `g` `G` | scroll |
//! | `q`, Esc, Ctrl-C | quit |

use super::model::{Model, Pane};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Rows PgUp / PgDn move.
const PAGE: isize = 10;

/// What the loop does after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep going (redraw).
    Continue,
    /// Restore the terminal and leave.
    Quit,
}

/// Applies `key` to `model`.
pub fn on_key(model: &mut Model, key: KeyEvent) -> Action {
    // Terminals that report releases would otherwise apply every key twice.
    if key.kind == KeyEventKind::Release {
        return Action::Continue;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    if model.editing_filter {
        match key.code {
            KeyCode::Enter => model.editing_filter = false,
            KeyCode::Esc => {
                model.editing_filter = false;
                model.filter.clear();
                model.scroll = 0;
            }
            KeyCode::Backspace => {
                model.filter.pop();
                model.scroll = 0;
            }
            KeyCode::Char(c) => model.type_filter(c),
            _ => {}
        }
        return Action::Continue;
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
        KeyCode::Char(c @ '1'..='4') => {
            let index = usize::from(c as u8 - b'1');
            model.show(Pane::ALL[index]);
        }
        KeyCode::Tab => model.show(model.pane.next()),
        KeyCode::BackTab => model.show(model.pane.previous()),
        KeyCode::Char('/') => model.editing_filter = true,
        KeyCode::Down | KeyCode::Char('j') => model.scroll_by(1),
        KeyCode::Up | KeyCode::Char('k') => model.scroll_by(-1),
        KeyCode::PageDown => model.scroll_by(PAGE),
        KeyCode::PageUp => model.scroll_by(-PAGE),
        KeyCode::Home | KeyCode::Char('g') => model.scroll = 0,
        KeyCode::End | KeyCode::Char('G') => model.scroll_to_end(),
        _ => {}
    }
    Action::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tui::fixtures::{busy_client, event};
    use proptest::prelude::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn press(m: &mut Model, keys: &str) -> Action {
        let mut last = Action::Continue;
        for c in keys.chars() {
            last = on_key(m, key(KeyCode::Char(c)));
        }
        last
    }

    fn any_key() -> impl Strategy<Value = KeyCode> {
        prop_oneof![
            any::<char>().prop_map(KeyCode::Char),
            "[1-4/qjkgG]".prop_map(|s| KeyCode::Char(s.chars().next().unwrap_or('1'))),
            Just(KeyCode::Tab),
            Just(KeyCode::BackTab),
            Just(KeyCode::Enter),
            Just(KeyCode::Backspace),
            Just(KeyCode::Up),
            Just(KeyCode::Down),
            Just(KeyCode::PageUp),
            Just(KeyCode::PageDown),
            Just(KeyCode::Home),
            Just(KeyCode::End),
        ]
    }

    proptest! {
        /// Whatever is typed (Esc and Ctrl-C aside, which quit), the scroll stays within
        /// the pane's rows, the filter within its bound, and every size of screen draws.
        #[test]
        fn any_keys_keep_the_view_in_bounds(
            keys in proptest::collection::vec(any_key(), 0..80),
            width in 1u16..140,
            height in 1u16..50,
        ) {
            let mut m = Model::new("x.sock");
            m.on_status(busy_client(), 0);
            for i in 0..40 {
                m.on_event(event(i, "debug", "AppAccepted", "AppAccepted"));
            }
            for code in keys {
                let _ = on_key(&mut m, key(code));
                prop_assert!(m.scroll <= m.rows().saturating_sub(1), "{} > {}", m.scroll, m.rows());
                prop_assert!(m.filter.chars().count() <= crate::ops::tui::model::MAX_FILTER);
            }
            let backend = ratatui::backend::TestBackend::new(width, height);
            let mut terminal = ratatui::Terminal::new(backend).map_err(|e| TestCaseError::fail(e.to_string()))?;
            terminal
                .draw(|frame| crate::ops::tui::view::draw(frame, &m))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
    }

    #[test]
    fn number_keys_and_tab_switch_panes() {
        let mut m = Model::new("x.sock");
        press(&mut m, "2");
        assert_eq!(m.pane, Pane::Exits);
        press(&mut m, "4");
        assert_eq!(m.pane, Pane::Events);
        on_key(&mut m, key(KeyCode::Tab));
        assert_eq!(m.pane, Pane::Overview);
        on_key(&mut m, key(KeyCode::BackTab));
        assert_eq!(m.pane, Pane::Events);
        press(&mut m, "5");
        assert_eq!(m.pane, Pane::Events, "no fifth pane");
    }

    #[test]
    fn slash_types_a_filter_that_enter_keeps_and_esc_clears() {
        let mut m = Model::new("x.sock");
        m.on_status(busy_client(), 0);
        press(&mut m, "2/relq");
        assert!(m.editing_filter);
        assert_eq!(m.filter, "relq", "q is typed, it does not quit while filtering");
        on_key(&mut m, key(KeyCode::Backspace));
        on_key(&mut m, key(KeyCode::Enter));
        assert!(!m.editing_filter);
        assert_eq!(m.filter, "rel");
        assert_eq!(m.exits().len(), 1, "only the relayed exit");
        press(&mut m, "/");
        on_key(&mut m, key(KeyCode::Esc));
        assert!(m.filter.is_empty() && !m.editing_filter);
        assert_eq!(m.exits().len(), 3);
    }

    #[test]
    fn arrows_scroll_the_list_and_q_esc_ctrl_c_quit() {
        let mut m = Model::new("x.sock");
        for i in 0..30 {
            m.on_event(event(i, "debug", "AppAccepted", "AppAccepted"));
        }
        press(&mut m, "4");
        on_key(&mut m, key(KeyCode::Down));
        press(&mut m, "jj");
        assert_eq!(m.scroll, 3);
        on_key(&mut m, key(KeyCode::PageDown));
        assert_eq!(m.scroll, 13);
        press(&mut m, "G");
        assert_eq!(m.scroll, 29);
        on_key(&mut m, key(KeyCode::Home));
        assert_eq!(m.scroll, 0);
        let release =
            KeyEvent::new_with_kind(KeyCode::Char('q'), KeyModifiers::NONE, KeyEventKind::Release);
        assert_eq!(on_key(&mut m, release), Action::Continue, "a release is not a press");
        assert_eq!(press(&mut m, "q"), Action::Quit);
        assert_eq!(on_key(&mut m, key(KeyCode::Esc)), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        press(&mut m, "/");
        assert_eq!(on_key(&mut m, ctrl_c), Action::Quit, "also while filtering");
    }
}
