//! `meshproxy tui`: a live view of a running node, drawn with ratatui from
//! its control socket (`docs/control.md`).
//!
//! - [`model`]: what is shown, updated by snapshots, events and keys (pure).
//! - [`view`]: the screen drawn from the model (pure).
//! - [`input`]: the keys (pure).
//! - [`source`]: the status poll and the event follower (the socket).
//!
//! This file is the loop between them: it owns the terminal, restores it on
//! the way out (a panic included: ratatui's `init` installs that hook) and
//! redraws after each message.

pub mod input;
pub mod model;
pub mod source;
pub mod view;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod screens;

use input::Action;
use model::Model;
use ratatui::crossterm::event::{self, Event};
use source::Feed;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long the key thread waits for a key before checking whether the TUI ended.
const KEY_POLL: Duration = Duration::from_millis(100);

/// What reaches the loop.
#[derive(Debug)]
enum Msg {
    /// From the node.
    Feed(Feed),
    /// A key pressed.
    Key(event::KeyEvent),
    /// The terminal changed size (or anything else worth a redraw).
    Redraw,
    /// The terminal could not be read.
    InputFailed(String),
}

/// Runs the TUI on the node whose control socket is `socket` until the person quits.
pub fn run(socket: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("tokio runtime: {e}"))?;
    let mut terminal = ratatui::try_init().map_err(|e| {
        // Raw mode may be on already when the alternate screen failed.
        ratatui::restore();
        anyhow::anyhow!("terminal: {e} (meshproxy tui needs an interactive terminal; for scripts: meshproxy status --json)")
    })?;
    let result = runtime.block_on(event_loop(&mut terminal, socket));
    ratatui::restore();
    result
}

async fn event_loop(terminal: &mut ratatui::DefaultTerminal, socket: &Path) -> anyhow::Result<()> {
    let (feed_tx, mut feed_rx) = mpsc::channel(256);
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(source::poll_status(socket.to_owned(), feed_tx.clone()));
    tokio::spawn(source::follow_events(socket.to_owned(), feed_tx));
    let keys = tx.clone();
    // crossterm's reads block: a thread of their own, ended once the loop is gone.
    std::thread::spawn(move || read_keys(&keys));
    let started = Instant::now();
    let mut model = Model::new(socket.display().to_string());
    loop {
        terminal.draw(|frame| view::draw(frame, &model))?;
        let msg = tokio::select! {
            Some(feed) = feed_rx.recv() => Msg::Feed(feed),
            Some(msg) = rx.recv() => msg,
            else => return Ok(()),
        };
        if apply(&mut model, msg, started)? == Action::Quit {
            return Ok(());
        }
        // A burst of events is drawn once, not once per event.
        for _ in 0..BATCH {
            let Ok(feed) = feed_rx.try_recv() else { break };
            apply(&mut model, Msg::Feed(feed), started)?;
        }
    }
}

/// Messages applied between two draws at most (the rest wait for the next round).
const BATCH: usize = 256;

/// Applies one message to the model; `Quit` when the person asked to leave.
fn apply(model: &mut Model, msg: Msg, started: Instant) -> anyhow::Result<Action> {
    match msg {
        Msg::Feed(Feed::Status(status)) => {
            let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            model.on_status(*status, now);
        }
        Msg::Feed(Feed::Lost(why)) => model.on_lost(why),
        Msg::Feed(Feed::Event(event)) => model.on_event(event),
        Msg::Key(key) => return Ok(input::on_key(model, key)),
        Msg::Redraw => {}
        Msg::InputFailed(why) => anyhow::bail!("reading the terminal: {why}"),
    }
    Ok(Action::Continue)
}

fn read_keys(tx: &mpsc::Sender<Msg>) {
    while !tx.is_closed() {
        let msg = match event::poll(KEY_POLL) {
            Ok(false) => continue,
            Ok(true) => match event::read() {
                Ok(Event::Key(key)) => Msg::Key(key),
                Ok(_) => Msg::Redraw,
                Err(e) => Msg::InputFailed(e.to_string()),
            },
            Err(e) => Msg::InputFailed(e.to_string()),
        };
        let failed = matches!(msg, Msg::InputFailed(_));
        if tx.blocking_send(msg).is_err() || failed {
            return;
        }
    }
}
