//! Where the TUI's data comes from: the node's control socket, asked for a
//! `status` snapshot every second and followed on a second connection for
//! its `events`. Both keep trying while the node is away (stopped,
//! restarting) and report what they get as [`Feed`] messages; neither ever
//! ends the TUI.

use crate::ops::control::client;
use crate::ops::control::protocol::{line, EventLine, EventRecord, Reply, VERSION};
use crate::ops::control::snapshot::StatusSnapshot;
use futures::StreamExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::{interval, sleep, timeout, MissedTickBehavior};
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};

/// Time between two status requests.
pub const POLL: Duration = Duration::from_secs(1);
/// Longest event line read (the node's own lines are far shorter; a longer one
/// ends that connection, and the follower connects again).
const MAX_EVENT_LINE: usize = 64 << 10;
/// Time the node has to accept the `events` request.
const EVENTS_DEADLINE: Duration = Duration::from_secs(5);

/// What the sources report.
#[derive(Debug)]
pub enum Feed {
    /// A status snapshot.
    Status(Box<StatusSnapshot>),
    /// The status request failed: why.
    Lost(String),
    /// An event the node logged.
    Event(EventRecord),
}

/// Asks for the status every [`POLL`] until the receiver is gone.
pub async fn poll_status(path: PathBuf, tx: mpsc::Sender<Feed>) {
    let mut tick = interval(POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let feed = match client::status(&path).await {
            Ok(status) => Feed::Status(Box::new(status)),
            Err(e) => Feed::Lost(e.to_string()),
        };
        if tx.send(feed).await.is_err() {
            return;
        }
    }
}

/// Follows the node's events, connecting again a second after each loss,
/// until the receiver is gone.
pub async fn follow_events(path: PathBuf, tx: mpsc::Sender<Feed>) {
    while !tx.is_closed() {
        // Why the stream ended does not matter here: the status poll tells the person.
        let _ended = follow_once(&path, &tx).await;
        sleep(POLL).await;
    }
}

/// One `events` connection, until it ends; the error says why.
async fn follow_once(path: &std::path::Path, tx: &mpsc::Sender<Feed>) -> Result<(), String> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| e.to_string())?;
    let request = serde_json::json!({ "v": VERSION, "op": "events" });
    stream.write_all(&line(&request)).await.map_err(|e| e.to_string())?;
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_EVENT_LINE);
    let mut lines = FramedRead::new(stream, codec);
    let first = timeout(EVENTS_DEADLINE, lines.next()).await.map_err(|_| "no answer")?;
    let first = first.ok_or("closed")?.map_err(|e| e.to_string())?;
    let reply: Reply = serde_json::from_slice(&first).map_err(|e| e.to_string())?;
    if !reply.ok {
        return Err(reply.error.unwrap_or_default());
    }
    while let Some(next) = lines.next().await {
        let bytes = next.map_err(|e| e.to_string())?;
        match serde_json::from_slice::<EventLine>(&bytes) {
            Ok(event) => {
                if tx.send(Feed::Event(event.event)).await.is_err() {
                    return Ok(());
                }
            }
            // The node's last word before dropping a follower that fell behind.
            Err(_) => {
                let reply: Option<Reply> = serde_json::from_slice(&bytes).ok();
                return Err(reply
                    .and_then(|r| r.error)
                    .unwrap_or_else(|| "unreadable line".into()));
            }
        }
    }
    Err("closed".into())
}
