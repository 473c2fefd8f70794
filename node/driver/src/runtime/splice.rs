//! The data plane: copy bytes both ways between two streams with faithful
//! half-close and reset propagation.
//!
//! - A clean end of stream on one side becomes a write shutdown (FIN) on the
//!   other, while the other direction keeps flowing.
//! - An error on either side (reset, failed write) aborts both: the streams are
//!   dropped without a clean shutdown, which for [`TcpIo`](crate::runtime::tcp::TcpIo)
//!   sends RST. An error is never turned into a clean end.
//! - When nothing moves either way for the idle timeout, both are aborted.

use crate::p2p::BoxStream;
use bytes::Bytes;
use meshproxy_core::io::{SpliceEnd, SpliceLimits, SpliceReport};
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::ReadBuf;

/// Most bytes one read takes: one peer-connection frame
/// ([`crate::p2p::muxer::FRAME_BODY`]), so a full read travels as one frame, one
/// Noise message and one segment.
const READ_CHUNK: usize = crate::p2p::muxer::FRAME_BODY;

thread_local! {
    /// The read buffer of every splice on this thread, zeroed once. A splice
    /// borrows it only within one poll: only bytes the writer cannot take at
    /// once are copied to the splice's own heap backlog, which is freed
    /// whenever the direction is drained, so an idle spliced connection holds
    /// no copy buffers at all (two 32 KiB buffers per splice were most of the
    /// memory an idle proxied connection cost, `cargo xtask bench`). Being
    /// initialized also spares readers that need `&mut [u8]` (yamux streams
    /// behind tokio-util's compat) zeroing the whole chunk before every read:
    /// that was the largest memset in the connect-rate profile.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Runs `f` on this thread's scratch buffer (a fresh one if it is in use,
/// which no splice does: none polls another).
fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut vec![0; READ_CHUNK]),
    })
}

/// What `poll_copy` does after one read.
enum Step {
    /// Go round the loop again.
    Continue,
    /// Return this.
    Return(Poll<Result<(), Which>>),
}

/// Which side of a splice failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Reading from or writing to side `a` failed.
    A,
    /// Reading from or writing to side `b` failed.
    B,
}

/// One direction of the copy: from a reader to a writer.
struct Direction {
    prefix: Bytes,
    /// Bytes read but not yet written, from `start`; empty (no allocation)
    /// whenever the writer kept up.
    backlog: Vec<u8>,
    start: usize,
    read_done: bool,
    unflushed: bool,
    shut: bool,
    bytes: u64,
}

impl Direction {
    fn new(prefix: Bytes, read_done: bool) -> Direction {
        Direction {
            prefix,
            backlog: Vec::new(),
            start: 0,
            read_done,
            unflushed: false,
            shut: false,
            bytes: 0,
        }
    }

    fn done(&self) -> bool {
        self.shut
    }

    /// Writes from `data`; `Ready(n)` for bytes taken.
    fn poll_write_some(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut BoxStream,
        data: &[u8],
        progress: &mut bool,
    ) -> Result<Poll<usize>, Which> {
        let n = ready_write(Pin::new(&mut **writer).poll_write(cx, data))?;
        if let Poll::Ready(n) = n {
            self.bytes += n as u64;
            self.unflushed = true;
            *progress = true;
        }
        Ok(n)
    }

