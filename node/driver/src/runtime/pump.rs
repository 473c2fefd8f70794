//! A per-stream task for streams the core still controls (handshakes, hub
//! traffic): it owns the stream, forwards what it reads to the runner, and
//! writes/closes/detaches on command.
//!
//! The hand-over to a splice must not lose a byte: on [`PumpCmd::Detach`] the
//! pump stops reading and returns the stream through the same ordered channel
//! as its data ([`PumpEvent::Detached`]), so every [`PumpEvent::Data`] it sent
//! earlier reaches the runner first.
//!
//! The pump knows nothing of the runner: it reports `(StreamId, PumpEvent)`,
//! which the runner's message type wraps (`From`).

use crate::p2p::BoxStream;
use bytes::Bytes;
use core::fmt;
use meshproxy_core::ids::StreamId;
use meshproxy_core::io::Close;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Most commands queued for one pump; a core-controlled stream carries small
/// control messages, so a full queue means the stream is stuck and is reset.
pub const PUMP_QUEUE: usize = 64;
/// Read buffer of a pump. It is allocated when the stream has bytes to read
/// and kept only while reads fill it: a stream that stalls or trickles (as an
/// attacker's would) holds none while it waits, only its task.
const READ_BUF: usize = 16 * 1024;
/// After a clean close, how long to wait for the peer's end of stream before
/// resetting (closing with unread data would reset anyway).
const LINGER: Duration = Duration::from_secs(5);

/// What the runner asks of a pump.
#[derive(Debug)]
pub enum PumpCmd {
    /// Write these bytes.
    Write(Bytes),
    /// Finish (after earlier writes) or abort the stream; the pump ends.
    Close(Close),
    /// Stop reading and give the stream back (for a splice); the pump ends.
    Detach,
}

/// What a pump reports about its stream, in the order it happened.
pub enum PumpEvent {
    /// Bytes read from the stream.
    Data(Bytes),
    /// The remote side finished (`Fin`) or reset the stream (or reading or
    /// writing failed: `Reset`).
    Closed(Close),
    /// The stream, handed back after [`PumpCmd::Detach`] for a splice.
    Detached {
        /// The stream itself.
        io: BoxStream,
        /// What the pump saw of it.
        state: PumpState,
    },
}

impl fmt::Debug for PumpEvent {
    // By hand because boxed streams have no Debug of their own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PumpEvent::Data(data) => write!(f, "Data({} bytes)", data.len()),
            PumpEvent::Closed(how) => write!(f, "Closed({how:?})"),
            PumpEvent::Detached { state, .. } => write!(f, "Detached({state:?})"),
        }
    }
}

/// What the pump observed, passed back with the stream on detach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PumpState {
    /// The peer's clean end of stream was read (and reported).
    pub read_eof: bool,
}

/// Reads into `buf`, which gets its [`READ_BUF`] bytes only once the stream
/// has something to read: until then the pump waits with a one-byte read.
/// The caller drops the buffer after a read that did not fill it.
async fn read_some(io: &mut BoxStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if !buf.is_empty() {
        return io.read(buf).await;
    }
    let mut first = [0u8; 1];
    if io.read(&mut first).await? == 0 {
        return Ok(0);
    }
    *buf = vec![0u8; READ_BUF];
    buf[0] = first[0];
    // Whatever else has arrived comes with it. An error or the end shows
    // again on the next read, which is when it is reported.
    let more = std::future::poll_fn(|cx| {
        let mut rest = tokio::io::ReadBuf::new(&mut buf[1..]);
        Poll::Ready(match Pin::new(&mut *io).poll_read(cx, &mut rest) {
            Poll::Ready(Ok(())) => rest.filled().len(),
            Poll::Ready(Err(_)) | Poll::Pending => 0,
        })
    })
    .await;
    Ok(1 + more)
}

/// Runs one pump until the stream ends, is closed, or is detached, reporting
/// to `to_runner` as `M` (the runner's message, which wraps the pump's).
pub async fn run<M: From<(StreamId, PumpEvent)>>(
    stream: StreamId,
    mut io: BoxStream,
    mut cmds: mpsc::Receiver<PumpCmd>,
    to_runner: mpsc::Sender<M>,
) {
    let report = |event: PumpEvent| to_runner.send(M::from((stream, event)));
    let mut buf = Vec::new();
    let mut read_eof = false;
    enum Step {
        Cmd(Option<PumpCmd>),
        Read(std::io::Result<usize>),
    }
    loop {
        let step = tokio::select! {
            biased;
            cmd = cmds.recv() => Step::Cmd(cmd),
            r = read_some(&mut io, &mut buf), if !read_eof => Step::Read(r),
        };
        match step {
            Step::Read(Ok(0)) => {
                read_eof = true;
                if report(PumpEvent::Closed(Close::Fin)).await.is_err() {
                    return;
                }
            }
            Step::Read(Ok(n)) => {
                let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                if n < buf.len() {
                    buf = Vec::new();
                }
                if report(PumpEvent::Data(data)).await.is_err() {
                    return;
                }
            }
            Step::Read(Err(_)) => {
                let _ = report(PumpEvent::Closed(Close::Reset)).await;
                return; // dropping `io` aborts it
            }
            Step::Cmd(Some(PumpCmd::Write(data))) => {
                let written = async {
                    io.write_all(&data).await?;
                    io.flush().await
                };
                if written.await.is_err() {
                    let _ = report(PumpEvent::Closed(Close::Reset)).await;
                    return;
                }
            }
            Step::Cmd(Some(PumpCmd::Close(Close::Fin))) => {
                if io.shutdown().await.is_ok() && !read_eof {
                    // Drain until the peer finishes, so the close stays clean.
                    let _ = tokio::time::timeout(LINGER, async {
                        while let Ok(n) = read_some(&mut io, &mut buf).await {
                            if n == 0 {
                                break;
                            }
                            if n < buf.len() {
                                buf = Vec::new();
                            }
                        }
                    })
                    .await;
                }
                return;
            }
            Step::Cmd(Some(PumpCmd::Close(Close::Reset))) | Step::Cmd(None) => return,
            Step::Cmd(Some(PumpCmd::Detach)) => {
                let state = PumpState { read_eof };
                let _ = report(PumpEvent::Detached { io, state }).await;
                return;
            }
        }
    }
}
