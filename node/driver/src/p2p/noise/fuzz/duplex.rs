//! The check of the `noise_duplex` fuzz target: two [`NoiseStream`]s talk
//! both ways at once over a [`pipe`] that writes short, reads short, returns
//! `Pending` and `Interrupted`; each side receives exactly what the other
//! sent, then a clean end. Four tasks (each side's writer and reader) run
//! under a scheduler that polls only woken tasks, so a `Pending` nobody
//! wakes up is caught as a hang instead of hidden by busy polling.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures::task::ArcWake;
use futures::{AsyncRead, AsyncWrite};

use super::pipe::{pipe, End};
use super::take_u16;
use crate::p2p::noise::{Aead, NoiseStream};

const KEY_A: [u8; 32] = [0x33; 32];
const KEY_B: [u8; 32] = [0x44; 32];

struct Flag(AtomicBool);

impl ArcWake for Flag {
    fn wake_by_ref(me: &Arc<Self>) {
        me.0.store(true, Ordering::SeqCst);
    }
}

/// A side's writes: their bytes and whether each is flushed.
struct Writer {
    writes: Vec<(Vec<u8>, bool)>,
    at: usize,
    offset: usize,
    /// The write's bytes are all taken; flushing it (if asked).
    flushing: bool,
    closed: bool,
}

/// `data` is `[aead, capacity a→b: u16, capacity b→a: u16, writes_a, writes_b,
/// (size: u16, flush)…, read sizes: u16 × 2, script…]`.
///
/// # Panics
/// When a side receives other bytes than the other sent, the run hangs
/// with no task woken, or a stream fails over a pipe that never fails.
pub fn duplex(data: &[u8]) {
    run(data);
}

/// [`duplex`]; the bytes carried each way and the pipe's misbehaviours
/// (`Pending`, `Interrupted`, short writes).
pub(super) fn run(mut data: &[u8]) -> ([usize; 2], [usize; 3]) {
    let mut byte = || {
        let b = data.first().copied().unwrap_or(0);
        data = data.get(1..).unwrap_or_default();
        b
    };
    let aead = if byte() & 1 == 0 { Aead::ChaChaPoly } else { Aead::AesGcm };
    let counts = [usize::from(byte() % 5), usize::from(byte() % 5)];
    let mut d = data;
    let capacity = [take_u16(&mut d) + 1, take_u16(&mut d) + 1];
    let mut writers = counts.map(|count| {
        let writes = (0..count)
            .map(|i| {
                let size = take_u16(&mut d) + 1;
                let flush = d.first().is_some_and(|b| b & 1 == 1) || i + 1 == count;
                d = d.get(1..).unwrap_or_default();
                let fill = (i as u8).wrapping_mul(37).wrapping_add(size as u8);
                ((0..size).map(|j| fill.wrapping_add(j as u8)).collect(), flush)
            })
            .collect();
        Writer { writes, at: 0, offset: 0, flushing: false, closed: false }
    });
    let read_sizes = [take_u16(&mut d) + 1, take_u16(&mut d) + 1];
    let (pipe, a, b) = pipe(capacity, d);
    let mut streams =
        [NoiseStream::new(a, aead, &KEY_A, &KEY_B), NoiseStream::new(b, aead, &KEY_B, &KEY_A)];
    let sent: Vec<Vec<u8>> =
        writers.iter().map(|w| w.writes.iter().flat_map(|(b, _)| b.clone()).collect()).collect();
    let mut received = [Vec::new(), Vec::new()];
    let mut bufs = read_sizes.map(|size| vec![0; size]);
    // Turns before a run counts as a livelock: a pipe of one byte costs a
    // turn per byte each way, and each script byte at most a few.
    let turns = 8 * (sent[0].len() + sent[1].len() + d.len()) + 10_000;
    let mut ended = [false, false];

    // Tasks 0, 1: side 0 and 1 writing; 2, 3: side 0 and 1 reading.
    let flags: Vec<Arc<Flag>> = (0..4).map(|_| Arc::new(Flag(AtomicBool::new(true)))).collect();
    let wakers: Vec<Waker> = flags.iter().map(|f| futures::task::waker(f.clone())).collect();
    for _ in 0..turns {
        let done = writers.iter().all(|w| w.closed) && ended.iter().all(|&e| e);
        if done {
            break;
        }
        let Some(task) = (0..4).find(|&t| flags[t].0.swap(false, Ordering::SeqCst)) else {
            assert!(pipe.fire_deferred(), "hang: no task woken and none to wake");
            continue;
        };
        let mut cx = Context::from_waker(&wakers[task]);
        let side = task % 2;
        let stream = Pin::new(&mut streams[side]);
        let progressed = if task < 2 {
            write_step(&mut writers[side], stream, &mut cx)
        } else if ended[side] {
            Poll::Ready(Ok(()))
        } else {
            read_step(&mut received[side], &mut ended[side], &mut bufs[side], stream, &mut cx)
        };
        match progressed {
            Poll::Ready(Ok(())) => {
                flags[task].0.store(!done_task(task, &writers, &ended), Ordering::SeqCst)
            }
            // Interrupted: retry, as the std convention says.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
                flags[task].0.store(true, Ordering::SeqCst)
            }
            Poll::Ready(Err(e)) => panic!("task {task} failed over a pipe that never fails: {e}"),
            Poll::Pending => {}
        }
    }
    assert!(writers.iter().all(|w| w.closed) && ended.iter().all(|&e| e), "livelock");
    assert!(received[1] == sent[0], "side 1 received other bytes than side 0 sent");
    assert!(received[0] == sent[1], "side 0 received other bytes than side 1 sent");
    ([sent[0].len(), sent[1].len()], pipe.counts())
}

fn done_task(task: usize, writers: &[Writer; 2], ended: &[bool; 2]) -> bool {
    if task < 2 {
        writers[task].closed
    } else {
        ended[task - 2]
    }
}

/// One poll of a writer: a write, a flush or the close.
fn write_step(
    w: &mut Writer,
    mut stream: Pin<&mut NoiseStream<End>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    if w.closed {
        return Poll::Ready(Ok(()));
    }
    let Some((bytes, flush)) = w.writes.get(w.at) else {
        std::task::ready!(stream.as_mut().poll_close(cx))?;
        w.closed = true;
        return Poll::Ready(Ok(()));
    };
    if !w.flushing {
        let n = std::task::ready!(stream.as_mut().poll_write(cx, &bytes[w.offset..]))?;
        assert!(n > 0 && n <= bytes.len() - w.offset, "poll_write took {n} bytes");
        w.offset += n;
        w.flushing = w.offset == bytes.len();
        if !(w.flushing && *flush) {
            if w.flushing {
                (w.at, w.offset, w.flushing) = (w.at + 1, 0, false);
            }
            return Poll::Ready(Ok(()));
        }
    }
    std::task::ready!(stream.as_mut().poll_flush(cx))?;
    (w.at, w.offset, w.flushing) = (w.at + 1, 0, false);
    Poll::Ready(Ok(()))
}

/// One poll of a reader, into `buf`.
fn read_step(
    got: &mut Vec<u8>,
    ended: &mut bool,
    buf: &mut [u8],
    stream: Pin<&mut NoiseStream<End>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let n = std::task::ready!(stream.poll_read(cx, buf))?;
    got.extend_from_slice(&buf[..n]);
    *ended = n == 0;
    Poll::Ready(Ok(()))
}