    /// One read into `chunk`, written straight on; only what the writer does
    /// not take now waits on the heap.
    fn read_and_forward(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut BoxStream,
        writer: &mut BoxStream,
        chunk: &mut [u8],
        progress: &mut bool,
    ) -> Step {
        let mut rb = ReadBuf::new(chunk);
        match Pin::new(&mut **reader).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let data = rb.filled();
                if data.is_empty() {
                    self.read_done = true;
                    return Step::Continue;
                }
                *progress = true;
                let mut taken = 0;
                while taken < data.len() {
                    let rest = data.get(taken..).unwrap_or_default();
                    match self.poll_write_some(cx, writer, rest, progress) {
                        Err(w) => return Step::Return(Poll::Ready(Err(w))),
                        Ok(Poll::Ready(n)) => taken += n,
                        Ok(Poll::Pending) => break,
                    }
                }
                if taken < data.len() {
                    self.backlog.extend_from_slice(data.get(taken..).unwrap_or_default());
                    self.start = 0;
                    return Step::Return(Poll::Pending);
                }
                Step::Continue
            }
            Poll::Ready(Err(_)) => Step::Return(Poll::Ready(Err(Which::Reader))),
            Poll::Pending => {
                // Drained and waiting: an idle direction keeps no buffer.
                self.backlog = Vec::new();
                if self.unflushed {
                    match Pin::new(&mut **writer).poll_flush(cx) {
                        Poll::Ready(Ok(())) => self.unflushed = false,
                        Poll::Ready(Err(_)) => {
                            return Step::Return(Poll::Ready(Err(Which::Writer)))
                        }
                        Poll::Pending => {}
                    }
                }
                Step::Return(Poll::Pending)
            }
        }
    }

    /// Moves as much as possible without blocking. `Ready(Ok(()))` once the
    /// direction is finished (EOF read, everything written, writer shut down).
    /// Errors carry which side (reader or writer) failed. `progress` is set
    /// when any byte moved.
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut BoxStream,
        writer: &mut BoxStream,
        progress: &mut bool,
    ) -> Poll<Result<(), Which>> {
        // Yield after a while so one busy direction cannot starve the other.
        let mut budget = 64u32;
        loop {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.shut {
                return Poll::Ready(Ok(()));
            }
            if !self.prefix.is_empty() {
                let prefix = self.prefix.clone();
                match self.poll_write_some(cx, writer, &prefix, progress) {
                    Err(w) => return Poll::Ready(Err(w)),
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(n)) => {
                        let _ = self.prefix.split_to(n.min(self.prefix.len()));
                    }
                }
                continue;
            }
            if self.start < self.backlog.len() {
                let backlog = core::mem::take(&mut self.backlog);
                let written = self.poll_write_some(
                    cx,
                    writer,
                    backlog.get(self.start..).unwrap_or_default(),
                    progress,
                );
                self.backlog = backlog;
                match written {
                    Err(w) => return Poll::Ready(Err(w)),
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(n)) => self.start = (self.start + n).min(self.backlog.len()),
                }
                if self.start == self.backlog.len() {
                    self.backlog.clear();
                    self.start = 0;
                }
                continue;
            }
            if !self.read_done {
                match with_scratch(|chunk| {
                    self.read_and_forward(cx, reader, writer, chunk, progress)
                }) {
                    Step::Continue => continue,
                    Step::Return(poll) => return poll,
                }
            }
            // Clean end of the reader: pass it on as a write shutdown (FIN).
            match Pin::new(&mut **writer).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => {
                    self.shut = true;
                    self.unflushed = false;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Which::Writer)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Which end of a direction failed.
enum Which {
    Reader,
    Writer,
}

/// A write that accepted zero bytes can never make progress: an error of the writer.
fn ready_write(p: Poll<io::Result<usize>>) -> Result<Poll<usize>, Which> {
    match p {
        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Err(Which::Writer),
        Poll::Ready(Ok(n)) => Ok(Poll::Ready(n)),
        Poll::Pending => Ok(Poll::Pending),
    }
}

/// Copies `a` ⇄ `b` until both directions end cleanly, either side fails, or
/// the idle timeout passes; writes the prefixes first. Both streams are
/// consumed: dropped after a clean shutdown, or aborted.
pub async fn splice(
    a: BoxStream,
    b: BoxStream,
    a_to_b_prefix: Bytes,
    b_to_a_prefix: Bytes,
    limits: SpliceLimits,
) -> SpliceReport {
    splice_from(a, b, a_to_b_prefix, b_to_a_prefix, limits, [false, false]).await
}

/// [`splice`], where `eof[0]`/`eof[1]` say side a/b already reported its clean
/// end of stream before the hand-over (so it is not read again).
pub(crate) async fn splice_from(
    mut a: BoxStream,
    mut b: BoxStream,
    a_to_b_prefix: Bytes,
    b_to_a_prefix: Bytes,
    limits: SpliceLimits,
    eof: [bool; 2],
) -> SpliceReport {
    let mut up = Direction::new(a_to_b_prefix, eof[0]);
    let mut down = Direction::new(b_to_a_prefix, eof[1]);
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let outcome = poll_fn(|cx| {
        let mut progress = false;
        if !up.done() {
            match up.poll_copy(cx, &mut a, &mut b, &mut progress) {
                Poll::Ready(Err(Which::Reader)) => return Poll::Ready(Err(Some(Fault::A))),
                Poll::Ready(Err(Which::Writer)) => return Poll::Ready(Err(Some(Fault::B))),
                _ => {}
            }
        }
        if !down.done() {
            match down.poll_copy(cx, &mut b, &mut a, &mut progress) {
                Poll::Ready(Err(Which::Reader)) => return Poll::Ready(Err(Some(Fault::B))),
                Poll::Ready(Err(Which::Writer)) => return Poll::Ready(Err(Some(Fault::A))),
                _ => {}
            }
        }
        if up.done() && down.done() {
            return Poll::Ready(Ok(()));
        }
        if progress {
            let at = tokio::time::Instant::now() + limits.idle_timeout;
            idle.as_mut().reset(at);
        }
        match idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(None)),
            Poll::Pending => Poll::Pending,
        }
    });
    let how = match outcome.await {
        Ok(()) => SpliceEnd::Clean,
        Err(Some(Fault::A)) => SpliceEnd::ResetA,
        Err(Some(Fault::B)) => SpliceEnd::ResetB,
        Err(None) => SpliceEnd::IdleTimeout,
    };
    // Dropping here aborts whatever did not end cleanly (RST for TCP).
    drop(a);
    drop(b);
    SpliceReport { a_to_b: up.bytes, b_to_a: down.bytes, how }
}
