//! An in-memory duplex pipe that misbehaves as much as a socket may: short
//! writes, reads of any size, `Pending` (a full pipe, an empty one, or for
//! no reason) and `Interrupted`, each chosen by a script of fuzz bytes. It
//! never breaks the contract: every `Pending` is followed by a wake-up, from
//! the other end or from [`Pipe::fire_deferred`] (a timer, so to speak).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures::{AsyncRead, AsyncWrite};

/// One direction of the pipe.
#[derive(Default)]
struct Direction {
    buffer: VecDeque<u8>,
    capacity: usize,
    /// The writing end closed or went away: EOF once drained.
    closed: bool,
    /// The reading end went away: writes fail.
    unread: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

struct Shared {
    directions: [Direction; 2],
    script: VecDeque<u8>,
    /// Wakers of ends that returned `Pending` for no reason.
    deferred: Vec<Waker>,
    /// Misbehaviours so far: `Pending` (any cause), `Interrupted`, short writes.
    counts: [usize; 3],
}

impl Shared {
    /// The next script byte; 255 (behave) once the script is spent.
    fn next(&mut self) -> u8 {
        self.script.pop_front().unwrap_or(255)
    }
}

/// The two ends' shared state, for the harness.
#[derive(Clone)]
pub(super) struct Pipe(Rc<RefCell<Shared>>);

/// One end: writes go to direction `side`, reads come from the other.
pub(super) struct End {
    shared: Rc<RefCell<Shared>>,
    side: usize,
}

impl std::fmt::Debug for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("End").field("side", &self.side).finish_non_exhaustive()
    }
}

/// A pipe whose directions hold `capacity` bytes each, misbehaving as
/// `script` says (an empty script: a well-behaved pipe).
pub(super) fn pipe(capacity: [usize; 2], script: &[u8]) -> (Pipe, End, End) {
    let directions = capacity.map(|c| Direction { capacity: c.max(1), ..Direction::default() });
    let shared = Shared {
        directions,
        script: script.iter().copied().collect(),
        deferred: vec![],
        counts: [0; 3],
    };
    let shared = Rc::new(RefCell::new(shared));
    let end = |side| End { shared: shared.clone(), side };
    (Pipe(shared.clone()), end(0), end(1))
}

impl Pipe {
    /// How often the pipe returned `Pending`, `Interrupted` and short writes.
    pub(super) fn counts(&self) -> [usize; 3] {
        self.0.borrow().counts
    }

    /// Wakes every end that returned `Pending` for no reason; false if there
    /// was none.
    pub(super) fn fire_deferred(&self) -> bool {
        let deferred = std::mem::take(&mut self.0.borrow_mut().deferred);
        let any = !deferred.is_empty();
        deferred.into_iter().for_each(Waker::wake);
        any
    }
}

/// What the script makes of the next call: misbehave (`Some`) or go ahead
/// with at most `limit` bytes.
enum Turn {
    Pending,
    Interrupted,
    Go(usize),
}

fn turn(shared: &mut Shared) -> Turn {
    match shared.next() {
        0..=15 => Turn::Pending,
        16..=23 => Turn::Interrupted,
        b @ 24..=127 => Turn::Go(usize::from(b - 23)),
        b @ 128..=191 => Turn::Go(usize::from(b - 127) * 256),
        _ => Turn::Go(usize::MAX),
    }
}

impl End {
    fn misbehave<T>(
        shared: &mut Shared,
        cx: &Context<'_>,
        t: &Turn,
    ) -> Option<Poll<io::Result<T>>> {
        match t {
            Turn::Pending => {
                shared.counts[0] += 1;
                shared.deferred.push(cx.waker().clone());
                Some(Poll::Pending)
            }
            Turn::Interrupted => {
                shared.counts[1] += 1;
                Some(Poll::Ready(Err(io::ErrorKind::Interrupted.into())))
            }
            Turn::Go(_) => None,
        }
    }
}

impl AsyncWrite for End {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.borrow_mut();
        let t = turn(&mut shared);
        if let Some(p) = End::misbehave(&mut shared, cx, &t) {
            return p;
        }
        let Turn::Go(limit) = t else { unreachable!() };
        let dir = &mut shared.directions[self.side];
        if dir.unread || dir.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = dir.capacity - dir.buffer.len();
        if room == 0 {
            dir.writer = Some(cx.waker().clone());
            shared.counts[0] += 1;
            return Poll::Pending;
        }
        let n = buf.len().min(room).min(limit);
        dir.buffer.extend(&buf[..n]);
        if let Some(w) = dir.reader.take() {
            w.wake();
        }
        shared.counts[2] += usize::from(n < buf.len());
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.shared.borrow_mut();
        let t = turn(&mut shared);
        End::misbehave(&mut shared, cx, &t).unwrap_or(Poll::Ready(Ok(())))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.shared.borrow_mut();
        let t = turn(&mut shared);
        if let Some(p) = End::misbehave(&mut shared, cx, &t) {
            return p;
        }
        let dir = &mut shared.directions[self.side];
        dir.closed = true;
        if let Some(w) = dir.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.borrow_mut();
        let t = turn(&mut shared);
        if let Some(p) = End::misbehave(&mut shared, cx, &t) {
            return p;
        }
        let Turn::Go(limit) = t else { unreachable!() };
        let dir = &mut shared.directions[1 - self.side];
        if dir.buffer.is_empty() {
            if dir.closed {
                return Poll::Ready(Ok(0));
            }
            dir.reader = Some(cx.waker().clone());
            shared.counts[0] += 1;
            return Poll::Pending;
        }
        let n = buf.len().min(dir.buffer.len()).min(limit);
        for (slot, byte) in buf.iter_mut().zip(dir.buffer.drain(..n)) {
            *slot = byte;
        }
        if let Some(w) = dir.writer.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }
}

impl Drop for End {
    fn drop(&mut self) {
        let Ok(mut shared) = self.shared.try_borrow_mut() else { return };
        let wakers = {
            let [a, b] = &mut shared.directions;
            let (mine, theirs) = if self.side == 0 { (a, b) } else { (b, a) };
            mine.closed = true;
            theirs.unread = true;
            [mine.reader.take(), theirs.writer.take()]
        };
        wakers.into_iter().flatten().for_each(Waker::wake);
    }
}
